"""Test helper: a deployment of one flow on a process work pool, with a process worker running its runs
(what ``prefect deploy`` of ``prefect.yaml`` and ``prefect worker start`` do in production: each run
loads the flow from its entrypoint in a new process)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

ROOT = Path(__file__).resolve().parents[1]
POOL = "stateferry-tests"


def block_ref(block: Any, name: str) -> dict[str, Any]:
    """Save ``block`` as ``name`` and return the parameter value Prefect sends for a saved block."""
    block_id = block.save(name, overwrite=True)
    return {"$ref": {"block_document_id": str(block_id)}}


def _ensure_pool() -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=POOL, type="process"))
        except ObjectAlreadyExists:
            pass


def _load_without_shadowing(load: Callable[[], Any]) -> Any:
    """Run ``load`` (Prefect loading a flow from its entrypoint and deploying it), then undo
    what it does to this process's imports: Prefect puts the script's folder on ``sys.path`` and
    registers flow scripts under their bare file names (``flows/backup.py`` as ``backup``), which
    would shadow the test package of that name (``tests/backup``) in every later test file."""
    path = list(sys.path)
    try:
        return load()
    finally:
        sys.path[:] = path
        flows_dir = ROOT / "flows"
        for name, module in list(sys.modules.items()):
            origin = getattr(module, "__file__", None)
            if "." not in name and origin and Path(origin).parent == flows_dir and name != "flows":
                del sys.modules[name]


@contextmanager
def served_deployment(entrypoint: str, name: str, parameters: dict[str, Any], log: Path) -> Iterator[UUID]:
    """Deploy ``entrypoint`` as ``name`` (default ``parameters``) and run a worker; yield the deployment id.

    The worker polls every second; it is stopped on exit.
    """
    from prefect import flow

    _ensure_pool()
    deployment_id = _load_without_shadowing(
        lambda: flow.from_source(source=str(ROOT), entrypoint=entrypoint).deploy(
            name=name, work_pool_name=POOL, parameters=parameters, print_next_steps=False
        )
    )
    env = {**os.environ, "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "1"}
    prefect = str(Path(sys.executable).parent / "prefect")
    with log.open("w") as out:
        proc = subprocess.Popen(
            [prefect, "worker", "start", "--pool", POOL, "--type", "process", "--limit", "2"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        yield UUID(str(deployment_id))
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def wait_final(flow_run_id: UUID, timeout: float = 180) -> Any:
    """The flow run once its state is final."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(flow_run_id)
            if run.state is not None and run.state.is_final():
                return run
            assert time.monotonic() < deadline, f"flow run {flow_run_id} is still {run.state}"
            time.sleep(1)
