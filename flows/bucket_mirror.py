"""Flow ``bucket_mirror``: ``mc mirror`` semantics, made safe, verified and continuous until cutover.

Modes:

* ``dry_run=True``: the plan only (Markdown + table artifacts), nothing written (``mc mirror --fake``).
* one-shot (default): plan -> act -> verify, repeated up to ``max_passes`` while objects failed, then
  a summary artifact. A pass is verified from what it already knows when every write was confirmed
  by the destination's ETag (equal to the ETag of the source bytes read), every delete was
  acknowledged, nothing failed, vanished or was withheld; otherwise (or in watch mode) both sides are
  listed again and planned afresh.
* ``watch=True``: one pass, then passes in a background thread (woken by MinIO bucket notifications
  when the store offers them, else every ``watch_interval_seconds``) while the flow run is paused
  for the approval "DNS cutover done" (the operator approves from the Prefect UI); then a final pass
  and a verification pass.

Safety: nothing is deleted when a listing fails (the pass raises before acting) or when the source is
empty (unless ``allow_empty_source``); deletes beyond ``max_delete_ratio`` of the destination objects
wait for an approval of exactly the withheld list.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.utilities.annotations import quote

from blocks.compat import ObjectStoreLike
from blocks.loading import resolve_store
from flows.bucket_mirror_journal import journal_mirror
from flows.bucket_mirror_sharded import sharded_mirror
from planning.flow_options import ModelOrMapping, merge_options
from planning.mirror import (
    MirrorPlan,
    Verdict,
    approve_withheld_deletes,
)
from planning.mirror_journal import Direction, JournalOptions, Winner
from planning.mirror_options import DOCS, BucketMirrorOptions
from planning.mirror_shards import check_sharding
from stateferry.errors import InputError, PreconditionFailed
from tasks.approvals import request_approval
from tasks.mirror_watch import ChangeWaiter, WatchLoop
from tasks.run_restart import restart_crashed_watch
from tasks.s3_journal import journals_present
from tasks.s3_mirror_pass import (
    PassResult,
    plan_pass,
    preflight_mirror,
    sync_pass,
    verify_mirror,
)
from tasks.s3_transfer import TransferReport

__all__ = ["bucket_mirror"]

CUTOVER_STEP = "DNS cutover done"


def _opaque(value: Any) -> Any:
    """Hide a large object from Prefect's parameter introspection (plans can hold 100k actions)."""
    return quote(value)


def _plan_table(plans: dict[str, MirrorPlan], limit: int = 1000) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for label, plan in plans.items():
        for action in plan.actions:
            rows.append(
                {
                    "pair": label,
                    "action": action.kind.value,
                    "key": action.key,
                    "bytes": action.size,
                    "reason": action.reason,
                }
            )
        for action in plan.withheld_deletes:
            rows.append(
                {
                    "pair": label,
                    "action": "delete (withheld)",
                    "key": action.key,
                    "bytes": action.size,
                    "reason": action.reason,
                }
            )
    return rows[:limit]


def _approve_deletes(
    result_plans: dict[str, MirrorPlan], markdown: str, *, number: int, auto_approve: bool
) -> dict[str, MirrorPlan]:
    """Ask for approval of withheld deletes (over max_delete_ratio); return the approved plans."""
    if not any(p.verdict is Verdict.NEEDS_APPROVAL for p in result_plans.values()):
        return result_plans

    request_approval(
        f"mirror deletes pass {number}", markdown, key=f"mirror-deletes-{number}", auto_approve=auto_approve
    )
    return {
        label: approve_withheld_deletes(p) if p.verdict is Verdict.NEEDS_APPROVAL else p
        for label, p in result_plans.items()
    }


def _verified(plans: dict[str, MirrorPlan]) -> tuple[bool, str]:
    left = sum(p.changes + p.counts["inspect"] for p in plans.values())
    withheld = sum(len(p.withheld_deletes) for p in plans.values())
    if left == 0 and withheld == 0:
        return True, "identical: a fresh listing of both sides plans no change"
    return False, f"{left} changes and {withheld} withheld deletes still planned after the last pass"


