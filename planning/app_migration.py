"""Pure decisions of application migration's cut-over: deactivating and reactivating workloads.

``deactivate`` (Stork's ``storkctl deactivate``): Deployments/StatefulSets go to 0 replicas with the
count kept in ``stateferry.io/source-replicas``; CronJobs get ``suspend: true`` with the previous
value kept in ``stateferry.io/source-suspend``. ``reactivate`` puts back exactly what was recorded
and removes the annotations. Both are idempotent: an object already deactivated keeps its first
recorded count (a re-run after a crash never records 0).
"""

from __future__ import annotations

import re
from typing import Any

from stateferry.errors import InputError

SOURCE_REPLICAS_ANNOTATION = "stateferry.io/source-replicas"
SOURCE_SUSPEND_ANNOTATION = "stateferry.io/source-suspend"
SCALABLE_KINDS = ("Deployment", "StatefulSet")
QUIESCE_MODES = ("none", "scale", "hooks")


def parse_quiesce(value: str, field: str = "quiesce") -> str:
    """Validate the quiesce mode (``none``: one live copy; ``scale``: bulk copy, scale to 0, delta;
    ``hooks``: bulk copy, pre exec hooks, delta, post exec hooks)."""
    mode = str(value or "none").strip().lower()
    if mode not in QUIESCE_MODES:
        raise InputError(field, f"is {value!r}", "use 'none', 'scale' or 'hooks'")
    return mode


def _ann(obj: dict[str, Any]) -> dict[str, Any]:
    return (obj.get("metadata") or {}).get("annotations") or {}


def deactivation_patch(obj: dict[str, Any]) -> dict[str, Any] | None:
    """Merge patch that deactivates ``obj``, or None when there is nothing to do."""
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    ann = _ann(obj)
    if kind in SCALABLE_KINDS:
        replicas = spec.get("replicas", 1)
        if SOURCE_REPLICAS_ANNOTATION in ann:
            return None if replicas == 0 else {"spec": {"replicas": 0}}
        if replicas == 0:
            return None
        return {
            "spec": {"replicas": 0},
            "metadata": {"annotations": {SOURCE_REPLICAS_ANNOTATION: str(replicas)}},
        }
    if kind == "CronJob":
        if SOURCE_SUSPEND_ANNOTATION in ann:
            return None if spec.get("suspend") else {"spec": {"suspend": True}}
        if spec.get("suspend"):
            return None
        return {"spec": {"suspend": True}, "metadata": {"annotations": {SOURCE_SUSPEND_ANNOTATION: "false"}}}
    return None


def reactivation_patch(obj: dict[str, Any]) -> dict[str, Any] | None:
    """Merge patch that restores what :func:`deactivation_patch` recorded, or None.

    Raises:
        InputError: the recorded count is not a non-negative integer (edited by hand).
    """
    ann = _ann(obj)
    if obj.get("kind") in SCALABLE_KINDS and SOURCE_REPLICAS_ANNOTATION in ann:
        raw = ann[SOURCE_REPLICAS_ANNOTATION]
        if not str(raw).isdigit():
            raise InputError(
                f"metadata.annotations[{SOURCE_REPLICAS_ANNOTATION}]",
                f"is {raw!r} on {obj.get('kind')} {obj.get('metadata', {}).get('name')}",
                "set it to the replica count to restore",
            )
        return {
            "spec": {"replicas": int(raw)},
            "metadata": {"annotations": {SOURCE_REPLICAS_ANNOTATION: None}},
        }
    if obj.get("kind") == "CronJob" and SOURCE_SUSPEND_ANNOTATION in ann:
        suspend = str(ann[SOURCE_SUSPEND_ANNOTATION]).lower() == "true"
        return {"spec": {"suspend": suspend}, "metadata": {"annotations": {SOURCE_SUSPEND_ANNOTATION: None}}}
    return None


# ---- Stork parity of the objects sent to the target -------------------------------------------

MIGRATION_SUSPEND_ANNOTATION = "stateferry.io/migration-suspend"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def _port_key(p: dict[str, Any]) -> tuple[int, str]:
    return int(p.get("port") or 0), str(p.get("protocol") or "TCP")


