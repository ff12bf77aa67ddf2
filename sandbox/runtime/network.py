"""Service networking: Endpoints + EndpointSlices, LoadBalancer IPs and proxies, kube-proxy, DNS records."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sandbox.runtime.dns import ServiceRecord
from sandbox.runtime.events import emit
from sandbox.runtime.ippool import IpPool
from sandbox.runtime.kube import Kube, Obj
from sandbox.runtime.objects import (
    map_selector_matches,
    meta,
    name_of,
    now_iso,
    ns_of,
    owner_ref,
    pod_ready,
    random_suffix,
    terminating,
    uid_of,
)
from sandbox.runtime.proxy import Backend, ProxyManager
from sandbox.runtime.world import World

log = logging.getLogger(__name__)

SLICE_MANAGER = "endpointslice-controller.k8s.io"
TRIGGER_ANN = "endpoints.kubernetes.io/last-change-trigger-time"


Listeners = dict[Backend, list[Backend]]  # listen address -> backends, as the proxies take them


def _best_effort(svc: Obj, what: str, write: Callable[[], object]) -> None:
    """Run a control-plane write of ``svc``; a failure is logged (the next pass retries it)."""
    try:
        write()
    except Exception as exc:
        log.warning("service %s/%s: %s: %s", ns_of(svc), name_of(svc), what, exc)


@dataclass
class Published:
    """Pods published for one Service: ready and not-ready addresses with resolved ports."""

    ready: list[Obj] = field(default_factory=list)
    not_ready: list[Obj] = field(default_factory=list)


def _target_port(port: Obj, pod: Obj) -> int | None:
    target = port.get("targetPort", port.get("port"))
    if isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
        return int(target)
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == target:
                return int(p["containerPort"])
    return None


def _published(svc: Obj, pods: list[Obj]) -> Published:
    spec = svc.get("spec") or {}
    out = Published()
    publish_all = bool(spec.get("publishNotReadyAddresses"))
    for pod in pods:
        if ns_of(pod) != ns_of(svc) or terminating(pod):
            continue
        if not map_selector_matches(spec.get("selector"), meta(pod).get("labels")):
            continue
        status = pod.get("status") or {}
        if not status.get("podIP") or not (pod.get("spec") or {}).get("nodeName"):
            continue
        if status.get("phase") in ("Succeeded", "Failed"):
            continue
        (out.ready if publish_all or pod_ready(pod) else out.not_ready).append(pod)
    out.ready.sort(key=name_of)
    out.not_ready.sort(key=name_of)
    return out


def _address(pod: Obj, svc: Obj) -> Obj:
    pspec = pod.get("spec") or {}
    addr: Obj = {"ip": pod["status"]["podIP"], "nodeName": pspec.get("nodeName")}
    if pspec.get("hostname") and pspec.get("subdomain") == name_of(svc):
        addr["hostname"] = pspec["hostname"]
    addr["targetRef"] = {"kind": "Pod", "namespace": ns_of(pod), "name": name_of(pod), "uid": uid_of(pod)}
    return addr


def _ports(svc: Obj, sample: Obj | None) -> list[Obj]:
    out = []
    for port in (svc.get("spec") or {}).get("ports") or []:
        target = _target_port(port, sample) if sample else None
        if target is None and sample is not None:
            continue
        entry: Obj = {
            "port": target if target is not None else port.get("port"),
            "protocol": port.get("protocol", "TCP"),
        }
        if port.get("name"):
            entry["name"] = port["name"]
        out.append(entry)
    return out


class ServiceNetwork:
    """Keeps Endpoints/EndpointSlices, LB addresses, proxies and DNS records of one cluster in sync."""

    def __init__(
        self, cluster: str, kube: Kube, lb_pool: IpPool, proxies: ProxyManager, node_ip: str = ""
    ) -> None:
        self.cluster = cluster
        self.node_ip = node_ip
        self.kube = kube
        self.lb_pool = lb_pool
        self.proxies = proxies
        self.dns_services: list[ServiceRecord] = []
        self._wanted_listeners: set[tuple[str, int]] = set()
        # What each Service last published to the data plane. A pass that fails for one Service
        # (an API timeout while writing its Endpoints, say) keeps that Service's proxies and DNS
        # record as they were, like kube-proxy and CoreDNS keep serving their last known state.
        self._last: dict[tuple[str, str], tuple[ServiceRecord | None, Listeners]] = {}

    def sync(self, world: World) -> None:
        """Reconcile every Service of the snapshot."""
        endpoints = world.by_name("endpoints")
        slices: dict[tuple[str, str], list[Obj]] = {}
        for s in world["endpointslices"]:
            svc_name = (meta(s).get("labels") or {}).get("kubernetes.io/service-name")
            if svc_name:
                slices.setdefault((ns_of(s), svc_name), []).append(s)
        services = world.by_name("services")
        records: list[ServiceRecord] = []
        listeners: Listeners = {}
        for svc in world["services"]:
            key = (ns_of(svc), name_of(svc))
            mine: Listeners = {}
            try:
                record = self._sync_service(svc, world, endpoints, slices, mine)
                self._last[key] = (record, mine)
            except Exception as exc:
                log.warning("service %s/%s: %s (serving its last known state)", key[0], key[1], exc)
                record, mine = self._last.get(key, (None, {}))
            if record is not None:
                records.append(record)
            listeners.update(mine)
        for key in set(self._last) - set(services):
            del self._last[key]
        # Endpoints of deleted Services (only those this controller manages).
        for key, ep in endpoints.items():
            if key not in services and TRIGGER_ANN in (meta(ep).get("annotations") or {}):
                self.kube.delete("endpoints", key[0], key[1])
        # Release LB addresses of Services that are gone or no longer LoadBalancers.
        lb_owners = {
            uid_of(s) for s in world["services"] if (s.get("spec") or {}).get("type") == "LoadBalancer"
        }
        for owner in list(self.lb_pool.allocations()):
            if owner not in lb_owners:
                self.lb_pool.release(owner)
        for listen in list(self._wanted_listeners):  # the proxy manager is shared by both clusters
            if listen not in listeners:
                self.proxies.remove(listen)
                self._wanted_listeners.discard(listen)
        for listen, backends in listeners.items():
            try:
                self.proxies.ensure(listen, backends)
                self._wanted_listeners.add(listen)
            except OSError as exc:
                log.warning("proxy %s:%s: %s", listen[0], listen[1], exc)
        self.dns_services = records

    def _sync_service(
        self,
        svc: Obj,
        world: World,
        endpoints: dict[tuple[str, str], Obj],
        slices: dict[tuple[str, str], list[Obj]],
        listeners: dict[tuple[str, int], list[tuple[str, int]]],
    ) -> ServiceRecord | None:
        spec = svc.get("spec") or {}
        key = (ns_of(svc), name_of(svc))
        if terminating(svc):
            return None
        has_selector = bool(spec.get("selector"))
        pub = _published(svc, world["pods"]) if has_selector else Published()
        if has_selector:
            # control-plane writes: a failure is retried next pass; the data plane below does not wait
            _best_effort(
                svc, "writing its Endpoints", lambda: self._write_endpoints(svc, pub, endpoints.get(key))
            )
            _best_effort(
                svc, "writing its EndpointSlice", lambda: self._write_slice(svc, pub, slices.get(key, []))
            )
        cluster_ip = spec.get("clusterIP")
        headless = cluster_ip in (None, "", "None")
        # backends per service port (ready pods only)
        for port in spec.get("ports") or []:
            if (port.get("protocol") or "TCP") != "TCP":
                continue
            backends = []
            for pod in pub.ready:
                target = _target_port(port, pod)
                if target is not None:
                    backends.append((pod["status"]["podIP"], target))
            if not headless:
                listeners[(str(cluster_ip), int(port["port"]))] = backends
            if self.node_ip and port.get("nodePort") and spec.get("type") in ("NodePort", "LoadBalancer"):
                listeners[(self.node_ip, int(port["nodePort"]))] = backends
            if spec.get("type") == "LoadBalancer":
                lb_ip = self._lb_address(svc)
                if lb_ip:
                    listeners[(lb_ip, int(port["port"]))] = backends
        if spec.get("type") != "LoadBalancer" and ((svc.get("status") or {}).get("loadBalancer") or {}).get(
            "ingress"
        ):
            self.kube.patch("services", key[0], key[1], {"status": {"loadBalancer": {}}}, sub="status")
        pod_hosts = tuple(
            ((p.get("spec") or {})["hostname"], p["status"]["podIP"])
            for p in pub.ready
            if (p.get("spec") or {}).get("hostname")
            and (p.get("spec") or {}).get("subdomain") == name_of(svc)
        )
        return ServiceRecord(
            name=name_of(svc),
            namespace=ns_of(svc),
            cluster_ip=None if headless else str(cluster_ip),
            endpoint_ips=tuple(p["status"]["podIP"] for p in pub.ready),
            pod_hosts=pod_hosts,
        )

    def _lb_address(self, svc: Obj) -> str | None:
        status_ing = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        current = status_ing[0].get("ip") if status_ing else None
        owner = uid_of(svc)
        if current and current in self.lb_pool and self.lb_pool.reserve(owner, current):
            return str(current)
        ip = self.lb_pool.allocate(owner)

        def publish() -> None:
            emit(
                self.kube,
                svc,
                "EnsuringLoadBalancer",
                "Ensuring load balancer",
                component="service-controller",
                kind="Service",
                api_version="v1",
            )
            self.kube.patch(
                "services",
                ns_of(svc),
                name_of(svc),
                {"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}},
                sub="status",
            )
            emit(
                self.kube,
                svc,
                "EnsuredLoadBalancer",
                "Ensured load balancer",
                component="service-controller",
                kind="Service",
                api_version="v1",
            )

        # the address is held from here on; a failed status write is retried next pass
        _best_effort(svc, "publishing the LB address", publish)
        return ip

    def _write_endpoints(self, svc: Obj, pub: Published, current: Obj | None) -> None:
        sample: Obj | None = (pub.ready or pub.not_ready or [None])[0]  # type: ignore[list-item]
        subset: Obj = {}
        if pub.ready:
            subset["addresses"] = [_address(p, svc) for p in pub.ready]
        if pub.not_ready:
            subset["notReadyAddresses"] = [_address(p, svc) for p in pub.not_ready]
        subsets: list[Obj] | None = None
        if subset:
            subset["ports"] = _ports(svc, sample)
            subsets = [subset]
        labels = dict(meta(svc).get("labels") or {})
        if (svc.get("spec") or {}).get("clusterIP") == "None":
            labels["service.kubernetes.io/headless"] = ""
        if current is None:
            body: Obj = {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {
                    "name": name_of(svc),
                    "namespace": ns_of(svc),
                    "labels": labels,
                    "annotations": {TRIGGER_ANN: now_iso()},
                },
            }
            if subsets:
                body["subsets"] = subsets
            self.kube.create("endpoints", ns_of(svc), body, exist_ok=True)
        elif current.get("subsets") != subsets or (meta(current).get("labels") or {}) != labels:
            self.kube.patch(
                "endpoints",
                ns_of(svc),
                name_of(svc),
                {
                    "metadata": {"labels": labels, "annotations": {TRIGGER_ANN: now_iso()}},
                    "subsets": subsets,
                },
            )

    def _write_slice(self, svc: Obj, pub: Published, current: list[Obj]) -> None:
        sample: Obj | None = (pub.ready or pub.not_ready or [None])[0]  # type: ignore[list-item]
        eps: list[Obj] = []
        for pod, ready in [(p, True) for p in pub.ready] + [(p, False) for p in pub.not_ready]:
            addr = _address(pod, svc)
            ep: Obj = {
                "addresses": [addr["ip"]],
                "conditions": {"ready": ready, "serving": ready, "terminating": False},
                "nodeName": addr["nodeName"],
                "targetRef": addr["targetRef"],
            }
            if addr.get("hostname"):
                ep["hostname"] = addr["hostname"]
            eps.append(ep)
        ports = _ports(svc, sample) if sample else []
        want: dict[str, Any] = {"endpoints": eps, "ports": ports or None}
        mine = [
            s
            for s in current
            if (meta(s).get("labels") or {}).get("endpointslice.kubernetes.io/managed-by") == SLICE_MANAGER
        ]
        if not mine:
            body = {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{name_of(svc)}-{random_suffix()}",
                    "namespace": ns_of(svc),
                    "labels": {
                        **(meta(svc).get("labels") or {}),
                        "kubernetes.io/service-name": name_of(svc),
                        "endpointslice.kubernetes.io/managed-by": SLICE_MANAGER,
                    },
                    "ownerReferences": [owner_ref(svc, "v1", "Service")],
                },
                "addressType": "IPv4",
                **{k: v for k, v in want.items() if v is not None},
            }
            self.kube.create("endpointslices", ns_of(svc), body, exist_ok=True)
            return
        s = mine[0]
        if s.get("endpoints") != want["endpoints"] or s.get("ports") != want["ports"]:
            self.kube.patch("endpointslices", ns_of(s), name_of(s), want)
        for extra in mine[1:]:
            self.kube.delete("endpointslices", ns_of(extra), name_of(extra))
