"""Server-side apply field ownership: ``metadata.managedFields`` as kube-apiserver's fieldmanager keeps it.

- Update (POST, PUT, non-apply PATCH): the writer gets every field its write added or changed; other
  managers lose what changed (updates always "force").
- Apply: the applier owns exactly the fields of its configuration; another manager owning a field
  the apply adds or changes is a 409 Conflict unless ``force=true`` (which moves the ownership);
  fields the applier owned last time and no longer mentions are removed when nobody else owns them.

Field sets, schema and the fieldsV1 encoding are in fieldsets.py.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson

from sandbox.apiserver.errors import ApiError
from sandbox.apiserver.fieldsets import (
    STRIPPED,
    FieldSet,
    Path,
    Schema,
    compare,
    decode,
    encode,
    merge,
    path_string,
    remove_items,
    to_field_set,
)

Json = Any

__all__ = ["Schema", "apply", "conflict_error", "default_manager", "record_update"]


# ---- managers --------------------------------------------------------------------------------------


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Managers:
    """The decoded managedFields of one object: identity -> (entry without fieldsV1, field set)."""

    def __init__(self, entries: Json) -> None:
        self.entries: dict[tuple[str, str, str, str], tuple[dict[str, Json], FieldSet]] = {}
        for e in entries if isinstance(entries, list) else []:
            if not isinstance(e, dict) or not e.get("operation"):
                continue
            meta = {k: v for k, v in e.items() if k != "fieldsV1"}
            self.entries[self.ident(meta)] = (meta, decode(e.get("fieldsV1") or {}))

    @staticmethod
    def ident(e: dict[str, Json]) -> tuple[str, str, str, str]:
        """BuildManagerIdentifier: appliers are one manager whatever apiVersion they applied with."""
        op = str(e.get("operation") or "")
        version = "" if op == "Apply" else str(e.get("apiVersion") or "")
        return str(e.get("manager") or ""), op, version, str(e.get("subresource") or "")

    def owned_by_others(self, me: tuple[str, str, str, str]) -> FieldSet:
        """Every field some other manager owns."""
        out: FieldSet = set()
        for k, (_, s) in self.entries.items():
            if k != me:
                out |= s
        return out

    def take(self, fields: FieldSet, me: tuple[str, str, str, str]) -> None:
        """Other managers lose ``fields``; managers left with nothing are dropped."""
        for k in list(self.entries):
            if k == me:
                continue
            meta, s = self.entries[k]
            left = s - fields
            if left:
                self.entries[k] = (meta, left)
            else:
                del self.entries[k]

    def conflicts(self, fields: FieldSet, me: tuple[str, str, str, str]) -> list[tuple[str, Path]]:
        """(manager description, path) of every field in ``fields`` another manager owns."""
        out = []
        for k, (meta, s) in self.entries.items():
            if k == me:
                continue
            for p in s & fields:
                out.append((_describe(meta), p))
        return sorted(out, key=lambda c: (c[0], path_string(c[1])))

    def render(self) -> list[dict[str, Json]]:
        """managedFields entries in the server's order (operation, time, manager, apiVersion, subresource)."""
        out = []
        for meta, s in self.entries.values():
            e = dict(meta)
            e["fieldsType"] = "FieldsV1"
            e["fieldsV1"] = encode(s)
            out.append(e)
        out.sort(
            key=lambda e: (
                e.get("operation", ""),
                e.get("time", ""),
                e.get("manager", ""),
                e.get("apiVersion", ""),
                e.get("subresource", ""),
            )
        )
        return [{k: e[k] for k in _ENTRY_ORDER if k in e} for e in out]


_ENTRY_ORDER = ("apiVersion", "fieldsType", "fieldsV1", "manager", "operation", "subresource", "time")


def _describe(meta: dict[str, Json]) -> str:
    """printManager of the conflict message: ``"mgr"``, ``"mgr" using apps/v1``, + subresource."""
    out = orjson.dumps(meta.get("manager") or "").decode()
    if meta.get("subresource"):
        out += f" with subresource {orjson.dumps(meta['subresource']).decode()}"
    if meta.get("operation") == "Update":
        out += f" using {meta.get('apiVersion')}"
    return out


def _clean(fields: FieldSet, ignored: FieldSet) -> FieldSet:
    return {p for p in fields - STRIPPED if not any(p[: len(i)] == i for i in ignored)}


def _live_managers(old: Json, new: Json) -> Managers:
    """decodeLiveOrNew: a request's own managedFields win, ``[]`` resets them, absent keeps the live ones."""
    sent = ((new or {}).get("metadata") or {}).get("managedFields")
    if isinstance(sent, list) and (sent == [] or sent == [{}]):
        return Managers([])
    if isinstance(sent, list) and Managers(sent).entries:
        return Managers(sent)
    return Managers(((old or {}).get("metadata") or {}).get("managedFields"))


