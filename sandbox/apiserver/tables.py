"""``meta.k8s.io/v1`` Table rendering for ``kubectl get`` (server-side printing)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sandbox.apiserver.resources import ResourceType

Obj = dict[str, Any]
# name, type, format ("wide": a priority-1 column, shown by ``kubectl get -o wide`` only), getter
Column = tuple[str, str, str, Callable[[Obj], Any]]


def _age(obj: Obj) -> str:
    ts = obj["metadata"].get("creationTimestamp")
    if not ts:
        return "<unknown>"
    then = dt.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    secs = int((dt.datetime.now(dt.UTC) - then).total_seconds())
    if secs < 120:
        return f"{max(secs, 0)}s"
    mins = secs // 60
    if mins < 10:
        return f"{mins}m{secs % 60}s" if secs % 60 else f"{mins}m"
    if mins < 180:
        return f"{mins}m"
    hours = mins // 60
    if hours < 48:
        return f"{hours}h"
    return f"{hours // 24}d"


def _spec(o: Obj) -> Obj:
    return o.get("spec") or {}


def _status(o: Obj) -> Obj:
    return o.get("status") or {}


def _pod_ready(o: Obj) -> str:
    total = len(_spec(o).get("containers") or [])
    ready = sum(1 for c in _status(o).get("containerStatuses") or [] if c.get("ready"))
    return f"{ready}/{total}"


def _pod_status(o: Obj) -> str:
    if o["metadata"].get("deletionTimestamp"):
        return "Terminating"
    st = _status(o)
    for c in st.get("containerStatuses") or []:
        waiting = (c.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason"):
            return str(waiting["reason"])
        term = (c.get("state") or {}).get("terminated")
        if term and term.get("reason") and st.get("phase") not in ("Succeeded",):
            return str(term["reason"])
    return str(st.get("reason") or st.get("phase") or "Pending")


def _restarts(o: Obj) -> int:
    return sum(int(c.get("restartCount") or 0) for c in _status(o).get("containerStatuses") or [])


def _ports(o: Obj) -> str:
    out = []
    for p in _spec(o).get("ports") or []:
        s = str(p.get("port"))
        if p.get("nodePort"):
            s += f":{p['nodePort']}"
        out.append(f"{s}/{p.get('protocol', 'TCP')}")
    return ",".join(out) or "<none>"


def _external_ip(o: Obj) -> str:
    spec = _spec(o)
    if spec.get("type") == "LoadBalancer":
        ips = [
            i.get("ip") or i.get("hostname")
            for i in (_status(o).get("loadBalancer") or {}).get("ingress") or []
        ]
        return ",".join(i for i in ips if i) or "<pending>"
    if spec.get("type") == "ExternalName":
        return str(spec.get("externalName", ""))
    return ",".join(spec.get("externalIPs") or []) or "<none>"


def _data_count(o: Obj) -> int:
    return len(o.get("data") or {}) + len(o.get("binaryData") or {})


NAME: Column = ("Name", "string", "name", lambda o: o["metadata"]["name"])
AGE: Column = ("Age", "string", "", _age)

COLUMNS: dict[tuple[str, str], list[Column]] = {
    ("", "pods"): [
        NAME,
        ("Ready", "string", "", _pod_ready),
        ("Status", "string", "", _pod_status),
        ("Restarts", "string", "", lambda o: str(_restarts(o))),
        AGE,
        ("IP", "string", "wide", lambda o: _status(o).get("podIP") or "<none>"),
        ("Node", "string", "wide", lambda o: _spec(o).get("nodeName") or "<none>"),
        ("Nominated Node", "string", "wide", lambda o: _status(o).get("nominatedNodeName") or "<none>"),
        ("Readiness Gates", "string", "wide", lambda o: "<none>"),
    ],
    ("", "namespaces"): [NAME, ("Status", "string", "", lambda o: _status(o).get("phase", "")), AGE],
    ("", "services"): [
        NAME,
        ("Type", "string", "", lambda o: _spec(o).get("type", "")),
        ("Cluster-IP", "string", "", lambda o: _spec(o).get("clusterIP") or "<none>"),
        ("External-IP", "string", "", _external_ip),
        ("Port(s)", "string", "", _ports),
        AGE,
    ],
    ("", "configmaps"): [NAME, ("Data", "integer", "", _data_count), AGE],
    ("", "secrets"): [
        NAME,
        ("Type", "string", "", lambda o: o.get("type", "")),
        ("Data", "integer", "", _data_count),
        AGE,
    ],
    ("", "persistentvolumeclaims"): [
        NAME,
        ("Status", "string", "", lambda o: _status(o).get("phase", "")),
        ("Volume", "string", "", lambda o: _spec(o).get("volumeName", "")),
        ("Capacity", "string", "", lambda o: (_status(o).get("capacity") or {}).get("storage", "")),
        (
            "Access Modes",
            "string",
            "",
            lambda o: ",".join(
                {
                    "ReadWriteOnce": "RWO",
                    "ReadOnlyMany": "ROX",
                    "ReadWriteMany": "RWX",
                    "ReadWriteOncePod": "RWOP",
                }.get(m, m)
                for m in _status(o).get("accessModes") or []
            ),
        ),
        ("StorageClass", "string", "", lambda o: _spec(o).get("storageClassName") or "<unset>"),
        AGE,
    ],
    ("", "persistentvolumes"): [
        NAME,
        ("Capacity", "string", "", lambda o: (_spec(o).get("capacity") or {}).get("storage", "")),
        ("Reclaim Policy", "string", "", lambda o: _spec(o).get("persistentVolumeReclaimPolicy", "")),
        ("Status", "string", "", lambda o: _status(o).get("phase", "")),
        (
            "Claim",
            "string",
            "",
            lambda o: "/".join(
                x
                for x in (
                    (_spec(o).get("claimRef") or {}).get("namespace"),
                    (_spec(o).get("claimRef") or {}).get("name"),
                )
                if x
            ),
        ),
        AGE,
    ],
    ("", "nodes"): [
        NAME,
        (
            "Status",
            "string",
            "",
            lambda o: (
                "Ready"
                if any(
                    c.get("type") == "Ready" and c.get("status") == "True"
                    for c in _status(o).get("conditions") or []
                )
                else "NotReady"
            ),
        ),
        ("Roles", "string", "", lambda o: "<none>"),
        AGE,
        ("Version", "string", "", lambda o: (_status(o).get("nodeInfo") or {}).get("kubeletVersion", "")),
    ],
    ("apps", "statefulsets"): [
        NAME,
        (
            "Ready",
            "string",
            "",
            lambda o: f"{_status(o).get('readyReplicas', 0)}/{_spec(o).get('replicas', 0)}",
        ),
        AGE,
    ],
    ("apps", "deployments"): [
        NAME,
        (
            "Ready",
            "string",
            "",
            lambda o: f"{_status(o).get('readyReplicas', 0)}/{_spec(o).get('replicas', 0)}",
        ),
        ("Up-to-date", "integer", "", lambda o: _status(o).get("updatedReplicas", 0)),
        ("Available", "integer", "", lambda o: _status(o).get("availableReplicas", 0)),
        AGE,
    ],
    ("apps", "replicasets"): [
        NAME,
        ("Desired", "integer", "", lambda o: _spec(o).get("replicas", 0)),
        ("Current", "integer", "", lambda o: _status(o).get("replicas", 0)),
        ("Ready", "integer", "", lambda o: _status(o).get("readyReplicas", 0)),
        AGE,
    ],
    ("batch", "jobs"): [
        NAME,
        (
            "Status",
            "string",
            "",
            lambda o: next(
                (
                    c["type"]
                    for c in _status(o).get("conditions") or []
                    if c.get("status") == "True" and c.get("type") in ("Complete", "Failed")
                ),
                "Running",
            ),
        ),
        (
            "Completions",
            "string",
            "",
            lambda o: f"{_status(o).get('succeeded', 0)}/{_spec(o).get('completions', 1)}",
        ),
        AGE,
    ],
    ("batch", "cronjobs"): [
        NAME,
        ("Schedule", "string", "", lambda o: _spec(o).get("schedule", "")),
        ("Suspend", "boolean", "", lambda o: bool(_spec(o).get("suspend"))),
        ("Active", "integer", "", lambda o: len(_status(o).get("active") or [])),
        ("Last Schedule", "string", "", lambda o: _status(o).get("lastScheduleTime") or "<none>"),
        AGE,
    ],
    ("apiextensions.k8s.io", "customresourcedefinitions"): [
        NAME,
        ("Created At", "date", "", lambda o: o["metadata"].get("creationTimestamp", "")),
    ],
    ("", "serviceaccounts"): [NAME, ("Secrets", "integer", "", lambda o: len(o.get("secrets") or [])), AGE],
    ("", "endpoints"): [
        NAME,
        (
            "Endpoints",
            "string",
            "",
            lambda o: (
                ",".join(
                    f"{a.get('ip')}:{p.get('port')}"
                    for s in o.get("subsets") or []
                    for a in s.get("addresses") or []
                    for p in s.get("ports") or [{}]
                )
                or "<none>"
            ),
        ),
        AGE,
    ],
}


def _partial(obj: Obj) -> Obj:
    meta = {k: v for k, v in obj["metadata"].items() if k != "managedFields"}
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta}


def _json_path(path: str) -> Callable[[Obj], Any]:
    parts = [p for p in path.strip().lstrip(".").split(".") if p]

    def get(o: Obj) -> Any:
        cur: Any = o
        for p in parts:
            cur = cur.get(p) if isinstance(cur, dict) else None
        return cur

    return get


def printer_columns(columns: list[Obj]) -> list[Column]:
    """Columns of a CRD version's ``additionalPrinterColumns`` (simple ``.a.b`` JSON paths)."""
    out: list[Column] = [NAME]
    for col in columns:
        out.append(
            (
                str(col.get("name", "")),
                str(col.get("type", "string")),
                str(col.get("format", "")),
                _json_path(str(col.get("jsonPath", ""))),
            )
        )
    return out


