"""stateferry: tasks layer."""
