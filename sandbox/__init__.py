"""stateferry: sandbox layer."""
