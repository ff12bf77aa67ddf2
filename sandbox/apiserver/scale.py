"""The ``/scale`` subresource: the autoscaling/v1 Scale view of a scalable object and the object a
Scale write produces."""

from __future__ import annotations

from typing import Any

from sandbox.apiserver import errors
from sandbox.apiserver.errors import FieldError
from sandbox.apiserver.objmeta import deepcopy
from sandbox.apiserver.resources import ResourceType
from sandbox.apiserver.selectors import selector_string
from sandbox.apiserver.store import Obj


def scale_of(rt: ResourceType, obj: Obj) -> Obj:
    """The autoscaling/v1 Scale view of a scalable object."""
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    if rt.scale_paths is not None:
        spec_path, status_path, sel_path = rt.scale_paths
        replicas = _get_path(obj, spec_path)
        sreplicas = _get_path(obj, status_path) or 0
        selector = _get_path(obj, sel_path) if sel_path else None
    else:
        replicas = spec.get("replicas")
        sreplicas = status.get("replicas", 0)
        sel = spec.get("selector")
        selector = (
            selector_string(sel)
            if isinstance(sel, dict) and rt.key != ("", "replicationcontrollers")
            else (",".join(f"{k}={v}" for k, v in sorted((sel or {}).items())) if sel else None)
        )
    meta = obj["metadata"]
    scale: Obj = {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": replicas} if replicas is not None else {},
        "status": {"replicas": sreplicas},
    }
    if selector:
        scale["status"]["selector"] = selector
    return scale


def scaled(rt: ResourceType, old: Obj, scale: Obj) -> Obj:
    """The object ``old`` with the replicas of a written Scale (400/422 on bad replicas)."""
    replicas = (scale.get("spec") or {}).get("replicas", 0)
    name = old["metadata"]["name"]
    if not isinstance(replicas, int) or isinstance(replicas, bool):
        raise errors.bad_request(
            'Scale in version "v1" cannot be handled as a Scale: json: cannot unmarshal '
            "string into Go struct field ScaleSpec.spec.replicas of type int32"
        )
    if replicas < 0:
        raise errors.invalid(
            "Scale",
            "autoscaling",
            name,
            [FieldError("spec.replicas", "Invalid", replicas, "must be greater than or equal to 0")],
        )
    new = deepcopy(old)
    if rt.scale_paths is not None:
        _set_path(new, rt.scale_paths[0], replicas)
    else:
        new.setdefault("spec", {})["replicas"] = replicas
    return new


def _get_path(obj: Obj, path: str | None) -> Any:
    if not path:
        return None
    cur: Any = obj
    for part in path.lstrip(".").split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def _set_path(obj: Obj, path: str, value: Any) -> None:
    parts = path.lstrip(".").split(".")
    cur = obj
    for part in parts[:-1]:
        cur = cur.setdefault(part, {})
    cur[parts[-1]] = value
