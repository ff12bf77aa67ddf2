"""Label and field selectors as the API server parses them from query strings."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from sandbox.apiserver.errors import ApiError, bad_request

LabelReq = tuple[str, str, tuple[str, ...]]  # key, op, values
Labels = dict[str, str]

_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_TOKEN = re.compile(
    rf"\s*(?:(?P<not>!)\s*(?P<nkey>{_KEY})|(?P<key>{_KEY})\s*"
    r"(?:(?P<op>==|=|!=)\s*(?P<val>[-A-Za-z0-9_.]*)|\s(?P<setop>in|notin)\s*\((?P<set>[^)]*)\))?)\s*(?:,|$)"
)


def parse_label_selector(text: str) -> list[LabelReq]:
    """Parse ``a=b,c!=d,e in (f,g),!h`` into requirements; raise 400 like the real server."""
    reqs: list[LabelReq] = []
    text = text.strip()
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise bad_request(
                f"unable to parse requirement: found '{text[pos:]}', expected: ',' or 'end of string'"
            )
        if m.group("not"):
            reqs.append((m.group("nkey"), "!", ()))
        elif m.group("op"):
            op = "!=" if m.group("op") == "!=" else "="
            reqs.append((m.group("key"), op, (m.group("val"),)))
        elif m.group("setop"):
            values = tuple(v.strip() for v in m.group("set").split(",") if v.strip())
            reqs.append((m.group("key"), m.group("setop"), values))
        else:
            reqs.append((m.group("key"), "exists", ()))
        pos = m.end()
    for key, _op, _values in reqs:
        if len(key.split("/")[-1]) > 63:
            raise bad_request(f"invalid label key {key!r}: name part must be no more than 63 characters")
    return reqs


def labels_match(reqs: list[LabelReq], labels: Labels) -> bool:
    """Whether ``labels`` satisfy every requirement."""
    for key, op, values in reqs:
        present = key in labels
        if op == "=":
            if not present or labels[key] != values[0]:
                return False
        elif op == "!=":
            if present and labels[key] == values[0]:
                return False
        elif op == "in":
            if not present or labels[key] not in values:
                return False
        elif op == "notin":
            if present and labels[key] in values:
                return False
        elif op == "exists":
            if not present:
                return False
        elif op == "!" and present:
            return False
    return True


def selector_from_label_selector(sel: dict[str, Any] | None) -> list[LabelReq]:
    """Requirements of a ``metav1.LabelSelector`` object (matchLabels + matchExpressions)."""
    reqs: list[LabelReq] = []
    if not sel:
        return reqs
    for k, v in sorted((sel.get("matchLabels") or {}).items()):
        reqs.append((k, "=", (str(v),)))
    for expr in sel.get("matchExpressions") or []:
        op = str(expr.get("operator", ""))
        key = str(expr.get("key", ""))
        vals = tuple(str(v) for v in expr.get("values") or [])
        reqs.append(
            (key, {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}.get(op, "in"), vals)
        )
    return reqs


def selector_string(sel: dict[str, Any] | None) -> str:
    """``metav1.FormatLabelSelector``-like rendering (``app=db,tier in (a,b)``), as /scale reports it."""
    parts: list[str] = []
    for key, op, vals in sorted(selector_from_label_selector(sel), key=lambda r: r[0]):
        if op == "=":
            parts.append(f"{key}={vals[0]}")
        elif op == "exists":
            parts.append(key)
        elif op == "!":
            parts.append(f"!{key}")
        else:
            parts.append(f"{key} {op} ({','.join(sorted(vals))})")
    return ",".join(parts)


FieldGetter = Callable[[dict[str, Any]], str]

_COMMON_FIELDS: dict[str, FieldGetter] = {
    "metadata.name": lambda o: o.get("metadata", {}).get("name", ""),
    "metadata.namespace": lambda o: o.get("metadata", {}).get("namespace", ""),
}

_EXTRA_FIELDS: dict[str, dict[str, FieldGetter]] = {
    "pods": {
        "status.phase": lambda o: (o.get("status") or {}).get("phase", ""),
        "spec.nodeName": lambda o: (o.get("spec") or {}).get("nodeName", ""),
        "spec.restartPolicy": lambda o: (o.get("spec") or {}).get("restartPolicy", ""),
        "spec.schedulerName": lambda o: (o.get("spec") or {}).get("schedulerName", ""),
        "spec.serviceAccountName": lambda o: (o.get("spec") or {}).get("serviceAccountName", ""),
        "status.podIP": lambda o: (o.get("status") or {}).get("podIP", ""),
        "status.nominatedNodeName": lambda o: (o.get("status") or {}).get("nominatedNodeName", ""),
    },
    "secrets": {"type": lambda o: o.get("type", "")},
    "events": {
        "involvedObject.kind": lambda o: (o.get("involvedObject") or {}).get("kind", ""),
        "involvedObject.name": lambda o: (o.get("involvedObject") or {}).get("name", ""),
        "involvedObject.namespace": lambda o: (o.get("involvedObject") or {}).get("namespace", ""),
        "involvedObject.uid": lambda o: (o.get("involvedObject") or {}).get("uid", ""),
        "reason": lambda o: o.get("reason", ""),
        "type": lambda o: o.get("type", ""),
    },
    "namespaces": {"status.phase": lambda o: (o.get("status") or {}).get("phase", "")},
    "nodes": {"spec.unschedulable": lambda o: str(bool((o.get("spec") or {}).get("unschedulable"))).lower()},
    "jobs": {"status.successful": lambda o: str((o.get("status") or {}).get("succeeded", 0))},
}

FieldReq = tuple[FieldGetter, bool, str]  # getter, equal?, value


def parse_field_selector(text: str, plural: str) -> list[FieldReq]:
    """Parse ``metadata.name=x,status.phase!=Running`` for ``plural``; unknown fields -> 400."""
    reqs: list[FieldReq] = []
    fields = dict(_COMMON_FIELDS)
    fields.update(_EXTRA_FIELDS.get(plural, {}))
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"([^=!]+?)\s*(==|=|!=)\s*(.*)", part)
        if not m:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        name, op, value = m.group(1).strip(), m.group(2), m.group(3).strip()
        getter = fields.get(name)
        if getter is None:
            if plural in _EXTRA_FIELDS and plural != "secrets":
                raise bad_request(f"field label not supported: {name}")
            raise bad_request(
                f'"{name}" is not a known field selector: only "metadata.name", "metadata.namespace"'
            )
        reqs.append((getter, op != "!=", value))
    return reqs


def fields_match(reqs: list[FieldReq], obj: dict[str, Any]) -> bool:
    """Whether ``obj`` satisfies every field requirement."""
    for getter, eq, value in reqs:  # noqa: SIM110
        if (getter(obj) == value) != eq:
            return False
    return True


__all__ = [
    "ApiError",
    "fields_match",
    "labels_match",
    "parse_field_selector",
    "parse_label_selector",
    "selector_from_label_selector",
    "selector_string",
]