def user_set_node_ports(svc: dict[str, Any]) -> set[tuple[int, str]]:
    """``(port, protocol)`` of the Service ports whose nodePort a user wrote (in the
    last-applied configuration or owned by a manager in managedFields), not the server."""
    import json

    out: set[tuple[int, str]] = set()
    raw = _ann(svc).get(LAST_APPLIED)
    if raw:
        try:
            applied = json.loads(raw)
            for p in (applied.get("spec") or {}).get("ports") or []:
                if isinstance(p, dict) and p.get("nodePort"):
                    out.add(_port_key(p))
        except (ValueError, AttributeError):
            pass
    for entry in (svc.get("metadata") or {}).get("managedFields") or []:
        ports = (((entry.get("fieldsV1") or {}).get("f:spec") or {}).get("f:ports")) or {}
        for key, fields in ports.items():
            if not key.startswith("k:") or not isinstance(fields, dict) or "f:nodePort" not in fields:
                continue
            try:
                k = json.loads(key[2:])
            except ValueError:
                continue
            out.add(_port_key(k))
    return out


def prepare_service(svc: dict[str, Any]) -> dict[str, Any]:
    """A Service for another cluster: no ``loadBalancerIP``/``loadBalancerClass`` (the target's load
    balancers differ, as Stork does), nodePorts only where a user set them (as Velero does)."""
    import copy

    out = copy.deepcopy(svc)
    spec = out.get("spec") or {}
    spec.pop("loadBalancerIP", None)
    spec.pop("loadBalancerClass", None)
    keep = user_set_node_ports(svc)
    for p in spec.get("ports") or []:
        if _port_key(p) not in keep:
            p.pop("nodePort", None)
    return out


def park_cronjob(obj: dict[str, Any]) -> dict[str, Any]:
    """A CronJob that arrives suspended, its own ``suspend`` kept in ``stateferry.io/migration-suspend``."""
    import copy

    out = copy.deepcopy(obj)
    meta = out.setdefault("metadata", {})
    ann = meta.setdefault("annotations", {})
    spec = out.setdefault("spec", {})
    ann.setdefault(MIGRATION_SUSPEND_ANNOTATION, "true" if spec.get("suspend") else "false")
    spec["suspend"] = True
    return out


def cronjob_activation_patch(obj: dict[str, Any]) -> dict[str, Any] | None:
    """Merge patch that un-parks a CronJob parked by :func:`park_cronjob`, or None."""
    ann = _ann(obj)
    if obj.get("kind") != "CronJob" or MIGRATION_SUSPEND_ANNOTATION not in ann:
        return None
    suspend = str(ann[MIGRATION_SUSPEND_ANNOTATION]).lower() == "true"
    return {"spec": {"suspend": suspend}, "metadata": {"annotations": {MIGRATION_SUSPEND_ANNOTATION: None}}}


def prepare_for_target(objects: list[dict[str, Any]], park: bool) -> list[dict[str, Any]]:
    """Services sanitised for another cluster; CronJobs parked when workloads are."""
    out = []
    for o in objects:
        if o.get("kind") == "Service":
            o = prepare_service(o)
        elif o.get("kind") == "CronJob" and park:
            o = park_cronjob(o)
        out.append(o)
    return out


# ---- resuming a quiesce after the bulk copy --------------------------------------------------

BULK_CHECKPOINT_VERSION = 1
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def bulk_checkpoint(volumes: list[dict[str, Any]]) -> dict[str, Any]:
    """The record written once every bulk copy of a quiesce is verified in the target."""
    keep = (
        "namespace",
        "pvc",
        "sha256_tree",
        "target_sha256",
        "files",
        "bytes",
        "target_namespace",
        "target_pvc",
    )
    return {"version": BULK_CHECKPOINT_VERSION, "volumes": [{k: v.get(k) for k in keep} for v in volumes]}


def parse_bulk_checkpoint(
    record: Any, claims: list[tuple[str, str]]
) -> dict[tuple[str, str], dict[str, Any]] | None:
    """The bulk copies a re-run may resume from, per claim; None (copy again) unless the record
    (read back from storage: untrusted) is well-formed and covers exactly ``claims``."""
    if not isinstance(record, dict) or record.get("version") != BULK_CHECKPOINT_VERSION:
        return None
    vols = record.get("volumes")
    if not isinstance(vols, list):
        return None
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for v in vols:
        if not isinstance(v, dict):
            return None
        names = [v.get(k) for k in ("namespace", "pvc", "target_namespace", "target_pvc")]
        sums = [v.get("sha256_tree"), v.get("target_sha256")]
        counts = [v.get("files"), v.get("bytes")]
        if not all(isinstance(n, str) and _NAME.match(n) for n in names):
            return None
        if not all(isinstance(s, str) and _SHA256.match(s) for s in sums):
            return None
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
            return None
        out[(str(names[0]), str(names[1]))] = dict(v)
    return out if set(out) == set(claims) and len(out) == len(vols) else None
