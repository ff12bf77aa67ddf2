"""Pure exclusion of kinds and per-kind transforms of migrated objects.

The equivalent of Stork's ``ResourceTransformation`` / Velero's resource modifiers: a migration's
``exclude_kinds`` drops every object of those kinds, and each entry of ``transforms``::

    {"kind": "Deployment", "group": "apps", "name": "web", "namespace": "cms",
     "path": "spec.template.spec.containers[0].image", "op": "set", "value": "nginx:1.27"}

sets or deletes one field of every matching object (``group``/``name``/``namespace`` optional; the
namespace is the *source* namespace, before ``namespace_mapping``). ``path`` is dotted with
``[index]`` or ``["quoted.key"]`` parts (``metadata.annotations["example.com/owner"]``, an optional
leading ``$.``) or a JSON pointer (``/metadata/annotations/example.com~1owner``; ``-`` appends to a
list). Paths that would change what an object *is* (``apiVersion``, ``kind``, ``metadata`` itself,
``metadata.name``/``generateName``/``namespace`` — the latter would make it cluster-scoped) are
refused up front. The stateferry sanitising (status, uid, nodePorts, ...) runs after the transforms.

Validation has two steps: :func:`parse_transform_spec` checks the syntax (no I/O), and
:func:`resolve_kinds` checks every kind against the source's discovered resource types.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from planning.param_lists import entry_maps, json_list
from planning.resources import ResourceType
from stateferry.errors import InputError

__all__ = [
    "Transform",
    "TransformSpec",
    "apply_transforms",
    "parse_path",
    "parse_transform_spec",
    "resolve_kinds",
]

PathPart = str | int
OPS = ("set", "delete")
_KEYS = frozenset({"kind", "group", "name", "namespace", "path", "op", "value"})
_SHAPE = "{kind, path, op, value}"
_FORBIDDEN = (
    ("apiVersion",),
    ("kind",),
    ("metadata",),
    ("metadata", "name"),
    ("metadata", "generateName"),
    ("metadata", "namespace"),
)
_TOKEN = re.compile(
    r"""\.?(?P<key>[A-Za-z0-9_\-]+)            # .key
      | \[(?P<index>\d+)\]                      # [0]
      | \[(?P<q>["'])(?P<quoted>(?:(?!(?P=q)).)+)(?P=q)\]   # ["a.b/c"]
    """,
    re.VERBOSE,
)
_MAX_TRANSFORMS = 200


@dataclass(frozen=True)
class Transform:
    """One validated transform (``index`` is its position in the ``transforms`` parameter)."""

    index: int
    kind: str
    path_text: str
    path: tuple[PathPart, ...]
    op: str
    value: Any = None
    group: str | None = None
    name: str | None = None
    namespace: str | None = None
    #: (group, Kind) pairs the kind spelling resolved to (filled by :func:`resolve_kinds`).
    matches: frozenset[tuple[str, str]] = field(default_factory=frozenset)

    @property
    def field(self) -> str:
        """The parameter name of this entry, for error messages."""
        return f"transforms[{self.index}]"


@dataclass(frozen=True)
class TransformSpec:
    """Validated ``exclude_kinds`` and ``transforms`` of a migration."""

    exclude_kinds: tuple[str, ...] = ()
    transforms: tuple[Transform, ...] = ()
    #: (group, Kind) pairs excluded (filled by :func:`resolve_kinds`).
    excluded: frozenset[tuple[str, str]] = field(default_factory=frozenset)

    def __bool__(self) -> bool:
        return bool(self.exclude_kinds or self.transforms)


def parse_path(text: str, fld: str) -> tuple[PathPart, ...]:
    """Parse a dotted/indexed path or a JSON pointer into its parts (ints are list indexes).

    Raises:
        InputError: the path is empty, malformed or touches what an object is.
    """
    if not isinstance(text, str) or not text.strip():
        raise InputError(fld, "is empty", "give a field path such as 'metadata.annotations[\"a/b\"]'")
    parts: list[PathPart] = []
    if text.startswith("/"):
        for raw in text[1:].split("/"):
            seg = raw.replace("~1", "/").replace("~0", "~")
            if seg == "":
                raise InputError(fld, f"{text!r} has an empty segment", "remove the doubled '/'")
            parts.append(int(seg) if seg.isdigit() else seg)
    else:
        rest = text[2:] if text.startswith("$.") else text
        pos = 0
        while pos < len(rest):
            m = _TOKEN.match(rest, pos)
            if (
                not m
                or (pos == 0 and rest.startswith("."))
                or (pos > 0 and m.group("key") and rest[pos] != ".")
            ):
                raise InputError(
                    fld,
                    f"{text!r} cannot be parsed at {rest[pos:]!r}",
                    'use dotted keys, [index] and ["quoted.key"], e.g. spec.containers[0].image, '
                    "or a JSON pointer such as /spec/replicas",
                )
            if m.group("key") is not None:
                parts.append(m.group("key"))
            elif m.group("index") is not None:
                parts.append(int(m.group("index")))
            else:
                parts.append(m.group("quoted"))
            pos = m.end()
    if not parts:
        raise InputError(fld, f"{text!r} names no field", "give a field path")
    if isinstance(parts[0], int):
        raise InputError(fld, f"{text!r} starts with an index", "start with a field name such as spec")
    if tuple(parts) in _FORBIDDEN or parts[0] in ("apiVersion", "kind"):
        raise InputError(
            fld,
            f"{text!r} would change what the object is (apiVersion, kind, name or namespace; "
            "without a namespace it would become cluster-scoped)",
            "use namespace_mapping to move objects; transforms may change other fields only",
        )
    return tuple(parts)


def _opt_str(entry: Mapping[str, Any], key: str, fld: str) -> str | None:
    v = entry.get(key)
    if v is None or v == "":
        return None
    if not isinstance(v, str):
        raise InputError(f"{fld}.{key}", f"is {v!r}", "give a string")
    return v.strip()


def _check_json(value: Any, fld: str, depth: int = 0) -> None:
    if depth > 32:
        raise InputError(fld, "is nested too deeply", "give a smaller value")
    if value is None or isinstance(value, (str, bool, int, float)):
        return
    if isinstance(value, list):
        for v in value:
            _check_json(v, fld, depth + 1)
        return
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        for v in value.values():
            _check_json(v, fld, depth + 1)
        return
    raise InputError(fld, f"is a {type(value).__name__}", "give a JSON value (string, number, list, map)")


def _kind_list(value: Iterable[str] | str | None, fld: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = value.split(",")
    out = []
    for v in value:
        if not isinstance(v, str):
            raise InputError(fld, f"contains {v!r}", "give kind names such as 'Secret' or 'cronjobs.batch'")
        if v.strip():
            out.append(v.strip())
    return tuple(out)


def parse_transform_spec(
    exclude_kinds: Iterable[str] | str | None,
    transforms: Sequence[Mapping[str, Any]] | str | None,
) -> TransformSpec:
    """Check the syntax of ``exclude_kinds`` and ``transforms`` (a list, or its JSON text).

    Raises:
        InputError: naming the parameter (``transforms[2].path``, ...) and the fix.
    """
    kinds = _kind_list(exclude_kinds, "exclude_kinds")
    entries = json_list(transforms, "transforms", _SHAPE)
    if len(entries) > _MAX_TRANSFORMS:
        raise InputError("transforms", f"has {len(entries)} entries", f"give at most {_MAX_TRANSFORMS}")
    out = []
    for i, fld, entry in entry_maps(entries, "transforms", _KEYS, _SHAPE):
        kind = _opt_str(entry, "kind", fld)
        if not kind:
            raise InputError(f"{fld}.kind", "is missing", "name the kind, e.g. 'Deployment'")
        op = str(entry.get("op") or "set").strip().lower()
        if op not in OPS:
            raise InputError(f"{fld}.op", f"is {entry.get('op')!r}", "use 'set' or 'delete'")
        if op == "set" and "value" not in entry:
            raise InputError(f"{fld}.value", "is missing", "give the value to set (or op: delete)")
        if op == "delete" and entry.get("value") is not None:
            raise InputError(f"{fld}.value", "is given with op delete", "remove it")
        _check_json(entry.get("value"), f"{fld}.value")
        path_text = entry.get("path")
        path = parse_path(path_text, f"{fld}.path")  # type: ignore[arg-type]
        if op == "delete" and path[-1] == "-":
            raise InputError(f"{fld}.path", "ends with '-' for a delete", "name an existing index")
        out.append(
            Transform(
                index=i,
                kind=kind,
                path_text=str(path_text),
                path=path,
                op=op,
                value=copy.deepcopy(entry.get("value")),
                group=_opt_str(entry, "group", fld),
                name=_opt_str(entry, "name", fld),
                namespace=_opt_str(entry, "namespace", fld),
            )
        )
    return TransformSpec(exclude_kinds=kinds, transforms=tuple(out))


def _resolve(
    name: str, types: Sequence[ResourceType], group: str | None, fld: str
) -> frozenset[tuple[str, str]]:
    low = name.lower()
    found = set()
    for t in types:
        spellings = {t.kind.lower(), t.plural.lower()}
        if t.group:
            spellings |= {f"{t.kind}.{t.group}".lower(), f"{t.plural}.{t.group}".lower()}
        if low in spellings and (group is None or group == t.group):
            found.add((t.group, t.kind))
    if not found:
        raise InputError(
            fld,
            f"{name!r}{' in group ' + repr(group) if group is not None else ''} is not a kind the "
            "source cluster serves",
            "use a kind from `kubectl api-resources`, e.g. ConfigMap or cronjobs.batch",
        )
    return frozenset(found)


def resolve_kinds(spec: TransformSpec, types: Iterable[ResourceType]) -> TransformSpec:
    """Resolve every kind spelling against the source's discovered types.

    Raises:
        InputError: ``exclude_kinds`` / ``transforms[i].kind`` names a kind the source does not serve.
    """
    tlist = list(types)
    excluded: set[tuple[str, str]] = set()
    for k in spec.exclude_kinds:
        excluded |= _resolve(k, tlist, None, "exclude_kinds")
    resolved = tuple(
        replace(t, matches=_resolve(t.kind, tlist, t.group, f"{t.field}.kind")) for t in spec.transforms
    )
    return replace(spec, transforms=resolved, excluded=frozenset(excluded))


def _group_kind(obj: Mapping[str, Any]) -> tuple[str, str]:
    api = str(obj.get("apiVersion") or "v1")
    return (api.split("/")[0] if "/" in api else "", str(obj.get("kind") or ""))


def _describe(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{obj.get('kind')} {ns + '/' if ns else ''}{meta.get('name')}"


def _selects(t: Transform, obj: Mapping[str, Any]) -> bool:
    meta = obj.get("metadata") or {}
    if _group_kind(obj) not in t.matches:
        return False
    if t.name is not None and meta.get("name") != t.name:
        return False
    return t.namespace is None or meta.get("namespace") == t.namespace


def _apply_one(obj: dict[str, Any], t: Transform) -> str:
    """Apply ``t`` to ``obj`` in place; return ``"set"``, ``"deleted"`` or ``"absent"``."""

    def bad(found: str) -> InputError:
        return InputError(
            f"{t.field}.path",
            f"{t.path_text!r} does not fit {_describe(obj)}: {found}",
            "fix the path or narrow the transform with name/namespace",
        )

    cur: Any = obj
    for i, part in enumerate(t.path[:-1]):
        nxt = t.path[i + 1]
        if isinstance(cur, dict) and isinstance(part, str):
            if part not in cur or cur[part] is None:
                if t.op == "delete":
                    return "absent"
                if isinstance(nxt, int) or nxt == "-":
                    raise bad(f"no list at {part!r}")
                cur[part] = {}
            cur = cur[part]
        elif isinstance(cur, list) and isinstance(part, int):
            if part >= len(cur):
                if t.op == "delete":
                    return "absent"
                raise bad(f"index {part} is past the end ({len(cur)} items)")
            cur = cur[part]
        else:
            raise bad(f"{part!r} reaches a {type(cur).__name__}")
    last = t.path[-1]
    if isinstance(cur, dict) and isinstance(last, str):
        if t.op == "delete":
            if last not in cur:
                return "absent"
            del cur[last]
            return "deleted"
        cur[last] = copy.deepcopy(t.value)
        return "set"
    if isinstance(cur, list) and (isinstance(last, int) or last == "-"):
        if t.op == "delete":
            if isinstance(last, int) and last < len(cur):
                del cur[last]
                return "deleted"
            return "absent"
        if last == "-" or last == len(cur):
            cur.append(copy.deepcopy(t.value))
        elif isinstance(last, int) and last < len(cur):
            cur[last] = copy.deepcopy(t.value)
        else:
            raise bad(f"index {last} is past the end ({len(cur)} items)")
        return "set"
    raise bad(f"{last!r} reaches a {type(cur).__name__}")


def _shown_value(obj: Mapping[str, Any], t: Transform) -> str:
    if obj.get("kind") == "Secret":
        return "(hidden: Secret)"
    text = json.dumps(t.value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def apply_transforms(
    objects: Iterable[Mapping[str, Any]], spec: TransformSpec
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Drop the excluded kinds and apply the transforms (to deep copies, in the given order).

    Returns:
        The objects for the target and the plan rows ``{"object", "change"}`` (a transform that
        matched nothing gets a row too). Values set on Secrets are never shown.

    Raises:
        InputError: a path does not fit a matching object (a list index past the end, a field of
            a string, ...), naming ``transforms[i].path`` and the object.
    """
    out: list[dict[str, Any]] = []
    rows: list[dict[str, str]] = []
    used: set[int] = set()
    for o in objects:
        if _group_kind(o) in spec.excluded:
            rows.append({"object": _describe(o), "change": "excluded (exclude_kinds)"})
            continue
        obj = copy.deepcopy(dict(o))
        ident = (obj.get("apiVersion"), _group_kind(obj), _describe(obj))
        for t in spec.transforms:
            if not _selects(t, obj):
                continue
            used.add(t.index)
            result = _apply_one(obj, t)
            change = {
                "set": f"{t.field}: set {t.path_text} = {_shown_value(obj, t)}",
                "deleted": f"{t.field}: delete {t.path_text}",
                "absent": f"{t.field}: delete {t.path_text} (absent, nothing to do)",
            }[result]
            rows.append({"object": _describe(obj), "change": change})
        if (obj.get("apiVersion"), _group_kind(obj), _describe(obj)) != ident:
            raise InputError("transforms", f"changed the identity of {ident[2]}", "remove that transform")
        out.append(obj)
    for t in spec.transforms:
        if t.index not in used:
            rows.append({"object": "-", "change": f"{t.field}: matched no object ({t.kind} {t.path_text})"})
    return out, rows
