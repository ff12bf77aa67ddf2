"""Change source for watch mode: MinIO bucket notifications when offered, else listing-diff polling.

:class:`ChangeWaiter` opens a ``ListenBucketNotification`` stream per bucket in a daemon thread. On a
server that does not implement it (SeaweedFS, AWS S3) the first request fails at once with
``NotImplemented`` (or any error) and the waiter falls back to polling: :meth:`ChangeWaiter.wait`
simply sleeps ``interval`` seconds. With notifications, ``wait`` returns as soon as an event arrives
(the interval remains as a safety net, so a dropped stream never stalls the mirror).
"""

from __future__ import annotations

import contextvars
import math
import threading
from collections.abc import Iterable
from typing import Any

from minio import Minio

from planning.mirror import MirrorOptions
from stateferry.errors import StateferryError
from tasks.s3_mirror_pass import MirrorSession, PassProgress, PassResult, run_pass

__all__ = ["ChangeWaiter", "WatchLoop"]

_EVENTS = ("s3:ObjectCreated:*", "s3:ObjectRemoved:*")


class ChangeWaiter:
    """Wait for changes on source buckets.

    Args:
        client: Source client.
        buckets: Buckets to watch.
        prefix: Key prefix watched.
        interval: Polling interval in seconds (also the upper bound of :meth:`wait`).
        detect_timeout: Seconds to wait for the first answer of the notification API.
        also: More ``(client, buckets, prefix)`` to watch: the destination of a two-way mirror,
            whose client writes must reach the source as soon as those of the source reach it.
    """

    def __init__(
        self,
        client: Minio,
        buckets: Iterable[str],
        prefix: str = "",
        *,
        interval: float = 10.0,
        detect_timeout: float = 2.0,
        also: Iterable[tuple[Minio, Iterable[str], str]] = (),
    ) -> None:
        self.client = client
        self.buckets = list(buckets)
        self.prefix = prefix
        self.streams = [(client, b, prefix) for b in self.buckets]
        self.streams += [(c, b, p) for c, bs, p in also for b in bs]
        self.interval = interval
        self.detect_timeout = detect_timeout
        self._changed = threading.Event()
        self._closed = threading.Event()
        self._all_failed = threading.Event()
        self._failed: dict[int, str] = {}
        self._opened: set[int] = set()
        self._lock = threading.Lock()
        self.mode = "polling"
        self.reason = "not started"

    def start(self) -> str:
        """Probe notification support and start listeners; return the mode (``events``/``polling``)."""
        for n, (client, bucket, prefix) in enumerate(self.streams):
            threading.Thread(
                target=self._listen, args=(n, client, bucket, prefix), daemon=True, name=f"notify-{bucket}"
            ).start()
        if self.streams:  # every listener failed, or none within the detection time (= supported)
            self._all_failed.wait(self.detect_timeout)
        with self._lock:
            # MinIO keeps the stream open and sends nothing until an event: no error = supported.
            # One failed stream (a side without notifications) means polling: events from the other
            # side alone would leave the first side's changes waiting for the safety-net interval.
            if self.streams and not self._failed:
                self.mode = "events"
                self.reason = "bucket notifications supported"
            else:
                self.mode = "polling"
                first = next(iter(self._failed.values()), "no answer within the detection timeout")
                self.reason = f"bucket notifications unavailable ({first}); polling every {self.interval:g}s"
        return self.mode

    def _listen(self, n: int, client: Minio, bucket: str, prefix: str) -> None:
        try:
            events = client.listen_bucket_notification(bucket, prefix=prefix, events=_EVENTS)
            with events as stream:
                for i, _event in enumerate(stream):
                    if i == 0:
                        with self._lock:
                            self._opened.add(n)
                    if self._closed.is_set():
                        return
                    self._changed.set()
        except Exception as exc:
            code = getattr(exc, "code", None) or type(exc).__name__
            with self._lock:
                self._failed[n] = f"{bucket}: {code}"
                if len(self._failed) >= len(self.streams):
                    self._all_failed.set()

    def wait(self, stop: threading.Event | None = None) -> bool:
        """Wait up to ``interval`` seconds for a change (or ``stop``); return True if an event came."""
        slices = max(1, math.ceil(self.interval / 0.2))  # ``stop`` is looked at every 0.2 s at most
        for _ in range(slices):
            if stop is not None and stop.is_set():
                return False
            if self._changed.wait(self.interval / slices):
                self._changed.clear()
                return True
        return False

    def close(self) -> None:
        """Stop listening (daemon threads end with their stream)."""
        self._closed.set()


class WatchLoop:
    """Sync passes in a background thread until stopped (used while the flow waits for the cutover)."""

    def __init__(
        self, session: MirrorSession, options: MirrorOptions, waiter: ChangeWaiter, first: int, logger: Any
    ) -> None:
        self.session = session
        self.options = options
        self.waiter = waiter
        self.number = first
        self.logger = logger
        self.stop = threading.Event()
        self.results: list[PassResult] = []
        self.errors: list[str] = []
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        context = contextvars.copy_context()  # logs and artifacts stay attached to the flow run
        self._thread = threading.Thread(
            target=context.run, args=(self._loop,), daemon=True, name="bucket-mirror-watch"
        )
        self._thread.start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            woke_by_event = self.waiter.wait(self.stop)
            if self.stop.is_set():
                return
            self.number += 1
            progress = PassProgress(f"Mirror watch pass {self.number}")
            try:
                result = run_pass(
                    self.session, self.options, number=self.number, stop=self.stop, progress=progress
                )
            except StateferryError as exc:
                self.errors.append(f"pass {self.number}: {exc}")
                self.logger.warning(
                    "watch pass %d failed, nothing deleted, retrying next interval: %s", self.number, exc
                )
                continue
            finally:
                progress.finish()  # stops its writer thread
            self.results.append(result)
            if result.changes_planned or result.report.failures or result.withheld_deletes:
                self.logger.info(
                    "watch pass %d (%s): %s objects changed, %d failed, %d deletes withheld",
                    self.number,
                    "event" if woke_by_event else "poll",
                    result.report.objects,
                    len(result.report.failures),
                    result.withheld_deletes,
                )

    def join(self) -> None:
        self.stop.set()
        if self._thread is not None:
            self._thread.join()
