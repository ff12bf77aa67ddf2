"""Benchmark: a physical MariaDB backup with ``scheduled_backup`` (``type: mariadb_backup``) to local +
S3, against the shell a user would write, ``mariadb-backup --backup --stream=xbstream | gzip -6 > file``
(and ``| zstd -T0 -3``), in the same run on the same server, interleaved, best of ``--rounds``.

Starts its own MariaDB, SeaweedFS S3 and Prefect server in a temp directory (all removed at the end)
and fills a table like ``benchmarks/backup_bench.py``. ``--verify`` adds a row for stateferry with
verification (prepare + scratch server + inventory compare), which the shell has no equivalent of.

    .venv/bin/python benchmarks/physical_backup_bench.py [--size-mb 512] [--rounds 2] [--verify]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.backup_bench import _fill  # noqa: E402
from benchmarks.bench_stack import bench_stack  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=512, help="approximate table size (default 512)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per method (best is shown)")
    parser.add_argument("--verify", action="store_true", help="also stateferry with verify: true")
    args = parser.parse_args(argv)

    from pydantic import SecretStr

    from devservers.mariadb import LocalMariaDB

    with bench_stack("stateferry-pbench-", LocalMariaDB) as stack:
        maria, work = stack.source, stack.work
        from blocks.database import Database
        from flows.backup import scheduled_backup

        db = Database(
            engine="mysql", host=maria.host, port=maria.port, user="root", password=SecretStr(maria.password)
        )
        table_bytes = _fill(db, args.size_mb)
        print(f"generated {table_bytes / 2**20:.0f} MiB of table data", flush=True)
        db.save("pbench-db", overwrite=True)
        cnf = work / "my.cnf"
        cnf.write_text(
            f"[client]\nhost={maria.host}\nport={maria.port}\nuser=root\npassword={maria.password}\n"
            "protocol=TCP\n"
        )
        cnf.chmod(0o600)
        backup = (
            f"mariadb-backup --defaults-file={cnf} --backup --stream=xbstream --parallel=2"
            f" --target-dir={work / 'shell-target'} --datadir={maria.datadir} 2>/dev/null | "
        )
        shells = {
            "shell gzip": backup + f"gzip -6 > {work / 'shell.xb.gz'}",
            "shell zstd": backup + f"zstd -q -T0 -3 > {work / 'shell.xb.zst'}",
        }

        def job(compression: str, verify: bool = False) -> dict[str, Any]:
            keep = {"days": 0, "weeks": 0, "months": 0}
            return {
                "job": f"pbench-{compression}{'-v' if verify else ''}",
                "type": "mariadb_backup",
                "compression": compression,
                "verify": verify,
                "sources": [{"connect": {"block": "pbench-db"}}],
                "storages": [
                    {"storage": "local", "backup_dir": str(work / "backups"), "store": keep},
                    {"storage": "s3", "object_store": "bench-s3", "bucket_name": "pbench", "store": keep},
                ],
            }

        runs: dict[str, Any] = {
            **{
                k: (lambda cmd=cmd: subprocess.run(["bash", "-o", "pipefail", "-c", cmd], check=True))
                for k, cmd in shells.items()
            },
            "stateferry gzip": lambda: scheduled_backup(job("gzip")),
            "stateferry zstd": lambda: scheduled_backup(job("zstd")),
        }
        if args.verify:
            runs["stateferry gzip + verify"] = lambda: scheduled_backup(job("gzip", verify=True))
        times: dict[str, list[float]] = {}
        for rnd in range(args.rounds):
            for name, run in runs.items():
                shutil.rmtree(work / "shell-target", ignore_errors=True)
                t0 = time.monotonic()
                run()
                times.setdefault(name, []).append(time.monotonic() - t0)
                for leftover in work.glob("shell.xb.*"):
                    leftover.unlink()
            print(
                f"round {rnd + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()), flush=True
            )

        print(f"\ndata directory with {table_bytes / 2**20:.0f} MiB of table data; best of {args.rounds}")
        print("| method | wall s | vs shell gzip (>= 1.0 is faster) |")
        print("|---|---|---|")
        base = min(times["shell gzip"])
        for name, v in times.items():
            print(f"| {name} | {min(v):.1f} | {base / min(v):.2f}x |")
        return 0


if __name__ == "__main__":
    sys.exit(main())
