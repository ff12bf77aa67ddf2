"""The API server of one emulated Kubernetes cluster (REST over HTTP on a loopback address).

Usage::

    server = ApiServer("source", "127.1.0.1", 6443, Path("state/source"), service_cidr_base="127.1.96")
    server.start()  # returns once /readyz answers
    ...
    server.stop()

What answers like a real kube-apiserver (the facts are in /work/shared/k8s-fidelity.md):

- ``http.py``: routing of ``/api``, ``/apis/<group>/<version>``, namespaced and cluster paths,
  subresources (status, scale, pods/binding|eviction|log, namespaces/finalize: ``subresources.py``),
  watch streams (``watch.py``: chunked JSON, replay from a resourceVersion, selector ADDED/DELETED
  semantics, bookmarks, watch-list ``sendInitialEvents``), ``meta.k8s.io`` Tables for kubectl.
- ``registry.py``: create/get/list/update/patch/delete with decoding (``requestbody.py``,
  ``decode.py``: Go's type errors, quantity parsing, unknown-field pruning or
  ``fieldValidation=Strict``), defaults (``defaults.py``), admission (``admission.py``), validation
  (``validation.py`` and the ``*_rules.py`` per kind), optimistic concurrency, generation, LIST
  paging (``listing.py``), ``/scale`` (``scale.py``), Service IP/nodePort allocation
  (``allocations.py``), served types and CRDs (``catalog.py``), server-side apply field ownership
  (``fieldmanager.py``); graceful pod deletion, finalizers and the DELETE answer shapes in
  ``deletion.py``.
- ``patch.py``: merge patch, JSON patch and strategic merge patch with the real merge keys.
- ``controllers.py``: garbage collector (Background/Foreground/Orphan), namespace lifecycle,
  ``default`` ServiceAccount + ``kube-root-ca.crt``, CRD establishment and cleanup.
- ``discovery.py`` / ``openapi.py``: discovery documents; OpenAPI v3 path documents so kubectl
  validates server-side (``fieldValidation=Strict``) — no component schemas, no ``/openapi/v2``.
- ``protobuf.py``: protobuf request bodies (``kubectl create``/``run``), decoded with the struct tags
  read from the pinned kubectl binary.
- ``store.py``: objects in memory, one global resourceVersion, watch fan-out, ``objects.json`` written
  atomically (temp file + rename, at most 5 times a second, mode 0600).

Workloads (StatefulSet/Deployment/Job controllers, kubelet, DNS, load balancers) live in
``sandbox/runtime`` and talk to this server over HTTP like real controllers.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from pathlib import Path

from sandbox.apiserver.controllers import Controllers
from sandbox.apiserver.http import ExecStarter, LogReader, Server
from sandbox.apiserver.registry import Registry
from sandbox.apiserver.store import Store

__all__ = ["ApiServer"]

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


class ApiServer:
    """One cluster's API server plus the lifecycle controllers that run inside a real control plane."""

    def __init__(self, name: str, host: str, port: int, state_dir: Path, *, service_cidr_base: str) -> None:
        """Prepare (nothing listens until :meth:`start`).

        Args:
            name: Cluster name ("source" / "target").
            host: Loopback address to listen on, e.g. ``127.1.0.1``.
            port: TCP port, e.g. 6443 (0 picks a free port; :attr:`url` then reports it).
            state_dir: Directory for ``objects.json`` (objects survive a restart).
            service_cidr_base: First three octets of the cluster IP range, e.g. ``127.1.96``.
        """
        self.name = name
        self.host = host
        self.port = port
        self.state_dir = Path(state_dir)
        self.service_cidr_base = service_cidr_base
        self.store: Store | None = None
        self.registry: Registry | None = None
        self._controllers: Controllers | None = None
        self._http: Server | None = None
        self._thread: threading.Thread | None = None
        self._log_reader: LogReader | None = None
        self._exec_starter: ExecStarter | None = None

    def set_log_reader(self, reader: LogReader | None) -> None:
        """Serve ``GET pods/<name>/log`` (``kubectl logs``) from ``reader``.

        ``reader(namespace, pod, container, tail_lines, previous)`` returns the log text, or None while
        the container has not started. The kubelet of the sandbox runtime owns the logs, so it plugs in here.
        """
        self._log_reader = reader
        if self._http is not None:
            self._http.log_reader = reader

    def set_exec_starter(self, starter: ExecStarter | None) -> None:
        """Serve ``pods/<name>/exec`` (``kubectl exec``, websockets) with processes from ``starter``.

        ``starter(namespace, pod, container, argv, stdin)`` returns the started process or raises
        RuntimeError when the container is not running (the sandbox kubelet plugs in here).
        """
        self._exec_starter = starter
        if self._http is not None:
            self._http.exec_starter = starter

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.1.0.1:6443``."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        """Load state, serve in background threads, return once ``/readyz`` answers."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        store = Store(self.state_dir / "objects.json")
        store.load()
        registry = Registry(self.name, store, self.service_cidr_base)
        controllers = Controllers(registry)
        self.store, self.registry, self._controllers = store, registry, controllers
        self._http = Server((self.host, self.port), registry)
        self.port = self._http.server_address[1]  # port 0 = pick a free one
        self._http.log_reader = self._log_reader
        self._http.exec_starter = self._exec_starter
        controllers.start()
        self._bootstrap()
        store.start_persisting()
        self._thread = threading.Thread(
            target=self._http.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"apiserver-{self.name}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as resp:
                    if resp.read() == b"ok":
                        return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        """Stop serving, end watches, flush state to disk."""
        if self._http is not None:
            self._http.stopping.set()
            self._http.shutdown()
            self._http.close_connections()
            self._http.server_close()
            self._http = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._controllers is not None:
            self._controllers.stop()
            self._controllers = None
        if self.store is not None:
            self.store.close()

    def _bootstrap(self) -> None:
        """System namespaces and the ``kubernetes`` Service/Endpoints — only what is missing.

        The Node is registered by the sandbox's kubelet (sandbox/runtime), as a real kubelet does.
        """
        reg = self.registry
        assert reg is not None
        ns_rt = reg.by_key[("", "namespaces")]
        for ns in SYSTEM_NAMESPACES:
            if reg.store.get(ns_rt.key, "", ns) is None:
                reg.create(ns_rt, "", {"metadata": {"name": ns}})
        svc_rt = reg.by_key[("", "services")]
        if reg.store.get(svc_rt.key, "default", "kubernetes") is None:
            reg.create(
                svc_rt,
                "default",
                {
                    "metadata": {
                        "name": "kubernetes",
                        "labels": {"component": "apiserver", "provider": "kubernetes"},
                    },
                    "spec": {
                        "clusterIP": f"{self.service_cidr_base}.1",
                        "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": self.port}],
                        "sessionAffinity": "None",
                        "type": "ClusterIP",
                    },
                },
            )
        ep_rt = reg.by_key[("", "endpoints")]
        if reg.store.get(ep_rt.key, "default", "kubernetes") is None:
            reg.create(
                ep_rt,
                "default",
                {
                    "metadata": {
                        "name": "kubernetes",
                        "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"},
                    },
                    "subsets": [
                        {
                            "addresses": [{"ip": self.host}],
                            "ports": [{"name": "https", "port": self.port, "protocol": "TCP"}],
                        }
                    ],
                },
            )
