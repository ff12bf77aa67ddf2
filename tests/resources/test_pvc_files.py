"""Files of a PersistentVolumeClaim (issue 15): the mover Job of app_migration packs the claim
read-only in the cluster, the backup streams it to local + S3; restores unpack it into a new (or
empty) claim and must reach the backup's tree checksum.

Real parts: the resource sandbox (API server, Job controller, kubelet running the mover), SeaweedFS
S3, the session's Prefect server; the worker module against real S3 for ``--only``.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from blocks.kube import KubeCluster
from flows.backup import scheduled_backup
from flows.restore import restore_backup
from planning.backup_config import parse_job
from stateferry.errors import InputError, PreconditionFailed
from stateferry.worker.volume import tree_checksum
from tasks.kube_export import KubeRest

from .conftest import pv_dir, read_tree, write_tree

TREE = {
    "uploads/2024/logo.png": bytes(range(256)) * 30,
    "uploads/readme.txt": b"uploads\n",
    "config/settings.yml": b"a: 1\n",
    "cache/big.tmp": b"x" * 5000,  # not in paths: never leaves the cluster
}


def _claim(rest: KubeRest, ns: str, name: str) -> Path:
    rest.request(
        "POST",
        f"/api/v1/namespaces/{ns}/persistentvolumeclaims",
        body={
            "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        },
    )
    return pv_dir(rest, ns, name)


def _worker(args: list[str], store: Any) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "STATEFERRY_S3_ENDPOINT": store.url,
        "STATEFERRY_S3_ACCESS_KEY": store.access_key,
        "STATEFERRY_S3_SECRET_KEY": store.secret_key.get_secret_value(),
    }
    return subprocess.run(
        [sys.executable, "-m", "stateferry.worker.volume", *args], env=env, capture_output=True, text=True
    )


def test_pvc_files_worker_packs_only_the_listed_paths(tmp_path: Path, object_store_a: Any) -> None:
    """``pack --only`` archives the listed paths (checksum over them only); ``unpack --only``
    reaches the same checksum; a path through a symlink is refused (it could leave the volume)."""
    from tasks.archive_store import ensure_bucket, get_json

    ensure_bucket(object_store_a, "pvc-worker")
    src, dst = tmp_path / "src", tmp_path / "dst"
    write_tree(src, TREE)
    only = ["--only", "uploads", "--only", "config"]
    packed = _worker(
        ["pack", "--dir", str(src), "--bucket", "pvc-worker", "--key", "k.tar.gz", *only], object_store_a
    )
    assert packed.returncode == 0, packed.stderr
    rec = get_json(object_store_a, "pvc-worker", "k.tar.gz.result.json")
    assert (
        rec["files"] == 3
        and rec["sha256_tree"] == tree_checksum(src, only=["uploads", "config"])["sha256_tree"]
    )
    unpack = ["unpack", "--dir", str(dst), "--bucket", "pvc-worker", "--key", "k.tar.gz"]
    unpack += ["--expect-sha256", rec["sha256_tree"], "--result-key", "r.json", *only]
    filled = _worker(unpack, object_store_a)
    assert filled.returncode == 0, filled.stderr
    assert read_tree(dst) == {k: v for k, v in TREE.items() if not k.startswith("cache/")}

    (src / "escape").symlink_to("/etc")
    bad = _worker(
        ["pack", "--dir", str(src), "--bucket", "pvc-worker", "--key", "b.tar.gz", "--only", "escape/ssl"],
        object_store_a,
    )
    assert bad.returncode == 1 and "is a symlink; refusing to follow it" in bad.stderr


@pytest.mark.parametrize("only", [[], ["uploads", "config"]])
def test_pvc_files_worker_replace_proves_the_copy_before_touching_the_volume(
    tmp_path: Path, object_store_a: Any, only: list[str]
) -> None:
    """``unpack --replace``: a wrong checksum leaves the volume as it was; the right one replaces
    the listed paths (or the whole volume) and keeps nothing of the mover's own directories."""
    from tasks.archive_store import ensure_bucket, get_json

    ensure_bucket(object_store_a, "pvc-worker")
    src, dst = tmp_path / "src", tmp_path / "dst"
    write_tree(src, TREE)
    write_tree(dst, {"uploads/old.txt": b"old", "config/settings.yml": b"b: 2\n", "other/keep": b"k"})
    flags = [f"--only={p}" for p in only]
    key = f"r{len(only)}.tar.gz"
    packed = _worker(
        ["pack", "--dir", str(src), "--bucket", "pvc-worker", "--key", key, *flags], object_store_a
    )
    assert packed.returncode == 0, packed.stderr
    want = get_json(object_store_a, "pvc-worker", key + ".result.json")["sha256_tree"]
    before = read_tree(dst)

    def unpack(expect: str) -> subprocess.CompletedProcess[str]:
        args = ["unpack", "--dir", str(dst), "--bucket", "pvc-worker", "--key", key, "--replace"]
        return _worker([*args, "--expect-sha256", expect, "--result-key", "rr.json", *flags], object_store_a)

    wrong = unpack("0" * 64)
    assert wrong.returncode == 1 and "the volume was not touched" in wrong.stderr
    assert read_tree(dst) == before and sorted(os.listdir(dst)) == ["config", "other", "uploads"]
    done = unpack(want)
    assert done.returncode == 0, done.stderr
    assert get_json(object_store_a, "pvc-worker", "rr.json")["status"] == "replaced"
    expected = {k: v for k, v in TREE.items() if not only or k.split("/")[0] in only}
    if only:
        expected["other/keep"] = b"k"  # not a listed path: untouched
    assert read_tree(dst) == expected
    assert tree_checksum(dst, only=only or None)["sha256_tree"] == want
    assert not [n for n in os.listdir(dst) if n.startswith(".stateferry-")]


