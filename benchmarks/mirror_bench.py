"""Benchmark of the bucket mirror against a plain get->put loop, plus the planner at 100k objects.

Starts two SeaweedFS stores (``devservers.s3.SeaweedS3``), fills the source with 2,000 x 4 KiB and
20 x 20 MiB objects, and measures in the same run:

* baseline: a straightforward loop, 16 threads, ``get_object`` -> ``put_object`` per object
  (``ObjectStore.minio_client()``);
* stateferry: ``tasks.s3_transfer.Transferrer`` (what ``bucket_mirror`` runs for a pass), incl. the
  listing and planning of the pass;

then plans a synthetic 100,000-object diff with 1% changed and reports its time and peak memory.

Usage: ``.venv/bin/python benchmarks/mirror_bench.py [--small 2000] [--large 20] [--rounds 1]``
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydantic import SecretStr

from blocks.object_store import ObjectStore
from devservers.s3 import SeaweedS3
from planning.mirror import MirrorOptions, ObjectEntry, plan_mirror
from tasks.s3_clients import mirror_client
from tasks.s3_listing import plan_bucket
from tasks.s3_transfer import Transferrer

KiB, MiB = 1024, 1024 * 1024


def store(s3: SeaweedS3) -> ObjectStore:
    return ObjectStore(
        endpoint=s3.endpoint, access_key=s3.access_key, secret_key=SecretStr(s3.secret_key), region=s3.region
    )


def fill(a: ObjectStore, bucket: str, count: int, size: int) -> None:
    client = mirror_client(a, 16)
    client.make_bucket(bucket)
    payloads = [os.urandom(size) for _ in range(min(count, 8))]

    def put(i: int) -> None:
        data = payloads[i % len(payloads)][:-8] + i.to_bytes(8, "big")
        client.put_object(
            bucket, f"obj/{i:06d}", io.BytesIO(data), len(data), content_type="application/x-bench"
        )

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(count)))


def baseline(a: ObjectStore, b: ObjectStore, src_bucket: str, dst_bucket: str) -> tuple[int, int, float]:
    src, dst = a.minio_client(), b.minio_client()
    dst.make_bucket(dst_bucket)
    objects = list(src.list_objects(src_bucket, recursive=True))

    def copy(name: str) -> int:
        response = src.get_object(src_bucket, name)
        try:
            data = response.read()
        finally:
            response.close()
            response.release_conn()
        dst.put_object(dst_bucket, name, io.BytesIO(data), len(data))
        return len(data)

    started = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        total = sum(pool.map(copy, [o.object_name for o in objects]))
    return len(objects), total, time.perf_counter() - started


def mirror(
    a: ObjectStore, b: ObjectStore, src_bucket: str, dst_bucket: str, workers: int
) -> tuple[int, int, float]:
    src, dst = mirror_client(a, workers), mirror_client(b, workers)
    started = time.perf_counter()
    dst.make_bucket(dst_bucket)
    plan = plan_bucket(src, dst, src_bucket, dst_bucket, "", "", MirrorOptions(), datetime.now(UTC))
    report = Transferrer(src, dst, workers=workers).run(plan.actions, src_bucket, dst_bucket)
    elapsed = time.perf_counter() - started
    assert not report.failures, report.failures[:3]
    return report.objects, report.bytes, elapsed


def planner_bench(n: int = 100_000, changed: float = 0.01) -> dict[str, float]:
    """Diff two synthetic n-object listings with ``changed`` of the keys modified.

    Returns the plan time (listings prebuilt), the planner's own peak allocation (tracemalloc, listings
    excluded), the memory the two listings take, and the end-to-end time when the listings are
    streamed from generators (as ``plan_bucket`` does with S3 pages).
    """
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    step = int(1 / changed)
    md5a, md5b = "a" * 32, "b" * 32

    def src() -> Iterator[ObjectEntry]:
        for i in range(n):
            yield ObjectEntry(f"data/{i:08d}", 4096, md5a, t0)

    def dst() -> Iterator[ObjectEntry]:
        for i in range(n):
            yield ObjectEntry(f"data/{i:08d}", 4096, md5b if i % step == 0 else md5a, t0 + timedelta(hours=1))

    tracemalloc.start()
    src_list, dst_list = list(src()), list(dst())
    listings_mib = tracemalloc.get_traced_memory()[0] / MiB
    tracemalloc.stop()
    started = time.perf_counter()
    plan = plan_mirror(src_list, dst_list, MirrorOptions(remove=True))
    plan_seconds = time.perf_counter() - started
    assert plan.counts["overwrite"] == n // step
    tracemalloc.start()
    plan_mirror(src_list, dst_list, MirrorOptions(remove=True))
    planner_peak = tracemalloc.get_traced_memory()[1] / MiB
    tracemalloc.stop()
    del src_list, dst_list
    started = time.perf_counter()
    plan_mirror(src(), dst(), MirrorOptions(remove=True))
    streamed_seconds = time.perf_counter() - started
    return {
        "changed": plan.counts["overwrite"],
        "plan_seconds": plan_seconds,
        "planner_peak_mib": planner_peak,
        "listings_mib": listings_mib,
        "streamed_seconds": streamed_seconds,
        "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=2000)
    parser.add_argument("--large", type=int, default=20)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    rows: list[tuple[str, str, int, float, float, float, float]] = []
    with (
        tempfile.TemporaryDirectory(prefix="mirror-bench-") as tmp,
        SeaweedS3(Path(tmp) / "a") as s3a,
        SeaweedS3(Path(tmp) / "b") as s3b,
    ):
        a, b = store(s3a), store(s3b)
        for label, count, size in (("small", args.small, 4 * KiB), ("large", args.large, 20 * MiB)):
            fill(a, f"bench-{label}", count, size)
            runs: dict[str, list[tuple[int, int, float, float]]] = {"get->put x16": [], "bucket_mirror": []}
            for r in range(args.rounds):  # interleaved rounds: both see the same machine load
                for impl in runs:
                    dst_bucket = f"bench-{label}-{r}-{'base' if impl.startswith('get') else 'mirror'}"
                    cpu = time.process_time()
                    if impl.startswith("get"):
                        n, total, secs = baseline(a, b, f"bench-{label}", dst_bucket)
                    else:
                        n, total, secs = mirror(a, b, f"bench-{label}", dst_bucket, args.workers)
                    runs[impl].append((n, total, secs, time.process_time() - cpu))
            for impl, results in runs.items():
                n, total, secs, cpu = sorted(results, key=lambda x: x[2])[len(results) // 2]  # median time
                rows.append((label, impl, n, secs, n / secs, total / secs / 1e6, cpu / n * 1000))
    print()
    print(f"median of {args.rounds} interleaved rounds; client CPU = this process (servers excluded)")
    print()
    print("| objects | implementation | count | seconds | objects/s | MB/s | client CPU ms/object |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for label, impl, n, secs, rate, mbs, cpu_ms in rows:
        kind = "4 KiB" if label == "small" else "20 MiB"
        print(f"| {kind} | {impl} | {n} | {secs:.2f} | {rate:.0f} | {mbs:.1f} | {cpu_ms:.2f} |")
    pb = planner_bench()
    print()
    print("| planner: 100,000 objects, 1% changed | value |")
    print("|---|---:|")
    print(f"| changed keys found | {pb['changed']:.0f} |")
    print(f"| diff time, listings in memory | {pb['plan_seconds']:.3f} s |")
    print(f"| planner peak allocation (tracemalloc, listings excluded) | {pb['planner_peak_mib']:.2f} MiB |")
    print(f"| the two listings themselves | {pb['listings_mib']:.1f} MiB |")
    print(f"| diff time, listings streamed from generators | {pb['streamed_seconds']:.3f} s |")
    print(f"| process max RSS (whole benchmark) | {pb['maxrss_mib']:.0f} MiB |")


if __name__ == "__main__":
    main()
