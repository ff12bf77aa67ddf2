"""stateferry: devservers layer."""
