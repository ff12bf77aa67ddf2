"""Pure decisions of application migration's cut-over: deactivating and reactivating workloads.

``deactivate`` (Stork's ``storkctl deactivate``): Deployments/StatefulSets go to 0 replicas with the
count kept in ``stateferry.io/source-replicas``; CronJobs get ``suspend: true`` with the previous
value kept in ``stateferry.io/source-suspend``. ``reactivate`` puts back exactly what was recorded
and removes the annotations. Both are idempotent: an object already deactivated keeps its first
recorded count (a re-run after a crash never records 0).
"""

from __future__ import annotations

from typing import Any

from stateferry.errors import InputError

SOURCE_REPLICAS_ANNOTATION = "stateferry.io/source-replicas"
SOURCE_SUSPEND_ANNOTATION = "stateferry.io/source-suspend"
SCALABLE_KINDS = ("Deployment", "StatefulSet")
QUIESCE_MODES = ("none", "scale")


def parse_quiesce(value: str, field: str = "quiesce") -> str:
    """Validate the quiesce mode (``none``: one live copy; ``scale``: bulk copy, stop, delta)."""
    mode = str(value or "none").strip().lower()
    if mode not in QUIESCE_MODES:
        raise InputError(field, f"is {value!r}", "use 'none' or 'scale'")
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
