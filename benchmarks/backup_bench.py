"""Benchmark: back up a ~1 GB MariaDB database to local + S3 with ``scheduled_backup`` (gzip and
zstd), against ``mysqldump | gzip > file`` and ``mysqldump | zstd > file`` in the same run on the same
data.

Starts its own MariaDB, SeaweedFS S3 and Prefect server in a temp directory (all removed at the end)
and prints a table: wall time, throughput (raw dump bytes per second), stored size, and peak memory
(the dump tools' peak RSS, and the growth of this Python process's peak RSS during the backup — the
streaming pipeline's own memory, which must not grow with the database size).

    .venv/bin/python benchmarks/backup_bench.py [--size-mb 1024] [--encryption]

``--encryption`` adds gzip + age (encryption at rest) on both sides: ``scheduled_backup`` with
``encryption: {recipients: [...]}`` and ``mysqldump | gzip -6 | age -r KEY > file`` (Debian's ``age``).
"""

from __future__ import annotations

import argparse
import resource
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


def _children_maxrss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss


#: ~700 bytes of text per row: repeated random md5 words (compressible, like typical text columns)
#: and a base64 random tail (incompressible), plus 32 random bytes dumped as hex.
PAYLOAD = "CONCAT(REPEAT(CONCAT(MD5(RAND()), ' '), 14), TO_BASE64(RANDOM_BYTES(180)))"
ROW_BYTES = 880


