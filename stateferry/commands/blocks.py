"""`stateferry blocks` subcommands: register the stateferry block types with the Prefect API."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register_blocks() -> list[tuple[str, str]]:
    """Register every stateferry block type and schema with the configured Prefect API.

    Returns:
        ``(block type name, slug)`` of each registered block type.
    """
    from blocks import ALL_BLOCKS

    registered = []
    for block in ALL_BLOCKS:
        block.register_type_and_schema()
        registered.append((block.get_block_type_name(), block.get_block_type_slug()))
    return registered


def _register_command(args: argparse.Namespace) -> int:
    from prefect.settings import PREFECT_API_URL

    from stateferry.errors import StateferryError, translate

    api = PREFECT_API_URL.value() or "(no PREFECT_API_URL: Prefect's ephemeral/local API)"
    try:
        registered = register_blocks()
    except Exception as exc:  # report one clear line, not a client stack trace
        error = (
            exc
            if isinstance(exc, StateferryError)
            else translate(exc, context=f"registering blocks at {api}")
        )
        print(f"stateferry: error: {error}", file=sys.stderr)
        return 1
    for name, slug in registered:
        print(f"registered block type {name!r} (slug {slug}) at {api}")
    return 0


def register(subparsers: Any) -> None:
    """Register the `blocks` command group."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "blocks",
        help="manage the stateferry Prefect block types",
        description="Manage stateferry Prefect blocks.",
    )
    group = parser.add_subparsers(dest="blocks_command", metavar="SUBCOMMAND")
    register_parser = group.add_parser(
        "register", help="register the block types (KubeCluster, ObjectStore, EtcdCluster, Database)"
    )
    register_parser.set_defaults(handler=_register_command)

    def _usage(args: argparse.Namespace) -> int:
        parser.print_usage(sys.stderr)
        print("stateferry blocks: error: a subcommand is required (register)", file=sys.stderr)
        return 2

    parser.set_defaults(handler=_usage)
