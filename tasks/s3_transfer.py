"""Execute a mirror plan: parallel, memory-bounded object copies and batched deletes.

* Bodies are moved by :class:`tasks.s3_object_copy.BodyCopier`: small ones read whole and sent with
  ``Content-MD5``, larger ones piped from the GET into one PUT, the largest multipart, all within a
  memory budget.
* Every write is confirmed by the destination: the ETag it returns for the stored bytes must equal
  the ETag of the source object that was read (a mismatch is retried like a transient error). Writes
  that cannot be confirmed that way (ETags of different kinds) are counted as ``unconfirmed``; the
  flow verifies a pass without re-listing both sides only when none are.
* Same endpoint on both sides -> server-side ``CopyObject`` (no bytes through the client).
* Metadata-only changes (same content, new headers) are applied in place with a destination
  self-copy (``x-amz-metadata-directive: REPLACE``), no body transfer.
* Per-object retries with backoff for transient errors; a failure of one object is recorded in the
  report and never aborts the pass. An object that vanished from the source since the listing is
  counted as ``vanished`` (the next pass deletes it on the destination).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from minio import Minio
from minio.commonconfig import REPLACE, ComposeSource, CopySource
from minio.deleteobjects import DeleteObject

from planning.mirror import Action, ActionKind
from stateferry.errors import NotFound, PermanentError, translate
from tasks.s3_object_copy import BodyCopier, Vanished, etag_of, preserved_headers, s3_code

__all__ = ["TransferFailure", "TransferReport", "Transferrer"]

MiB = 1024 * 1024
_MAX_COPY_OBJECT = 5 * 1024 * MiB


@dataclass(frozen=True)
class TransferFailure:
    """One object that could not be mirrored in this pass."""

    key: str
    action: str
    error: str


#: The counters of a :class:`TransferReport` (added up by ``merge`` and by sharded passes).
REPORT_COUNTS = (
    "copied",
    "overwritten",
    "metadata_updated",
    "deleted",
    "vanished",
    "bytes",
    "retries",
    "confirmed",
    "unconfirmed",
)


@dataclass
class TransferReport:
    """What a pass did."""

    copied: int = 0
    overwritten: int = 0
    metadata_updated: int = 0
    deleted: int = 0
    vanished: int = 0
    bytes: int = 0
    retries: int = 0
    seconds: float = 0.0
    confirmed: int = 0
    unconfirmed: int = 0
    failures: list[TransferFailure] = field(default_factory=list)
    #: destination key -> the ETag the destination returned for what the pass wrote there, kept
    #: when asked (``keep_written``): a multipart source copied with one PUT gets a plain MD5, and
    #: the mirror journal must remember that one, not the source's
    written: dict[str, str] = field(default_factory=dict)
    #: relative keys left alone because their target changed after the pass listed it (a client
    #: wrote or deleted it meanwhile: ``guard_destination``); the next pass decides them again
    changed_meanwhile: list[str] = field(default_factory=list)

    @property
    def objects(self) -> int:
        """Objects written or deleted."""
        return self.copied + self.overwritten + self.metadata_updated + self.deleted

    def merge(self, other: TransferReport) -> None:
        """Add another report's numbers to this one."""
        for name in REPORT_COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.seconds += other.seconds
        self.failures.extend(other.failures)


class _Mismatch(Exception):
    """The destination stored other bytes than the source GET returned (retried)."""


