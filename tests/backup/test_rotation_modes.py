"""Issue 15: count retention and rotation off on real storages; the S3 probe on a real server."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from planning.backup_config import parse_job
from tasks.backup_jobs import Resolved
from tasks.backup_publish import rotate_storage
from tasks.backup_storage import LocalStorage, S3Storage

NOW = dt.datetime(2026, 3, 10, 12, tzinfo=dt.UTC)


def _local(tmp_path: Path, store: dict[str, Any]) -> tuple[Resolved, list[str]]:
    job = parse_job(
        {
            "job": "rot",
            "type": "files",
            "sources": [{"target": ["/tmp"]}],
            "storages": [{"storage": "local", "backup_dir": str(tmp_path), "store": store}],
        }
    )
    label = job.storage_labels[0]
    storage = LocalStorage(tmp_path, label)
    ids = []
    for days_ago in (40, 20, 3, 0):  # four good backups
        t = NOW - dt.timedelta(days=days_ago)
        bid = t.strftime("%Y%m%dT%H%M%SZ") + "-abcdef"
        writer = storage.open_part("rot", bid, "files.tar.gz")
        writer.write(b"x")
        writer.commit()
        storage.publish("rot", bid, {"status": "good", "started": t.isoformat(), "parts": []})
        ids.append(bid)
    r = Resolved(job, storages={label: storage})
    r.storage_configs = {label: job.enabled_storages[0]}
    return r, ids


def _left(r: Resolved) -> list[str]:
    return sorted(b.backup_id for b in next(iter(r.storages.values())).list_backups("rot"))


def test_count_retention_keeps_the_newest_on_a_local_storage(tmp_path: Path) -> None:
    r, ids = _local(tmp_path, {"count": 2})
    plan = rotate_storage.fn(r, next(iter(r.storages)), NOW, ids[-1])
    assert sorted(plan.delete) == ids[:2] and _left(r) == ids[2:]


def test_count_retention_rotation_off_deletes_nothing(tmp_path: Path) -> None:
    r, ids = _local(tmp_path, {"days": 1, "weeks": 0, "months": 0, "rotation": False})
    plan = rotate_storage.fn(r, next(iter(r.storages)), NOW, ids[-1])
    assert plan.delete == [] and "Rotation is off" in plan.to_markdown() and _left(r) == ids


def test_s3_probe_uses_one_fixed_key(object_store_a: Any) -> None:
    """On a bucket that allows everything the probe leaves nothing and warns about nothing."""
    s3 = S3Storage(object_store_a, "probe", "p")
    assert s3.check_writable("j") == [] and s3.check_writable("j", rotation=False) == []
    client = object_store_a.minio_client()
    assert list(client.list_objects("probe", prefix="p/", recursive=True)) == []
