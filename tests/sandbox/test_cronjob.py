"""CronJob schedules (pure, table-driven) and the controller against the sandbox's real API server."""

from __future__ import annotations

import datetime as dt
import uuid

import kubernetes.client
import pytest

from sandbox.runtime.cronjob import SCHEDULED_ANN, CronError, last_due, matches, parse_cron, sync_cronjobs
from sandbox.runtime.kube import Kube
from sandbox.runtime.world import World
from sandbox.testing import SandboxHandle

UTC = dt.UTC


def _t(s: str) -> dt.datetime:
    return dt.datetime.strptime(s, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("schedule", "when", "expected"),
    [
        ("* * * * *", "2026-11-22 01:07", True),
        ("*/15 * * * *", "2026-11-22 01:30", True),
        ("*/15 * * * *", "2026-11-22 01:31", False),
        ("0 2 * * *", "2026-11-22 02:00", True),
        ("@daily", "2026-11-22 00:00", True),
        ("@hourly", "2026-11-22 05:01", False),
        ("30 3 * * sun", "2026-11-22 03:30", True),  # 2026-11-22 is a Sunday
        ("30 3 * * 7", "2026-11-22 03:30", True),
        ("30 3 * * mon-fri", "2026-11-22 03:30", False),
        ("0 0 1 jan *", "2027-01-01 00:00", True),
        ("0 0 13 * 5", "2026-11-13 00:00", True),  # day-of-month OR day-of-week
        ("0 0 13 * 5", "2026-11-20 00:00", True),
        ("0 0 13 * 5", "2026-11-21 00:00", False),
        ("5,35 1-3/2 * * *", "2026-11-22 03:35", True),
        ("5,35 1-3/2 * * *", "2026-11-22 02:35", False),
    ],
)
def test_cron_matches(schedule: str, when: str, expected: bool) -> None:
    assert matches(parse_cron(schedule), _t(when)) is expected


@pytest.mark.parametrize("schedule", ["every day", "* * * *", "61 * * * *", "* * * * mon-xyz", "*/0 * * * *"])
def test_cron_rejects(schedule: str) -> None:
    with pytest.raises(CronError):
        parse_cron(schedule)


def test_last_due() -> None:
    spec = parse_cron("0 */6 * * *")
    assert last_due(spec, _t("2026-11-22 00:00"), _t("2026-11-22 13:59")) == _t("2026-11-22 12:00")
    assert last_due(spec, _t("2026-11-22 12:00"), _t("2026-11-22 13:59")) is None


def test_cronjob_controller_creates_due_jobs(sandbox: SandboxHandle) -> None:
    api = sandbox.api_client("target")
    assert isinstance(api, kubernetes.client.ApiClient)
    core, batch = kubernetes.client.CoreV1Api(api), kubernetes.client.BatchV1Api(api)
    ns = f"cron-{uuid.uuid4().hex[:6]}"
    later = dt.datetime.now(UTC) + dt.timedelta(minutes=11)  # due then, never while the test runs
    core.create_namespace({"metadata": {"name": ns}})  # type: ignore[arg-type]
    batch.create_namespaced_cron_job(
        ns,
        {  # type: ignore[arg-type]
            "metadata": {"name": "backup"},
            "spec": {
                "schedule": f"{later.minute} {later.hour} * * *",
                "concurrencyPolicy": "Forbid",
                "jobTemplate": {
                    "metadata": {"labels": {"app": "backup"}},
                    "spec": {
                        "suspend": True,  # stays active, so Forbid has something to forbid
                        "template": {
                            "spec": {
                                "restartPolicy": "Never",
                                "containers": [{"name": "c", "image": "busybox"}],
                            }
                        },
                    },
                },
            },
        },
    )
    kube = Kube(sandbox.target_url)
    world = World({"cronjobs": kube.list("cronjobs", ns)[0], "jobs": kube.list("jobs", ns)[0]})
    sync_cronjobs(kube, world, now=later)  # as if the controller ran 11 minutes from now
    jobs = kube.list("jobs", ns)[0]
    assert len(jobs) == 1
    job = jobs[0]
    due = dt.datetime.strptime(job["metadata"]["annotations"][SCHEDULED_ANN], "%Y-%m-%dT%H:%M:%SZ")
    assert (
        due.minute == later.minute
        and job["metadata"]["name"] == f"backup-{int(due.replace(tzinfo=UTC).timestamp() // 60)}"
    )
    assert job["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
    assert job["metadata"]["labels"] == {"app": "backup"}
    cj = batch.read_namespaced_cron_job("backup", ns)
    assert cj.status is not None and cj.status.active and cj.status.active[0].name == job["metadata"]["name"]
    # Forbid: no second Job while the first is active
    world = World({"cronjobs": kube.list("cronjobs", ns)[0], "jobs": kube.list("jobs", ns)[0]})
    sync_cronjobs(kube, world, now=later + dt.timedelta(days=1))
    assert len(kube.list("jobs", ns)[0]) == 1
