"""The Ray side of prepare, for any recipe: reading, per-block work, the Ray Data plan,
writing parts in the workers. It never names an algorithm."""
