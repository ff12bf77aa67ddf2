"""API latency of the sandbox API server: p50/p99 of get, list and patch over N requests each.

Run: ``.venv/bin/python benchmarks/sandbox_api_latency.py [--requests 1000] [--url http://HOST:PORT]``.
Without ``--url`` a fresh ApiServer is started on a free loopback port (and stopped afterwards).
Requests go through the official Python client (what Part B's controllers and the flows use) and,
for comparison, through a raw keep-alive HTTP connection (the server's own cost).
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from kubernetes import client, config

from sandbox.apiserver import ApiServer

NAMESPACE = "bench"


def _percentiles(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    p50 = ordered[len(ordered) // 2]
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return p50 * 1000, p99 * 1000, statistics.fmean(ordered) * 1000


def _time(fn: Callable[[], object], n: int) -> list[float]:
    for _ in range(min(50, n)):  # warm-up
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def _prepare(core: client.CoreV1Api) -> None:
    try:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))
    except client.ApiException as exc:
        if exc.status != 409:
            raise
    for i in range(50):
        try:
            core.create_namespaced_config_map(
                NAMESPACE,
                client.V1ConfigMap(
                    metadata=client.V1ObjectMeta(name=f"cm-{i}", labels={"i": str(i % 5)}),
                    data={"k": "v" * 100},
                ),
            )
        except client.ApiException as exc:
            if exc.status != 409:
                raise


def run(url: str, n: int) -> list[tuple[str, str, float, float, float]]:
    """Measure and return rows (client, operation, p50 ms, p99 ms, mean ms)."""
    api = config.new_client_from_config_dict(
        {
            "clusters": [{"name": "b", "cluster": {"server": url}}],
            "users": [{"name": "u", "user": {}}],
            "contexts": [{"name": "b", "context": {"cluster": "b", "user": "u"}}],
            "current-context": "b",
        }
    )
    core = client.CoreV1Api(api)
    _prepare(core)
    counter = iter(range(10**9))
    rows = []
    py_ops: dict[str, Callable[[], object]] = {
        "get configmap": lambda: core.read_namespaced_config_map("cm-0", NAMESPACE),
        "list 50 configmaps": lambda: core.list_namespaced_config_map(NAMESPACE),
        "list with selector": lambda: core.list_namespaced_config_map(NAMESPACE, label_selector="i=1"),
        "patch (strategic)": lambda: core.patch_namespaced_config_map(
            "cm-1", NAMESPACE, {"data": {"n": str(next(counter))}}
        ),
    }
    for name, fn in py_ops.items():
        rows.append(("python client", name, *_percentiles(_time(fn, n))))

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80)
    base = f"/api/v1/namespaces/{NAMESPACE}/configmaps"

    def raw(
        method: str, path: str, body: bytes | None = None, ctype: str = "application/json"
    ) -> Callable[[], object]:
        def call() -> object:
            conn.request(method, path, body=body, headers={"Content-Type": ctype})
            resp = conn.getresponse()
            data = resp.read()
            if resp.status >= 300:
                raise RuntimeError(f"{method} {path}: {resp.status} {data[:200]!r}")
            return data

        return call

    def raw_patch() -> object:
        body = json.dumps({"data": {"n": str(next(counter))}}).encode()
        return raw("PATCH", f"{base}/cm-2", body, "application/merge-patch+json")()

    raw_ops: dict[str, Callable[[], object]] = {
        "get configmap": raw("GET", f"{base}/cm-0"),
        "list 50 configmaps": raw("GET", base),
        "patch (merge)": raw_patch,
    }
    for name, fn in raw_ops.items():
        rows.append(("raw HTTP keep-alive", name, *_percentiles(_time(fn, n))))
    conn.close()
    api.close()
    return rows


def main() -> None:
    """Parse arguments, run, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests per operation (default 1000)")
    parser.add_argument("--url", help="an already running sandbox API server (default: start one)")
    args = parser.parse_args()
    server = None
    url = args.url
    if url is None:
        server = ApiServer(
            "bench",
            "127.0.0.1",
            0,
            Path(tempfile.mkdtemp(prefix="sandbox-api-bench-")),
            service_cidr_base="127.254.96",
        )
        server.start()
        url = server.url
    try:
        rows = run(url, args.requests)
    finally:
        if server is not None:
            server.stop()
    print(f"sandbox API latency, {args.requests} requests per row ({url})")
    print(f"{'client':<22}{'operation':<22}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}")
    for who, op, p50, p99, mean in rows:
        print(f"{who:<22}{op:<22}{p50:>9.2f}{p99:>9.2f}{mean:>9.2f}")


if __name__ == "__main__":
    main()
