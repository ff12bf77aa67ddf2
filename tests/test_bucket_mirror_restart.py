"""A watch served as a deployment survives its process: SIGKILL -> Crashed -> a successor resumes.

Real parts: Prefect's runner (``serve``) in a subprocess, the Prefect API server of the test session,
two SeaweedFS stores. The runner marks the killed run Crashed and calls ``bucket_mirror``'s
``on_crashed`` hook, which starts the same deployment again; the successor takes the crashed run's
lease at once, resumes from the journal and waits for the cutover approval like its predecessor.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
from prefect_run import flow_run_texts
from test_bucket_mirror_journal import _fresh, contents, eventually, put

from blocks.object_store import ObjectStore
from devservers.prefect_runs import resume_with_input, wait_for_approval_form
from planning.run_restart import RESTART_TAG, decide_restart

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.timeout(300)]
ROOT = Path(__file__).resolve().parent.parent

SERVE = textwrap.dedent(
    """
    import sys
    from prefect import serve
    from flows.bucket_mirror import bucket_mirror
    serve(bucket_mirror.to_deployment(name=sys.argv[1]))
    """
)


@pytest.mark.parametrize(
    ("parameters", "tags", "deployment", "restart", "new_tags"),
    [
        ({"watch": True}, ["s3"], True, True, ("s3", f"{RESTART_TAG}1")),
        ({"direction": "two-way"}, [f"{RESTART_TAG}2", "s3"], True, True, ("s3", f"{RESTART_TAG}3")),
        ({"watch": True}, [f"{RESTART_TAG}5"], True, False, ()),  # crashes every time: a human looks
        ({"watch": True}, [], False, False, ()),  # a run started from Python: nothing to restart from
        ({"watch": False}, [], True, False, ()),  # one-shot one-way: the operator re-runs it
        ({"watch": False, "journal": True}, [], True, True, (f"{RESTART_TAG}1",)),
        ({"watch": True, "journal": False}, [], True, False, ()),
        ({"dry_run": True}, [], True, False, ()),
        ({"options": {"watch": True, "direction": "one-way"}}, [], True, True, (f"{RESTART_TAG}1",)),
        ({"options": {"direction": "two-way", "journal": None}}, [], True, True, (f"{RESTART_TAG}1",)),
        ({"options": {"watch": False, "dry_run": True}}, [], True, False, ()),
    ],
)
def test_watch_resume_restart_rule(
    parameters: dict[str, Any], tags: list[str], deployment: bool, restart: bool, new_tags: tuple[str, ...]
) -> None:
    decision = decide_restart(parameters, tags, deployment)
    assert (decision.restart, decision.tags) == (restart, new_tags), decision.reason


def _flow_process(run_id: Any) -> int:
    """Pid of the process executing a flow run (the runner puts its id in the environment)."""
    needle = f"PREFECT__FLOW_RUN_ID={run_id}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                return int(entry.name)
        except OSError:
            continue
    raise AssertionError(f"no process runs flow run {run_id}")


def _runs(deployment_id: Any) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            sort=FlowRunSort.START_TIME_DESC,
        )


def test_watch_resume_a_killed_deployment_run_is_restarted_and_loses_nothing(
    object_store_a: ObjectStore, object_store_b: ObjectStore, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client

    a, b = object_store_a.minio_client(), object_store_b.minio_client()
    name = _fresh(a, b, n=5)
    tag = uuid.uuid4().hex[:8]
    src_id = object_store_a.save(f"rst-a-{tag}", overwrite=True)
    dst_id = object_store_b.save(f"rst-b-{tag}", overwrite=True)
    script = tmp_path / "serve.py"
    script.write_text(SERVE)
    deployment = f"mirror-restart-{tag}"
    runner = subprocess.Popen(
        [sys.executable, str(script), deployment],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_RUNNER_POLL_FREQUENCY": "1"},
        stdout=(tmp_path / "runner.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deployment_id: Any = None

        def deployed() -> bool:
            nonlocal deployment_id
            with get_client(sync_client=True) as client:
                try:
                    deployment_id = client.read_deployment_by_name(f"bucket_mirror/{deployment}").id
                except Exception:
                    return False
            return True

        eventually(deployed, 60)
        with get_client(sync_client=True) as client:
            first = client.create_flow_run_from_deployment(
                deployment_id,
                parameters={
                    "source": {"$ref": {"block_document_id": str(src_id)}},
                    "destination": {"$ref": {"block_document_id": str(dst_id)}},
                    "options": {
                        "bucket": name,
                        "watch": True,
                        "direction": "two-way",
                        "watch_interval_seconds": 0.5,
                    },
                },
            )
        wait_for_approval_form(first.id, 120)
        put(b, name, "switched", b"written on the new side")
        eventually(lambda: "switched" in contents(a, name))
        pid = _flow_process(first.id)
        os.kill(pid, signal.SIGKILL)
        put(a, name, "while-down", b"written while no mirror runs")
        eventually(lambda: len(_runs(deployment_id)) == 2, 90)
        successor = next(r for r in _runs(deployment_id) if r.id != first.id)
        with get_client(sync_client=True) as client:
            crashed = client.read_flow_run(first.id)
        assert crashed.state is not None and crashed.state.is_crashed()
        assert f"{RESTART_TAG}1" in successor.tags and successor.name.endswith("-restart-1")
        wait_for_approval_form(successor.id, 120)  # resumed, and waiting for the same approval
        eventually(lambda: "while-down" in contents(b, name))
        resume_with_input(successor.id, {"approved": True, "comment": "all clients moved"})

        def finished() -> bool:
            with get_client(sync_client=True) as client:
                state = client.read_flow_run(successor.id).state
            return state is not None and state.is_final()

        eventually(finished, 120)
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(successor.id).state
            assert state is not None and state.is_completed(), state
        texts = flow_run_texts(successor.id)
    finally:
        os.killpg(runner.pid, signal.SIGTERM)
        runner.wait(timeout=30)
    expected = {f"k{i}": f"v1 of k{i}".encode() for i in range(5)}
    expected.update({"switched": b"written on the new side", "while-down": b"written while no mirror runs"})
    assert contents(a, name) == contents(b, name) == expected
    # the successor took the crashed run's lease at once (Prefect reports that run finished)
    assert f"took over the lease of {first.name!r} (its run has finished)" in texts
