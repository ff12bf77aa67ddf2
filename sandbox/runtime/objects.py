"""Helpers on API objects as dicts: names, owners, selectors, hashes, timestamps."""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Iterable, Mapping
from typing import Any

Obj = dict[str, Any]

SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def as_int(value: Any, default: int) -> int:
    """``int(value)``, or ``default`` when the field is missing."""
    return default if value is None else int(value)


def now_iso() -> str:
    """The current UTC time as the API writes it."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``metadata`` of an object (empty dict if missing)."""
    return obj.get("metadata") or {}


def name_of(obj: Mapping[str, Any]) -> str:
    """``metadata.name``."""
    return str(meta(obj).get("name") or "")


def ns_of(obj: Mapping[str, Any]) -> str:
    """``metadata.namespace``."""
    return str(meta(obj).get("namespace") or "")


def uid_of(obj: Mapping[str, Any]) -> str:
    """``metadata.uid``."""
    return str(meta(obj).get("uid") or "")


def terminating(obj: Mapping[str, Any]) -> bool:
    """True when ``metadata.deletionTimestamp`` is set."""
    return bool(meta(obj).get("deletionTimestamp"))


def controller_uid(obj: Mapping[str, Any]) -> str | None:
    """uid of the controlling owner (ownerReference with ``controller: true``)."""
    for ref in meta(obj).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def owner_ref(owner: Mapping[str, Any], api_version: str, kind: str) -> dict[str, Any]:
    """An ownerReference to ``owner`` with controller + blockOwnerDeletion."""
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": name_of(owner),
        "uid": uid_of(owner),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def fnv32a(data: bytes) -> int:
    """32-bit FNV-1a hash (the hash the controllers use for templates)."""
    h = 0x811C9DC5
    for b in data:
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def safe_encode(s: str) -> str:
    """``rand.SafeEncodeString``: map each character into the vowel-free alphabet."""
    return "".join(SAFE_ALPHABET[ord(c) % len(SAFE_ALPHABET)] for c in s)


def template_hash(template: Any, collision_count: int = 0) -> str:
    """Hash of a pod template, encoded like ``controller.ComputeHash`` (e.g. ``7b9f5c6d8``)."""
    data = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    if collision_count:
        data += str(collision_count).encode()
    return safe_encode(str(fnv32a(data)))


def random_suffix(n: int = 5) -> str:
    """A random suffix as ``generateName`` produces."""
    return "".join(random.choice(SAFE_ALPHABET) for _ in range(n))


def _match_expression(labels: Mapping[str, str], expr: Mapping[str, Any]) -> bool:
    key, op, values = str(expr.get("key")), expr.get("operator"), expr.get("values") or []
    if op == "In":
        return key in labels and labels[key] in values
    if op == "NotIn":
        return key not in labels or labels[key] not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    return False


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str] | None) -> bool:
    """True if a ``LabelSelector`` (matchLabels + matchExpressions) matches ``labels``.

    An empty or missing selector matches nothing (as for workload controllers).
    """
    if not selector:
        return False
    labels = labels or {}
    match = selector.get("matchLabels") or {}
    exprs = selector.get("matchExpressions") or []
    if not match and not exprs:
        return False
    if any(labels.get(k) != v for k, v in match.items()):
        return False
    return all(_match_expression(labels, e) for e in exprs)


def map_selector_matches(selector: Mapping[str, str] | None, labels: Mapping[str, str] | None) -> bool:
    """A Service-style map selector; an empty one matches nothing."""
    if not selector:
        return False
    labels = labels or {}
    return all(labels.get(k) == v for k, v in selector.items())


def pod_ready(pod: Mapping[str, Any]) -> bool:
    """True when the pod's ``Ready`` condition is True."""
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def pod_running_ready(pod: Mapping[str, Any]) -> bool:
    """Running phase, Ready and not terminating."""
    return (pod.get("status") or {}).get("phase") == "Running" and pod_ready(pod) and not terminating(pod)


def pod_phase(pod: Mapping[str, Any]) -> str:
    """``status.phase`` (``Pending`` if missing)."""
    return str((pod.get("status") or {}).get("phase") or "Pending")


def index_by_uid(objs: Iterable[Obj]) -> dict[str, Obj]:
    """Objects by uid."""
    return {uid_of(o): o for o in objs}
