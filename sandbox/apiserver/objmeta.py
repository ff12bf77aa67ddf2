"""Helpers on stored objects shared by the registry and the controllers: timestamps, copies, the
served view of an object and "nothing changed" comparisons."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson

from sandbox.apiserver.resources import ResourceType
from sandbox.apiserver.store import Obj


def now() -> str:
    """RFC 3339 timestamp with second precision, as metav1.Time serialises."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def deepcopy(obj: Any) -> Any:
    """Fast deep copy of JSON data."""
    return orjson.loads(orjson.dumps(obj))


def view(rt: ResourceType, obj: Obj) -> Obj:
    """The object as served at ``rt``'s version (a custom resource stored at another version)."""
    if obj.get("apiVersion") == rt.api_version:
        return obj
    out = dict(obj)
    out["apiVersion"] = rt.api_version
    return out


def same(new: Obj, old: Obj) -> bool:
    """True when the objects differ at most in their resourceVersion."""
    a = dict(
        new,
        metadata={k: v for k, v in new["metadata"].items() if k != "resourceVersion"},
    )
    b = dict(
        old,
        metadata={k: v for k, v in old["metadata"].items() if k != "resourceVersion"},
    )
    return a == b
