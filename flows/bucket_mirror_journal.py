"""Journal mode of ``bucket_mirror`` (watch / two-way): passes that never lose a client write.

Called by :func:`flows.bucket_mirror.bucket_mirror` when ``watch=True``, ``direction="two-way"`` or
``journal=True``. Each pass reads the pair's journal, lists both sides, lets
:func:`planning.mirror_journal.plan_with_journal` decide every key, acts in each enabled direction and
stores the new journal (tasks/s3_journal.py). A re-run resumes from the journal; a cutover already
approved (recorded in the journal) is not asked again.
"""

from __future__ import annotations

import contextvars
import threading
from dataclasses import dataclass, field, replace
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE as NO_CACHE
from prefect.utilities.annotations import quote

from planning.mirror import KeyFilter, MirrorOptions, ObjectEntry, etags_comparable
from planning.mirror_journal import Conflict, JournalOptions
from stateferry.errors import PreconditionFailed, translate
from tasks import fault_points
from tasks.approvals import request_approval
from tasks.mirror_approvals import clear_approved_deletes, load_approved_deletes, save_approved_deletes
from tasks.mirror_lease import MirrorLease
from tasks.mirror_watch import ChangeWaiter
from tasks.s3_journal import journal_key, load_journal, run_journal_pass, save_journal
from tasks.s3_listing import iter_objects
from tasks.s3_mirror_pass import MirrorSession, PassProgress, ensure_bucket, refresh_pairs
from tasks.s3_transfer import TransferReport

__all__ = ["JournalRun", "journal_mirror"]

CUTOVER_STEP = "DNS cutover done"


@dataclass
class JournalRun:
    """Totals over the passes of one flow run."""

    passes: int = 0
    forward: TransferReport = field(default_factory=TransferReport)
    backward: TransferReport = field(default_factory=TransferReport)
    conflicts: list[tuple[str, Conflict]] = field(default_factory=list)
    kept: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    withheld: int = 0
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    lease: MirrorLease | None = None
    withheld_keys: dict[str, list[str]] = field(default_factory=dict)
    approved_pairs: set[str] = field(default_factory=set)


def _one_pass(
    session: MirrorSession,
    options: MirrorOptions,
    jopts: JournalOptions,
    run: JournalRun,
    *,
    cutover: bool = False,
    stop: threading.Event | None = None,
    progress: Any = None,
) -> int:
    """One journal pass over every pair; returns the number of actions planned."""
    refresh_pairs(session)
    flt = KeyFilter(options, None)
    planned = 0
    this_pass: list[tuple[str, Conflict]] = []
    for pair in list(session.pairs):
        exists = pair.destination_bucket not in session.missing_destination_buckets
        if jopts.direction.value == "two-way" or not exists:
            ensure_bucket(session, pair.destination_bucket)
            exists = True
        if run.lease is not None:
            run.lease.ensure(pair.destination_bucket, pair.label)
        result = run_journal_pass(
            session.source,
            session.destination,
            pair,
            jopts,
            exclude=flt.excluded,
            server_side=session.server_side,
            workers=session.workers,
            header_update={"cutover_approved": True} if cutover else None,
            max_delete_ratio=options.max_delete_ratio,
            deletes_approved=options.deletes_approved,
            allow_empty_source=options.allow_empty_source,
            destination_exists=exists,
            stop=stop,
            progress=progress,
            guard=run.lease.check if run.lease is not None else None,
        )
        with run.lock:
            run.forward.merge(result.forward)
            run.backward.merge(result.backward)
            run.conflicts += [(pair.label, c) for c in result.plan.conflicts]
            this_pass += [(pair.label, c) for c in result.plan.conflicts]
            run.kept[pair.label] = result.plan.kept
            run.withheld += len(result.plan.withheld)
            run.withheld_keys[pair.label] = sorted({a.key for a in result.plan.withheld})
            run.notes += result.plan.notes
        planned += result.plan.changes
    with run.lock:
        run.passes += 1
        number = run.passes
    if this_pass:  # each pass's conflicts as they were resolved, not only the run's total at the end
        create_markdown_artifact(
            f"## Mirror pass {number}: {len(this_pass)} conflicts (rule `{jopts.conflict.value}`)\n\n"
            + "\n".join(_conflict_table(this_pass))
            + "\n",
            key="bucket-mirror-pass-conflicts",
            description=f"conflicts of mirror pass {number}",
        )
    return planned


def _conflict_table(conflicts: list[tuple[str, Conflict]], limit: int = 200) -> list[str]:
    """Markdown rows: each conflict and how it was resolved."""
    rows = [
        "| pair | key | source | destination | winner | rule |",
        "|---|---|---|---|---|---|",
    ]
    rows += [
        f"| {lbl} | `{c.key}` | {c.source} | {c.destination} | {c.winner} | {c.rule} |"
        for lbl, c in conflicts[:limit]
    ]
    if len(conflicts) > limit:
        rows.append(f"\n... and {len(conflicts) - limit} more")
    return rows


