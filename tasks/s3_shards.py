"""Sharded mirror passes: sample the source's keys, and mirror one key range (a shard) end to end.

A shard runs in any process (a Dask worker here, a pod of a Dask cluster on Kubernetes in
production): it builds its own clients from the ObjectStore blocks, lists only its key range on both
sides, plans it with the ordinary planner, transfers, and verifies (from the pass's confirmed writes,
else by listing its range again), up to ``max_passes`` times. It returns a small
:class:`planning.mirror_shards.ShardOutcome`, never the plan, so the coordinator's memory does not
grow with the bucket.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.cache_policies import NONE as NO_CACHE

from planning.mirror import ActionKind, MirrorOptions, Verdict, approve_withheld_deletes
from planning.mirror_shards import KeyRange, ShardOutcome, StrideSample
from tasks.s3_clients import mirror_client, same_store
from tasks.s3_listing import iter_objects, plan_bucket
from tasks.s3_transfer import REPORT_COUNTS, TransferReport, Transferrer

if TYPE_CHECKING:
    from minio import Minio

    from blocks.object_store import ObjectStore
    from tasks.s3_mirror_pass import BucketPair

__all__ = ["mirror_shard", "run_shard", "sample_keys"]


def sample_keys(client: Minio, bucket: str, prefix: str, size: int = 4096) -> list[str]:
    """Return an evenly spaced sample (at most ``2 * size`` keys) of the relative keys under ``prefix``.

    Raises:
        StateferryError: The listing failed.
    """
    sample = StrideSample(size)
    sample.extend(e.key for e in iter_objects(client, bucket, prefix, side="source"))
    return sample.keys


def run_shard(
    source: ObjectStore,
    destination: ObjectStore,
    pair: BucketPair,
    within: KeyRange,
    options: MirrorOptions,
    workers: int = 16,
    max_passes: int = 3,
    auto_approve: bool = False,
) -> ShardOutcome:
    """Mirror the keys of one range of one bucket pair and verify the range.

    Args:
        source: Source store block.
        destination: Destination store block (the destination bucket exists).
        pair: The bucket pair.
        within: The shard's key range (relative keys).
        options: Planner options.
        workers: Parallel transfers in this shard.
        max_passes: Passes until the range is verified.
        auto_approve: Deletes over ``max_delete_ratio`` (of this range) are approved; otherwise they
            are withheld and reported. Deletes withheld because the range's source is empty never are.

    Returns:
        The shard's outcome.

    Raises:
        StateferryError: A listing failed (nothing of this pass was deleted).
    """
    started = time.perf_counter()
    src = mirror_client(source, workers)
    dst = mirror_client(destination, workers)
    server_side = same_store(source, destination) and source.access_key == destination.access_key
    outcome = ShardOutcome(within.label, counts=dict.fromkeys(REPORT_COUNTS, 0))
    verify_plan = None

    def plan_now() -> Any:
        return plan_bucket(
            src,
            dst,
            pair.source_bucket,
            pair.destination_bucket,
            pair.source_prefix,
            pair.destination_prefix,
            options,
            datetime.now(UTC),
            workers=workers,
            within=within,
        )

    for number in range(1, max_passes + 1):
        plan = verify_plan or plan_now()
        verify_plan = None
        if plan.verdict is Verdict.NEEDS_APPROVAL and auto_approve:
            plan = approve_withheld_deletes(plan)
        if number == 1:
            outcome.planned = dict(plan.counts)
            outcome.source_objects = plan.source_objects
        outcome.passes = number
        outcome.withheld_deletes = len(plan.withheld_deletes)
        report = TransferReport()
        if plan.changes:
            report = Transferrer(src, dst, server_side=server_side, workers=workers).run(
                [a for a in plan.actions if a.kind is not ActionKind.INSPECT],
                pair.source_bucket,
                pair.destination_bucket,
                pair.source_prefix,
                pair.destination_prefix,
            )
        for name in REPORT_COUNTS:
            outcome.counts[name] += getattr(report, name)
        outcome.failures = [f"{f.action} {f.key}: {f.error}" for f in report.failures[:50]]
        if plan.withheld_deletes:
            outcome.detail = f"{len(plan.withheld_deletes)} deletes withheld: " + "; ".join(plan.notes)
            break
        if not (report.failures or report.unconfirmed or report.vanished):
            outcome.verified = True
            outcome.detail = f"{report.confirmed} writes confirmed by ETag, {report.deleted} deletes"
            break
        verify_plan = plan_now()
        left = verify_plan.changes + len(verify_plan.withheld_deletes)
        if left == 0:
            outcome.verified = True
            outcome.detail = "a fresh listing of the range plans no change"
            break
        outcome.detail = f"{left} changes still planned after pass {number}"
    outcome.seconds = round(time.perf_counter() - started, 3)
    return outcome


#: Prefect task: mirror and verify one key range (:func:`run_shard`); idempotent, resumable.
mirror_shard = task(name="mirror_shard", cache_policy=NO_CACHE, task_run_name="mirror_shard {within.label}")(
    run_shard
)