def _fill(db: Any, size_mb: int) -> int:
    """Rows of ~800 bytes, inserted in batches until the table reaches ``size_mb``."""
    conn = db.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE bench")
            cur.execute("USE bench")
            cur.execute(
                "CREATE TABLE rows_ (id BIGINT AUTO_INCREMENT PRIMARY KEY, k INT, name VARCHAR(64), "
                "payload TEXT, blobby VARBINARY(64)) ENGINE=InnoDB"
            )
            # the SEQUENCE engine streams generated rows (no temporary table, unlike INSERT ... SELECT
            # from the table itself, which needs a temp table as big as the table)
            batch = 100_000
            rows = 0
            while rows * ROW_BYTES < size_mb * 2**20:
                cur.execute(
                    "INSERT INTO rows_ (k, name, payload, blobby) "
                    f"SELECT seq + {rows}, CONCAT('name-', seq + {rows}), {PAYLOAD}, RANDOM_BYTES(32) "
                    f"FROM seq_1_to_{batch}"
                )
                rows += batch
            cur.execute("ANALYZE TABLE rows_")
            cur.fetchall()
            cur.execute(
                "SELECT data_length + index_length FROM information_schema.tables "
                "WHERE table_schema = 'bench' AND table_name = 'rows_'"
            )
            row = cur.fetchone()
            return int(row[0]) if row else 0
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="approximate table size (default 1024)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per method (best is shown)")
    parser.add_argument(
        "--encryption",
        action="store_true",
        help="also gzip + age: scheduled_backup with encryption vs `mysqldump | gzip -6 | age -r KEY > file`",
    )
    args = parser.parse_args(argv)

    from pydantic import SecretStr

    from devservers.mariadb import LocalMariaDB

    with bench_stack("stateferry-bench-", LocalMariaDB) as stack:
        maria, work = stack.source, stack.work

        from blocks.database import Database
        from flows.backup import scheduled_backup

        db = Database(
            engine="mysql", host=maria.host, port=maria.port, user="root", password=SecretStr(maria.password)
        )
        t0 = time.monotonic()
        table_bytes = _fill(db, args.size_mb)
        fill_s = time.monotonic() - t0
        print(f"generated {table_bytes / 2**20:.0f} MiB of table data in {fill_s:.1f} s", flush=True)

        db.save("bench-db", overwrite=True)

        from planning.backup_config import DEFAULT_MYSQLDUMP_KEYS
        from tasks.dumpers import find_tool

        cnf = work / "my.cnf"
        cnf.write_text(
            f"[client]\nhost={maria.host}\nport={maria.port}\nuser=root\npassword={maria.password}\n"
        )
        cnf.chmod(0o600)
        dump = find_tool("mariadb-dump", "mysqldump")
        shells = {
            "gzip": f"gzip -6 > {work / 'baseline.sql.gz'}",
            "zstd": f"zstd -q -T0 -3 > {work / 'baseline.sql.zst'}",
        }
        recipient = ""
        if args.encryption:  # the age binary (Debian `age`) is the tool a user would pipe into
            from pyrage import x25519

            recipient = str(x25519.Identity.generate().to_public())
            shells["gzip+age"] = f"gzip -6 | age -r {recipient} > {work / 'baseline.sql.gz.age'}"
        dump_cmd = (
            f"{dump} --defaults-extra-file={cnf} {DEFAULT_MYSQLDUMP_KEYS} --single-transaction"
            " --databases bench"
            f" | tee >(wc -c > {work / 'raw.count'}) | "
        )

        def job(codec: str, s3: bool = True) -> dict[str, Any]:
            compression = codec.split("+")[0]
            out: dict[str, Any] = {
                "job": f"bench-{compression}{'-age' if '+age' in codec else ''}{'' if s3 else '-local'}",
                "type": "mysql",
                "compression": compression,
                "sources": [{"connect": {"block": "bench-db"}, "target": ["bench"]}],
                "storages": [
                    {
                        "storage": "local",
                        "backup_dir": str(work / "backups"),
                        "store": {"days": 0, "weeks": 0, "months": 0},
                    },
                    {
                        "storage": "s3",
                        "object_store": "bench-s3",
                        "bucket_name": "backups",
                        "backup_dir": "bench",
                        "store": {"days": 0, "weeks": 0, "months": 0},
                    },
                ],
            }
            if not s3:  # like the shell: one local file (the S3 server shares this machine's cores)
                out["storages"] = out["storages"][:1]
            if "+age" in codec:
                out["encryption"] = {"recipients": [recipient]}
            return out

        times: dict[str, list[float]] = {}
        stored: dict[str, int] = {}
        growth: list[int] = []
        raw = 0
        base_rss = 0
        for rnd in range(args.rounds):
            for codec, tail in shells.items():
                # the shell: mysqldump | gzip/zstd > file (same keys), one local file only
                t0 = time.monotonic()
                subprocess.run(["bash", "-o", "pipefail", "-c", dump_cmd + tail], check=True)
                times.setdefault(f"shell {codec}", []).append(time.monotonic() - t0)
                time.sleep(0.2)
                raw = int((work / "raw.count").read_text().strip() or 0)
                out = work / {"gzip": "baseline.sql.gz", "zstd": "baseline.sql.zst"}.get(
                    codec, "baseline.sql.gz.age"
                )
                stored[f"shell {codec}"] = out.stat().st_size
                out.unlink()
                # stateferry: scheduled_backup streaming to local + S3 at once (retention 0: keeps the newest)
                base_rss = _rss_kib("VmRSS")
                _reset_peak_rss()
                t0 = time.monotonic()
                result = scheduled_backup(job(codec))
                times.setdefault(f"stateferry {codec}", []).append(time.monotonic() - t0)
                growth.append(_rss_kib("VmHWM") - base_rss)
                stored[f"stateferry {codec}"] = int(result["parts"][0]["size"])
                t0 = time.monotonic()
                result = scheduled_backup(job(codec, s3=False))
                times.setdefault(f"stateferry {codec} local", []).append(time.monotonic() - t0)
                stored[f"stateferry {codec} local"] = int(result["parts"][0]["size"])
            print(
                f"round {rnd + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()),
                flush=True,
            )
        tools_rss = _children_maxrss_kib()
        names = {
            "shell gzip": "shell: mysqldump | gzip -6 > file",
            "shell zstd": "shell: mysqldump | zstd -T0 -3 > file",
            "stateferry gzip": "stateferry scheduled_backup gzip (ISA-L) -> local + S3",
            "stateferry zstd": "stateferry scheduled_backup zstd (-3, all cores) -> local + S3",
            "stateferry gzip local": "stateferry scheduled_backup gzip -> local only",
            "stateferry zstd local": "stateferry scheduled_backup zstd -> local only",
            "shell gzip+age": "shell: mysqldump | gzip -6 | age -r KEY > file",
            "stateferry gzip+age": "stateferry scheduled_backup gzip + age -> local + S3",
            "stateferry gzip+age local": "stateferry scheduled_backup gzip + age -> local only",
        }
        py_growth = f"{max(growth) / 1024:.0f} MiB over {base_rss / 1024:.0f} MiB"
        results = [
            (names[k], min(v), raw, stored[k], py_growth if k.startswith("stateferry") else "n/a (shell)")
            for k, v in times.items()
        ]

        print()
        print(
            f"database: {table_bytes / 2**20:.0f} MiB InnoDB; dump {raw / 2**20:.0f} MiB raw; "
            f"best of {args.rounds} interleaved rounds; "
            f"peak RSS of any dump tool/gzip: {tools_rss / 1024:.0f} MiB"
        )
        head = ("method", "wall s", "raw MiB/s", "stored MiB", "python peak RSS growth")
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for name, secs, raw_b, size_b, py in results:
            print(f"| {name} | {secs:.1f} | {raw_b / 2**20 / secs:.1f} | {size_b / 2**20:.0f} | {py} |")
        base = min(times["shell gzip"])
        print("\nspeed relative to the gzip shell (>= 1.0 is faster):")
        for k, v in times.items():
            size = stored[k] / max(stored["shell gzip"], 1)
            print(f"  {k}: {base / min(v):.2f}x, stored {size:.3f}x the size")
        if args.encryption:
            print("\nencryption overhead (time with age / time without, same run; 1.00 = free):")
            for k in ("shell gzip", "stateferry gzip", "stateferry gzip local"):
                enc = k.replace("gzip", "gzip+age")
                print(f"  {k}: {min(times[enc]) / min(times[k]):.2f}")
            ratio = min(times["shell gzip+age"]) / min(times["stateferry gzip+age"])
            print(f"  stateferry gzip+age (local + S3) vs shell gzip+age: {ratio:.2f}x")
        return 0


if __name__ == "__main__":
    sys.exit(main())
