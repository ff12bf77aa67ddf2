"""`stateferry blocks` subcommands."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    """Register the `blocks` command group."""
    parser: argparse.ArgumentParser = subparsers.add_parser("blocks", help="blocks commands (not implemented yet)")
    parser.set_defaults(handler=lambda args: parser.print_help() or 2)
