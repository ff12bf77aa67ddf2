"""Planner memory at 10^7 keys: the streaming sorted merge of two synthetic listings (issue 16).

Generates a source and a destination listing of ``--keys`` objects lazily, in key order (as S3 lists
them), with ``--changed`` of the keys differing (half overwritten, a quarter new on the source, a
quarter only on the destination, deleted with ``remove=True``), and plans the pass with
``planning.mirror.plan_mirror`` -- what every mirror pass (and every shard of a sharded pass) runs.
Then samples the source keys for shard boundaries (``StrideSample`` + ``key_ranges``, what the
sharded coordinator keeps in memory).

Prints wall time, keys per second, peak RSS of the process (``ru_maxrss``) and, with
``--tracemalloc``, the peak of Python allocations. The planner keeps only the actions, never the
listings, so memory grows with the changes, not with the bucket; a full copy of a huge bucket is
bounded by sharding it (each shard plans one key range).

Usage: ``.venv/bin/python benchmarks/mirror_planner_memory.py [--keys 10000000] [--changed 0.01]
[--tracemalloc]``
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planning.mirror import MirrorOptions, ObjectEntry, plan_mirror
from planning.mirror_shards import StrideSample, key_ranges

ETAG_A = "0" * 32
ETAG_B = "1" * 32
T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)


def _kind(i: int, every: int) -> int:
    """0: identical; 1: overwritten; 2: only on the source; 3: only on the destination."""
    if i % every:
        return 0
    return (1, 1, 2, 3)[(i // every) % 4]


def source(n: int, every: int) -> Iterator[ObjectEntry]:
    for i in range(n):
        kind = _kind(i, every)
        if kind == 3:
            continue
        etag = ETAG_B if kind == 1 else ETAG_A
        yield ObjectEntry(f"data/{i:010d}", 1024, etag, T1 if kind == 1 else T0)


def destination(n: int, every: int) -> Iterator[ObjectEntry]:
    for i in range(n):
        if _kind(i, every) == 2:
            continue
        yield ObjectEntry(f"data/{i:010d}", 1024, ETAG_A, T0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=10_000_000)
    parser.add_argument("--changed", type=float, default=0.01)
    parser.add_argument("--tracemalloc", action="store_true", help="also trace Python allocations (slower)")
    args = parser.parse_args()
    every = max(1, round(1 / args.changed)) if args.changed > 0 else args.keys + 1
    if args.tracemalloc:
        tracemalloc.start()
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    plan = plan_mirror(source(args.keys, every), destination(args.keys, every), MirrorOptions(remove=True))
    seconds = time.perf_counter() - started
    sample_started = time.perf_counter()
    sample = StrideSample().extend(e.key for e in source(args.keys, every))
    ranges = key_ranges(sample.keys, 64)
    sample_seconds = time.perf_counter() - sample_started
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"keys: {args.keys:,} per side, {args.changed:.1%} changed")
    print(f"plan: {plan.summary()['counts']} verdict={plan.verdict.value}")
    print(f"planner time: {seconds:.1f} s ({args.keys / seconds:,.0f} keys/s per side)")
    print(
        f"shard sample: {len(sample.keys)} keys kept of {sample.seen:,}, {len(ranges)} ranges, "
        f"{sample_seconds:.1f} s"
    )
    if args.tracemalloc:
        _, peak = tracemalloc.get_traced_memory()
        print(f"peak traced Python allocations: {peak / 2**20:.1f} MiB")
    print(f"peak RSS: {peak_rss:.1f} MiB (interpreter and imports before planning: {base_rss:.1f} MiB)")
    limit = 500
    print(f"bound {limit} MiB: {'OK' if peak_rss < limit else 'EXCEEDED'}")


if __name__ == "__main__":
    main()
