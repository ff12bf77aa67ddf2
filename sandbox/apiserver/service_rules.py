"""Service rules: ports, types, clusterIP immutability, and the LoadBalancer ingress of ``/status``."""

from __future__ import annotations

import ipaddress

from sandbox.apiserver.errors import FieldError
from sandbox.apiserver.meta_rules import Errors, Obj, dns_label


def service(obj: Obj, old: Obj | None) -> Errors:
    """Service rules: ports, types, clusterIP immutability."""
    spec = obj.get("spec") or {}
    errs: Errors = []
    stype = spec.get("type", "ClusterIP")
    if stype not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        errs.append(
            FieldError(
                "spec.type",
                "NotSupported",
                stype,
                'supported values: "ClusterIP", "ExternalName", "LoadBalancer", "NodePort"',
            )
        )
    ports = spec.get("ports") or []
    headless = spec.get("clusterIP") == "None"
    if not ports and stype != "ExternalName" and not (headless and stype == "ClusterIP"):
        errs.append(FieldError("spec.ports", "Required", None, ""))
    if stype == "ExternalName" and not spec.get("externalName"):
        errs.append(FieldError("spec.externalName", "Required", None, ""))
    if len(ports) > 1:
        for i, p in enumerate(ports):
            if isinstance(p, dict) and not p.get("name"):
                errs.append(FieldError(f"spec.ports[{i}].name", "Required", None, ""))
    seen: set[str] = set()
    for i, p in enumerate(ports):
        if not isinstance(p, dict):
            continue
        if p.get("name"):
            if p["name"] in seen:
                errs.append(FieldError(f"spec.ports[{i}].name", "Duplicate", p["name"]))
            seen.add(p["name"])
            errs += dns_label(p["name"], f"spec.ports[{i}].name")
        port = p.get("port")
        if port is None:
            errs.append(FieldError(f"spec.ports[{i}].port", "Required", None, ""))
        elif not 1 <= int(port) <= 65535:
            errs.append(
                FieldError(f"spec.ports[{i}].port", "Invalid", port, "must be between 1 and 65535, inclusive")
            )
        proto = p.get("protocol", "TCP")
        if proto not in ("TCP", "UDP", "SCTP"):
            errs.append(
                FieldError(
                    f"spec.ports[{i}].protocol",
                    "NotSupported",
                    proto,
                    'supported values: "SCTP", "TCP", "UDP"',
                )
            )
        if p.get("nodePort") is not None and stype not in ("NodePort", "LoadBalancer"):
            errs.append(
                FieldError(
                    f"spec.ports[{i}].nodePort",
                    "Forbidden",
                    None,
                    "may not be used when `type` is 'ClusterIP'",
                )
            )
    if old is not None:
        ospec = old.get("spec") or {}
        oips, nips = ospec.get("clusterIPs") or [], spec.get("clusterIPs") or []
        if oips and nips and oips[0] != nips[0] and stype != "ExternalName":
            errs.append(FieldError("spec.clusterIPs[0]", "Invalid", nips[0], "may not change once set"))
        changed = ospec.get("clusterIP") and spec.get("clusterIP") and ospec["clusterIP"] != spec["clusterIP"]
        if changed and not any(e.field == "spec.clusterIPs[0]" for e in errs):
            errs.append(
                FieldError("spec.clusterIPs[0]", "Invalid", spec["clusterIP"], "may not change once set")
            )
    return errs


def service_status(obj: Obj) -> Errors:
    """``/status`` of a Service: LoadBalancer ingress IPs must be IPs."""
    errs: Errors = []
    for i, ing in enumerate(((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []):
        ip = ing.get("ip") if isinstance(ing, dict) else None
        if ip:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                errs.append(
                    FieldError(
                        f"status.loadBalancer.ingress[{i}].ip", "Invalid", ip, "must be a valid IP address"
                    )
                )
    return errs
