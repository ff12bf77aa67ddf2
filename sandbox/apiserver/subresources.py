"""Subresources that act rather than read or write the object: ``pods/binding``,
``pods/eviction`` and ``namespaces/finalize``."""

from __future__ import annotations

from typing import Any

import orjson

from sandbox.apiserver import errors
from sandbox.apiserver.deletion import DeleteOptions, should_remove
from sandbox.apiserver.registry import Registry
from sandbox.apiserver.resources import ResourceType
from sandbox.apiserver.store import Obj


def extra_sub(rt: ResourceType, sub: str) -> bool:
    """Whether ``sub`` is one of these subresources (or pods/log, pods/exec) of ``rt``."""
    if rt.key == ("", "pods"):
        return sub in ("binding", "eviction", "log", "exec")
    return rt.key == ("", "namespaces") and sub == "finalize"


def pod_action(reg: Registry, rt: ResourceType, ns: str, name: str, sub: str, body: Any) -> Obj:
    """POST ``pods/binding`` (set the node once) or ``pods/eviction`` (delete the pod)."""
    body = body if isinstance(body, dict) else {}
    if sub == "binding":
        target = (body.get("target") or {}).get("name")
        if not target:
            raise errors.invalid(
                "Binding", "", name, [errors.FieldError("target.name", "Required", None, "")]
            )
        with reg.lock:
            pod = reg.get(rt, ns, name)
            if (pod.get("spec") or {}).get("nodeName"):
                raise errors.conflict("pods", "", name)
            reg.patch(
                rt, ns, name, "application/merge-patch+json", orjson.dumps({"spec": {"nodeName": target}})
            )
    else:
        opts = body.get("deleteOptions") or {}
        reg.delete(rt, ns, name, DeleteOptions(grace=opts.get("gracePeriodSeconds")))
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}


def finalize_namespace(reg: Registry, rt: ResourceType, name: str, body: Any) -> Obj:
    """PUT ``namespaces/finalize``: replace ``spec.finalizers``; the namespace goes once none is left."""
    with reg.lock:
        cur = reg.get(rt, "", name)
        new = orjson.loads(orjson.dumps(cur))
        new["spec"] = {"finalizers": list(((body or {}).get("spec") or {}).get("finalizers") or [])}
        if not new["spec"]["finalizers"]:
            new["spec"] = {}
        if should_remove(rt.key, new):
            return reg.store.remove(rt.key, new)
        return reg.store.commit(rt.key, new, cur)
