"""Bulk and delta copy rates of the data mover next to ``rsync -aHAX`` (same machine, same run).

The mover path is what a migration does per volume: ``pack`` (GNU tar posix/sparse/xattrs/ACLs,
gzip -1, streamed to S3) then ``unpack`` (S3 -> member gate -> GNU tar), each followed by the tree
checksum; rsync copies directly between two local directories (no object store, no checksum), so
it is an upper bound for a local copy, not the same job.

    .venv/bin/python -m benchmarks.volume_copy_bench [--gib 2] [--small 8000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devservers.s3 import SeaweedS3

MiB = 1 << 20


def build(root: Path, gib: float, small: int) -> tuple[int, int]:
    """Half big files of random data, half small files; returns (files, bytes)."""
    total = int(gib * 1024 * MiB)
    small_size = total // 2 // small
    big = 4
    big_size = (total - small * small_size) // big
    chunk = os.urandom(4 * MiB)
    for i in range(big):
        with open(root / f"big-{i}.bin", "wb") as fh:
            left = big_size
            while left > 0:
                n = min(left, len(chunk))
                fh.write(chunk[:n] if i % 2 else os.urandom(n))
                left -= n
    for i in range(small):
        d = root / f"dir-{i % 100:03d}"
        d.mkdir(exist_ok=True)
        (d / f"f-{i}.dat").write_bytes(os.urandom(small_size))
    return big + small, big * big_size + small * small_size


def change(root: Path, small: int) -> int:
    """~2% of the small files rewritten, 1% deleted, 64 MiB appended to one big file; returns the
    bytes of the files that changed."""
    changed = 0
    for i in range(0, small, 50):
        (root / f"dir-{i % 100:03d}" / f"f-{i}.dat").write_bytes(os.urandom(4096))
        changed += 4096
    for i in range(7, small, 100):
        (root / f"dir-{i % 100:03d}" / f"f-{i}.dat").unlink(missing_ok=True)
    with open(root / "big-0.bin", "ab") as fh:
        fh.write(os.urandom(64 * MiB))
    # both tools send changed files whole (tar by design, local rsync with its default --whole-file)
    return changed + (root / "big-0.bin").stat().st_size


def run(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.monotonic()
    res = subprocess.run(argv, env=env, capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"{argv[:4]} failed: {res.stderr[-800:]}")
    return time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=2.0)
    ap.add_argument("--small", type=int, default=8000)
    args = ap.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="volume-bench-", dir="/var/tmp") as tmp,
        SeaweedS3(Path(tmp) / "s3") as s3,
    ):
        src, dst, rs = Path(tmp) / "src", Path(tmp) / "dst", Path(tmp) / "rsync"
        for d in (src, dst, rs):
            d.mkdir()
        files, size = build(src, args.gib, args.small)
        env = {
            **os.environ,
            "STATEFERRY_S3_ENDPOINT": s3.url,
            "STATEFERRY_S3_ACCESS_KEY": s3.access_key,
            "STATEFERRY_S3_SECRET_KEY": s3.secret_key,
        }
        import minio

        client = minio.Minio(s3.endpoint, s3.access_key, s3.secret_key, secure=False)
        client.make_bucket("bench")
        mover = [sys.executable, "-m", "stateferry.worker.volume"]
        key = ["--bucket", "bench", "--key", "v.tar.gz"]
        rows = []
        t_pack = run([*mover, "pack", "--dir", str(src), *key], env)
        t_unpack = run([*mover, "unpack", "--dir", str(dst), *key, "--result-key", "r0.json"], env)
        t_rsync = run(["rsync", "-aHAX", f"{src}/", f"{rs}/"], env)
        rows.append(("bulk", files, size, t_pack + t_unpack, t_rsync))
        print(f"bulk: mover {t_pack:.1f}+{t_unpack:.1f} s, rsync {t_rsync:.1f} s", flush=True)
        resp = client.get_object("bench", "r0.json")
        before = json.loads(resp.read())["sha256_tree"]
        resp.close()
        delta = change(src, args.small)
        t_pack1 = run([*mover, "pack", "--dir", str(src), *key, "--level", "1"], env)
        t_unpack1 = run(
            [
                *mover,
                "unpack",
                "--dir",
                str(dst),
                *key,
                "--level",
                "1",
                "--expect-before",
                before,
                "--result-key",
                "r1",
            ],
            env,
        )
        t_rsync1 = run(["rsync", "-aHAX", "--delete", f"{src}/", f"{rs}/"], env)
        rows.append(("delta", files, delta, t_pack1 + t_unpack1, t_rsync1))
        same = subprocess.run(["diff", "-r", "-q", str(dst), str(rs)], capture_output=True).returncode == 0
        print(f"volume {size / MiB:.0f} MiB, {files} files; copies identical: {same}")
        print(
            "| pass | MiB moved | stateferry mover s (MB/s, files/s) | rsync -aHAX s (MB/s, files/s) | ratio |"  # noqa: E501
        )
        print("|---|---|---|---|---|")
        for name, n, moved, t_sf, t_rs in rows:
            print(
                f"| {name} | {moved / MiB:.0f} | {t_sf:.1f} ({moved / 1e6 / t_sf:.0f}, {n / t_sf:.0f}) | "
                f"{t_rs:.1f} ({moved / 1e6 / t_rs:.0f}, {n / t_rs:.0f}) | {t_sf / t_rs:.1f}x |"
            )
        print(
            f"(mover: pack {t_pack:.1f}+unpack {t_unpack:.1f} s bulk, {t_pack1:.1f}+{t_unpack1:.1f} s delta)"
        )
        shutil.rmtree(src, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
