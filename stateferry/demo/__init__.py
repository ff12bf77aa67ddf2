"""The local demo (``stateferry demo`` / ``scripts/demo``)."""
