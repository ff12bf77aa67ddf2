"""Benchmark: back up a Redis server with ``scheduled_backup`` (type: redis) against
``redis-cli --rdb - | gzip > file`` and ``... | zstd > file`` in the same run on the same data.

Starts its own redis-server (requirepass, free port), SeaweedFS S3 and Prefect server in a temp
directory (all removed at the end), fills Redis with ~``--size-mb`` of values (strings, half of them
random bytes, half repeated text) and prints wall time, stored size and the growth of this Python
process's peak RSS. stateferry's time includes what the shell does not do: the preflight, the
RDB's inventory (``redis-check-rdb`` + loading it into a scratch ``redis-server``), fsync, the
manifest and retention.

    .venv/bin/python benchmarks/redis_backup_bench.py [--size-mb 256] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_stack import bench_stack  # noqa: E402


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak_rss() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _fill(server: Any, size_mb: int) -> int:
    """~1 KiB values until ``size_mb``: every other value random (incompressible), the rest text."""
    client = server.client()
    value_size, total, i = 1024, 0, 0
    text = ("stateferry benchmark value " * 40)[:value_size]
    while total < size_mb << 20:
        pipe = client.pipeline(transaction=False)
        for _ in range(5000):
            value = os.urandom(value_size // 2).hex() if i % 2 else text
            pipe.set(f"key:{i:09d}", value)
            total += value_size
            i += 1
        pipe.execute()
    return i


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=256, help="approximate data size (default 256)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per method (best is shown)")
    args = parser.parse_args(argv)

    from pydantic import SecretStr

    from devservers.redis import LocalRedis

    with bench_stack("stateferry-redis-bench-", LocalRedis) as stack:
        redis_server, work = stack.source, stack.work

        from blocks.redis import RedisServer
        from flows.backup import scheduled_backup

        t0 = time.monotonic()
        keys = _fill(redis_server, args.size_mb)
        print(f"generated {keys} keys (~{args.size_mb} MiB) in {time.monotonic() - t0:.1f} s", flush=True)
        RedisServer(
            host=redis_server.host, port=redis_server.port, password=SecretStr(redis_server.password)
        ).save("bench-redis", overwrite=True)

        env = {**os.environ, "REDISCLI_AUTH": redis_server.password}
        dump = (
            f"redis-cli -h {redis_server.host} -p {redis_server.port} --no-auth-warning --rdb - 2>/dev/null"
            f" | tee >(wc -c > {work / 'raw.count'}) | "
        )
        shells = {
            "gzip": f"gzip -6 > {work / 'baseline.rdb.gz'}",
            "zstd": f"zstd -q -T0 -3 > {work / 'baseline.rdb.zst'}",
        }

        def job(compression: str, s3_too: bool) -> dict[str, Any]:
            storages: list[dict[str, Any]] = [
                {"storage": "local", "backup_dir": str(work / "backups"), "store": {"count": 1}}
            ]
            if s3_too:
                storages.append(
                    {
                        "storage": "s3",
                        "object_store": "bench-s3",
                        "bucket_name": "backups",
                        "backup_dir": "bench",
                        "store": {"count": 1},
                    }
                )
            return {
                "job": f"bench-redis-{compression}{'' if s3_too else '-local'}",
                "type": "redis",
                "compression": compression,
                "sources": [{"connect": {"block": "bench-redis"}}],
                "storages": storages,
            }

        times: dict[str, list[float]] = {}
        stored: dict[str, int] = {}
        growth: list[int] = []
        raw = 0
        base_rss = 0
        for rnd in range(args.rounds):
            for codec, tail in shells.items():
                t0 = time.monotonic()
                subprocess.run(["bash", "-o", "pipefail", "-c", dump + tail], check=True, env=env)
                times.setdefault(f"shell {codec}", []).append(time.monotonic() - t0)
                time.sleep(0.2)
                raw = int((work / "raw.count").read_text().strip() or 0)
                out = work / ("baseline.rdb.gz" if codec == "gzip" else "baseline.rdb.zst")
                stored[f"shell {codec}"] = out.stat().st_size
                out.unlink()
                for s3_too in (True, False):
                    name = f"stateferry {codec}{'' if s3_too else ' local'}"
                    base_rss = _rss_kib("VmRSS")
                    _reset_peak_rss()
                    t0 = time.monotonic()
                    result = scheduled_backup(job(codec, s3_too))
                    times.setdefault(name, []).append(time.monotonic() - t0)
                    growth.append(_rss_kib("VmHWM") - base_rss)
                    stored[name] = int(result["parts"][0]["size"])
            print(
                f"round {rnd + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()),
                flush=True,
            )
        names = {
            "shell gzip": "shell: redis-cli --rdb - \\| gzip -6 > file",
            "shell zstd": "shell: redis-cli --rdb - \\| zstd -T0 -3 > file",
            "stateferry gzip": "stateferry scheduled_backup gzip (ISA-L) -> local + S3",
            "stateferry gzip local": "stateferry scheduled_backup gzip -> local only",
            "stateferry zstd": "stateferry scheduled_backup zstd -> local + S3",
            "stateferry zstd local": "stateferry scheduled_backup zstd -> local only",
        }
        print()
        print(f"RDB {raw / 2**20:.0f} MiB raw ({keys} keys); best of {args.rounds} interleaved rounds")
        print("| method | wall s | stored MiB | vs gzip shell |")
        print("|---|---|---|---|")
        base = min(times["shell gzip"])
        for key, label in names.items():
            secs = min(times[key])
            print(f"| {label} | {secs:.1f} | {stored[key] / 2**20:.0f} | {base / secs:.2f}x |")
        print(
            f"\nPython peak RSS growth during a backup (largest of all runs, the first one's imports"
            f" included): {max(growth) / 1024:.0f} MiB over {base_rss / 1024:.0f} MiB;"
            f" after the first round: {max(growth[len(shells) * 2 :] or [0]) / 1024:.0f} MiB"
        )
        return 0


if __name__ == "__main__":
    sys.exit(main())
