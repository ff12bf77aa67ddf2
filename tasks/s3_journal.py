"""The mirror journal on the destination store, and one journal-aware pass (one-way or two-way).

The journal of a bucket pair is one object in the destination bucket,
``.stateferry-mirror/<sha256(pair)[:24]>.jsonl.gz``: gzip-compressed JSON lines, a header line then
one line per key in key order (``[key, [size, etag] | null, [size, etag] | null, origin, time]``).
A PUT replaces it atomically, so a killed pass leaves the previous journal (its actions are then
re-planned from the fresh listings and the old journal: nothing is lost, nothing re-copied that
already matches). ~35 bytes per key compressed: 10^7 keys are ~350 MB... kept in one object.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from minio import Minio

from planning.mirror import ObjectEntry, UnsortedListing
from planning.mirror_journal import (
    JOURNAL_PREFIX,
    JournalEntry,
    JournalOptions,
    JournalPlan,
    plan_with_journal,
    with_written,
)
from stateferry.errors import NotFound, PreconditionFailed, translate
from tasks import fault_points
from tasks.s3_listing import iter_objects, read_small_object, write_small_object
from tasks.s3_transfer import TransferReport, Transferrer

__all__ = ["JournalPassResult", "journal_key", "load_journal", "run_journal_pass", "save_journal"]

_VERSION = 1


def journal_key(label: str) -> str:
    """Object key of the journal of one bucket pair (label = ``src/prefix -> dst/prefix``)."""
    return f"{JOURNAL_PREFIX}{hashlib.sha256(label.encode()).hexdigest()[:24]}.jsonl.gz"


def _sig(value: Any, key: str) -> tuple[int, str] | None:
    if value is None:
        return None
    if (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], int)
        and value[0] >= 0
        and isinstance(value[1], str)
    ):
        return (value[0], value[1])
    raise ValueError(f"bad entry for {key!r}")


def journals_present(client: Minio, pairs: list[Any], missing: set[str]) -> list[str]:
    """Labels of the bucket pairs that have a mirror journal on the destination (an earlier watch
    or two-way session): a one-shot sync over them must honour what it kept."""
    found = []
    for pair in pairs:
        if pair.destination_bucket in missing:
            continue
        try:
            client.stat_object(pair.destination_bucket, journal_key(pair.label))
        except Exception as exc:
            err = translate(exc, context=f"looking for the mirror journal of {pair.label}")
            if isinstance(err, NotFound):
                continue
            raise err from exc
        found.append(pair.label)
    return found


def load_journal(client: Minio, bucket: str, key: str) -> tuple[dict[str, Any] | None, list[JournalEntry]]:
    """Read a journal; ``(None, [])`` when none exists.

    Raises:
        PreconditionFailed: The journal is unreadable or malformed (it is never trusted half-read:
            delete it to start a new session, which then deletes nothing it did not see).
    """
    data = read_small_object(client, bucket, key, what="the mirror journal")
    if data is None:
        return None, []
    try:
        lines = gzip.decompress(data).decode().splitlines()
        header = json.loads(lines[0])
        if not isinstance(header, dict) or header.get("v") != _VERSION:
            raise ValueError("unknown header")
        entries: list[JournalEntry] = []
        previous = None
        for line in lines[1:]:
            k, s, d, origin, when = json.loads(line)
            if not isinstance(k, str) or (previous is not None and k <= previous):
                raise ValueError("keys not sorted")
            if origin not in ("source", "destination") or not isinstance(when, str):
                raise ValueError(f"bad entry for {k!r}")
            entries.append(JournalEntry(k, _sig(s, k), _sig(d, k), origin, when))
            previous = k
    except (ValueError, TypeError, IndexError, OSError, EOFError) as exc:
        raise PreconditionFailed(
            f"the mirror journal {bucket}/{key} is unreadable ({exc}); nothing was changed. "
            "Delete that object to start a new mirror session"
        ) from exc
    return header, entries


def save_journal(
    client: Minio, bucket: str, key: str, header: dict[str, Any], entries: list[JournalEntry]
) -> int:
    """Write a journal atomically (one PUT); return its compressed size."""
    buf = io.StringIO()
    buf.write(json.dumps({**header, "v": _VERSION}) + "\n")
    for e in entries:
        row = [e.key, list(e.source) if e.source else None, list(e.destination) if e.destination else None]
        buf.write(json.dumps([*row, e.origin, e.time], separators=(",", ":")) + "\n")
    data = gzip.compress(buf.getvalue().encode(), compresslevel=6)
    write_small_object(client, bucket, key, data, "application/gzip", what="the mirror journal")
    return len(data)


@dataclass
class JournalPassResult:
    """One journal-aware pass over one bucket pair."""

    plan: JournalPlan
    forward: TransferReport
    backward: TransferReport
    header: dict[str, Any] = field(default_factory=dict)


def _listing(client: Minio, bucket: str, prefix: str, side: str, exists: bool) -> list[ObjectEntry]:
    if not exists:
        return []
    entries = list(iter_objects(client, bucket, prefix, side=side))
    try:
        for a, b in itertools.pairwise(entries):
            if a.key >= b.key:
                raise UnsortedListing(side)
    except UnsortedListing:
        entries.sort(key=lambda e: e.key)
    return entries


def _relative(written: dict[str, str], prefix: str) -> dict[str, str]:
    return {k[len(prefix) :]: v for k, v in written.items() if k.startswith(prefix)}


def run_journal_pass(
    source: Minio,
    destination: Minio,
    pair: Any,
    opts: JournalOptions,
    *,
    exclude: Any,
    server_side: bool,
    workers: int,
    header_update: dict[str, Any] | None = None,
    max_delete_ratio: float = 0.5,
    deletes_approved: bool = False,
    allow_empty_source: bool = False,
    destination_exists: bool = True,
    stop: Any = None,
    progress: Any = None,
    guard: Callable[[], None] | None = None,
) -> JournalPassResult:
    """Load the journal, list both sides, plan, act in each direction, store the new journal.

    Keys whose action failed keep their previous journal entry (the next pass plans them again).

    Args:
        source: Source client.
        destination: Destination client (holds the journal).
        pair: The :class:`tasks.s3_mirror_pass.BucketPair`.
        opts: Planner options (``first_pass`` is set here from the journal's existence).
        exclude: Callable ``key -> bool`` of excluded keys.
        server_side: Same store and credentials: server-side copies.
        workers: Parallel transfers.
        header_update: Fields merged into the journal header (e.g. the cutover approval).
        max_delete_ratio: Deletes cap per side.
        deletes_approved: Deletes over the cap were approved.
        allow_empty_source: Allow deletes while the other side lists nothing.
        destination_exists: False while the destination bucket is still to be created.
        stop: Event: stop starting new transfers.
        progress: ``progress(done, total)`` callback of the transfers.
        guard: Called before the pass acts and before each journal write; raises to stop (the
            run's mirror lease is lost: another run may be acting on the pair).

    Returns:
        The plan and both transfer reports.
    """
    check = guard or (lambda: None)
    check()
    key = journal_key(pair.label)
    header, entries = (
        load_journal(destination, pair.destination_bucket, key) if destination_exists else (None, [])
    )
    now = datetime.now(UTC).isoformat(timespec="seconds")
    opts = JournalOptions(opts.direction, opts.conflict, opts.remove, opts.overwrite, header is None, now)
    src = [
        e
        for e in _listing(source, pair.source_bucket, pair.source_prefix, "source", True)
        if not exclude(e.key)
    ]
    dst = [
        e
        for e in _listing(
            destination, pair.destination_bucket, pair.destination_prefix, "destination", destination_exists
        )
        if not exclude(e.key)
    ]
    plan = plan_with_journal(
        src,
        dst,
        [e for e in entries if not exclude(e.key)],
        opts,
        max_delete_ratio=max_delete_ratio,
        deletes_approved=deletes_approved,
        allow_empty_source=allow_empty_source,
    )
    if header is None and destination_exists and (plan.forward or plan.backward):
        # the session starts now, on storage: a first pass killed half-way is not a first pass
        # again when re-run (its keys without an entry are then decided as client writes, never
        # as deletable leftovers from before the session)
        acting = {a.key for a in plan.forward} | {a.key for a in plan.backward}
        started = {"pair": pair.label, "session_started": now, "updated": now, "passes": 0}
        provisional = [e for e in plan.journal if e.key not in acting]
        check()
        save_journal(destination, pair.destination_bucket, key, started, provisional)
    fault_points.reached("journal_session_saved")

    def transferrer(reader: Minio, writer: Minio) -> Transferrer:
        # remember each written ETag; after the first pass, re-read each target before acting on it
        return Transferrer(
            reader,
            writer,
            server_side=server_side,
            workers=workers,
            progress=progress,
            keep_written=True,
            guard_destination=not opts.first_pass,
        )

    check()  # the listings took a while: still ours before anything is written
    forward = transferrer(source, destination).run(
        plan.forward,
        pair.source_bucket,
        pair.destination_bucket,
        pair.source_prefix,
        pair.destination_prefix,
        stop=stop,
    )
    backward = transferrer(destination, source).run(
        plan.backward,
        pair.destination_bucket,
        pair.source_bucket,
        pair.destination_prefix,
        pair.source_prefix,
        stop=stop,
    )
    done = {a.key for a in plan.forward} | {a.key for a in plan.backward}
    failed = {f.key for f in forward.failures} | {f.key for f in backward.failures}
    failed |= {*forward.changed_meanwhile, *backward.changed_meanwhile}  # decided again next pass
    if stop is not None and stop.is_set():
        failed |= done  # not known to have run: plan them again next pass
    new = with_written(
        [e for e in plan.journal if e.key not in failed],
        _relative(forward.written, pair.destination_prefix),
        _relative(backward.written, pair.source_prefix),
    )
    restored = [e for e in (plan.previous.get(k) for k in failed) if e is not None]
    excluded_old = [e for e in entries if exclude(e.key)]
    merged = sorted([*new, *restored, *excluded_old], key=lambda e: e.key)
    out_header = {**(header or {}), **(header_update or {})}
    out_header.update(pair=pair.label, updated=now, passes=int(out_header.get("passes", 0)) + 1)
    if header is None:
        out_header["session_started"] = now
    check()
    save_journal(destination, pair.destination_bucket, key, out_header, merged)
    return JournalPassResult(plan, forward, backward, out_header)
