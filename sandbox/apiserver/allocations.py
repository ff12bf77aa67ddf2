"""Service allocations: cluster IPs from the service range and node ports from 30000-32767, kept
across updates that omit them (what the real server's service REST storage does)."""

from __future__ import annotations

from typing import Any

from sandbox.apiserver import errors
from sandbox.apiserver.errors import ApiError, FieldError
from sandbox.apiserver.store import Obj, Store

NODE_PORT_RANGE = (30000, 32767)


def allocate_service(store: Store, service_cidr_base: str, obj: Obj, old: Obj | None) -> None:
    """Allocate (or check the requested) cluster IP and node ports of a Service being written.

    Raises:
        ApiError: 422 on an IP or port outside its range or already allocated; 500 when the range is full.
    """
    spec = obj["spec"]
    stype = spec.get("type", "ClusterIP")
    errs: list[FieldError] = []
    used_ips: set[str] = set()
    used_ports: set[int] = set()
    for svc in store.items(("", "services"), None):
        if old is not None and svc["metadata"]["uid"] == old["metadata"]["uid"]:
            continue
        s = svc.get("spec") or {}
        used_ips.update(s.get("clusterIPs") or [])
        for p in s.get("ports") or []:
            if p.get("nodePort"):
                used_ports.add(int(p["nodePort"]))
        if s.get("healthCheckNodePort"):
            used_ports.add(int(s["healthCheckNodePort"]))
    if stype == "ExternalName":
        spec.pop("clusterIP", None)
        spec.pop("clusterIPs", None)
    else:
        ip = spec.get("clusterIP") or (spec.get("clusterIPs") or [None])[0]
        if ip == "None":
            spec["clusterIP"] = "None"
            spec["clusterIPs"] = ["None"]
        elif ip:
            if ip.rsplit(".", 1)[0] != service_cidr_base:
                errs.append(
                    FieldError(
                        "spec.clusterIPs",
                        "Invalid",
                        [ip],
                        f"failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The "
                        f"range of valid IPs is {service_cidr_base}.0/24",
                    )
                )
            elif ip in used_ips:
                errs.append(
                    FieldError(
                        "spec.clusterIPs",
                        "Invalid",
                        [ip],
                        f"failed to allocate IP {ip}: provided IP is already allocated",
                    )
                )
            spec["clusterIP"] = ip
            spec["clusterIPs"] = [ip]
        else:
            for i in range(2, 255):
                cand = f"{service_cidr_base}.{i}"
                if cand not in used_ips:
                    spec["clusterIP"] = cand
                    spec["clusterIPs"] = [cand]
                    break
            else:
                raise ApiError(500, "InternalError", "Internal error occurred: range is full")
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
    next_port = NODE_PORT_RANGE[0]

    def take() -> int:
        nonlocal next_port
        while next_port in used_ports:
            next_port += 1
        used_ports.add(next_port)
        return next_port

    if stype in ("NodePort", "LoadBalancer"):
        alloc_ports = stype == "NodePort" or spec.get("allocateLoadBalancerNodePorts", True)
        for i, p in enumerate(spec.get("ports") or []):
            np = p.get("nodePort")
            if np:
                if not NODE_PORT_RANGE[0] <= int(np) <= NODE_PORT_RANGE[1]:
                    errs.append(
                        FieldError(
                            f"spec.ports[{i}].nodePort",
                            "Invalid",
                            np,
                            "provided port is not in the valid range. The range of valid ports is 30000-32767",  # noqa: E501
                        )
                    )
                elif int(np) in used_ports and not (old and _node_ports(old).get(i) == np):
                    errs.append(
                        FieldError(
                            f"spec.ports[{i}].nodePort",
                            "Invalid",
                            np,
                            "provided port is already allocated",
                        )
                    )
                used_ports.add(int(np))
            elif alloc_ports:
                p["nodePort"] = take()
        local_lb = spec.get("externalTrafficPolicy") == "Local" and stype == "LoadBalancer"
        if local_lb and not spec.get("healthCheckNodePort"):
            spec["healthCheckNodePort"] = take()
    else:
        for p in spec.get("ports") or []:
            p.pop("nodePort", None)
    if errs:
        raise errors.invalid("Service", "", obj["metadata"]["name"], errs)


def _node_ports(svc: Obj) -> dict[int, Any]:
    return {i: p.get("nodePort") for i, p in enumerate((svc.get("spec") or {}).get("ports") or [])}


def keep_allocations(new: Obj, old: Obj) -> None:
    """An update that omits clusterIP / nodePorts keeps the allocated ones (as the real server does)."""
    spec = new.setdefault("spec", {})
    ospec = old.get("spec") or {}
    if spec.get("type", "ClusterIP") != "ExternalName" and ospec.get("type", "ClusterIP") != "ExternalName":
        if not spec.get("clusterIP") and ospec.get("clusterIP"):
            spec["clusterIP"] = ospec["clusterIP"]
        same_ip = spec.get("clusterIP") in (None, ospec.get("clusterIP"))
        if not spec.get("clusterIPs") and ospec.get("clusterIPs") and same_ip:
            spec["clusterIPs"] = list(ospec["clusterIPs"])
    old_ports = {
        (p.get("port"), p.get("protocol", "TCP")): p.get("nodePort") for p in ospec.get("ports") or []
    }
    for p in spec.get("ports") or []:
        if isinstance(p, dict) and not p.get("nodePort"):
            np = old_ports.get((p.get("port"), p.get("protocol", "TCP")))
            if np and spec.get("type") in ("NodePort", "LoadBalancer"):
                p["nodePort"] = np
    local = spec.get("externalTrafficPolicy") == "Local"
    if local and not spec.get("healthCheckNodePort") and ospec.get("healthCheckNodePort"):
        spec["healthCheckNodePort"] = ospec["healthCheckNodePort"]
