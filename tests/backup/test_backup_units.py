"""Fast tests of the streaming pieces: fan-out isolation, gzip integrity, MySQL database renames."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tasks.backup_pipeline import AllTargetsFailed, FanOutSink, stream_part
from tasks.backup_storage import LocalStorage
from tasks.dumpers import DumpFailed, redactor, run_dump, tar_producer, tree_digest
from tasks.restore_ops import RestoreFailed, decompress_chunks, rename_databases, restore_files

B1, B2 = "20260101T000000Z-0000b1", "20260102T000000Z-0000b2"


class _BrokenWriter:
    """A target whose disk fills up after ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit, self.n, self.aborted, self.committed = limit, 0, False, False

    def write(self, chunk: bytes) -> None:
        self.n += len(chunk)
        if self.n > self.limit:
            raise OSError(28, "No space left on device")

    def commit(self) -> None:
        self.committed = True

    def abort(self) -> None:
        self.aborted = True


def _producer(data: bytes, fail_at: int | None = None) -> Callable[[FanOutSink], dict[str, int]]:
    def produce(sink: FanOutSink) -> dict[str, int]:
        for i in range(0, len(data), 65536):
            if fail_at is not None and i >= fail_at:
                raise DumpFailed("mysqldump exited with status 2: Lost connection")
            sink.write(data[i : i + 65536])
        return {"bytes": len(data)}

    return produce


def test_failing_target_is_dropped_others_complete(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024)
    store = LocalStorage(tmp_path)
    broken = _BrokenWriter(limit=1024 * 1024)
    res = stream_part("p.gz", _producer(data), {"local": store.open_part("j", B1, "p.gz"), "bad": broken})
    assert res.committed == ["local"] and list(res.failed) == ["bad"] and "No space left" in res.failed["bad"]
    assert broken.aborted and not broken.committed
    stored = (tmp_path / "j" / f".partial-{B1}" / "p.gz").read_bytes()
    assert gzip.decompress(stored) == data
    assert res.sha256 == hashlib.sha256(stored).hexdigest() and res.size == len(stored)
    assert res.raw_sha256 == hashlib.sha256(data).hexdigest() and res.raw_size == len(data)


