"""JSON merge patch (RFC 7386), JSON patch (RFC 6902) and Kubernetes strategic merge patch."""

from __future__ import annotations

import copy
from typing import Any

from sandbox.apiserver.errors import ApiError

Json = Any


def merge_patch(target: Json, patch: Json) -> Json:
    """Apply an RFC 7386 merge patch: maps merge, ``null`` deletes a key, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _json_patch_error() -> ApiError:
    return ApiError(422, "Invalid", "the server rejected our request due to an error in our request")


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise _json_patch_error()
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _container(doc: Json, parts: list[str]) -> Json:
    cur = doc
    for p in parts:
        if isinstance(cur, dict):
            if p not in cur:
                raise _json_patch_error()
            cur = cur[p]
        elif isinstance(cur, list):
            try:
                cur = cur[int(p)]
            except (ValueError, IndexError):
                raise _json_patch_error() from None
        else:
            raise _json_patch_error()
    return cur


def _get(doc: Json, parts: list[str]) -> Json:
    if not parts:
        return doc
    parent = _container(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise _json_patch_error()
        return parent[last]
    if isinstance(parent, list):
        try:
            return parent[int(last)]
        except (ValueError, IndexError):
            raise _json_patch_error() from None
    raise _json_patch_error()


def _add(doc: Json, parts: list[str], value: Json) -> Json:
    if not parts:
        return value
    parent = _container(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        else:
            try:
                idx = int(last)
            except ValueError:
                raise _json_patch_error() from None
            if idx < 0 or idx > len(parent):
                raise _json_patch_error()
            parent.insert(idx, value)
    else:
        raise _json_patch_error()
    return doc


def _remove(doc: Json, parts: list[str]) -> Json:
    if not parts:
        raise _json_patch_error()
    parent = _container(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise _json_patch_error()
        del parent[last]
    elif isinstance(parent, list):
        try:
            idx = int(last)
            if idx < 0:
                raise IndexError
            del parent[idx]
        except (ValueError, IndexError):
            raise _json_patch_error() from None
    else:
        raise _json_patch_error()
    return doc


def json_patch(target: Json, ops: Json) -> Json:
    """Apply an RFC 6902 JSON patch; a failing op raises 422 and leaves ``target`` untouched."""
    if not isinstance(ops, list):
        raise ApiError(
            400, "BadRequest", "json: cannot unmarshal object into Go value of type jsonpatch.Patch"
        )
    doc = copy.deepcopy(target)
    for op in ops:
        if not isinstance(op, dict) or "path" not in op:
            raise _json_patch_error()
        kind = op.get("op")
        parts = _pointer(str(op["path"]))
        if kind == "add":
            doc = _add(doc, parts, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            doc = _remove(doc, parts)
        elif kind == "replace":
            _get(doc, parts)
            if parts:
                doc = _remove(doc, parts)
            doc = _add(doc, parts, copy.deepcopy(op.get("value")))
        elif kind in ("move", "copy"):
            src = _pointer(str(op.get("from", "")))
            value = copy.deepcopy(_get(doc, src))
            if kind == "move":
                doc = _remove(doc, src)
            doc = _add(doc, parts, value)
        elif kind == "test":
            if _get(doc, parts) != op.get("value"):
                raise _json_patch_error()
        else:
            raise _json_patch_error()
    return doc


# ---- strategic merge patch -------------------------------------------------------------------------

_CONTAINER_LISTS = {"containers", "initContainers", "ephemeralContainers"}
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "ownerReferences": "uid",
    "conditions": "type",
    "topologySpreadConstraints": "topologyKey",
    "taints": "key",
    "resourceClaims": "name",
    "podIPs": "ip",
    "hostIPs": "ip",
}
_PRIMITIVE_MERGE = {"finalizers"}


def _list_meta(path: tuple[str, ...], kind: str) -> tuple[bool, str | None]:
    """(merge?, merge key) of the list at ``path`` (field names only) in an object of ``kind``."""
    name = path[-1]
    if name == "ports":
        if len(path) >= 2 and path[-2] in _CONTAINER_LISTS:
            return True, "containerPort"
        if kind == "Service" and path == ("spec", "ports"):
            return True, "port"
        return False, None
    if name == "addresses":
        return (True, "type") if kind == "Node" and path == ("status", "addresses") else (False, None)
    if name == "secrets":
        return (True, "name") if kind == "ServiceAccount" else (False, None)
    if name == "env" and (len(path) < 2 or path[-2] not in _CONTAINER_LISTS):
        return False, None
    if name in _MERGE_KEYS:
        return True, _MERGE_KEYS[name]
    if name in _PRIMITIVE_MERGE:
        return True, None
    return False, None


def strip_directives(value: Json) -> Json:
    """Drop ``$patch``/``$setElementOrder``/... directives from content that is added as is."""
    if isinstance(value, dict):
        return {k: strip_directives(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [
            strip_directives(v)
            for v in value
            if not (
                isinstance(v, dict)
                and "$patch" in v
                and len(v) <= 2
                and v.get("$patch") in ("replace", "delete")
            )
        ]
    return value


def strategic_merge_patch(target: Json, patch: Json, kind: str) -> Json:
    """Apply a strategic merge patch to ``target`` (an object of ``kind``)."""
    if not isinstance(patch, dict):
        raise ApiError(
            400, "BadRequest", "json: cannot unmarshal array into Go value of type map[string]interface {}"
        )
    return _smp_map(target if isinstance(target, dict) else {}, patch, (), kind)


def _smp_map(
    orig: dict[str, Json], patch: dict[str, Json], path: tuple[str, ...], kind: str
) -> dict[str, Json]:
    directive = patch.get("$patch")
    if directive == "replace":
        return strip_directives({k: v for k, v in patch.items() if k != "$patch"})
    if directive == "delete":
        return {}
    result = dict(orig)
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list) and isinstance(value, list):
                result[field] = [x for x in result[field] if x not in value]
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        sub = (*path, key)
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            if value.get("$patch") == "delete":
                result.pop(key, None)
                continue
            cur = result.get(key)
            result[key] = _smp_map(cur if isinstance(cur, dict) else {}, value, sub, kind)
        elif isinstance(value, list):
            cur = result.get(key)
            order = patch.get(f"$setElementOrder/{key}")
            result[key] = _smp_list(cur if isinstance(cur, list) else [], value, sub, kind, order)
        else:
            result[key] = value
    for key, order in patch.items():
        if key.startswith("$setElementOrder/"):
            field = key.split("/", 1)[1]
            if field not in patch and isinstance(result.get(field), list) and isinstance(order, list):
                result[field] = _smp_list(result[field], [], (*path, field), kind, order)
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _smp_list(
    orig: list[Json], patch: list[Json], path: tuple[str, ...], kind: str, order: Json
) -> list[Json]:
    merge, key = _list_meta(path, kind)
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
        return strip_directives(
            [i for i in patch if not (isinstance(i, dict) and i.get("$patch") == "replace")]
        )
    if not merge:
        return strip_directives(patch)
    if key is None:
        union = list(orig) + [x for x in patch if x not in orig]
        return _order(union, orig, patch if order is None else order, lambda x: x)
    deletes = {i.get(key) for i in patch if isinstance(i, dict) and i.get("$patch") == "delete"}
    patch_items = [i for i in patch if not (isinstance(i, dict) and i.get("$patch") == "delete")]
    by_key = {i.get(key): i for i in patch_items if isinstance(i, dict)}
    seen: set[Json] = set()
    merged: list[Json] = []
    for item in orig:
        k = item.get(key) if isinstance(item, dict) else None
        if k in deletes:
            continue
        if k in by_key and k not in seen:
            merged.append(_smp_map(item, by_key[k], path, kind))
            seen.add(k)
        else:
            merged.append(item)
    for item in patch_items:
        k = item.get(key) if isinstance(item, dict) else None
        if k not in seen:
            merged.append(strip_directives(item))
            seen.add(k)
    patch_order = order if isinstance(order, list) else patch_items

    def keyof(x: Json) -> Json:
        return x.get(key) if isinstance(x, dict) else x

    return _order(merged, orig, patch_order, keyof)


def _order(merged: list[Json], orig: list[Json], patch_order: list[Json], keyof: Any) -> list[Json]:
    """Order like apimachinery's normalizeElementOrder + mergeSortedSlice."""
    server_idx: dict[Any, int] = {}
    for i, item in enumerate(orig):
        server_idx.setdefault(_hashable(keyof(item)), i)
    patch_idx: dict[Any, int] = {}
    for i, item in enumerate(patch_order):
        patch_idx.setdefault(_hashable(keyof(item)), i)
    left = sorted(
        (m for m in merged if _hashable(keyof(m)) in patch_idx), key=lambda m: patch_idx[_hashable(keyof(m))]
    )
    right = sorted(
        (m for m in merged if _hashable(keyof(m)) not in patch_idx),
        key=lambda m: server_idx.get(_hashable(keyof(m)), 1 << 30),
    )
    out: list[Json] = []
    i = j = 0
    while i < len(left) and j < len(right):
        li = server_idx.get(_hashable(keyof(left[i])))
        rj = server_idx.get(_hashable(keyof(right[j])), 1 << 30)
        if li is None or li < rj:
            out.append(left[i])
            i += 1
        else:
            out.append(right[j])
            j += 1
    out.extend(left[i:])
    out.extend(right[j:])
    return out


def _hashable(value: Json) -> Any:
    if isinstance(value, dict | list):
        return repr(value)
    return value