@task(name="journal_pass", cache_policy=NO_CACHE)
def journal_pass(
    session: MirrorSession,
    options: MirrorOptions,
    jopts: JournalOptions,
    run: JournalRun,
    cutover: bool = False,
) -> int:
    """Prefect task: one journal-aware pass over every bucket pair (see :func:`_one_pass`)."""
    progress = PassProgress(f"Mirror pass {run.passes + 1} ({jopts.direction.value})")
    try:
        return _one_pass(session, options, jopts, run, cutover=cutover, progress=progress)
    finally:
        progress.finish()


def _approve_withheld_deletes(
    session: MirrorSession, run: JournalRun, auto_approve: bool, timeout_seconds: int
) -> None:
    """Ask for the deletes the final pass withheld, unless an earlier run of this session had them
    approved (recorded next to the journal: ``tasks.mirror_approvals``); record a new approval at once.
    """
    pending = {p.label: p for p in session.pairs if run.withheld_keys.get(p.label)}
    recorded = {
        label: load_approved_deletes(session.destination, p.destination_bucket, label)
        for label, p in pending.items()
    }
    if all(set(run.withheld_keys[label]) <= recorded[label] for label in pending):
        get_run_logger().info(
            "the %d withheld deletes were approved in an earlier run (recorded next to the journal):"
            " not asking again",
            sum(len(run.withheld_keys[label]) for label in pending),
        )
    else:
        request_approval(
            "mirror deletes",
            "## Deletes withheld by the safety caps\n\n" + "\n".join(f"- {n}" for n in run.notes[-5:]) + "\n",
            key="mirror-deletes-final",
            auto_approve=auto_approve,
            timeout_seconds=timeout_seconds,
        )
        for label, pair in pending.items():
            if run.lease is not None:
                run.lease.check()
            save_approved_deletes(
                session.destination, pair.destination_bucket, label, run.withheld_keys[label]
            )
    run.approved_pairs = set(pending)
    fault_points.reached("mirror_deletes_approved")


def _cutover_recorded(session: MirrorSession) -> bool:
    for pair in session.pairs:
        if pair.destination_bucket in session.missing_destination_buckets:
            return False
        header, _ = load_journal(session.destination, pair.destination_bucket, journal_key(pair.label))
        if not header or not header.get("cutover_approved"):
            return False
    return bool(session.pairs)


def _opaque(value: Any) -> Any:
    """Hide a large object (clients, totals) from Prefect's parameter introspection."""
    return quote(value)


def _record_cutover(session: MirrorSession, run: JournalRun, approved: bool = True) -> None:
    """Record (or, once the cutover is verified, clear) the approval in every pair's journal.

    Recorded right after the approval, so a run killed from then on is not asked again; cleared after
    the verified final pass, so the next watch over the same pair (a later DNS move) asks again.
    """
    for pair in session.pairs:
        if pair.destination_bucket in session.missing_destination_buckets:
            continue
        key = journal_key(pair.label)
        header, entries = load_journal(session.destination, pair.destination_bucket, key)
        if header is not None and bool(header.get("cutover_approved")) != approved:
            header["cutover_approved"] = approved
            if run.lease is not None:
                run.lease.check()
            save_journal(session.destination, pair.destination_bucket, key, header, entries)


def _same_bytes(session: MirrorSession, pair: Any, src: ObjectEntry, dst: ObjectEntry) -> bool:
    """Same size, ETags that cannot be compared (``planning.mirror.etags_comparable``): compare
    the SHA-256 of the stored bytes on both sides."""
    if src.size != dst.size or etags_comparable(src, dst):
        return False
    mine = _sha256(session.source, pair.source_bucket, pair.source_prefix + src.key)
    return mine == _sha256(session.destination, pair.destination_bucket, pair.destination_prefix + dst.key)


def _sha256(client: Any, bucket: str, key: str) -> str:
    from tasks.s3_listing import content_checksum

    try:
        return content_checksum(client, bucket, key)
    except Exception as exc:
        raise translate(exc, context=f"reading {bucket}/{key} to compare its bytes") from exc


