"""The Ray side of prepare, for any recipe: reading, per-block work, the plan (plain Ray
tasks, with one sort of their own where a recipe groups), writing parts in the workers.
It never names an algorithm."""
