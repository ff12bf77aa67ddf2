"""The data-mover worker module (``python -m stateferry.worker.volume``) against a real S3 server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stateferry.worker.volume import tree_checksum

from .conftest import read_tree, write_tree

FILES = {"a.txt": b"alpha", "sub/b.bin": bytes(range(256)) * 9, "sub/deeper/c": b""}


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
        timeout=60,
    )


@pytest.mark.parametrize(
    ("change", "same"),
    [
        (lambda root: None, True),
        (lambda root: (root / "lost+found").mkdir(), True),
        (lambda root: (root / "a.txt").write_bytes(b"alphA"), False),
        (lambda root: (root / "a.txt").chmod(0o600), False),
        (lambda root: (root / "sub" / "new").mkdir(), False),
        (lambda root: (root / "link").symlink_to("a.txt"), False),
    ],
)
def test_tree_checksum(tmp_path: Path, change: Any, same: bool) -> None:
    write_tree(tmp_path, FILES)
    before = tree_checksum(tmp_path)
    change(tmp_path)
    assert (tree_checksum(tmp_path)["sha256_tree"] == before["sha256_tree"]) is same
    assert before["files"] == 3 and before["bytes"] == sum(len(v) for v in FILES.values())


def test_pack_unpack_roundtrip_and_refusals(tmp_path: Path, object_store_a: Any) -> None:
    from tasks.archive_store import ensure_bucket, get_json

    bucket = "worker-test"
    ensure_bucket(object_store_a, bucket)
    src, dst = tmp_path / "src", tmp_path / "dst"
    write_tree(src, FILES)
    packed = _worker(["pack", "--dir", str(src), "--bucket", bucket, "--key", "v/x.tar.gz"], object_store_a)
    assert packed.returncode == 0, packed.stderr
    record = get_json(object_store_a, bucket, "v/x.tar.gz.result.json")
    assert record["sha256_tree"] == tree_checksum(src)["sha256_tree"] and record["files"] == 3

    args = [
        "unpack",
        "--dir",
        str(dst),
        "--bucket",
        bucket,
        "--key",
        "v/x.tar.gz",
        "--expect-sha256",
        record["sha256_tree"],
        "--result-key",
        "v/r1.json",
    ]
    first = _worker(args, object_store_a)
    assert first.returncode == 0, first.stderr
    assert read_tree(dst) == FILES
    assert get_json(object_store_a, bucket, "v/r1.json")["status"] == "filled"
    again = _worker(args, object_store_a)  # a re-run over the filled volume is a no-op
    assert (
        again.returncode == 0 and get_json(object_store_a, bucket, "v/r1.json")["status"] == "already-present"
    )

    (dst / "a.txt").write_bytes(b"changed")  # a volume with other data is never overwritten
    refused = _worker(args, object_store_a)
    assert (
        refused.returncode == 1
        and "is not empty" in refused.stderr
        and "refusing to overwrite" in refused.stderr
    )
    assert (dst / "a.txt").read_bytes() == b"changed"

    wrong_args = [
        "unpack",
        "--dir",
        str(tmp_path / "dst2"),
        "--bucket",
        bucket,
        "--key",
        "v/x.tar.gz",
        "--expect-sha256",
        "0" * 64,
        "--result-key",
        "v/r2.json",
    ]
    wrong = _worker(wrong_args, object_store_a)  # checksum mismatch: exit 1 and a failed record
    assert wrong.returncode == 1
    assert get_json(object_store_a, bucket, "v/r2.json")["ok"] is False