@pytest.mark.parametrize(
    ("source", "field"),
    [
        ({"pvc": "../x", "connect": {"block": "k"}}, "sources[0].pvc"),
        ({"pvc": "Apps/data", "connect": {"block": "k"}}, "sources[0].pvc"),
        ({"pvc": "apps/data/x", "connect": {"block": "k"}}, "sources[0].pvc"),
        ({"pvc": "apps/-data", "connect": {"block": "k"}}, "sources[0].pvc"),
        ({"pvc": "apps/data", "paths": ["../etc"], "connect": {"block": "k"}}, "sources[0].paths"),
        ({"pvc": "apps/data", "paths": ["/var/www"], "connect": {"block": "k"}}, "sources[0].paths"),
        ({"pvc": "apps/data", "paths": ["a", "a/b"], "connect": {"block": "k"}}, "sources[0].paths"),
    ],
)
def test_pvc_files_names_and_paths_refused(source: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_job(
            {
                "job": "p",
                "type": "files",
                "sources": [source],
                "storages": [{"storage": "s3", "object_store": "s", "bucket_name": "bkt"}],
            }
        )
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("paths", "sha"),
    [(["../../etc"], "a" * 64), (["/etc"], "a" * 64), (["uploads"], "--expect-sha256=x")],
)
def test_pvc_files_restore_refuses_manifest_paths_and_checksums_that_are_not_plain(
    tmp_path: Path, paths: list[str], sha: str
) -> None:
    """A manifest read back from storage cannot hand the fill Job a path outside the volume or an
    option: refused before any cluster call (no cluster is even given here)."""
    from tasks.pvc_backup import restore_pvc
    from tasks.restore_checks import InventoryCheck

    part = {"tree_sha256": sha}
    manifest: dict[str, Any] = {"engine": "pvc", "source": {"paths": paths}, "parts": [part]}
    with pytest.raises(InputError) as caught:
        restore_pvc(None, tmp_path / "part", manifest, part, "ns/x", InventoryCheck(manifest))
    assert caught.value.field == "backup"


def test_pvc_files_need_an_s3_storage() -> None:
    with pytest.raises(InputError, match="needs an S3 storage"):
        parse_job(
            {
                "job": "p",
                "type": "files",
                "sources": [{"pvc": "apps/data", "connect": {"block": "k"}}],
                "storages": [{"storage": "local", "backup_dir": "/b"}],
            }
        )


