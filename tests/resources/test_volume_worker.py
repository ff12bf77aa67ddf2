"""The data-mover worker module (``python -m stateferry.worker.volume``) against a real S3 server:
tree checksum, bulk + incremental copies with every piece of metadata the mover promises."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from stateferry.worker.volume import level_key, tree_checksum

from .conftest import read_tree, write_tree
from .volume_trees import build_cms_volume, tree_metadata

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
        timeout=120,
    )


def _mkdir_keep_mtime(root: Path) -> None:
    st = root.stat()
    (root / "lost+found").mkdir()
    os.utime(root, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize(
    ("change", "same"),
    [
        (lambda root: None, True),
        (_mkdir_keep_mtime, True),
        (lambda root: (root / "a.txt").write_bytes(b"alphA"), False),
        (lambda root: (root / "a.txt").chmod(0o600), False),
        (lambda root: os.chown(root / "a.txt", 999, 999), False),
        (lambda root: os.utime(root / "a.txt", ns=(0, 10**9)), False),
        (lambda root: os.setxattr(root / "a.txt", "user.k", b"v"), False),
        (lambda root: os.link(root / "a.txt", root / "sub" / "a-link"), False),
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

    def args(d: Path, expect: str, result: str) -> list[str]:
        return [
            "unpack",
            "--dir",
            str(d),
            "--bucket",
            bucket,
            "--key",
            "v/x.tar.gz",
            "--expect-sha256",
            expect,
            "--result-key",
            result,
        ]

    first = _worker(args(dst, record["sha256_tree"], "v/r1.json"), object_store_a)
    assert first.returncode == 0, first.stderr
    assert read_tree(dst) == FILES
    assert get_json(object_store_a, bucket, "v/r1.json")["status"] == "filled"
    again = _worker(args(dst, record["sha256_tree"], "v/r1.json"), object_store_a)  # a re-run: no-op
    assert again.returncode == 0
    assert get_json(object_store_a, bucket, "v/r1.json")["status"] == "already-present"

    (dst / "a.txt").write_bytes(b"changed")  # a volume with other data is never overwritten
    refused = _worker(args(dst, record["sha256_tree"], "v/r1.json"), object_store_a)
    assert (
        refused.returncode == 1
        and "is not empty" in refused.stderr
        and "refusing to overwrite" in refused.stderr
    )
    assert (dst / "a.txt").read_bytes() == b"changed"

    wrong = _worker(args(tmp_path / "dst2", "0" * 64, "v/r2.json"), object_store_a)
    assert wrong.returncode == 1  # checksum mismatch: exit 1 and a failed record
    assert get_json(object_store_a, bucket, "v/r2.json")["ok"] is False


def test_volume_fidelity_bulk_then_incremental(tmp_path: Path, object_store_a: Any) -> None:
    from tasks.archive_store import ensure_bucket, get_json

    bucket = "worker-fidelity"
    ensure_bucket(object_store_a, bucket)
    src, dst = tmp_path / "src", tmp_path / "dst"
    build_cms_volume(src)
    key = "v/cms.tar.gz"
    packed = _worker(["pack", "--dir", str(src), "--bucket", bucket, "--key", key], object_store_a)
    assert packed.returncode == 0, packed.stderr
    rec0 = get_json(object_store_a, bucket, key + ".result.json")
    assert sorted(map(tuple, rec0["skipped"])) == [("wp/null", "device"), ("wp/php.sock", "socket")]

    def unpack(level: int, expect: str, before: str = "") -> subprocess.CompletedProcess[str]:
        extra = ["--expect-before", before] if before else []
        return _worker(
            [
                "unpack",
                "--dir",
                str(dst),
                "--bucket",
                bucket,
                "--key",
                key,
                "--level",
                str(level),
                "--expect-sha256",
                expect,
                "--result-key",
                f"v/fill{level}.json",
                *extra,
            ],
            object_store_a,
        )

    filled = unpack(0, rec0["sha256_tree"])
    assert filled.returncode == 0, filled.stderr
    assert get_json(object_store_a, bucket, "v/fill0.json")["sha256_tree"] == rec0["sha256_tree"]
    assert tree_metadata(dst) == tree_metadata(src)  # owners, modes, times, links, xattrs, ACLs, empty dirs
    assert os.stat(dst / "wp" / "index.php").st_ino == os.stat(dst / "wp" / "uploads" / "hardlink.php").st_ino
    assert stat.S_ISFIFO(os.lstat(dst / "wp" / "pipe").st_mode)
    assert os.stat(dst / "wp" / "sparse.img").st_blocks * 512 < (1 << 20)  # still sparse
    assert not (dst / "wp" / "null").exists() and not (dst / "wp" / "php.sock").exists()

    # the application keeps writing; the second pass carries only the difference, deletions included
    (src / "wp" / "index.php").write_bytes(b"<?php echo 2;")
    os.chmod(src / "wp" / "index.php", 0o660)
    os.chmod(src / "mysql" / "shop", 0o750)
    os.chown(src / "wp" / "rel-link", 33, 33, follow_symlinks=False)
    (src / "mysql" / "shop" / "t.ibd").unlink()
    (src / "mysql" / "shop" / "t2.ibd").write_bytes(b"new rows")
    os.rename(src / "wp" / "uploads" / "empty", src / "wp" / "moved-empty")
    os.link(src / "mysql" / "shop" / "t2.ibd", src / "mysql" / "t2.link")
    delta = _worker(
        ["pack", "--dir", str(src), "--bucket", bucket, "--key", key, "--level", "1"], object_store_a
    )
    assert delta.returncode == 0, delta.stderr
    rec1 = get_json(object_store_a, bucket, level_key(key, 1) + ".result.json")
    size1 = object_store_a.minio_client().stat_object(bucket, level_key(key, 1)).size
    size0 = object_store_a.minio_client().stat_object(bucket, key).size
    assert size1 < 64 << 10 < (3 << 20) < size0, (size0, size1)  # the unchanged 3 MiB file is not sent again

    refused = unpack(1, rec1["sha256_tree"], before="0" * 64)  # the target must hold level 0 first
    assert refused.returncode == 1 and "refusing to apply a delta" in refused.stderr
    applied = unpack(1, rec1["sha256_tree"], before=rec0["sha256_tree"])
    assert applied.returncode == 0, applied.stderr
    assert tree_metadata(dst) == tree_metadata(src)
    assert not (dst / "mysql" / "shop" / "t.ibd").exists() and not (dst / "wp" / "uploads" / "empty").exists()
    assert tree_checksum(dst)["sha256_tree"] == tree_checksum(src)["sha256_tree"] == rec1["sha256_tree"]


def test_quiesce_real_mariadb_datadir_bulk_then_delta(tmp_path: Path, object_store_a: Any) -> None:
    """A real mariadbd's data directory (owner 999, 0700) copied while a writer inserts rows,
    then the server stops (quiesce) and the delta is applied: a mariadbd started on the copy
    holds every acknowledged row."""
    import threading

    import pymysql

    from devservers.mariadb import LocalMariaDB
    from tasks.archive_store import ensure_bucket, get_json

    bucket = "worker-mariadb"
    ensure_bucket(object_store_a, bucket)
    src = LocalMariaDB(tmp_path / "src").start()
    acked: list[int] = []
    stop = threading.Event()

    def connect() -> Any:
        return pymysql.connect(
            host=src.host, port=src.port, user="root", password=src.password, autocommit=True
        )

    with connect() as c, c.cursor() as cur:
        cur.execute("CREATE DATABASE shop")
        cur.execute("CREATE TABLE shop.t (id INT PRIMARY KEY, pad VARCHAR(200)) ENGINE=InnoDB")

    def writer() -> None:
        with connect() as c, c.cursor() as cur:
            i = 0
            while not stop.is_set():
                i += 1
                cur.execute("INSERT INTO shop.t VALUES (%s, %s)", (i, "x" * 200))
                acked.append(i)  # committed (autocommit) = acknowledged

    th = threading.Thread(target=writer)
    th.start()
    try:
        while len(acked) < 50:
            time.sleep(0.05)
        for dirpath, dirnames, filenames in os.walk(src.datadir):
            for n in [*dirnames, *filenames]:
                os.lchown(os.path.join(dirpath, n), 999, 999)
        os.chown(src.datadir, 999, 999)
        os.chmod(src.datadir, 0o700)
        key = ["--bucket", bucket, "--key", "db.tar.gz"]
        dst = tmp_path / "dst" / "data"
        bulk = _worker(["pack", "--dir", str(src.datadir), *key], object_store_a)  # while rows go in
        assert bulk.returncode == 0, bulk.stderr
        filled = _worker(["unpack", "--dir", str(dst), *key, "--result-key", "fill0.json"], object_store_a)
        assert filled.returncode == 0, filled.stderr
        rows_at_bulk = len(acked)
    finally:
        stop.set()
        th.join(30)
        src.stop()  # quiesce: a clean shutdown
    assert len(acked) > rows_at_bulk  # rows arrived after the bulk copy
    before = get_json(object_store_a, bucket, "fill0.json")["sha256_tree"]
    delta = _worker(["pack", "--dir", str(src.datadir), *key, "--level", "1"], object_store_a)
    assert delta.returncode == 0, delta.stderr
    expect = get_json(object_store_a, bucket, "db.tar.gz.level1.result.json")["sha256_tree"]
    args = ["unpack", "--dir", str(dst), *key, "--level", "1", "--expect-sha256", expect]
    applied = _worker([*args, "--expect-before", before, "--result-key", "fill1.json"], object_store_a)
    assert applied.returncode == 0, applied.stderr
    st = os.stat(dst)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (999, 999, 0o700)
    copy = LocalMariaDB(tmp_path / "dst")
    copy.password = src.password  # the copy holds the source's users
    copy.start()
    try:
        conn = pymysql.connect(host=copy.host, port=copy.port, user="root", password=copy.password)
        with conn, conn.cursor() as cur:
            cur.execute("SELECT id FROM shop.t ORDER BY id")
            assert [r[0] for r in cur.fetchall()] == acked
    finally:
        copy.cleanup()
        src.cleanup()


def test_volume_fidelity_checksum_cache_never_hides_a_change(tmp_path: Path) -> None:
    """The per-file cache of the delta pass skips unchanged files only: a same-size rewrite with
    the old mtime put back (ctime still moves) is read again."""
    write_tree(tmp_path, FILES)
    first = tree_checksum(tmp_path)
    assert tree_checksum(tmp_path, cache=first["sums"])["sha256_tree"] == first["sha256_tree"]
    st = os.stat(tmp_path / "a.txt")
    time.sleep(0.01)
    (tmp_path / "a.txt").write_bytes(b"ALPHA")
    os.utime(tmp_path / "a.txt", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert tree_checksum(tmp_path, cache=first["sums"])["sha256_tree"] != first["sha256_tree"]
    assert (
        tree_checksum(tmp_path, cache=first["sums"])["sha256_tree"] == tree_checksum(tmp_path)["sha256_tree"]
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            [["wp/php.sock", "socket"], ["wp/null", "device"]],
            [["wp/php.sock", "socket"], ["wp/null", "device"]],
        ),
        ("wp/php.sock", []),
        ([["a", 1], ["b"], "c", ["d", "socket", "x"], ["e", "fifo"]], [["e", "fifo"]]),
        ([["x" * 5000, "socket" * 10]], [["x" * 4096, ("socket" * 10)[:32]]]),
        ([["k", "socket"]] * 5000, [["k", "socket"]] * 1000),
    ],
)
def test_volume_fidelity_skipped_list_read_back_is_untrusted(value: Any, expected: list[list[str]]) -> None:
    """The 'not copied' list comes back from storage (manifest, mover record): only bounded
    ``[path, kind]`` string pairs are kept."""
    from tasks.volume_mover import VolumeResult

    assert VolumeResult.skipped_from(value) == expected
