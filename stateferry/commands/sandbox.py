"""`stateferry sandbox` subcommands: up, down, status, exec."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def _up(args: argparse.Namespace) -> int:
    from sandbox.cluster import Sandbox, SandboxError

    sb = Sandbox(args.state_dir, args.base_octet)
    try:
        status = sb.up(timeout=args.timeout)
    except SandboxError as exc:
        print(f"stateferry sandbox up: {exc}", file=sys.stderr)
        return 1
    print(status.describe(), file=sys.stderr)
    print(str(status.kubeconfig))
    return 0


def _down(args: argparse.Namespace) -> int:
    from sandbox.cluster import Sandbox

    sb = Sandbox(args.state_dir)
    killed = sb.down(wipe=args.wipe)
    note = f" (killed {len(killed)} leftover processes)" if killed else ""
    print(f"sandbox in {sb.state_dir} stopped{note}{'; state wiped' if args.wipe else ''}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from sandbox.cluster import Sandbox

    status = Sandbox(args.state_dir).status()
    print(status.describe())
    return 0 if status.running else 3


def _exec(args: argparse.Namespace) -> int:
    from sandbox.podexec import PodNotRunning, exec_in_pod

    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        print("stateferry sandbox exec: give a command after `--`", file=sys.stderr)
        return 2
    try:
        proc = exec_in_pod(Path(args.state_dir), args.context, args.namespace, args.pod, argv)
    except PodNotRunning as exc:
        print(f"stateferry sandbox exec: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    return proc.returncode


def register(subparsers: Any) -> None:
    """Register the `sandbox` command group."""
    from sandbox.cluster import DEFAULT_STATE_DIR

    parser: argparse.ArgumentParser = subparsers.add_parser(
        "sandbox", help="the local two-cluster Kubernetes sandbox (source, target)"
    )
    sub = parser.add_subparsers(dest="sandbox_command", metavar="ACTION")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
        p.add_argument(
            "--state-dir",
            type=Path,
            default=DEFAULT_STATE_DIR,
            help=f"state directory (default {DEFAULT_STATE_DIR})",
        )
        return p

    up = add("up", "start both clusters and print the kubeconfig path")
    up.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for readiness")
    up.add_argument(
        "--base-octet",
        type=int,
        default=None,
        help="address plan: source = 127.<N>.x.x, target = 127.<N+1>.x.x (default 1)",
    )
    up.set_defaults(handler=_up)
    down = add("down", "stop every process of the sandbox (keeps state unless --wipe)")
    down.add_argument("--wipe", action="store_true", help="also delete the state directory")
    down.set_defaults(handler=_down)
    add("status", "show whether the sandbox runs").set_defaults(handler=_status)
    ex = add("exec", "run a command inside a pod's namespaces (like kubectl exec)")
    ex.add_argument("--context", default="source", choices=["source", "target"])
    ex.add_argument("-n", "--namespace", default="default")
    ex.add_argument("pod")
    ex.add_argument("argv", nargs=argparse.REMAINDER)
    ex.set_defaults(handler=_exec)

    def _help(_args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(handler=_help)
