"""Shared host mount points: a pod leaving must not unmount another pod's volume (real kernel, unshare)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from sandbox.runtime import mountpoints


def _holder(source: Path, target: Path) -> subprocess.Popen[bytes]:
    """A process in its own mount namespace with ``source`` bound at ``target`` (like a pod holder)."""
    script = f"mount --bind {source} {target} && echo ready && exec sleep 60"
    proc = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    return proc


def test_mount_point_used_by_a_pod_of_another_cluster_is_kept(tmp_path: Path) -> None:
    volume = tmp_path / "other-pod-volume"
    volume.mkdir()
    (volume / "tls.crt").write_text("cert")
    created = mountpoints.ensure(tmp_path / "etc" / "etcd" / "tls", directory=True)
    assert created == [tmp_path / "etc" / "etcd" / "tls", tmp_path / "etc" / "etcd", tmp_path / "etc"]
    other = _holder(volume, created[0])  # a pod that the leaving pod's kubelet does not know
    try:
        # the leaving pod's own kubelet sees no user of the path: only the machine-wide check keeps it
        assert mountpoints.remove_unused(created, still_used=set()) == []
        seen = subprocess.run(
            ["nsenter", "-t", str(other.pid), "-m", "cat", str(created[0] / "tls.crt")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert seen.stdout == "cert", seen.stderr
    finally:
        other.kill()
        other.wait()
    deadline = time.monotonic() + 5
    while str(created[0]) in mountpoints.mounted_anywhere() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mountpoints.remove_unused(created, still_used=set()) == created
    assert not (tmp_path / "etc").exists()
    assert (volume / "tls.crt").read_text() == "cert"
