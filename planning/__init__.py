"""stateferry: planning layer."""
