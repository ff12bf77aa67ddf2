"""The ``stateferry`` command line.

Each subcommand group lives in its own module under :mod:`stateferry.commands` and exposes
``register(subparsers)``; this module only wires them together, so groups can grow independently.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from stateferry import __version__

# Modules under stateferry.commands that provide ``register(subparsers) -> None``.
COMMAND_MODULES: tuple[str, ...] = ("blocks", "sandbox", "demo")


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level argument parser with every subcommand group registered."""
    parser = argparse.ArgumentParser(
        prog="stateferry",
        description="Migrate and back up stateful services across Kubernetes clusters (Prefect 3 flows).",
    )
    parser.add_argument("--version", action="version", version=f"stateferry {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"stateferry.commands.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_usage(sys.stderr)
        print("stateferry: error: a command is required (see `stateferry --help`)", file=sys.stderr)
        return 2
    result = handler(args)
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
