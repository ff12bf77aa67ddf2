"""`stateferry demo`: set up the local stack and sandbox, deploy the flows, trigger a migration."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def _run(args: argparse.Namespace) -> int:
    from stateferry.demo import runner

    if args.action == "down":
        runner.down(args.state_root)
        return 0
    return runner.run(args.scenario, auto_approve=args.auto_approve, state_root=args.state_root)


def register(subparsers: Any) -> None:
    """Register the ``demo`` command."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "demo",
        help="run the local demo (Prefect UI, sandbox clusters, a migration waiting for approval)",
        description="Start the local stack and the sandbox, deploy the flows and trigger a migration that "
        "waits for your approval in the Prefect UI.",
    )
    parser.add_argument("action", nargs="?", choices=["up", "down"], default="up")
    parser.add_argument(
        "--scenario",
        choices=["etcd", "mirror", "app", "backup"],
        default="etcd",
        help="which flow to demonstrate (default: etcd stretch migration)",
    )
    parser.add_argument("--auto-approve", action="store_true", help="approve every step unattended")
    parser.add_argument(
        "--state-root",
        type=Path,
        default=Path(".stateferry"),
        help="where the stack, sandbox and worker keep their state",
    )
    parser.set_defaults(handler=_run)
