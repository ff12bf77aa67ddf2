"""`stateferry sandbox` subcommands."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    """Register the `sandbox` command group."""
    parser: argparse.ArgumentParser = subparsers.add_parser("sandbox", help="sandbox commands (not implemented yet)")
    parser.set_defaults(handler=lambda args: parser.print_help() or 2)
