"""A dataset directory: assembled from the workers' parts, counted, reported, committed."""
