"""The mirror lease on the destination store: one run acts on a bucket pair at a time.

The rules are in :mod:`planning.mirror_lease`; this module reads and writes the lease objects
(``.stateferry-mirror/<pair hash>.lease.json`` next to each pair's journal), renews them in a daemon
thread and asks Prefect whether a holder's flow run has finished.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from minio import Minio

from planning.mirror_lease import LeaseRecord, LeaseVerdict, decide_lease, parse_lease
from stateferry.errors import PreconditionFailed
from stateferry.logs import run_logger
from stateferry.waiting import wait_until
from tasks.s3_journal import journal_key
from tasks.s3_listing import read_small_object, write_small_object

__all__ = ["MirrorLease", "lease_key", "run_finished", "this_run"]

_JOURNAL_SUFFIX = ".jsonl.gz"


def lease_key(label: str) -> str:
    """Object key of the lease of one bucket pair (next to its journal)."""
    return journal_key(label)[: -len(_JOURNAL_SUFFIX)] + ".lease.json"


def this_run() -> tuple[str, str]:
    """``(owner id, name)`` of the current flow run (a process id outside a flow run)."""
    from prefect.runtime import flow_run

    run_id = flow_run.id
    if run_id:
        return str(run_id), str(flow_run.name or run_id)
    return f"process-{os.getpid()}-{uuid.uuid4().hex[:8]}", f"process {os.getpid()}"


def run_finished(owner: str) -> bool:
    """True when ``owner`` is a flow run that Prefect reports in a final state."""
    try:
        run_id = uuid.UUID(owner)
    except ValueError:
        return False
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(run_id).state
    except Exception:  # unknown to this server, or the API is unreachable: not known to be finished
        return False
    return state is not None and state.is_final()


def _read(client: Minio, bucket: str, key: str) -> LeaseRecord | None:
    body = read_small_object(client, bucket, key, what="the mirror lease")
    if body is None:
        return None
    try:
        return parse_lease(json.loads(body[: 64 << 10]))
    except ValueError:
        return None


def _write(client: Minio, bucket: str, key: str, record: LeaseRecord) -> None:
    data = json.dumps(record.to_json()).encode()
    write_small_object(client, bucket, key, data, "application/json", what="the mirror lease")


class MirrorLease:
    """The leases of one run over its bucket pairs.

    Args:
        client: Destination client (the leases live next to the journals).
        targets: ``(destination bucket, pair label)`` per pair.
        ttl_seconds: A lease unchanged this long (seen by a contender) is dead; renewed every fifth.
        poll_seconds: Pause between two reads while acquiring.
        finished: ``owner -> bool``: the holder's flow run has finished (default: ask Prefect).
        owner: ``(owner id, name)`` of this run (default: the current flow run).
        logger: Where progress lines go.
    """

    def __init__(
        self,
        client: Minio,
        targets: list[tuple[str, str]],
        *,
        ttl_seconds: float = 15.0,
        poll_seconds: float = 1.0,
        finished: Callable[[str], bool] = run_finished,
        owner: tuple[str, str] | None = None,
        logger: Any = None,
    ) -> None:
        self.client = client
        self.targets = [(bucket, lease_key(label), label) for bucket, label in targets]
        self.ttl = ttl_seconds
        self.poll = poll_seconds
        self.finished = finished
        self.owner, self.name = owner or this_run()
        self.token = uuid.uuid4().hex
        self.seq = 0
        self.logger = logger or run_logger()
        self.notes: list[str] = []
        self._lost = threading.Event()
        self._lost_reason = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _record(self) -> LeaseRecord:
        return LeaseRecord(self.owner, self.name, self.token, self.seq)

    def _acquire_one(self, bucket: str, key: str, label: str) -> None:
        # What this contender has observed: the lease as first seen (and since when, on its own
        # clock), and whether it has just written its own and must read it back.
        seen: dict[str, Any] = {"first": _read(self.client, bucket, key), "since": time.monotonic()}
        seen["wrote"] = False
        if seen["first"] is not None:
            self.logger.info(
                "mirror lease of %s held by %r: waiting until it is renewed (live) or %gs pass unchanged",
                label,
                seen["first"].name,
                self.ttl,
            )

        def step() -> bool:
            first: LeaseRecord | None = seen["first"]
            if seen["wrote"]:  # a contender that wrote at the same moment: the last write won
                seen["wrote"] = False
                mine = _read(self.client, bucket, key)
                if mine is not None and mine.token == self.token:
                    return True
                seen["first"], seen["since"] = mine, time.monotonic()  # lost that race: watch the winner
                return False
            latest = _read(self.client, bucket, key) if first is not None else None
            finished = latest is not None and latest.owner != self.owner and self.finished(latest.owner)
            verdict = decide_lease(
                first,
                latest,
                self.owner,
                watched_seconds=time.monotonic() - seen["since"],
                ttl_seconds=self.ttl,
                owner_finished=finished,
            )
            if verdict is LeaseVerdict.REFUSE and latest is not None:
                raise PreconditionFailed(
                    f"flow run {latest.name!r} ({latest.owner}) is mirroring {label} right now (its lease"
                    " was renewed while this run watched it); nothing was changed. Cancel that run, or"
                    " wait for it to finish"
                )
            if verdict is LeaseVerdict.TAKE:
                if latest is not None and latest.owner != self.owner:
                    why = "its run has finished" if finished else f"unchanged for {self.ttl:g}s"
                    self.notes.append(f"{label}: took over the lease of {latest.name!r} ({why})")
                _write(self.client, bucket, key, self._record())
                seen["wrote"] = True
            elif first is None:
                seen["first"], seen["since"] = latest, time.monotonic()
            return False

        wait_until(
            step,
            timeout=self.ttl * 4,  # a stale lease takes one ttl; lost races add more
            interval=self.poll,
            describe=lambda: (
                f"the mirror lease of {label} could not be taken within {self.ttl * 4:g}s"
                " (other runs kept taking it); nothing was changed. Run the flow again"
            ),
        )

    def acquire(self) -> list[str]:
        """Take every pair's lease (waiting for dead holders) and start renewing them.

        Returns:
            Notes on leases taken over from other runs.

        Raises:
            PreconditionFailed: A live run holds a pair (nothing was changed).
        """
        for bucket, key, label in list(self.targets):
            self._acquire_one(bucket, key, label)
        self._thread = threading.Thread(target=self._renew, daemon=True, name="mirror-lease")
        self._thread.start()
        return self.notes

    def ensure(self, bucket: str, label: str) -> None:
        """Hold the lease of one more pair (a bucket created on the source during a whole-store watch).

        Raises:
            PreconditionFailed: A live run holds that pair, or this run's lease is lost.
        """
        self.check()
        key = lease_key(label)
        with self._lock:
            if (bucket, key, label) in self.targets:
                return
        self._acquire_one(bucket, key, label)
        with self._lock:
            self.targets.append((bucket, key, label))

    def _renew(self) -> None:
        last_ok = time.monotonic()
        while not self._stop.wait(self.ttl / 5):
            with self._lock:
                targets = list(self.targets)
            try:
                for bucket, key, label in targets:
                    seen = _read(self.client, bucket, key)
                    if seen is None or seen.token != self.token:
                        holder = seen.name if seen else "nobody"
                        self._lose(f"the lease of {label} is now held by {holder!r}")
                        return
                self.seq += 1
                for bucket, key, _ in targets:
                    _write(self.client, bucket, key, self._record())
                last_ok = time.monotonic()
            except Exception as exc:
                if time.monotonic() - last_ok >= self.ttl * 0.8:  # a contender may take it from now on
                    self._lose(f"the lease could not be renewed for {self.ttl:g}s ({exc})")
                    return

    def _lose(self, reason: str) -> None:
        self._lost_reason = reason
        self._lost.set()
        self.logger.warning("mirror lease lost: %s; this run stops acting", reason)

    @property
    def lost(self) -> bool:
        """True once another run may act on a pair of this run."""
        return self._lost.is_set()

    def check(self) -> None:
        """Raise when the lease is lost (called before every pass and every journal write).

        Raises:
            PreconditionFailed: Another run may be acting on the pair.
        """
        if self._lost.is_set():
            raise PreconditionFailed(
                f"{self._lost_reason}: this run stopped before acting again; nothing of the other run's "
                "work was overwritten. Let that run finish, or re-run this flow to resume from the journal"
            )

    def release(self) -> None:
        """Stop renewing and delete the leases this run still holds."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._lost.is_set():
            return
        for bucket, key, _ in self.targets:
            try:
                seen = _read(self.client, bucket, key)
                if seen is not None and seen.token == self.token:
                    self.client.remove_object(bucket, key)
            except Exception as exc:  # the lease then expires on its own
                self.logger.warning("could not release the mirror lease %s/%s: %s", bucket, key, exc)