def test_pvc_files_backup_to_local_and_s3_restore_into_new_and_empty_claims(
    prefect_server: Any,
    object_store_a: Any,
    source_kube: KubeCluster,
    source_rest: KubeRest,
    tmp_path: Path,
) -> None:
    uid = secrets.token_hex(3)
    ns = f"pvcb-{uid}"
    source_rest.request("POST", "/api/v1/namespaces", body={"metadata": {"name": ns}})
    src_dir = _claim(source_rest, ns, "app-files")
    write_tree(src_dir, TREE)
    os.chown(src_dir / "config" / "settings.yml", 999, 999)
    os.chmod(src_dir / "config" / "settings.yml", 0o600)  # only root with DAC_READ_SEARCH reads it
    source_kube.save(f"kube-{uid}", overwrite=True)
    object_store_a.save(f"s3-{uid}", overwrite=True)
    job: dict[str, Any] = {
        "job": f"pvc-{uid}",
        "type": "files",
        "sources": [
            {"pvc": f"{ns}/app-files", "paths": ["uploads", "config"], "connect": {"block": f"kube-{uid}"}}
        ],
        "storages": [
            {"storage": "local", "name": "local", "backup_dir": str(tmp_path / "b")},
            {"storage": "s3", "name": "s3", "object_store": f"s3-{uid}", "bucket_name": "pvc-backups"},
        ],
        "verify": True,
    }

    result = scheduled_backup(job)

    assert sorted(result["good"]) == ["local", "s3"], result["failed"]
    want = tree_checksum(src_dir, only=["config", "uploads"])
    assert result["inventory"]["files"] == {
        "file_count": 3,
        "total_bytes": sum(len(v) for k, v in TREE.items() if not k.startswith("cache/")),
        "tree_sha256": want["sha256_tree"],
    }
    assert result["verification"]["result"] == "ok"
    (manifest_path,) = (tmp_path / "b" / job["job"]).glob("*/manifest.json")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["engine"] == "pvc" and manifest["source"]["pvc"] == f"{ns}/app-files"
    staged = [
        o.object_name for o in object_store_a.minio_client().list_objects("pvc-backups", recursive=True)
    ]
    assert not any(".mover-" in k for k in staged)  # the staging objects are gone
    assert (src_dir / "config" / "settings.yml").stat().st_uid == 999  # the source was only read

    # into a new claim (created like the source's), from the S3 copy
    done = restore_backup(job, storage="s3", target_pvc=f"{ns}/restored")
    assert done["created"] is True and done["tree"]["tree_sha256"] == want["sha256_tree"]
    new_dir = pv_dir(source_rest, ns, "restored")
    assert read_tree(new_dir) == {k: v for k, v in TREE.items() if not k.startswith("cache/")}
    assert (new_dir / "config" / "settings.yml").stat().st_uid == 999
    again = restore_backup(job, target_pvc=f"{ns}/restored")  # a re-run finds the data in place
    assert again["status"] == "already-present"

    # an existing claim holding other data is never written; overwrite is not offered
    other = _claim(source_rest, ns, "busy")
    (other / "keep.txt").write_bytes(b"mine")
    with pytest.raises(PreconditionFailed, match="holds other data"):
        restore_backup(job, target_pvc=f"{ns}/busy")
    assert read_tree(other) == {"keep.txt": b"mine"}
    # explicitly replaced: the listed paths are swapped in after the copy was proven; others stay
    (other / "uploads").mkdir()
    (other / "uploads" / "stale.txt").write_bytes(b"stale")
    done = restore_backup(job, target_pvc=f"{ns}/busy", overwrite=True, auto_approve=True)
    assert done["status"] == "replaced" and done["tree"]["tree_sha256"] == want["sha256_tree"]
    restored = {k: v for k, v in TREE.items() if not k.startswith("cache/")}
    assert read_tree(other) == {**restored, "keep.txt": b"mine"}
    with pytest.raises(InputError, match="target_pvc"):
        restore_backup(job, target_pvc="Busy/../x")