class Transferrer:
    """Runs the copy/overwrite/delete actions of a plan between two buckets.

    Args:
        source: Source client.
        destination: Destination client.
        server_side: Both clients address the same store: use server-side copies.
        workers: Parallel transfers.
        memory_budget: Largest number of body bytes held in memory at once.
        single_put_max: Objects up to this size are copied with one PUT, multipart sources too (their
            destination copy is then single-part: later passes compare it by size and modification
            time, as rclone and mc do; its bytes are confirmed by the MD5 of the stream).
        part_size: Part size for multipart copies of single-part sources larger than ``single_put_max``.
        stream_min: Objects larger than this are piped from the GET into the PUT instead of being read
            into memory first.
        large_object: Objects of at least this size are "large": at most ``large_workers`` of them are
            transferred at once (a few fat streams fill the link; more only fight over CPU and disk).
        large_workers: Concurrent transfers of large objects (default: ``min(workers, 4)``).
        small_factor: Objects up to ``stream_min`` are latency-bound (two round trips, few bytes):
            up to ``workers * small_factor`` of them run at once; larger ones at most ``workers``.
        attempts: Tries per object for transient errors.
        backoff: First retry delay in seconds (doubles per retry, capped at 8 s).
        progress: Called as ``progress(done, total)`` from the calling thread while running.
    """

    def __init__(
        self,
        source: Minio,
        destination: Minio,
        *,
        server_side: bool = False,
        workers: int = 16,
        memory_budget: int = 256 * MiB,
        single_put_max: int = 64 * MiB,
        part_size: int = 16 * MiB,
        stream_min: int = 1 * MiB,
        large_object: int = 8 * MiB,
        large_workers: int | None = None,
        small_factor: int = 2,
        attempts: int = 6,
        backoff: float = 0.5,
        progress: Callable[[int, int], None] | None = None,
        keep_written: bool = False,
        guard_destination: bool = False,
    ) -> None:
        self.source = source
        self.destination = destination
        self.keep_written = keep_written  # journal passes: remember each written ETag
        # journal passes: re-read each target right before writing or deleting it
        self.guard_destination = guard_destination
        self.server_side = server_side
        self.workers = max(1, workers)
        self.copier = BodyCopier(
            source,
            destination,
            memory_budget=memory_budget,
            single_put_max=single_put_max,
            part_size=part_size,
            stream_min=stream_min,
        )
        self.large_object = large_object
        self.large_workers = max(1, large_workers or min(self.workers, 4))
        self._large = threading.BoundedSemaphore(self.large_workers)
        self.threads = min(256, self.workers * max(1, small_factor))
        self._medium = threading.BoundedSemaphore(self.workers)
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.progress = progress
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------
    def run(
        self,
        actions: Iterable[Action],
        source_bucket: str,
        destination_bucket: str,
        source_prefix: str = "",
        destination_prefix: str = "",
        stop: threading.Event | None = None,
    ) -> TransferReport:
        """Execute copies/overwrites in parallel, then deletes in batches.

        Args:
            actions: Planned actions (``skip``/``inspect`` are ignored).
            source_bucket: Source bucket.
            destination_bucket: Destination bucket.
            source_prefix: Prefix added to keys on the source.
            destination_prefix: Prefix added to keys on the destination.
            stop: When set, no new objects are started.

        Returns:
            The report (failures included; nothing is raised for per-object errors).
        """
        started = time.perf_counter()
        report = TransferReport()
        todo = [a for a in actions if a.kind in (ActionKind.COPY, ActionKind.OVERWRITE)]
        deletes = [a for a in actions if a.kind is ActionKind.DELETE]
        total = len(todo) + len(deletes)
        done = 0
        last_progress = 0.0

        def tick_to(n: int) -> None:
            nonlocal done, last_progress
            done = n
            now = time.monotonic()
            if self.progress and (now - last_progress > 1.0 or done == total):
                last_progress = now
                self.progress(done, total)

        def one(action: Action) -> None:
            try:
                self._with_retries(
                    action,
                    report,
                    lambda: self._copy(
                        action, source_bucket, destination_bucket, source_prefix, destination_prefix, report
                    ),
                )
            finally:
                with self._lock:
                    finished[0] += 1
                slots.release()
                if finished[0] == len(todo):
                    all_done.set()

        # Bounded submission: at most `window` objects queued or running, no per-completion polling.
        # A thread started while transfers run costs ~10 ms of GIL time: start only those that can work.
        threads = self._threads_for(todo)
        window = threads * 4
        slots = threading.BoundedSemaphore(window)
        finished = [0]
        all_done = threading.Event()
        submitted = 0
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mirror") as pool:
            for action in todo:
                if stop is not None and stop.is_set():
                    break
                while not slots.acquire(timeout=1.0):
                    tick_to(finished[0])
                pool.submit(one, action)
                submitted += 1
                if submitted % 256 == 0:
                    tick_to(finished[0])
            if submitted == len(todo):
                while todo and not all_done.wait(1.0):
                    tick_to(finished[0])
        tick_to(finished[0])
        for i in range(0, len(deletes), 1000):
            if stop is not None and stop.is_set():
                break
            batch = deletes[i : i + 1000]
            self._delete_batch(batch, destination_bucket, destination_prefix, report)
            tick_to(done + len(batch))
        report.seconds = time.perf_counter() - started
        return report

    def _bounded(self, action: Action) -> bool:
        """The body goes through the client and is not small: at most ``workers`` such at once."""
        if self.server_side or action.metadata_only:
            return False
        etag = action.source.etag if action.source is not None else ""
        return action.size > self.copier.stream_min or "-" in etag

    def _threads_for(self, todo: list[Action]) -> int:
        """Pool threads for these objects: no more than the size limits let run at once."""
        if any(not self._bounded(a) for a in todo):
            cap = self.threads
        elif any(a.size < self.large_object for a in todo):
            cap = self.workers
        else:
            cap = self.large_workers
        return max(1, min(cap, len(todo)))

    # ------------------------------------------------------------------------------------------
    def _with_retries(self, action: Action, report: TransferReport, fn: Callable[[], None]) -> None:
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            try:
                fn()
                return
            except Vanished:
                with self._lock:
                    report.vanished += 1
                return
            except Exception as exc:
                err = translate(exc, context=f"{action.kind.value} {action.key!r}")
                permanent = isinstance(err, PermanentError) and s3_code(exc) != ""
                if permanent or attempt == self.attempts:
                    with self._lock:
                        report.failures.append(TransferFailure(action.key, action.kind.value, str(err)))
                    return
                with self._lock:
                    report.retries += 1
                time.sleep(delay)
                delay = min(delay * 2, 8.0)

    def _copy(
        self,
        action: Action,
        src_bucket: str,
        dst_bucket: str,
        src_prefix: str,
        dst_prefix: str,
        report: TransferReport,
    ) -> None:
        src_key = src_prefix + action.key
        dst_key = dst_prefix + action.key
        size = action.size
        if self.guard_destination and not self._unchanged(dst_bucket, dst_key, action, report):
            return
        if action.metadata_only and size <= _MAX_COPY_OBJECT:
            self._update_metadata(src_bucket, src_key, dst_bucket, dst_key, action, report)
            self._count(report, action, 0)
            return
        if self.server_side:
            if size <= _MAX_COPY_OBJECT:
                copied = self.destination.copy_object(dst_bucket, dst_key, CopySource(src_bucket, src_key))
            else:
                copied = self.destination.compose_object(
                    dst_bucket, dst_key, [ComposeSource(src_bucket, src_key)]
                )
            listed = action.source.etag if action.source is not None else ""
            self._confirm(report, listed, etag_of(copied.etag), dst_key)
            self._count(report, action, size)
            return
        etag = action.source.etag if action.source is not None else ""
        large = size >= self.large_object
        medium = self._bounded(action)
        if medium:
            self._medium.acquire()
        if large:
            self._large.acquire()
        try:
            source_etag, written = self.copier.copy(src_bucket, src_key, dst_bucket, dst_key, size, etag)
        finally:
            if large:
                self._large.release()
            if medium:
                self._medium.release()
        self._confirm(report, source_etag, written, dst_key)
        self._count(report, action, size)

    def _confirm(self, report: TransferReport, source_etag: str, written_etag: str, key: str) -> None:
        """Check the ETag the destination computed against the source's; count the outcome."""
        if written_etag and self.keep_written:
            with self._lock:
                report.written[key] = written_etag
        if not source_etag or not written_etag:
            with self._lock:
                report.unconfirmed += 1
            return
        plain = "-" not in source_etag and "-" not in written_etag
        if source_etag == written_etag:
            with self._lock:
                report.confirmed += 1
            return
        if plain:  # both plain MD5s of the bytes: the destination stored something else
            raise _Mismatch(f"destination ETag {written_etag} != source ETag {source_etag} for {key!r}")
        with self._lock:
            report.unconfirmed += 1

    def _count(self, report: TransferReport, action: Action, size: int) -> None:
        with self._lock:
            if action.metadata_only:
                report.metadata_updated += 1
            elif action.kind is ActionKind.COPY:
                report.copied += 1
            else:
                report.overwritten += 1
            report.bytes += size

    def _update_metadata(
        self,
        src_bucket: str,
        src_key: str,
        dst_bucket: str,
        dst_key: str,
        action: Action,
        report: TransferReport,
    ) -> None:
        try:
            stat = self.source.stat_object(src_bucket, src_key)
        except Exception as exc:
            if s3_code(exc) == "NoSuchKey":
                raise Vanished(src_key) from exc
            raise
        content_type, meta = preserved_headers(stat.metadata or {})
        meta["content-type"] = content_type
        written = self.destination.copy_object(
            dst_bucket,
            dst_key,
            CopySource(dst_bucket, dst_key),
            metadata=meta,  # type: ignore[arg-type]
            metadata_directive=REPLACE,
        )
        self._confirm(report, etag_of(stat.etag), etag_of(written.etag), dst_key)

    def _unchanged(self, bucket: str, key: str, action: Action, report: TransferReport) -> bool:
        """The target still is what the pass listed (absent for a copy): a client write or delete
        since the listing is never overwritten or deleted (the window shrinks from the pass to one
        request; S3 has no portable conditional PUT/DELETE to close it)."""
        try:
            stat = self.destination.stat_object(bucket, key)
            now: tuple[int, str] | None = (int(stat.size or 0), etag_of(stat.etag))
        except Exception as exc:
            if not isinstance(translate(exc), NotFound):
                raise
            now = None
        listed = action.destination
        if now == (None if listed is None else (listed.size, listed.etag)):
            return True
        with self._lock:
            report.changed_meanwhile.append(action.key)
        return False

    def _delete_batch(self, batch: list[Action], bucket: str, prefix: str, report: TransferReport) -> None:
        if self.guard_destination:
            batch = [a for a in batch if self._unchanged(bucket, prefix + a.key, a, report)]
            if not batch:
                return
        objects = [DeleteObject(prefix + a.key) for a in batch]
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            try:
                errors = list(self.destination.remove_objects(bucket, objects))
            except Exception as exc:
                err = translate(exc, context=f"deleting {len(batch)} objects")
                if attempt == self.attempts or (isinstance(err, PermanentError) and s3_code(exc)):
                    report.failures.extend(TransferFailure(a.key, "delete", str(err)) for a in batch)
                    return
                report.retries += 1
                time.sleep(delay)
                delay = min(delay * 2, 8.0)
                continue
            failed = {e.name: f"{e.code}: {e.message}" for e in errors}
            cut = len(prefix)
            for name, message in failed.items():
                report.failures.append(TransferFailure((name or "")[cut:], "delete", message))
            report.deleted += len(batch) - len(failed)
            return
