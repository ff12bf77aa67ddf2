"""Cron deployments from the project's prefect.yaml produce scheduled runs on a real Prefect server.

This is the guard for the dependency pins: with ``sqlalchemy>=2.1`` the server accepts the
deployment but its scheduler silently creates no runs — this test then fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployments.backups import PREFECT_YAML, WORK_POOL, load_jobs, render_prefect_yaml

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.timeout(240)


def test_prefect_yaml_backup_entries_match_the_job_files() -> None:
    """prefect.yaml is in sync with deployments/jobs/*.yaml (regenerate with the deployments module)."""
    doc = yaml.safe_load(PREFECT_YAML.read_text())
    expected = render_prefect_yaml(doc, load_jobs())
    ours = ("backup-", "restore-")
    backups = [d for d in doc["deployments"] if d["name"].startswith(ours)]
    assert backups == [d for d in expected["deployments"] if d["name"].startswith(ours)]
    restores = [d for d in backups if d["name"].startswith("restore-")]
    backups = [d for d in backups if d["name"].startswith("backup-")]
    assert len(backups) == len(restores) == len(load_jobs()) >= 3
    assert all(r["parameters"]["options"]["dry_run"] is True and r["schedules"] == [] for r in restores)
    for d in backups:
        assert d["concurrency_limit"] == 1 and d["entrypoint"] == "flows/backup.py:scheduled_backup"
        assert d["schedules"][0]["cron"]


def test_programmatic_deployments_match_prefect_yaml() -> None:
    from deployments.backups import build_deployments

    doc = yaml.safe_load(PREFECT_YAML.read_text())
    by_name = {d["name"]: d for d in doc["deployments"]}
    for dep in build_deployments():
        entry = by_name[dep.name]
        assert dep.parameters == entry["parameters"]
        if entry["schedules"]:
            assert dep.schedules[0].schedule.cron == entry["schedules"][0]["cron"]
        else:
            assert not dep.schedules
        assert dep.concurrency_limit == 1


def _scheduled_runs(client: Any, deployment_id: Any) -> list[Any]:
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    return list(
        client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))
            ),
        )
    )


def test_cron_deployment_from_prefect_yaml_gets_scheduled_runs(prefect_server: Any) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    names = [
        d["name"]
        for d in yaml.safe_load(PREFECT_YAML.read_text())["deployments"]
        if d["name"].startswith("backup-")
    ]
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=WORK_POOL, type="process"))
        except ObjectAlreadyExists:
            pass
    env = {**os.environ, "PREFECT_API_URL": prefect_server.api_url}
    argv = [sys.executable, "-m", "prefect", "--no-prompt", "deploy"]
    restore = names[0].replace("backup-", "restore-", 1)
    for name in [*names, restore]:
        argv += ["-n", name]
    out = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(f"scheduled_backup/{names[0]}")
        assert deployment.global_concurrency_limit is not None
        assert deployment.global_concurrency_limit.limit == 1
        assert deployment.parameters["job"]["job"] == names[0].removeprefix("backup-")
        assert deployment.schedules and deployment.schedules[0].active
        restore_dep = client.read_deployment_by_name(f"restore_backup/{restore}")
        assert restore_dep.parameters["options"]["dry_run"] is True and not restore_dep.schedules
        runs: list[Any] = []
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            runs = _scheduled_runs(client, deployment.id)
            if runs:
                break
            time.sleep(2)
        assert runs, "the server's scheduler created no runs for a cron deployment (check the sqlalchemy pin)"
        assert all(r.state and r.state.is_scheduled() for r in runs)
        entries = {d["name"]: d for d in yaml.safe_load(PREFECT_YAML.read_text())["deployments"]}
        cron = entries[names[0]]["schedules"][0]["cron"]
        minute = int(cron.split()[0])
        assert all(r.expected_start_time and r.expected_start_time.minute == minute for r in runs)
