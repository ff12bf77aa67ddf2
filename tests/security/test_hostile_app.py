"""Hostile-input tests of application migration's data mover (issue 11, finding 10: mover parts)."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import tarfile
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from resources.conftest import (  # noqa: F401 - fixtures (tests/ is the import root)
    pv_dir,
    rsandbox,
    source_kube,
    source_rest,
)

from tasks.kube_export import KubeRest

pytestmark = pytest.mark.timeout(240)


def _worker(args: list[str], store: Any) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "STATEFERRY_S3_ENDPOINT": store.url,
        "STATEFERRY_S3_ACCESS_KEY": store.access_key,
        "STATEFERRY_S3_SECRET_KEY": store.secret_key.get_secret_value(),
    }
    return subprocess.run(
        [sys.executable, "-m", "stateferry.worker.volume", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _bucket(store: Any, name: str) -> str:
    from tasks.archive_store import ensure_bucket

    ensure_bucket(store, name)
    return name


def test_hostile_app_mover_checksum_keeps_modes_and_fifos(tmp_path: Path, object_store_a: Any) -> None:
    """A 0664 file, a setgid directory and a FIFO: the copy keeps them and the checksums agree
    (main's `filter="data"` changed the mode after the checksum and stopped at the FIFO)."""
    from tasks.archive_store import get_json

    bucket = _bucket(object_store_a, "hostile-app-modes")
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "shared").mkdir(parents=True)
    (src / "shared" / "upload.txt").write_bytes(b"group-writable")
    os.chmod(src / "shared" / "upload.txt", 0o664)
    os.chmod(src / "shared", 0o2775)
    os.mkfifo(src / "shared" / "queue.fifo")
    (src / "after-the-fifo.txt").write_bytes(b"still copied")
    packed = _worker(["pack", "--dir", str(src), "--bucket", bucket, "--key", "m.tar.gz"], object_store_a)
    assert packed.returncode == 0, packed.stderr
    expect = get_json(object_store_a, bucket, "m.tar.gz.result.json")["sha256_tree"]
    args = ["unpack", "--dir", str(dst), "--bucket", bucket, "--key", "m.tar.gz", "--expect-sha256", expect]
    filled = _worker([*args, "--result-key", "m.fill.json"], object_store_a)
    assert filled.returncode == 0, filled.stderr
    rec = get_json(object_store_a, bucket, "m.fill.json")
    assert rec["ok"] is True and rec["sha256_tree"] == expect
    assert stat.S_IMODE(os.stat(dst / "shared" / "upload.txt").st_mode) == 0o664
    assert stat.S_IMODE(os.stat(dst / "shared").st_mode) == 0o2775
    assert stat.S_ISFIFO(os.lstat(dst / "shared" / "queue.fifo").st_mode)
    assert (dst / "after-the-fifo.txt").read_bytes() == b"still copied"


