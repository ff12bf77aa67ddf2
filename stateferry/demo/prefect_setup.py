"""The demo's Prefect side: blocks, the process work pool, deployments, the worker, and following a run
until it waits for approval or ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from stateferry.demo import say
from stateferry.errors import PreconditionFailed
from stateferry.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
WORK_POOL = "stateferry-demo"


def register_blocks(kubeconfig: Path | None, stack: Any) -> dict[str, Any]:
    """Save the demo's blocks (idempotent: overwritten every run)."""
    from pydantic import SecretStr

    from blocks import ALL_BLOCKS
    from blocks.kube import KubeCluster
    from blocks.object_store import ObjectStore

    for block_cls in ALL_BLOCKS:
        block_cls.register_type_and_schema()
    blocks: dict[str, Any] = {}
    for ctx in ("source", "target") if kubeconfig else ():
        text = kubeconfig.read_text() if kubeconfig else ""
        block = KubeCluster(kubeconfig=SecretStr(text), context=ctx)
        block.save(f"demo-{ctx}", overwrite=True)
        blocks[f"kube-{ctx}"] = KubeCluster.load(f"demo-{ctx}")
    for name, s3 in stack.s3.items():
        cfg = json.loads(Path(s3["secret_key_file"]).read_text())
        secret = cfg["identities"][0]["credentials"][0]["secretKey"]
        store = ObjectStore(
            endpoint=s3["endpoint"], access_key=s3["access_key"], secret_key=SecretStr(secret)
        )
        store.save(f"demo-s3-{name}", overwrite=True)
        blocks[f"s3-{name}"] = ObjectStore.load(f"demo-s3-{name}")
    say("blocks saved: demo-source, demo-target (KubeCluster), demo-s3-source, demo-s3-target (ObjectStore)")
    return blocks


def ensure_work_pool() -> None:
    """Create the demo's process work pool if missing."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=WORK_POOL, type="process"))
            say(f"work pool {WORK_POOL} created")
        except ObjectAlreadyExists:
            pass


def deploy(
    entrypoint: str,
    name: str,
    parameters: dict[str, Any],
    description: str | None = None,
    *,
    cron: str | None = None,
    concurrency_limit: int | None = None,
) -> str:
    """Create/update a deployment of ``entrypoint`` from the project directory on the demo pool.

    Args:
        entrypoint: ``path/to/flow.py:function``, relative to the project directory.
        name: The deployment's name.
        parameters: The deployment's default parameters.
        description: Shown in the UI (default: the flow's docstring).
        cron: A schedule, e.g. ``"*/15 * * * *"`` (default: none).
        concurrency_limit: How many runs may run at once (default: no limit).

    Returns:
        The deployment's id.
    """
    from prefect import flow

    source_flow: Any = flow.from_source(source=str(ROOT), entrypoint=entrypoint)
    deployment_id = source_flow.deploy(
        name=name,
        work_pool_name=WORK_POOL,
        parameters=parameters,
        description=description,
        cron=cron,
        concurrency_limit=concurrency_limit,
        tags=["stateferry", "demo"],
        print_next_steps=False,
    )
    return str(deployment_id)


def ensure_worker(state_root: Path, api_url: str) -> int:
    """Start a process worker for the demo pool unless one runs; returns its pid."""
    pid_file = state_root / "stack" / "worker.pid"
    if pid_file.exists():
        try:
            pid = int(pid_file.read_text())
            os.kill(pid, 0)
            return pid
        except (ValueError, ProcessLookupError):
            pid_file.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"PREFECT_API_URL": api_url, "PREFECT_HOME": str(state_root / "stack" / "worker-home")})
    log = open(state_root / "stack" / "worker.log", "ab")  # noqa: SIM115 - owned by the child
    prefect = str(Path(sys.executable).parent / "prefect")
    proc = subprocess.Popen(
        [prefect, "worker", "start", "--pool", WORK_POOL, "--type", "process", "--limit", "4"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    pid_file.write_text(str(proc.pid))
    say(f"worker started (pid {proc.pid}, log {state_root / 'stack' / 'worker.log'})")
    return proc.pid


def stop_worker(state_root: Path) -> None:
    """Stop the demo worker if it runs."""
    pid_file = state_root / "stack" / "worker.pid"
    if not pid_file.exists():
        return
    try:
        os.killpg(int(pid_file.read_text()), signal.SIGTERM)
    except (ValueError, ProcessLookupError):
        pass
    pid_file.unlink(missing_ok=True)


def wait_for_run(flow_run_id: Any, ui_url: str, auto_approve: bool, timeout: float = 900) -> int:
    """Follow a run until it pauses for approval (interactive) or finishes."""
    from prefect.client.orchestration import get_client

    url = f"{ui_url}/runs/flow-run/{flow_run_id}"
    say(f"flow run: {url}")
    last = None
    banner = [
        "=" * 78,
        " The run is waiting for your approval.",
        f"   1. open {url}",
        "   2. read the plan (Artifacts tab, or the Resume form)",
        "   3. click Resume, switch 'Approved' on, Submit",
        " The flow continues after each approval (the etcd migration asks again before the",
        " client cutover and before deleting the old resources).",
        " `scripts/demo --auto-approve` runs it through unattended.",
        "=" * 78,
    ]
    with get_client(sync_client=True) as client:

        def outcome() -> int | None:
            nonlocal last
            state = client.read_flow_run(flow_run_id).state
            name = state.name if state else "?"
            if name != last:
                say(f"state: {name}")
                last = name
            if state and state.is_paused() and not auto_approve:
                print("\n" + "\n".join(banner))
                return 0
            if state and state.is_final():
                if state.is_completed():
                    say(f"run finished: {url} (summary in the Artifacts tab)")
                    return 0
                say(f"the run ended {name}: {state.message}. Logs: {url}")
                return 1
            return None

        try:
            return wait_until(outcome, timeout=timeout, interval=1, describe=lambda: "")
        except PreconditionFailed:
            say(f"still running after {timeout:.0f} s: follow it at {url}")
            return 0
