"""Hostile-input tests: one per finding of the security review (issue 11)."""