def test_hostile_app_mover_secret_is_its_own_and_dies_with_the_job(
    prefect_server: Any,
    object_store_a: Any,
    source_kube: Any,  # noqa: F811 - fixture
    source_rest: KubeRest,  # noqa: F811 - fixture
) -> None:
    """An application Secret named like main's fixed mover Secret is never touched; each mover Job
    gets a Secret of its own, owned by the Job, so a killed run leaves no credentials behind."""
    from tasks.volume_mover import pack_volumes

    rest = source_rest
    ns = f"hostile-sec-{int(time.time()) % 100000}"
    rest.request("POST", "/api/v1/namespaces", body={"metadata": {"name": ns}})
    app_secret = {"metadata": {"name": "stateferry-mover-s3"}, "stringData": {"password": "app-owned"}}
    rest.request("POST", f"/api/v1/namespaces/{ns}/secrets", body=app_secret)
    before = rest.request("GET", f"/api/v1/namespaces/{ns}/secrets/stateferry-mover-s3")
    rest.request(
        "POST",
        f"/api/v1/namespaces/{ns}/persistentvolumeclaims",
        body={
            "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        },
    )
    (pv_dir(rest, ns, "data") / "file.txt").write_bytes(b"payload")
    bucket = _bucket(object_store_a, "hostile-app-secret")
    out = pack_volumes(
        source_kube, "source", object_store_a, bucket, "p", "m", [(ns, "data")], "run-hostile-1"
    )
    assert out[0].status == "packed", out[0].reason
    after = rest.request("GET", f"/api/v1/namespaces/{ns}/secrets/stateferry-mover-s3")
    assert after["data"] == before["data"] and after["metadata"]["uid"] == before["metadata"]["uid"]

    # a run killed right after starting its mover: the Secret exists only as the Job's dependent
    from planning.mover_pod import mover_job_body
    from tasks.kube_dynamic import dynamic_client
    from tasks.volume_mover import launch_mover_job

    body = mover_job_body(
        "sf-pack-killed", ns, "data", ["checksum", "--dir", "/stateferry-volume"], object_store_a.url,
        object_store_a.region, "stateferry/worker:latest", "run-hostile-2", "sf-pack-killed-s3-abc123",
    )  # fmt: skip
    job_uid, secret = launch_mover_job(dynamic_client(source_kube.api_client()), body, object_store_a)
    assert secret != "stateferry-mover-s3"
    sec = rest.request("GET", f"/api/v1/namespaces/{ns}/secrets/{secret}")
    assert [(r["kind"], r["uid"]) for r in sec["metadata"]["ownerReferences"]] == [("Job", job_uid)]
    job = rest.request("GET", f"/apis/batch/v1/namespaces/{ns}/jobs/sf-pack-killed")
    assert job["spec"]["ttlSecondsAfterFinished"] > 0 and job["spec"]["activeDeadlineSeconds"] > 0
    assert "password" not in str(job) and object_store_a.secret_key.get_secret_value() not in str(job)
    # what ttlSecondsAfterFinished does once the Job ends: the Job goes, and its Secret with it
    rest.request(
        "DELETE",
        f"/apis/batch/v1/namespaces/{ns}/jobs/sf-pack-killed",
        body={"propagationPolicy": "Background"},
    )
    deadline = time.monotonic() + 30
    while rest.get_or_none(f"/api/v1/namespaces/{ns}/secrets/{secret}") and time.monotonic() < deadline:
        time.sleep(0.3)
    assert rest.get_or_none(f"/api/v1/namespaces/{ns}/secrets/{secret}") is None
    names = [s["metadata"]["name"] for s in rest.request("GET", f"/api/v1/namespaces/{ns}/secrets")["items"]]
    assert names == ["stateferry-mover-s3"]  # only the application's own


def _cve_2025_4517_archive(dest: Path) -> bytes:
    """The symlink + PATH_MAX escape of CVE-2025-4517 (CPython's own regression test), tar form."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(name: str, kind: bytes, link: str = "", data: bytes = b"", mode: int = 0o644) -> None:
            ti = tarfile.TarInfo(name)
            ti.type, ti.linkname, ti.mode, ti.size = kind, link, mode, len(data)
            tar.addfile(ti, io.BytesIO(data) if data else None)

        steps = "abcdefghijklmnop"
        max_path = os.pathconf(dest.parent, "PC_PATH_MAX")
        component = "d" * ((max_path - len(str(dest)) - 1) // (len(steps) + 1))
        path = ""
        for step in steps:
            add(os.path.join(path, component), tarfile.DIRTYPE, mode=0o777)
            add(os.path.join(path, step), tarfile.SYMTYPE, link=component)
            path = os.path.join(path, component)
        linkpath = os.path.join(*steps, "l" * 254)
        add(linkpath, tarfile.SYMTYPE, link=os.path.join(*[".."] * len(steps)))
        add("escape", tarfile.SYMTYPE, link=os.path.join(linkpath, ".."))
        add("flaglink", tarfile.LNKTYPE, link=os.path.join("escape", "flag"))
        add("flaglink", tarfile.REGTYPE, data=b"overwrite")
        add("escape/newfile", tarfile.REGTYPE, data=b"new")
    return buf.getvalue()


def _simple_archive(members: list[tuple[str, bytes, str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, link, data in members:
            ti = tarfile.TarInfo(name)
            ti.type, ti.linkname, ti.size = kind, link, len(data)
            if kind == tarfile.CHRTYPE:
                ti.devmajor, ti.devminor = 1, 3
            tar.addfile(ti, io.BytesIO(data) if data else None)
    return buf.getvalue()


def test_hostile_app_mover_tar_members_checked_before_extraction(tmp_path: Path, object_store_a: Any) -> None:
    """Archives in the bucket are untrusted: the CVE-2025-4517 escape (which `filter="data"` lets
    through on Python 3.11 < 3.11.13), absolute and `..` names and links out of the target are
    refused before GNU tar sees them; device nodes are dropped and reported, never created."""
    from tasks.archive_store import get_json

    bucket = _bucket(object_store_a, "hostile-app-tar")
    outer = tmp_path / "outer"
    cases: dict[str, bytes] = {
        "cve-2025-4517": b"",
        "absolute": _simple_archive([("/tmp/absolute-evil", tarfile.REGTYPE, "", b"x")]),
        "dotdot": _simple_archive(
            [("ok.txt", tarfile.REGTYPE, "", b"ok"), ("a/../../evil", tarfile.REGTYPE, "", b"x")]
        ),
        "hardlink-out": _simple_archive([("pw", tarfile.LNKTYPE, "/etc/hostname", b"")]),
        "through-symlink": _simple_archive(
            [("up", tarfile.SYMTYPE, "..", b""), ("up/flag", tarfile.REGTYPE, "", b"overwrite")]
        ),
    }
    client = object_store_a.minio_client()
    for name, raw in cases.items():
        outer.mkdir(exist_ok=True)
        (outer / "flag").write_bytes(b"original")
        dest = outer / f"dest-{name}"
        dest.mkdir()
        if name == "cve-2025-4517":
            raw = _cve_2025_4517_archive(dest)
        gz = zlib.compressobj(wbits=31)
        data = gz.compress(raw) + gz.flush()
        client.put_object(bucket, f"{name}.tar.gz", io.BytesIO(data), len(data))
        res = _worker(
            [
                "unpack",
                "--dir",
                str(dest),
                "--bucket",
                bucket,
                "--key",
                f"{name}.tar.gz",
                "--result-key",
                f"{name}.json",
            ],
            object_store_a,
        )
        assert (outer / "flag").read_bytes() == b"original", (name, res.stderr)
        assert not (outer / "newfile").exists() and not (outer / "evil").exists(), name
        assert res.returncode == 1, (name, res.stdout, res.stderr)
        assert "refused" in res.stderr, (name, res.stderr)
        assert not Path("/tmp/absolute-evil").exists()
        rec = get_json(object_store_a, bucket, f"{name}.json")
        assert rec["ok"] is False and "refused" in rec["error"], name

    dev = _simple_archive([("null", tarfile.CHRTYPE, "", b""), ("data.txt", tarfile.REGTYPE, "", b"kept")])
    gz = zlib.compressobj(wbits=31)
    data = gz.compress(dev) + gz.flush()
    client.put_object(bucket, "device.tar.gz", io.BytesIO(data), len(data))
    dest = tmp_path / "dest-device"
    res = _worker(
        [
            "unpack",
            "--dir",
            str(dest),
            "--bucket",
            bucket,
            "--key",
            "device.tar.gz",
            "--result-key",
            "device.json",
        ],
        object_store_a,
    )
    assert res.returncode == 0, res.stderr
    assert not (dest / "null").exists() and (dest / "data.txt").read_bytes() == b"kept"
    assert get_json(object_store_a, bucket, "device.json")["dropped"] == [["null", "device"]]
