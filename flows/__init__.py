"""stateferry: flows layer."""
