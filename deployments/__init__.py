"""stateferry: deployments layer."""
