"""One cluster's control loop: watches kick a level-triggered reconcile pass over every controller."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from kubernetes.client.exceptions import ApiException

from sandbox.runtime import ippool
from sandbox.runtime.cronjob import sync_cronjobs
from sandbox.runtime.dns import (
    DEFAULT_COREFILE,
    ClusterDns,
    StaticHost,
    module_config_hosts,
    parse_corefile_hosts,
)
from sandbox.runtime.events import EventRecorder
from sandbox.runtime.kube import Kube, watch_forever
from sandbox.runtime.kubelet import Kubelet
from sandbox.runtime.network import ServiceNetwork
from sandbox.runtime.proxy import ProxyManager
from sandbox.runtime.statefulset import sync_statefulsets
from sandbox.runtime.storage import default_storage_class, sync_volumes
from sandbox.runtime.workloads import sync_daemonsets, sync_deployments, sync_jobs, sync_replicasets
from sandbox.runtime.world import World

log = logging.getLogger(__name__)

WATCHED = (
    "pods",
    "statefulsets",
    "services",
    "persistentvolumeclaims",
    "deployments",
    "replicasets",
    "daemonsets",
    "jobs",
    "cronjobs",
    "configmaps",
)
MODULE_CONFIG_PATH = "/apis/deckhouse.io/v1alpha1/moduleconfigs/kube-dns"


def coredns_configmap() -> dict[str, object]:
    """The ``kube-system/coredns`` ConfigMap a fresh cluster has."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "coredns", "namespace": "kube-system"},
        "data": {"Corefile": DEFAULT_COREFILE},
    }


class ClusterRuntime:
    """Controllers, kubelet, DNS and load balancers of one sandbox cluster.

    Args:
        name: cluster name (``source`` / ``target``).
        octet: second octet of the cluster's addresses (``127.<octet>.x.x``).
        api_url: its API server URL.
        cluster_dir: ``<state_dir>/<name>``.
        marker: the sandbox marker value put into every pod process's environment.
        proxies: the process-wide TCP proxy manager.
    """

    def __init__(
        self, name: str, octet: int, api_url: str, cluster_dir: Path, marker: str, proxies: ProxyManager
    ) -> None:
        self.name = name
        self.octet = octet
        self.kube = Kube(api_url)
        self.kube.events = EventRecorder(self.kube, "kube-controller-manager")
        self.cluster_dir = cluster_dir
        self.node_name = f"{name}-control-plane"
        self.network = ServiceNetwork(
            name, self.kube, ippool.load_balancer_pool(octet), proxies, node_ip=ippool.api_server_ip(octet)
        )
        self._kick = threading.Event()
        self._stop = threading.Event()
        self.kubelet = Kubelet(
            name,
            self.kube,
            cluster_dir,
            node_name=self.node_name,
            node_ip=ippool.api_server_ip(octet),
            api_ip=ippool.api_server_ip(octet),
            nameserver=f"127.{octet}.0.53",
            pod_pool=ippool.pod_pool(octet),
            marker=marker,
            kick=self.kick,
        )
        self._threads: list[threading.Thread] = []
        self.passes = 0

    def kick(self) -> None:
        """Ask for a reconcile pass soon."""
        self._kick.set()

    def bootstrap(self, timeout: float = 30.0) -> None:
        """Wait for the API server, then create the Node, StorageClass and CoreDNS ConfigMap."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.kube.request("GET", "/api/v1/namespaces/kube-system")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.kubelet.register_node()
        self.kubelet.mark_pods_not_ready()  # pods of an earlier run restart; until then they are not Ready
        self.kube.create("storageclasses", None, default_storage_class(), exist_ok=True)
        self.kube.create("configmaps", "kube-system", coredns_configmap(), exist_ok=True)
        (self.cluster_dir / "pv").mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        """Start the watch threads and the reconcile loop."""
        for plural in WATCHED:
            t = threading.Thread(
                target=watch_forever,
                args=(self.kube, plural, lambda _e: self.kick(), self._stop),
                name=f"watch-{self.name}-{plural}",
                daemon=True,
            )
            t.start()
            self._threads.append(t)
        loop = threading.Thread(target=self._loop, name=f"controllers-{self.name}", daemon=True)
        loop.start()
        self._threads.append(loop)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._kick.wait(2.0)
            if self._stop.is_set():
                return
            time.sleep(0.02)  # coalesce bursts of events
            self._kick.clear()
            try:
                self.reconcile()
            except Exception as exc:
                log.warning("cluster %s: reconcile pass failed: %s", self.name, exc)
                time.sleep(0.2)

    def reconcile(self) -> None:
        """One pass over every controller."""
        world = World.load(self.kube)
        sync_volumes(self.kube, world, self.cluster_dir / "pv")
        sync_statefulsets(self.kube, world)
        sync_deployments(self.kube, world)
        sync_replicasets(self.kube, world)
        sync_daemonsets(self.kube, world, self.node_name)
        sync_jobs(self.kube, world)
        sync_cronjobs(self.kube, world)
        self.network.sync(world)
        dns = ClusterDns(static_hosts=self._static_hosts(), services=self.network.dns_services)
        self.kubelet.sync(world, dns)
        self.passes += 1

    def _static_hosts(self) -> list[StaticHost]:
        hosts: list[StaticHost] = []
        cm = self.kube.get("configmaps", "kube-system", "coredns")
        if cm:
            hosts.extend(parse_corefile_hosts(str((cm.get("data") or {}).get("Corefile") or "")))
        try:
            mc = self.kube.request("GET", MODULE_CONFIG_PATH)
            hosts.extend(module_config_hosts(mc.get("spec") or {}))
        except ApiException:
            pass
        return hosts

    def stop(self) -> None:
        """Stop the loops and every pod process."""
        self._stop.set()
        self._kick.set()
        self.kubelet.stop_all()
