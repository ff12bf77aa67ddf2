"""stateferry: blocks layer."""