@task(name="verify_journal_mirror", cache_policy=NO_CACHE)
def verify_journal_mirror(
    session: MirrorSession, options: MirrorOptions, two_way: bool
) -> tuple[bool, str, list[tuple[str, str]]]:
    """Compare fresh listings: same keys with the same size and ETag on both sides.

    Keys the journal keeps on purpose (one-way: client writes and deletes on the destination), and
    keys a client changed on the destination after the final pass while the source stayed as that
    pass left it (the new DNS at work), are allowed to differ: they are returned as ``(pair, key)``
    and listed in the summary. A key the source changed after the final pass fails it (a client still
    on the old DNS: run again before the source goes away).
    """
    flt = KeyFilter(options, None)
    differ: list[str] = []
    kept_keys: list[tuple[str, str]] = []
    for pair in session.pairs:
        src = {
            e.key: e
            for e in iter_objects(session.source, pair.source_bucket, pair.source_prefix, side="source")
            if not flt.excluded(e.key)
        }
        dst = {
            e.key: e
            for e in iter_objects(
                session.destination, pair.destination_bucket, pair.destination_prefix, side="destination"
            )
            if not flt.excluded(e.key)
        }
        _, journal = load_journal(session.destination, pair.destination_bucket, journal_key(pair.label))
        kept = {e.key for e in journal if e.origin == "destination"} if not two_way else set()
        # the mirror's own copies: the journal holds the ETag each write returned, which is of
        # another kind than the source's for a multipart source written with one PUT (same bytes,
        # confirmed by the stream's MD5 when written)
        copied = {e.key: (e.source, e.destination) for e in journal if two_way or e.origin == "source"}
        recorded = {e.key: e.source for e in journal}
        for key in sorted(set(src) | set(dst)):
            se, de = src.get(key), dst.get(key)
            s = None if se is None else (se.size, se.etag)
            d = None if de is None else (de.size, de.etag)
            if s == d or (s is not None and d is not None and copied.get(key) == (s, d)):
                continue
            if options.verify == "checksum" and se and de and _same_bytes(session, pair, se, de):
                continue
            if key in kept or s == recorded.get(key):
                # kept on purpose, or the source is as the final pass left it and a client (on the
                # new DNS) wrote or deleted the destination's copy since: kept, listed
                kept_keys.append((pair.label, key))
            else:  # the source changed after the final pass: a straggler still on the old DNS
                differ.append(f"{pair.label}: {key}")
    if differ:
        return (
            False,
            f"{len(differ)} keys differ, changed on the source after the final pass (clients still on"
            f" the old DNS?): {differ[:5]}",
            kept_keys,
        )
    what = (
        "same keys and ETags on both sides"
        if two_way
        else "destination matches source except kept client writes"
    )
    return True, what, kept_keys


def journal_mirror(
    session: MirrorSession,
    options: MirrorOptions,
    jopts: JournalOptions,
    *,
    watch: bool,
    interval: float,
    auto_approve: bool,
    approval_timeout_seconds: int,
    where: str,
) -> dict[str, Any]:
    """Run journal passes (and the watch until the cutover approval), verify, publish the summary.

    The run first takes the mirror lease of every pair (``tasks.mirror_lease``): a re-run waits for a
    killed run's lease to go stale (or takes it at once when Prefect reports that run finished) and
    refuses while a live run holds it, so two runs never act on one pair.
    """
    logger = get_run_logger()
    for pair in session.pairs:  # the leases live next to the journals, in the destination buckets
        ensure_bucket(session, pair.destination_bucket)
    lease = MirrorLease(session.destination, [(p.destination_bucket, p.label) for p in session.pairs])
    lease_notes = lease.acquire()
    for note in lease_notes:
        logger.info("mirror lease: %s", note)
    try:
        result = _leased_mirror(
            session,
            options,
            jopts,
            JournalRun(lease=lease),
            _Watch(watch, interval, auto_approve, approval_timeout_seconds, where),
        )
    finally:
        lease.release()
    return {**result, "lease": lease_notes}


@dataclass(frozen=True)
class _Watch:
    watch: bool
    interval: float
    auto_approve: bool
    approval_timeout_seconds: int
    where: str


