"""Test helper: a deployment of one flow on a process work pool, with a process worker running its runs
(what ``prefect deploy`` of ``prefect.yaml`` and ``prefect worker start`` do in production: each run
loads the flow from its entrypoint in a new process)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
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


@contextmanager
def served_deployment(entrypoint: str, name: str, parameters: dict[str, Any], log: Path) -> Iterator[UUID]:
    """Deploy ``entrypoint`` as ``name`` (default ``parameters``) and run a worker; yield the deployment id.

    The worker polls every second; it is stopped on exit.
    """
    from prefect import flow

    _ensure_pool()
    source_flow: Any = flow.from_source(source=str(ROOT), entrypoint=entrypoint)
    deployment_id = source_flow.deploy(
        name=name, work_pool_name=POOL, parameters=parameters, print_next_steps=False
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
