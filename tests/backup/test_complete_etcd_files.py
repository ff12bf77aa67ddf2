"""Issue 18: etcd snapshots (key count, revision) and file backups (count, bytes, tree digest)
prove completeness like databases: the manifest's inventory is compared on every restore.

Real etcd (session cluster) and the local file system; the tasks run directly.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from backup.helpers import make_tree
from planning.backup_config import parse_job
from tasks.backup_jobs import Resolved, dump_to_storages, new_backup_id, preflight_source
from tasks.backup_publish import build_manifest
from tasks.backup_storage import LocalStorage
from tasks.restore_checks import RestoreIncomplete, etcd_backup_inventory
from tasks.restore_jobs import restore_selected, select_backup


def _job(tmp_path: Path, kind: str, source: dict[str, Any], block: Any = None) -> Resolved:
    job = parse_job(
        {
            "job": "complete",
            "type": kind,
            "sources": [source],
            "storages": [{"storage": "local", "backup_dir": str(tmp_path / "b")}],
        }
    )
    label = job.storage_labels[0]
    r = Resolved(job, source_block=block, storages={label: LocalStorage(tmp_path / "b", label)})
    r.storage_configs = {label: job.enabled_storages[0]}
    return r


def _backup_unverified(r: Resolved, inventory: Any) -> str:
    """Dump and publish without verification; ``inventory(parts, bid)`` gives the manifest's."""
    label = next(iter(r.storages))
    bid = new_backup_id(dt.datetime.now(dt.UTC))
    facts = preflight_source.fn(r)
    parts, failed = dump_to_storages.fn(r, bid, facts, [label])
    assert not failed
    now = dt.datetime.now(dt.UTC)
    inv = inventory(parts, bid)
    r.storages[label].publish(
        "complete", bid, build_manifest(r, bid, now, now, parts, facts, None, None, inv)
    )
    return bid


def _restore(r: Resolved, target: Path, etcd: dict[str, Any] | None = None) -> dict[str, Any]:
    sel = select_backup.fn(r, "latest", None)
    return restore_selected.fn(
        r,
        sel,
        target_database=None,
        target_block=None,
        target_dir=str(target),
        overwrite=False,
        etcd=etcd or {},
    )


def _tamper(tmp_path: Path, section: str, key: str, value: Any) -> None:
    (path,) = (tmp_path / "b" / "complete").glob("*/manifest.json")
    manifest = json.loads(path.read_text())
    manifest["inventory"][section][key] = value
    path.write_text(json.dumps(manifest))


def test_complete_etcd_snapshot_inventory_compared_on_restore(etcd3: Any, tmp_path: Path) -> None:
    """Without verification the manifest still records key count and revision; a restore compares
    the snapshot and the restored data dir with them, and refuses a snapshot that differs."""
    from blocks.etcd import EtcdCluster

    for i in range(3):
        subprocess.run(
            ["etcdctl", f"--endpoints={','.join(etcd3.client_urls)}", "put", f"/complete/k{i}", f"v{i}"],
            check=True,
            capture_output=True,
            env={**os.environ, "ETCDCTL_API": "3"},
        )
    r = _job(tmp_path, "etcd", {"connect": {"block": "unused"}}, EtcdCluster(endpoints=etcd3.endpoints))
    storage = next(iter(r.storages.values()))

    def inventory(parts: Any, bid: str) -> dict[str, Any]:
        return {"etcd": etcd_backup_inventory.fn(storage, "complete", bid, parts[0].name)}

    _backup_unverified(r, inventory)
    done = _restore(r, tmp_path / "r1.etcd")
    want = done["inventory"]["expected"]["etcd"]
    assert want["totalKey"] > 0 and want["revision"] > 0
    assert done["inventory"]["restored"]["etcd"] == want

    _tamper(tmp_path, "etcd", "revision", want["revision"] + 5)
    with pytest.raises(RestoreIncomplete) as err:
        _restore(r, tmp_path / "r2.etcd")
    assert f"etcd: revision is {want['revision']} restored, {want['revision'] + 5} in the source" in str(
        err.value
    )
    assert not (tmp_path / "r2.etcd").exists()  # nothing restored


def test_complete_files_inventory_compared_on_restore(tmp_path: Path) -> None:
    """File count, bytes and tree digest of the manifest are compared after extraction."""
    src = tmp_path / "src" / "www"
    src.mkdir(parents=True)
    make_tree(src)
    r = _job(tmp_path, "desc_files", {"target": [str(src)]})

    def inventory(parts: Any, bid: str) -> dict[str, Any]:
        keys = ("file_count", "total_bytes", "tree_sha256")
        return {"files": {k: parts[0].info[k] for k in keys}}

    _backup_unverified(r, inventory)
    done = _restore(r, tmp_path / "out1")
    assert done["inventory"]["restored"]["files"] == done["inventory"]["expected"]["files"]
    assert done["inventory"]["expected"]["files"]["file_count"] == 5

    _tamper(tmp_path, "files", "file_count", 6)
    with pytest.raises(RestoreIncomplete, match="files: file count is 5 restored, 6 in the source"):
        _restore(r, tmp_path / "out2")
