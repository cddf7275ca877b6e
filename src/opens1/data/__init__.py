"""Feeding data to training: readers of the real datasets (embedded or ../shared/data layout) and packing."""