def table(
    key: tuple[str, str],
    objs: list[Obj],
    meta: Obj | None,
    include_object: str = "Metadata",
    columns: list[Column] | None = None,
) -> Obj:
    """A Table of ``objs`` with the columns kubectl shows for this resource."""
    cols = columns or COLUMNS.get(key, [NAME, AGE])
    rows = []
    for o in objs:
        row: Obj = {"cells": [c[3](o) for c in cols]}
        if include_object == "Object":
            row["object"] = o
        elif include_object != "None":
            row["object"] = _partial(o)
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta or {},
        "columnDefinitions": [
            {
                "name": c[0],
                "type": c[1],
                "format": "" if c[2] == "wide" else c[2],
                "description": "",
                "priority": 1 if c[2] == "wide" else 0,
            }
            for c in cols
        ],
        "rows": rows,
    }


def resource_table(rt: ResourceType, objs: list[Obj], meta: Obj, include: str) -> Obj:
    """The Table of ``objs`` of a resource type (a CRD's additionalPrinterColumns for custom resources)."""
    columns = None
    if rt.custom and rt.crd_schemas and rt.crd_schemas.get("columns"):
        columns = printer_columns(list(rt.crd_schemas["columns"]))  # type: ignore[call-overload]
    return table(rt.key, objs, meta, include, columns)