def test_producer_failure_aborts_every_target(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    other = _BrokenWriter(limit=1 << 40)
    with pytest.raises(DumpFailed):
        stream_part(
            "p.gz",
            _producer(os.urandom(1 << 20), fail_at=512 * 1024),
            {"local": store.open_part("j", B2, "p.gz"), "other": other},
        )
    assert other.aborted and not other.committed
    assert not (tmp_path / "j" / f".partial-{B2}" / "p.gz").exists()


def test_all_targets_failing_stops_the_producer() -> None:
    with pytest.raises(AllTargetsFailed, match="No space left"):
        stream_part(
            "p.gz", _producer(os.urandom(2 << 20)), {"a": _BrokenWriter(100), "b": _BrokenWriter(200)}
        )


@pytest.mark.parametrize(
    ("argv", "marker", "error"),
    [
        (["sh", "-c", "printf 'data\\n-- Dump completed on now\\n'"], b"-- Dump completed", None),
        (["sh", "-c", "printf 'partial'; echo 'boom: pw=hunter2' >&2; exit 2"], None, "exited with status 2"),
        (["sh", "-c", "printf 'data without the end'"], b"-- Dump completed", "incomplete"),
    ],
)
def test_run_dump_exit_status_and_completion_marker(
    argv: list[str], marker: bytes | None, error: str | None
) -> None:
    sink = io.BytesIO()
    if error is None:
        assert run_dump(argv, sink, complete_marker=marker)["bytes"] == len(sink.getvalue())
        return
    with pytest.raises(DumpFailed, match=error) as info:
        run_dump(argv, sink, complete_marker=marker, redact=redactor("hunter2"))
    assert "hunter2" not in str(info.value)


def test_truncated_gzip_is_detected() -> None:
    blob = gzip.compress(os.urandom(100_000))
    with pytest.raises(RestoreFailed, match="truncated"):
        b"".join(decompress_chunks(io.BytesIO(blob[: len(blob) // 2])))


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_parts_round_trip_and_truncation_is_detected(compression: str) -> None:
    from tasks.backup_pipeline import compressor

    raw = os.urandom(300_000) + b"row,row,row\n" * 200_000
    c = compressor(compression)
    blob = c.compress(raw) + c.flush()
    assert blob.startswith(b"\x28\xb5\x2f\xfd" if compression == "zstd" else b"\x1f\x8b")
    assert b"".join(decompress_chunks(io.BytesIO(blob))) == raw
    with pytest.raises(RestoreFailed, match="truncated"):
        b"".join(decompress_chunks(io.BytesIO(blob[: len(blob) - 20])))


def test_unknown_part_data_is_refused_and_a_bomb_stays_bounded() -> None:
    import zstandard

    with pytest.raises(RestoreFailed, match="neither gzip nor zstd"):
        b"".join(decompress_chunks(io.BytesIO(b"-- plain SQL is not a part\n")))
    # 2 GiB of zeros in a few hundred KiB: every chunk the decoder hands out stays small
    bomb = zstandard.ZstdCompressor(level=19).compressobj()
    zeros = b"\0" * (64 << 20)
    blob = b"".join(bomb.compress(zeros) for _ in range(32)) + bomb.flush()
    assert len(blob) < 1 << 20
    biggest = total = 0
    for chunk in decompress_chunks(io.BytesIO(blob)):
        biggest = max(biggest, len(chunk))
        total += len(chunk)
    assert total == 32 * len(zeros) and biggest <= 32 << 20


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"/*!40000 DROP DATABASE IF EXISTS `shop`*/;", b"/*!40000 DROP DATABASE IF EXISTS `copy`*/;"),
        (
            b"CREATE DATABASE /*!32312 IF NOT EXISTS*/ `shop` /*!40100 DEFAULT CHARACTER SET utf8mb4 */;",
            b"CREATE DATABASE /*!32312 IF NOT EXISTS*/ `copy` /*!40100 DEFAULT CHARACTER SET utf8mb4 */;",
        ),
        (b"USE `shop`;", b"USE `copy`;"),
        (b"-- Current Database: `shop`", b"-- Current Database: `copy`"),
        (b"USE `other`;", b"USE `other`;"),
        (b"INSERT INTO `t` VALUES ('USE `shop`;');", b"INSERT INTO `t` VALUES ('USE `shop`;');"),
        (b"USE `we``ird`;", b"USE `copy`;"),
    ],
)
def test_rename_databases(line: bytes, expected: bytes) -> None:
    mapping = {"shop": "copy", "we`ird": "copy"}
    # split the stream at awkward places: the rewrite must work across chunk boundaries
    stream = b"-- header\n" + line + b"\nSELECT 1;\n"
    chunks = [stream[i : i + 7] for i in range(0, len(stream), 7)]
    out = b"".join(rename_databases(iter(chunks), mapping))
    assert out == b"-- header\n" + expected + b"\nSELECT 1;\n"


def test_tar_round_trip_digest_and_safe_extract(tmp_path: Path) -> None:
    src = tmp_path / "data"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "f.bin").write_bytes(os.urandom(70_000))
    (src / "skip.log").write_text("x")
    buf = io.BytesIO()
    sink = FanOutSink("files.tar.gz", {"mem": _MemWriter(buf)})
    info = tar_producer([str(src)], ["*.log"])(sink)
    sink.finish()
    out = tmp_path / "out"
    restore_files(io.BytesIO(buf.getvalue()), out)
    assert tree_digest(out) == {k: info[k] for k in ("file_count", "total_bytes", "tree_sha256")}
    assert info["file_count"] == 1 and not (out / "data" / "skip.log").exists()
    with pytest.raises(Exception, match="not empty"):
        restore_files(io.BytesIO(buf.getvalue()), out)


class _MemWriter:
    def __init__(self, buf: io.BytesIO) -> None:
        self.buf = buf

    def write(self, chunk: bytes) -> None:
        self.buf.write(chunk)

    def commit(self) -> None:
        pass

    def abort(self) -> None:
        self.buf.seek(0)
        self.buf.truncate()


def test_s3_multipart_stream_round_trip(object_store_a: Any, tmp_path: Path) -> None:
    """A stream larger than several multipart parts lands intact in S3 and in the local copy."""
    from tasks.backup_storage import S3Storage

    data = os.urandom(19 * 1024 * 1024)  # incompressible: > 2 parts of 8 MiB after gzip
    s3 = S3Storage(object_store_a, "units", "big")
    s3.check_writable("j")
    local = LocalStorage(tmp_path)
    res = stream_part(
        "p.gz",
        _producer(data),
        {"s3": s3.open_part("j", B1, "p.gz"), "local": local.open_part("j", B1, "p.gz")},
    )
    assert sorted(res.committed) == ["local", "s3"]
    with s3.open_read("j", B1, "p.gz") as fh:
        stored = fh.read()
    assert hashlib.sha256(stored).hexdigest() == res.sha256 and gzip.decompress(stored) == data
    s3.discard("j", B1)
    assert s3.list_backups("j") == []


def test_s3_aborted_stream_leaves_no_object(object_store_a: Any) -> None:
    from tasks.backup_storage import S3Storage

    s3 = S3Storage(object_store_a, "units", "abort")
    s3.check_writable("j")
    with pytest.raises(DumpFailed):
        stream_part(
            "p.gz", _producer(os.urandom(20 << 20), fail_at=12 << 20), {"s3": s3.open_part("j", B1, "p.gz")}
        )
    assert s3.list_backups("j") == []
    client = object_store_a.minio_client()
    assert not list(client._list_multipart_uploads("units", prefix="abort/").uploads or [])