def _leased_mirror(
    session: MirrorSession, options: MirrorOptions, jopts: JournalOptions, run: JournalRun, w: _Watch
) -> dict[str, Any]:
    watch, interval, auto_approve = w.watch, w.interval, w.auto_approve
    approval_timeout_seconds, where = w.approval_timeout_seconds, w.where
    logger = get_run_logger()
    two_way = jopts.direction.value == "two-way"
    resumed = _cutover_recorded(session) if watch else False
    journal_pass(_opaque(session), options, jopts, _opaque(run))
    approval_comment = ""
    watch_mode: dict[str, str] = {}
    if watch and not resumed:
        waiter = ChangeWaiter(
            session.source,
            {p.source_bucket for p in session.pairs},
            session.pairs[0].source_prefix if session.pairs else "",
            interval=interval,
            # two-way: a client write on the destination wakes the watch as one on the source does
            also=[(session.destination, [p.destination_bucket], p.destination_prefix) for p in session.pairs]
            if two_way
            else (),
        )
        watch_mode = {"mode": waiter.start(), "detail": waiter.reason}
        logger.info("watch mode: %s", waiter.reason)
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                waiter.wait(stop)
                if stop.is_set():
                    return
                if run.lease is not None and run.lease.lost:  # another run acts now: stop acting
                    run.errors.append("the mirror lease was lost: the watch stopped acting")
                    return
                try:
                    _one_pass(session, options, jopts, run, stop=stop)
                except Exception as exc:  # any failure: the watch goes on (the run waits for approval)
                    err = translate(exc, context="watch pass")  # a StateferryError comes back as it is
                    run.errors.append(str(err))
                    logger.warning("watch pass failed, nothing deleted, retrying next interval: %s", err)

        thread = threading.Thread(target=contextvars.copy_context().run, args=(loop,), daemon=True)
        thread.start()
        try:
            approval = request_approval(
                CUTOVER_STEP,
                f"## Mirror is running ({jopts.direction.value}): {where}\n\n"
                "Passes continue until you approve "
                f"**{CUTOVER_STEP}**. Client writes on the destination are kept; conflicts resolve by "
                f"`conflict={jopts.conflict.value}`. Then a final pass and a verification.\n",
                key="dns-cutover-done",
                auto_approve=auto_approve,
                timeout_seconds=approval_timeout_seconds,
                suspend=False,
            )
            approval_comment = approval.comment
            stop.set()
            thread.join()
            _record_cutover(session, run)  # a run killed from here on is not asked again
        finally:
            stop.set()
            thread.join()
            waiter.close()
    elif resumed:
        logger.info("the journal records the cutover approval: not asking again")
    withheld_before = run.withheld
    journal_pass(_opaque(session), options, jopts, _opaque(run), cutover=watch)  # final pass
    if run.withheld > withheld_before:
        _approve_withheld_deletes(session, run, auto_approve, approval_timeout_seconds)
        journal_pass(
            _opaque(session), replace(options, deletes_approved=True), jopts, _opaque(run), cutover=watch
        )
        for pair in session.pairs:  # done: the next withheld deletes are asked for
            if run.withheld_keys.get(pair.label) == [] and pair.label in run.approved_pairs:
                clear_approved_deletes(session.destination, pair.destination_bucket, pair.label)
    verified, detail, kept_keys = verify_journal_mirror(_opaque(session), options, two_way)
    if watch and verified:
        _record_cutover(session, run, approved=False)  # this cutover is complete: the next watch asks again
    reasons = {(label, k): why for label, items in run.kept.items() for k, why in items}
    kept = [(label, k, reasons.get((label, k), "client write kept")) for label, k in kept_keys]
    lines = [
        f"## bucket_mirror summary ({jopts.direction.value}, journal): {where}",
        "",
        "| | |",
        "|---|---|",
        f"| passes | {run.passes} |",
        "| to destination: copied / overwritten / deleted | "
        f"{run.forward.copied} / {run.forward.overwritten} / "
        f"{run.forward.deleted} |",
        f"| to source: copied / overwritten / deleted | {run.backward.copied} / {run.backward.overwritten} / "
        f"{run.backward.deleted} |",
        f"| conflicts | {len(run.conflicts)} (rule `{jopts.conflict.value}`) |",
        f"| kept client writes (differ from the source) | {len(kept)} |",
        f"| verification | {'PASSED' if verified else 'FAILED'}: {detail} |",
    ]
    if run.conflicts:
        lines += [
            "",
            "### Conflicts",
            "",
            *_conflict_table(run.conflicts),
        ]
    if kept:
        lines += [
            "",
            "### Kept on the destination",
            *[f"- {lbl}: `{k}` ({why})" for lbl, k, why in kept[:200]],
        ]
    create_markdown_artifact(
        "\n".join(lines) + "\n", key="bucket-mirror-summary", description=f"bucket_mirror {where}"
    )
    failures = [f"{f.action} {f.key}: {f.error}" for r in (run.forward, run.backward) for f in r.failures]
    if not verified:
        raise PreconditionFailed(
            f"the two sides do not match after the final pass ({detail}); {len(failures)} transfers failed: "
            f"{failures[:3]}. Run the flow again: it resumes from the journal"
        )
    return {
        "mode": "watch" if watch else "sync",
        "direction": jopts.direction.value,
        "journal": True,
        "passes": run.passes,
        "copied": run.forward.copied,
        "overwritten": run.forward.overwritten,
        "deleted": run.forward.deleted,
        "copied_back": run.backward.copied,
        "overwritten_back": run.backward.overwritten,
        "deleted_back": run.backward.deleted,
        "conflicts": [{"key": c.key, "winner": c.winner, "rule": c.rule} for _, c in run.conflicts],
        "kept": [k for _, k, _ in kept],
        "withheld_deletes": run.withheld,
        "failures": failures[:50],
        "verified": verified,
        "verification": detail,
        "resumed_after_cutover": resumed,
        "watch": {**watch_mode, "approval_comment": approval_comment, "errors": run.errors},
    }
