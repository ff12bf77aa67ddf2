"""Benchmark of the etcd stretch migration in the two-cluster sandbox.

For each mode (new members added as learners, as voters, and ``tls``: learners into a client- and
peer-mTLS etcd with root auth whose new members get certificates from a CA Secret) a fresh 3-member
etcd (the seed's StatefulSet) is deployed in ``source`` and migrated to 3 members in ``target`` by the flow
``etcd_stretch_migration`` (auto-approved), while a client writes sequential keys through the
LoadBalancer addresses (failing over from the source client LB to the target one). Reported: total
migration time, writes acknowledged / lost, failed write attempts, the longest run of failed writes
and the longest write gap.

Reference (by hand with real etcd 3.4 on this machine): 33 s for 3 -> 3, 0 acknowledged writes lost,
longest failed-write gap 80 ms (48 ms with learners).

Usage: ``.venv/bin/python benchmarks/etcd_migration_bench.py [--rounds 1] [--modes learners,voters,tls]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def _one(seed: Any, use_learners: bool, tls: bool = False) -> dict[str, Any]:
    from etcd_migration.seed import client_lb, core_api
    from etcd_migration.writer import SequentialWriter, read_all

    from flows.etcd_migration import etcd_stretch_migration

    ns = seed.namespace
    core_api(seed.src).create_namespaced_service(ns, client_lb("etcd-client", "etcd"))
    # the source pods' selector: the new pods keep the source pods' labels
    core_api(seed.tgt).create_namespaced_service(ns, client_lb("etcd-main-client", "etcd"))
    src_lb = f"{seed.lb_ip(seed.src, 'etcd-client')}:2379"
    tgt_lb = f"{seed.lb_ip(seed.tgt, 'etcd-main-client')}:2379"
    client = seed.client_kwargs() if tls else {}
    extra = {"etcd_cluster": seed.block(), "tls_ca_secret": "etcd-ca"} if tls else {}
    writer = SequentialWriter([src_lb, tgt_lb], client_kwargs=client)
    writer.start()
    time.sleep(1.0)  # steady state before the migration starts
    t0 = time.monotonic()
    try:
        summary = etcd_stretch_migration(
            seed.source,
            seed.target,
            source_namespace=ns,
            auto_approve=True,
            use_learners=use_learners,
            **extra,
        )
        took = time.monotonic() - t0
        time.sleep(0.5)
    finally:
        stats = writer.stop()
    stored = asyncio.run(read_all(tgt_lb, **client))
    lost = sum(1 for n in stats.acked if stored.get(n) != str(n).encode())
    return {
        "mode": "tls" if tls else "learners" if use_learners else "voters",
        "seconds": took,
        "acked": len(stats.acked),
        "lost": lost,
        "failed": stats.failures,
        "failed_run": stats.longest_failed_run,
        "gap_ms": stats.longest_gap_seconds * 1000,
        "members": ",".join(summary["members"]),
        "steps": summary["steps"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1, help="migrations per mode (default 1)")
    parser.add_argument("--modes", default="learners,voters,tls", help="learners, voters, tls (default: all)")
    parser.add_argument("--steps", action="store_true", help="print the step durations of each run")
    args = parser.parse_args(argv)

    from devservers.prefect_server import LocalPrefectServer

    work = Path(tempfile.mkdtemp(prefix="stateferry-etcd-bench-"))
    prefect = LocalPrefectServer(work / "prefect", ui=False)
    prefect.start()
    try:
        os.environ["PREFECT_API_URL"] = prefect.api_url
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        from etcd_migration.seed import deploy_seed
        from etcd_migration.tls_seed import deploy_tls_seed
        from pydantic import SecretStr

        from blocks.kube import KubeCluster
        from sandbox.testing import running_sandbox

        t0 = time.monotonic()
        with running_sandbox(work / "sandbox", base_octet=80, timeout=120) as sb:
            print(f"sandbox up in {time.monotonic() - t0:.1f} s", flush=True)
            text = sb.kubeconfig_path.read_text()
            blocks = (
                KubeCluster(kubeconfig=SecretStr(text), context="source"),
                KubeCluster(kubeconfig=SecretStr(text), context="target"),
            )
            rows = []
            for _ in range(args.rounds):
                for mode in args.modes.split(","):
                    mode = mode.strip()
                    seed = deploy_tls_seed(sb, blocks) if mode == "tls" else deploy_seed(sb, blocks)
                    row = _one(seed, mode in ("learners", "tls"), tls=mode == "tls")
                    rows.append(row)
                    print(
                        f"{row['mode']:9s} {row['seconds']:6.1f} s  acked {row['acked']:6d}  "
                        f"lost {row['lost']}  "
                        f"failed {row['failed']:3d}  longest failed run {row['failed_run']:3d}  "
                        f"longest gap {row['gap_ms']:6.0f} ms  -> {row['members']}",
                        flush=True,
                    )
                    if args.steps:
                        for step in row["steps"]:
                            print(f"    {step['seconds']:6.2f} s  {step['step']}  {step['detail'][:90]}")
        print()
        print(
            "| mode | migration (s) | writes acked | lost | failed attempts | longest failed run "
            "| longest gap (ms) |"
        )
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {r['mode']} | {r['seconds']:.1f} | {r['acked']} | {r['lost']} | {r['failed']} | "
                f"{r['failed_run']} | {r['gap_ms']:.0f} |"
            )
        print("| reference (by hand) | 33 | - | 0 | - | - | 80 (48 with learners) |")
    finally:
        prefect.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