def record_update(
    old: Json,
    new: Json,
    manager: str,
    api_version: str,
    schema: Schema,
    subresource: str | None = None,
) -> list[dict[str, Json]]:
    """managedFields after an Update (create, PUT, non-apply PATCH) by ``manager``: it takes what its
    write added or changed (from every other manager, no conflicts), keeps what it had."""
    managers = _live_managers(old, None if subresource else new)
    base = old if old is not None else {"metadata": {}, "spec": {}, "status": {}}
    added, modified, _ = compare(_body(base), _body(new), schema)
    ignored = schema.ignored(subresource)
    gained = _clean(added | modified, ignored)
    meta = {"manager": manager, "operation": "Update", "apiVersion": api_version}
    if subresource:
        meta["subresource"] = subresource
    me = Managers.ident(meta)
    managers.take(gained, me)
    prev = managers.entries.get(me)
    if gained:
        # managedFieldsUpdater: the operation's own set joins what the manager had (fields its write
        # removed stay listed, as on a real server)
        mine = (prev[1] if prev else set()) | gained
        managers.entries[me] = ({**meta, "time": _now()}, mine)
    return managers.render()


def apply(
    live: Json,
    config: Json,
    manager: str,
    api_version: str,
    schema: Schema,
    force: bool,
) -> Json:
    """The object after ``manager`` applies ``config`` to ``live`` (``{}`` to create), with managedFields.

    Raises:
        ApiError: 409 Conflict naming each field another manager owns with another value (no force).
    """
    config = {k: v for k, v in config.items() if k not in ("status",) or not schema.status_reset}
    cmeta = config.get("metadata")
    if isinstance(cmeta, dict):
        config["metadata"] = {k: v for k, v in cmeta.items() if k != "managedFields"}
    managers = Managers(((live or {}).get("metadata") or {}).get("managedFields"))
    meta = {"manager": manager, "operation": "Apply", "apiVersion": api_version}
    me = Managers.ident(meta)
    ignored = schema.ignored(None)
    last = managers.entries.get(me)
    mine = _clean(to_field_set(config, schema), ignored)
    merged = merge(live or {}, config, schema)
    if last is not None:
        others = managers.owned_by_others(me)
        drop = {p for p in last[1] - mine if p not in others and not _has_owned_child(p, others | mine)}
        merged = remove_items(merged, drop, schema)
    added, modified, _ = compare(_body(live or {}), _body(merged), schema)
    changed = _clean(added | modified, ignored)
    found = managers.conflicts(changed, me)
    if found and not force and manager == "kubectl":
        # lastAppliedManager: kubectl's server-side apply takes over what its client-side apply
        # (the last-applied annotation) set, without --force-conflicts
        allowed = _last_applied_fields(live, schema)
        found = [c for c in found if c[1] not in allowed]
    if found and not force:
        raise conflict_error(found)
    managers.take(changed, me)
    live_anns = ((live or {}).get("metadata") or {}).get("annotations") or {}
    if manager == "kubectl" and LAST_APPLIED in live_anns:
        # lastAppliedUpdater: the annotation follows what kubectl applies server-side
        shown = orjson.loads(orjson.dumps(config))
        anns = (shown.get("metadata") or {}).get("annotations")
        if isinstance(anns, dict):
            anns.pop(LAST_APPLIED, None)
            if not anns:
                shown["metadata"].pop("annotations")
        merged.setdefault("metadata", {}).setdefault("annotations", {})[LAST_APPLIED] = (
            orjson.dumps(shown).decode() + "\n"
        )
    if mine:
        stamp = last[0].get("time") if last is not None and _body(merged) == _body(live or {}) else _now()
        managers.entries[me] = ({**meta, "time": stamp or _now()}, mine)
    else:
        managers.entries.pop(me, None)
    merged.setdefault("metadata", {})["managedFields"] = managers.render()
    return merged


LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def _last_applied_fields(live: Json, schema: Schema) -> FieldSet:
    raw = (((live or {}).get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED)
    try:
        last = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return set()
    try:
        return to_field_set(last, schema) if isinstance(last, dict) else set()
    except ApiError:
        return set()


def _has_owned_child(path: Path, owned: FieldSet) -> bool:
    return any(len(p) > len(path) and p[: len(path)] == path for p in owned)


def _body(obj: Json) -> Json:
    meta = {k: v for k, v in ((obj or {}).get("metadata") or {}).items() if k != "managedFields"}
    return {**(obj or {}), "metadata": meta}


def conflict_error(found: list[tuple[str, Path]]) -> ApiError:
    """NewApplyConflict: 409 Conflict, one FieldManagerConflict cause per field."""
    causes = [
        {"reason": "FieldManagerConflict", "message": f"conflict with {m}", "field": path_string(p)}
        for m, p in found
    ]
    if len(found) == 1:
        message = f"Apply failed with 1 conflict: conflict with {found[0][0]}: {path_string(found[0][1])}"
    else:
        lines: list[str] = []
        for m in sorted({m for m, _ in found}):
            lines.append(f"conflicts with {m}:")
            lines.extend(f"- {path_string(p)}" for mm, p in found if mm == m)
        message = f"Apply failed with {len(found)} conflicts: " + "\n".join(lines)
    return ApiError(409, "Conflict", message, {"causes": causes})


def default_manager(user_agent: str) -> str:
    """prefixFromUserAgent: the user agent up to its first ``/``, printable, at most 128 bytes."""
    out = ""
    for ch in user_agent.split("/")[0]:
        if not ch.isprintable():
            continue
        if len((out + ch).encode()) > 128:
            break
        out += ch
    return out
