"""Subcommand groups of the ``stateferry`` CLI (each module exposes ``register(subparsers)``)."""
