"""The local demo: everything a new user needs to see a zero-downtime etcd migration, in one command.

``stateferry demo`` (the README's first command runs it through ``scripts/demo``):

1. starts (or reuses) the local stack: a long-lived Prefect server with its UI and two S3 stores;
2. starts (or reuses) the two-cluster Kubernetes sandbox;
3. deploys a 3-member etcd (the field report's StatefulSet) with some data into ``source``;
4. registers the blocks and a process work pool, deploys the flows, starts a worker;
5. triggers the etcd stretch migration and waits at the first approval, printing where to approve.

``--auto-approve`` runs it through unattended; ``--scenario`` picks another flow's demo; re-running
reuses what is running and cleanly replaces what died. ``stateferry demo down`` stops everything.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stateferry.demo import say
from stateferry.demo.prefect_setup import stop_worker
from stateferry.demo.scenarios import SCENARIOS, stop_demo_mariadb


@contextmanager
def prefect_api(api_url: str) -> Iterator[None]:
    """Point this process's Prefect client at the demo server."""
    os.environ["PREFECT_API_URL"] = api_url
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        yield


def run(scenario: str = "etcd", auto_approve: bool = False, state_root: Path = Path(".stateferry")) -> int:
    """Bring everything up and run one scenario; returns the exit code."""
    from devservers import stack as stack_mod

    state_root = state_root.absolute()
    say("starting the local stack (Prefect server with UI, two S3 stores)")
    info = stack_mod.up(state_root / "stack")
    say(f"Prefect UI: {info.prefect_ui_url}")
    with prefect_api(info.prefect_api_url):
        code = SCENARIOS[scenario](state_root, info, auto_approve)
    say(f"Prefect UI: {info.prefect_ui_url}   (stop everything: scripts/demo down)")
    return code


def down(state_root: Path = Path(".stateferry")) -> None:
    """Stop the worker, the sandbox and the stack (state kept)."""
    from devservers import stack as stack_mod
    from sandbox.cluster import Sandbox

    state_root = state_root.absolute()
    stop_worker(state_root)
    stop_demo_mariadb(state_root)
    Sandbox(state_root / "sandbox").down()
    stack_mod.down(state_root / "stack")
    say("worker, sandbox and stack stopped")