def _confirmed_by_pass(result: PassResult) -> tuple[bool, str] | None:
    """Verification from the pass itself, or ``None`` when only a fresh listing can tell."""
    report = result.report
    if report.failures or report.unconfirmed or report.vanished or result.withheld_deletes:
        return None
    if any(p.counts["inspect"] for p in result.plans.values()):
        return None
    skipped = sum(p.counts["skip"] for p in result.plans.values())
    return True, (
        f"identical: {report.confirmed} writes confirmed by the destination's ETag of the stored bytes, "
        f"{report.deleted} deletes acknowledged, {skipped} keys identical in this pass's listing"
    )


def _human_rate(report: TransferReport, seconds: float) -> str:
    secs = max(seconds, 1e-9)
    return f"{report.objects / secs:.1f} objects/s, {report.bytes / secs / 1e6:.1f} MB/s"


@flow(name="bucket_mirror", log_prints=True, on_crashed=[restart_crashed_watch])
def bucket_mirror(
    source: ObjectStoreLike | str,
    destination: ObjectStoreLike | str,
    options: ModelOrMapping[BucketMirrorOptions] | None = None,
    auto_approve: bool = False,
    bucket: str | None = None,
    destination_bucket: str | None = None,
    prefix: str | None = None,
    destination_prefix: str | None = None,
    overwrite: bool | None = None,
    remove: bool | None = None,
    exclude: list[str] | None = None,
    newer_than: str | None = None,
    older_than: str | None = None,
    verify: str | None = None,
    dry_run: bool | None = None,
    watch: bool | None = None,
    watch_interval_seconds: float | None = None,
    max_delete_ratio: float | None = None,
    allow_empty_source: bool | None = None,
    workers: int | None = None,
    max_passes: int | None = None,
    approval_timeout_seconds: int | None = None,
    direction: str | None = None,
    conflict: str | None = None,
    journal: bool | None = None,
    shards: int | None = None,
    dask_address: str | None = None,
    dask_workers: int | None = None,
) -> dict[str, Any]:
    """Mirror a bucket (or every bucket of a store) from ``source`` to ``destination``.

    The parameters after ``auto_approve`` are the fields of ``options`` as flat parameters, deprecated:
    they work for one more release (a field given both ways with different values is refused).

    Args:
        source: Source store: an ObjectStore, AwsCredentials, MinIOCredentials or S3Bucket block, a
            saved ObjectStore's name, or ``"<block-type-slug>/<name>"`` (e.g. ``"aws-credentials/prod"``).
            An S3Bucket's bucket is the default of ``options.bucket``.
        destination: Destination store, the same kinds as ``source`` (an S3Bucket's bucket is the
            default of ``options.destination_bucket``).
        options: What to mirror and how (``BucketMirrorOptions``, planning/mirror_options.py: every field is
            described in the UI form).
        auto_approve: Approve the cutover and large deletes without asking (unattended runs, tests).

    Returns:
        Summary: passes, objects/bytes copied, overwritten, deleted, failures, verification, mode.

    Raises:
        InputError: Bad options, unknown source bucket, rejected credentials, source equals destination.
        TransientError: A store is unreachable (nothing deleted).
        PreconditionFailed: The mirror could not be verified identical after the last pass.
    """
    logger = get_run_logger()
    opts = merge_options(BucketMirrorOptions, options, locals(), docs=DOCS, warn=logger.warning)
    started = time.perf_counter()
    pass_options = opts.pass_options()
    use_journal = opts.use_journal
    src_ref, dst_ref = resolve_store(source, "source"), resolve_store(destination, "destination")
    source, destination = src_ref.store, dst_ref.store
    bucket, destination_bucket = src_ref.bucket_or(opts.bucket), dst_ref.bucket_or(opts.destination_bucket)
    check_sharding(opts.shards, bucket, opts.watch, opts.dry_run, use_journal)
    session = preflight_mirror(
        source,
        destination,
        bucket,
        destination_bucket,
        opts.prefix,
        opts.destination_prefix,
        opts.workers,
    )
    where = f"{session.source_url} -> {session.destination_url}"
    if opts.journal is None and not use_journal:  # an earlier session's journal is never ignored silently
        kept = journals_present(session.destination, session.pairs, session.missing_destination_buckets)
        if kept and (opts.dry_run or opts.newer_than or opts.older_than):
            raise InputError(
                "journal",
                f"{', '.join(kept)} has a mirror journal (a watch/two-way session kept client writes"
                " there), and journal mode has no dry run and no age filters",
                "run with journal=true, or journal=false to ignore the journal on purpose",
            )
        if kept:
            logger.info(
                "a mirror journal exists for %s: this sync honours it (journal mode)", ", ".join(kept)
            )
            use_journal = True
            check_sharding(opts.shards, bucket, opts.watch, opts.dry_run, use_journal)
    logger.info(
        "mirroring %d bucket pair(s) %s (%s)",
        len(session.pairs),
        where,
        "server-side copy" if session.server_side else "streamed copy",
    )

    if use_journal:
        jopts = JournalOptions(
            Direction(opts.direction), Winner(opts.conflict), remove=opts.remove, overwrite=opts.overwrite
        )
        return journal_mirror(
            session,
            pass_options,
            jopts,
            watch=opts.watch,
            interval=opts.watch_interval_seconds,
            auto_approve=auto_approve,
            approval_timeout_seconds=opts.approval_timeout_seconds,
            where=where,
        )

    if opts.shards > 1:
        return sharded_mirror(source, destination, session, opts, auto_approve=auto_approve, where=where)

    if opts.dry_run:
        plans = plan_pass(session, pass_options, datetime.now(UTC))
        result = PassResult(0, plans, TransferReport(), True, datetime.now(UTC))
        create_markdown_artifact(
            result.markdown("Mirror plan (dry run)"),
            key="bucket-mirror-plan",
            description=f"bucket_mirror dry run {where}",
        )
        create_table_artifact(
            _plan_table(plans), key="bucket-mirror-plan-table", description="planned actions (first 1000)"
        )
        return {
            "mode": "dry_run",
            "planned": result.counts(),
            "planned_bytes": result.bytes(),
            "withheld_deletes": result.withheld_deletes,
            "buckets": [p.label for p in session.pairs],
            "verdicts": {k: p.verdict.value for k, p in plans.items()},
        }

    total = TransferReport()
    passes: list[PassResult] = []
    number = 0
    watch_info: dict[str, Any] = {}

    def one_pass() -> PassResult:
        nonlocal number
        number += 1
        plans = plan_pass(session, pass_options, datetime.now(UTC))
        needs = any(p.verdict is Verdict.NEEDS_APPROVAL for p in plans.values())
        if needs:
            markdown = PassResult(number, plans, TransferReport(), True, datetime.now(UTC)).markdown(
                f"Mirror pass {number}: deletes over max_delete_ratio"
            )
            plans = _approve_deletes(plans, markdown, number=number, auto_approve=auto_approve)
        result = sync_pass(_opaque(session), pass_options, number=number, plans=_opaque(plans))
        total.merge(result.report)
        passes.append(result)
        for failure in result.report.failures[:20]:
            logger.warning("pass %d: %s %s failed: %s", number, failure.action, failure.key, failure.error)
        blocked = [n for p in plans.values() for n in p.notes if p.verdict is Verdict.DELETES_BLOCKED]
        for note in blocked:
            logger.warning("pass %d: %s", number, note)
        return result

    first = one_pass()
    if opts.watch:
        waiter = ChangeWaiter(
            session.source,
            {p.source_bucket for p in session.pairs},
            session.pairs[0].source_prefix if session.pairs else "",
            interval=opts.watch_interval_seconds,
        )
        mode = waiter.start()
        logger.info("watch mode: %s", waiter.reason)
        loop = WatchLoop(session, pass_options, waiter, number, logger)
        loop.start()
        try:
            markdown = (
                f"## Mirror is running: {where}\n\nPasses continue ({waiter.reason}) until you approve "
                f"**{CUTOVER_STEP}**: all clients resolve the new endpoint. Then a final pass and a "
                f"verification run.\n\nFirst pass: {first.report.objects} objects, "
                f"{first.report.bytes} bytes, "
                f"{len(first.report.failures)} failures.\n"
            )
            # Paused in-process (never suspended, even for deployment runs): the passes must go on.
            approval = request_approval(
                CUTOVER_STEP,
                markdown,
                key="dns-cutover-done",
                auto_approve=auto_approve,
                timeout_seconds=opts.approval_timeout_seconds,
                suspend=False,
            )
        finally:
            loop.join()
            waiter.close()
        for result in loop.results:
            total.merge(result.report)
        number = loop.number
        watch_info = {
            "mode": mode,
            "detail": waiter.reason,
            "background_passes": len(loop.results),
            "background_errors": loop.errors,
            "approval_comment": approval.comment,
        }
        one_pass()  # final pass after the cutover

    def check() -> tuple[bool, str]:
        by_pass = None if opts.watch else _confirmed_by_pass(passes[-1])
        return by_pass or _verified(verify_mirror(_opaque(session), pass_options))

    verified, detail = check()
    extra = 0
    while not verified and extra < opts.max_passes - 1:
        extra += 1
        logger.info("not yet identical (%s): running pass %d", detail, number + 1)
        one_pass()
        verified, detail = check()

    seconds = time.perf_counter() - started
    failures = [f"{f.action} {f.key}: {f.error}" for p in passes[-1:] for f in p.report.failures]
    summary: dict[str, Any] = {
        "mode": "watch" if opts.watch else "sync",
        "passes": number,
        "copied": total.copied,
        "overwritten": total.overwritten,
        "metadata_updated": total.metadata_updated,
        "deleted": total.deleted,
        "vanished": total.vanished,
        "bytes": total.bytes,
        "retries": total.retries,
        "confirmed": total.confirmed,
        "seconds": round(seconds, 3),
        "rate": _human_rate(total, total.seconds),
        "failures_last_pass": failures,
        "verified": verified,
        "verification": detail,
        "buckets_created": [b for p in passes for b in p.buckets_created],
        "watch": watch_info,
    }
    lines = [
        f"## bucket_mirror summary: {where}",
        "",
        "| | |",
        "|---|---|",
        f"| mode | {summary['mode']} |",
        f"| passes | {number} |",
        f"| copied / overwritten / metadata-only / deleted | {total.copied} / {total.overwritten} / "
        f"{total.metadata_updated} / {total.deleted} |",
        f"| bytes | {total.bytes} |",
        f"| transfer time | {total.seconds:.1f} s |",
        f"| rate | {summary['rate']} |",
        f"| run time | {seconds:.1f} s |",
        f"| retries | {total.retries} |",
        f"| failures (last pass) | {len(failures)} |",
        f"| verification | {'PASSED' if verified else 'FAILED'}: {detail} |",
    ]
    if watch_info:
        lines.append(
            f"| watch | {watch_info['detail']}; {watch_info['background_passes']} background passes |"
        )
    if failures:
        lines += ["", "### Failures", *[f"- {f}" for f in failures[:50]]]
    create_markdown_artifact(
        "\n".join(lines) + "\n", key="bucket-mirror-summary", description=f"bucket_mirror {where}"
    )
    if not verified:
        raise PreconditionFailed(
            f"the destination is not identical to the source after {number} passes ({detail}); "
            f"{len(failures)} objects failed in the last pass: {failures[:3]}. Run the flow again "
            "(it continues from the observed state); withheld deletes need approval or allow_empty_source"
        )
    return summary
