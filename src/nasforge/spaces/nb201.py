"""PLACEHOLDER: the NAS-Bench-201 cell space is being written."""
