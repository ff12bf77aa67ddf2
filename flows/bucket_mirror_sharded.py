"""Sharded one-shot ``bucket_mirror`` passes on a Dask cluster (``bucket_mirror(..., shards=N)``).

Runbook:

1. sample the source's keys (bounded memory) and cut the key space into ``shards`` ranges;
2. run one ``mirror_shard`` Prefect task per range on a ``DaskTaskRunner``: a ``LocalCluster`` of
   ``dask_workers`` processes, or the Dask scheduler at ``dask_address`` (a Dask cluster on
   Kubernetes in production, see docs/scale.md); each shard lists, plans, copies and verifies its
   range with its own clients;
3. merge the shards' outcomes into one summary and one Markdown artifact.

The single-process path stays the default (``shards=1``).
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect_dask import DaskTaskRunner

from blocks.object_store import ObjectStore
from planning.mirror import MirrorOptions
from planning.mirror_options import BucketMirrorOptions
from planning.mirror_shards import DASK_ADDRESS, KeyRange, ShardOutcome, key_ranges, merge_outcomes
from stateferry.errors import InputError, PreconditionFailed
from tasks.s3_mirror_pass import BucketPair, MirrorSession, ensure_bucket
from tasks.s3_shards import mirror_shard, sample_keys

__all__ = ["dask_runner", "sharded_mirror"]


def dask_runner(dask_address: str | None, dask_workers: int) -> DaskTaskRunner:
    """A ``DaskTaskRunner`` on the given scheduler, or on a ``LocalCluster`` of worker processes.

    Raises:
        InputError: A malformed address or worker count.
    """
    if dask_address is not None:
        if not DASK_ADDRESS.match(dask_address):
            raise InputError(
                "dask_address",
                "not a Dask scheduler address",
                "use tcp://host:port or tls://host:port (e.g. the scheduler Service of a Dask cluster)",
            )
        return DaskTaskRunner(address=dask_address)
    if not 1 <= dask_workers <= 64:
        raise InputError("dask_workers", f"must be between 1 and 64, got {dask_workers}", "use e.g. 2")
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": dask_workers,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
        },
    )


@flow(name="bucket_mirror_shards")
def _run_shards(
    source: ObjectStore,
    destination: ObjectStore,
    pair: BucketPair,
    ranges: list[KeyRange],
    options: MirrorOptions,
    workers: int,
    max_passes: int,
    auto_approve: bool,
) -> list[ShardOutcome]:
    futures = [
        mirror_shard.submit(source, destination, pair, r, options, workers, max_passes, auto_approve)
        for r in ranges
    ]
    return [f.result() for f in futures]


def sharded_mirror(
    source: ObjectStore,
    destination: ObjectStore,
    session: MirrorSession,
    opts: BucketMirrorOptions,
    *,
    auto_approve: bool,
    where: str,
) -> dict[str, Any]:
    """Mirror the session's single bucket pair in ``opts.shards`` key ranges on Dask; one merged summary.

    Args:
        source: The source store (each shard opens its own clients).
        destination: The destination store.
        session: The flow's mirror session (one bucket pair).
        opts: The flow's options: the pass options, ``shards``, ``dask_address``, ``dask_workers``
            and ``max_passes``.
        auto_approve: Approve large deletes without asking.
        where: ``source -> destination``, for the artifact.

    Returns:
        The merged summary (same keys as the single-process summary where they apply, plus
        ``shards`` and ``shard_seconds``).

    Raises:
        PreconditionFailed: The destination is not identical to the source after the sharded pass
            (raised after the summary artifact is written).
    """
    started = time.perf_counter()
    runner = dask_runner(opts.dask_address, opts.dask_workers)
    pair = session.pairs[0]
    created = ensure_bucket(session, pair.destination_bucket) == "created"
    sample = sample_keys(session.source, pair.source_bucket, pair.source_prefix)
    ranges = key_ranges(sample, opts.shards)
    per_shard = max(1, session.workers // max(1, min(len(ranges), opts.dask_workers)))
    outcomes = _run_shards.with_options(task_runner=runner)(  # type: ignore[arg-type]
        source, destination, pair, ranges, opts.pass_options(), per_shard, opts.max_passes, auto_approve
    )
    merged = merge_outcomes(outcomes)
    counts: dict[str, int] = merged["counts"]  # type: ignore[assignment]
    seconds = time.perf_counter() - started
    failures: list[str] = merged["failures"]  # type: ignore[assignment]
    summary: dict[str, Any] = {
        "mode": "sharded",
        "shards": merged["shards"],
        "passes": max((o.passes for o in outcomes), default=0),
        **{k: counts.get(k, 0) for k in ("copied", "overwritten", "metadata_updated", "deleted")},
        "vanished": counts.get("vanished", 0),
        "bytes": counts.get("bytes", 0),
        "retries": counts.get("retries", 0),
        "confirmed": counts.get("confirmed", 0),
        "withheld_deletes": merged["withheld_deletes"],
        "seconds": round(seconds, 3),
        "shard_seconds": [o.seconds for o in outcomes],
        "failures_last_pass": failures,
        "verified": merged["verified"],
        "verification": merged["verification"],
        "buckets_created": [pair.destination_bucket] if created else [],
    }
    rows = [
        f"| {o.label} | {o.source_objects} | {o.counts.get('copied', 0)} | "
        f"{o.counts.get('overwritten', 0)} | {o.counts.get('deleted', 0)} | {o.seconds:.1f} s | "
        f"{'yes' if o.verified else 'NO'}: {o.detail} |"
        for o in outcomes
    ]
    create_markdown_artifact(
        "\n".join(
            [
                f"## bucket_mirror (sharded) summary: {where}",
                "",
                f"{merged['shards']} shards, run time {seconds:.1f} s, verification "
                f"{'PASSED' if merged['verified'] else 'FAILED'}: {merged['verification']}",
                "",
                "| key range | source objects | copied | overwritten | deleted | time | verified |",
                "|---|---:|---:|---:|---:|---:|---|",
                *rows,
                *(["", "### Failures", *[f"- {f}" for f in failures[:50]]] if failures else []),
            ]
        )
        + "\n",
        key="bucket-mirror-summary",
        description=f"bucket_mirror sharded {where}",
    )
    if not summary["verified"]:
        raise PreconditionFailed(
            f"the destination is not identical to the source after the sharded pass "
            f"({summary['verification']}); run the flow again (it continues from the observed state)"
        )
    return summary
