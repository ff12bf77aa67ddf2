"""Benchmark: resource_backup and resource_restore of a namespace with N objects (default 5,000 ConfigMaps).

Starts its own sandbox (two clusters), SeaweedFS S3 and Prefect server in a temp directory (all
stopped and removed at the end), creates the objects in ``source``, then times:

* ``resource_backup`` of the namespace (discovery, list, tarball, upload),
* ``resource_restore`` into ``target`` under another namespace (download, sanitise, create),
* a second ``resource_restore`` with ``skip`` (everything unchanged: read + diff only),
* a ``dry_run`` restore with ``update`` against the restored namespace,

and prints a table (seconds and objects per second).

    .venv/bin/python benchmarks/resource_backup_bench.py [--objects 5000] [--base-octet 201]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _create_configmaps(rest: Any, ns: str, n: int) -> float:
    t0 = time.monotonic()
    rest.request("POST", "/api/v1/namespaces", body={"metadata": {"name": ns}})

    def make(i: int) -> None:
        rest.request(
            "POST",
            f"/api/v1/namespaces/{ns}/configmaps",
            body={
                "metadata": {"name": f"cm-{i:05d}", "labels": {"app": "bench", "shard": str(i % 10)}},
                "data": {"key": f"value-{i}", "config.yaml": "x: 1\ny: 2\n" * 5},
            },
        )

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(make, range(n)))
    return time.monotonic() - t0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=5000)
    ap.add_argument("--base-octet", type=int, default=201)
    args = ap.parse_args(argv)

    from devservers.prefect_server import LocalPrefectServer
    from devservers.s3 import SeaweedS3
    from sandbox.testing import running_sandbox

    work = Path(tempfile.mkdtemp(prefix="stateferry-rbench-"))
    servers: list[Any] = []
    try:
        s3 = SeaweedS3(work / "s3", access_key="bench", secret_key="bench-secret-" + "z" * 16)
        prefect = LocalPrefectServer(work / "prefect", ui=False)
        for server in (s3, prefect):
            server.start()
            servers.append(server)
        os.environ["PREFECT_API_URL"] = prefect.api_url
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

        from pydantic import SecretStr

        from blocks.kube import KubeCluster
        from blocks.object_store import ObjectStore
        from flows.resource_backup import resource_backup, resource_restore
        from tasks.kube_export import KubeRest

        store = ObjectStore(
            endpoint=s3.endpoint, access_key=s3.access_key, secret_key=SecretStr(s3.secret_key)
        )
        with running_sandbox(work / "sbx", base_octet=args.base_octet) as sb:
            kubeconfig = Path(sb.kubeconfig_path).read_text()
            source = KubeCluster(kubeconfig=SecretStr(kubeconfig), context="source")
            target = KubeCluster(kubeconfig=SecretStr(kubeconfig), context="target")
            n = args.objects
            create_s = _create_configmaps(KubeRest(source.api_client(), "source"), "bench", n)
            rows: list[tuple[str, float, int]] = []

            t0 = time.monotonic()
            b = resource_backup(
                source=source,
                object_store=store,
                bucket="bench",
                backup_name="bench-1",
                include_namespaces=["bench"],
            )
            rows.append(("resource_backup", time.monotonic() - t0, b["total_objects"]))
            common: dict[str, Any] = {
                "target": target,
                "object_store": store,
                "bucket": "bench",
                "backup_name": "bench-1",
                "namespace_mapping": {"bench": "bench-dr"},
            }
            t0 = time.monotonic()
            r = resource_restore(**common)
            rows.append(("resource_restore (create)", time.monotonic() - t0, r["counts"].get("created", 0)))
            t0 = time.monotonic()
            r2 = resource_restore(**common)
            rows.append(
                ("resource_restore again (skip)", time.monotonic() - t0, r2["counts"].get("unchanged", 0))
            )
            t0 = time.monotonic()
            r3 = resource_restore(**common, existing_resource_policy="update", dry_run=True)
            rows.append(("resource_restore dry_run", time.monotonic() - t0, len(r3["results"])))

        size = b.get("archive", "")
        print(
            f"\nresource backup/restore benchmark: namespace with {n} ConfigMaps "
            f"(created in {create_s:.1f}s), archive {size}\n"
        )
        print(f"| {'step':<32} | {'seconds':>8} | {'objects':>8} | {'objects/s':>9} |")
        print(f"|{'-' * 34}|{'-' * 10}|{'-' * 10}|{'-' * 11}|")
        for name, secs, count in rows:
            print(f"| {name:<32} | {secs:>8.2f} | {count:>8} | {count / secs if secs else 0:>9.0f} |")
        return 0
    finally:
        for server in reversed(servers):
            try:
                server.stop()
            except Exception as exc:  # keep stopping the others
                print(f"stopping {server}: {exc}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
