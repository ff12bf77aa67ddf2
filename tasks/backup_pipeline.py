"""Streaming fan-out: producer bytes -> gzip or zstd (-> age) -> sha256/size -> every storage at once.

Memory is constant whatever the backup size: the producer pushes chunks (about 1 MiB), each is
compressed and handed to every target's writer immediately (the S3 writers hold a bounded queue and
a few multipart parts). A target whose write fails is dropped and reported; the others carry on.
Nothing is committed unless the producer returned normally (the dump exited 0 and its output was
complete): a failed or cut-short producer aborts every part, so it can never become a good backup.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypedDict, Unpack

import zstandard
from isal import isal_zlib

from stateferry.errors import StateferryError
from stateferry.logs import run_logger
from tasks.backup_crypto import AgeEncryptor
from tasks.backup_storage import PartWriter

#: gzip through ISA-L (python-isal, SIMD deflate): the output is a standard ``.gz`` stream that
#: ``gzip -d``/zlib read, at several times zlib's speed. Level 3 (ISA-L's highest) stores within a few
#: percent of ``gzip -6`` and is still the fastest ISA-L level on this data (benchmarks/backup_bench.py
#: and the closing notes have the numbers). Measured against pigz too: a pigz subprocess competes with
#: the dump tool for the same cores and adds two pipe copies.
GZIP_LEVEL = 3
#: largest piece of compressed data handed to the age encryptor at once (bounds its queue and output)
_AGE_SLICE = 1 << 20
#: zstd default level (zstd's own default); multithreaded over every core (``threads=-1``).
ZSTD_LEVEL = 3


def compressor(compression: str, level: int | None = None) -> Any:
    """A streaming compressor object (``compress(bytes)``, ``flush()``) for ``gzip`` or ``zstd``."""
    if compression == "gzip":
        return isal_zlib.compressobj(GZIP_LEVEL if level is None else level, isal_zlib.DEFLATED, 31)
    if compression == "zstd":
        zc = zstandard.ZstdCompressor(level=ZSTD_LEVEL if level is None else level, threads=-1)
        return zc.compressobj()
    raise ValueError(f"unknown compression {compression!r}")


class AllTargetsFailed(StateferryError):
    """Every storage failed while the backup was streaming."""


@dataclass
class PartResult:
    """What was written for one part."""

    name: str
    size: int = 0
    sha256: str = ""
    raw_size: int = 0
    raw_sha256: str = ""
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    #: target label -> error message, for targets that failed on this part
    failed: dict[str, str] = field(default_factory=dict)
    committed: list[str] = field(default_factory=list)


class FanOutSink:
    """The file-like object producers write raw bytes to.

    Args:
        name: the part's name (for reports).
        writers: target label -> part writer.
        compression: ``gzip`` (ISA-L) or ``zstd`` (multithreaded); ``None`` stores the stream as is.
        level: compression level (default: :data:`GZIP_LEVEL` / :data:`ZSTD_LEVEL`).
        redact: applied to error messages recorded for failed targets.
        progress: called with (raw bytes, stored bytes) every few seconds.
        age_recipients: encrypt the compressed stream to these age public keys (the stored bytes,
            which size and sha256 describe, are then the age file).
    """

    def __init__(
        self,
        name: str,
        writers: dict[str, PartWriter],
        *,
        compression: str | None = "gzip",
        level: int | None = None,
        redact: Callable[[str], str] = lambda s: s,
        progress: Callable[[int, int], None] | None = None,
        age_recipients: list[str] | None = None,
    ) -> None:
        self.result = PartResult(name)
        self.active = dict(writers)
        self._redact = redact
        self._gz = compressor(compression, level) if compression else None
        self._age = AgeEncryptor(age_recipients) if age_recipients else None
        self._raw_hash = hashlib.sha256()
        self._hash = hashlib.sha256()
        self._progress = progress
        self._last_report = time.monotonic()
        self._started = time.monotonic()

    # file-like API --------------------------------------------------------------------------------
    def writable(self) -> bool:
        """File-like protocol: always writable."""
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Feed raw producer bytes; returns the number of bytes accepted."""
        raw = bytes(data)
        if not raw:
            return 0
        self._raw_hash.update(raw)
        self.result.raw_size += len(raw)
        out = self._gz.compress(raw) if self._gz is not None else raw
        if out:
            self._store(out)
        if self._progress is not None and time.monotonic() - self._last_report > 5:
            self._last_report = time.monotonic()
            self._progress(self.result.raw_size, self.result.size)
        return len(raw)

    def flush(self) -> None:
        """File-like protocol: nothing buffered beyond gzip's window."""

    # -----------------------------------------------------------------------------------------------
    def _store(self, compressed: bytes) -> None:
        if self._age is None:
            self._emit(compressed)
            return
        view = memoryview(compressed)
        for i in range(0, len(view), _AGE_SLICE):  # a large compressor output goes through in slices
            encrypted = b"".join(self._age.push(bytes(view[i : i + _AGE_SLICE])))
            if encrypted:
                self._emit(encrypted)

    def _emit(self, out: bytes) -> None:
        self._hash.update(out)
        self.result.size += len(out)
        for label, writer in list(self.active.items()):
            try:
                writer.write(out)
            except Exception as exc:
                self._fail(label, writer, exc)
        if not self.active:
            raise AllTargetsFailed(
                f"every storage failed while writing {self.result.name}: "
                + "; ".join(f"{k}: {v}" for k, v in self.result.failed.items())
            )

    def _fail(self, label: str, writer: PartWriter, exc: BaseException) -> None:
        self.result.failed[label] = self._redact(f"{type(exc).__name__}: {exc}")
        failed = self.result.failed[label]
        run_logger().warning("storage %s failed on %s: %s", label, self.result.name, failed)
        self.active.pop(label, None)
        try:
            writer.abort()
        except Exception:
            pass

    def finish(self) -> PartResult:
        """The producer succeeded: flush gzip and commit every still-healthy target."""
        try:
            if self._gz is not None:
                tail = self._gz.flush()
                if tail:
                    self._store(tail)
            if self._age is not None:
                self._emit(b"".join(self._age.finish()))
        except BaseException:
            if self._age is not None:
                self._age.abort()
            raise
        for label, writer in list(self.active.items()):
            try:
                writer.commit()
                self.result.committed.append(label)
            except Exception as exc:
                self._fail(label, writer, exc)
        if not self.result.committed:
            raise AllTargetsFailed(
                f"no storage accepted {self.result.name}: "
                + "; ".join(f"{k}: {v}" for k, v in self.result.failed.items())
            )
        self.result.sha256 = self._hash.hexdigest()
        self.result.raw_sha256 = self._raw_hash.hexdigest()
        self.result.seconds = time.monotonic() - self._started
        return self.result

    def abort(self) -> None:
        """The producer failed: abort every part."""
        if self._age is not None:
            self._age.abort()
        for writer in self.active.values():
            try:
                writer.abort()
            except Exception:
                pass
        self.active.clear()


Producer = Callable[[FanOutSink], dict[str, Any]]


class SinkOptions(TypedDict, total=False):
    """How :func:`stream_part` stores a part: the keyword arguments of :class:`FanOutSink`."""

    compression: str | None
    level: int | None
    redact: Callable[[str], str]
    progress: Callable[[int, int], None] | None
    age_recipients: list[str] | None


def stream_part(
    name: str, producer: Producer, writers: dict[str, PartWriter], **options: Unpack[SinkOptions]
) -> PartResult:
    """Run one producer into every writer.

    Args:
        name: the part's name.
        producer: pushes raw bytes into the sink; returns extra info for the manifest; raises when the
            source failed (non-zero exit, truncated output).
        writers: target label -> writer for this part.
        **options: compression, level, redact, progress, age_recipients: see :class:`FanOutSink`.

    Returns:
        Sizes, hashes, the producer's info, and which targets committed / failed.

    Raises:
        Exception: whatever the producer raised (every part is aborted first), or
            :class:`AllTargetsFailed`.
    """
    sink = FanOutSink(name, writers, **options)
    try:
        info = producer(sink)
    except BaseException:
        sink.abort()
        raise
    result = sink.finish()
    result.info = info
    return result
