"""Field sets of server-side apply (sigs.k8s.io/structured-merge-diff, bounded): paths, the list and
map types of the built-in kinds, set/compare/merge/remove over JSON values, the fieldsV1 encoding.

A field path is a tuple of fieldsV1 keys: ``f:<field>`` for a map key, ``k:{"name":"c"}`` for an item
of a list keyed by fields (containers by name, ports by port+protocol), ``v:<json>`` for an item of a
set-like list (``finalizers``). Lists without keys are atomic (one leaf), as are label selectors.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import orjson

from sandbox.apiserver.errors import ApiError

Json = Any
Path = tuple[str, ...]
FieldSet = set[Path]

# Keys of the associative lists of the built-in kinds (+listType=map / patchMergeKey), by field name.
_LIST_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "imagePullSecrets": ("name",),
    "hostAliases": ("ip",),
    "ownerReferences": ("uid",),
    "conditions": ("type",),
    "topologySpreadConstraints": ("topologyKey", "whenUnsatisfiable"),
    "resourceClaims": ("name",),
    "podIPs": ("ip",),
    "hostIPs": ("ip",),
    "containerStatuses": ("name",),
    "initContainerStatuses": ("name",),
}
_CONTAINER_LISTS = {"containers", "initContainers", "ephemeralContainers"}
_SET_LISTS = {"finalizers"}
# Key fields with a server default (a key must be complete to name an item).
_KEY_DEFAULTS = {"protocol": "TCP"}
# Maps replaced as a whole (+structType=atomic LabelSelector, +mapType=atomic selectors).
_ATOMIC_MAPS = {"selector", "labelSelector", "namespaceSelector", "nodeSelector"}
# Never owned (fieldmanager's stripMeta).
STRIPPED: FieldSet = {
    ("f:apiVersion",),
    ("f:kind",),
    ("f:metadata",),
    *(
        ("f:metadata", f"f:{k}")
        for k in (
            "name",
            "namespace",
            "creationTimestamp",
            "selfLink",
            "uid",
            "generation",
            "managedFields",
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        )
    ),
}


class Schema:
    """What field-manager needs to know of one kind: list types and atomic maps."""

    def __init__(
        self, kind: str, custom: bool, status_reset: bool, crd_schema: dict[str, Any] | None = None
    ) -> None:
        self.kind = kind
        self.custom = custom
        self.status_reset = status_reset  # status belongs to the /status subresource
        self.crd_schema = crd_schema  # a custom resource's openAPIV3Schema (x-kubernetes-list-type ...)

    def _crd_node(self, names: tuple[str, ...]) -> dict[str, Any]:
        """The structural-schema node at field-name path ``names`` (``{}`` when unknown)."""
        node: Any = self.crd_schema or {}
        for n in names:
            while isinstance(node, dict) and isinstance(node.get("items"), dict):
                node = node["items"]
            if not isinstance(node, dict):
                return {}
            props = node.get("properties") or {}
            if n in props:
                node = props[n]
            elif isinstance(node.get("additionalProperties"), dict):
                node = node["additionalProperties"]
            else:
                return {}
        return node if isinstance(node, dict) else {}

    def list_type(self, names: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
        """("map", keys) | ("set", ()) | ("atomic", ()) for the list at field-name path ``names``."""
        name = names[-1]
        if self.custom and names[:1] != ("metadata",):
            # custom resources: what the CRD's schema says, atomic by default
            node = self._crd_node(names)
            ltype = node.get("x-kubernetes-list-type")
            keys = tuple(str(k) for k in node.get("x-kubernetes-list-map-keys") or ())
            if ltype == "map" and keys:
                return "map", keys
            if ltype == "set":
                return "set", ()
            return "atomic", ()
        if name in _SET_LISTS:
            return "set", ()
        if name == "ports":
            if len(names) >= 2 and names[-2] in _CONTAINER_LISTS:
                return "map", ("containerPort", "protocol")
            if self.kind == "Service" and names == ("spec", "ports"):
                return "map", ("port", "protocol")
            return "atomic", ()
        if name == "env" and (len(names) < 2 or names[-2] not in _CONTAINER_LISTS):
            return "atomic", ()
        if name in _LIST_KEYS:
            return "map", _LIST_KEYS[name]
        return "atomic", ()

    def atomic_map(self, names: tuple[str, ...]) -> bool:
        """Whether the map at ``names`` is replaced (and owned) as a whole."""
        if self.custom and names[:1] != ("metadata",):
            return bool(names) and self._crd_node(names).get("x-kubernetes-map-type") == "atomic"
        return bool(names) and names[-1] in _ATOMIC_MAPS

    def ignored(self, subresource: str | None) -> FieldSet:
        """Paths a write through ``subresource`` neither owns nor changes (reset fields)."""
        return {("f:status",)} if self.status_reset and subresource != "status" else set()


# ---- paths -----------------------------------------------------------------------------------------


def _item_key(item: Json, keys: tuple[str, ...]) -> str | None:
    if not isinstance(item, dict):
        return None
    vals: dict[str, Json] = {}
    for k in sorted(keys):
        v = item.get(k, _KEY_DEFAULTS.get(k))
        if v is None:
            return None
        vals[k] = v
    return "k:" + orjson.dumps(vals).decode()


def _list_elements(items: list[Json], ltype: str, keys: tuple[str, ...]) -> list[str | None]:
    if ltype == "set":
        return ["v:" + orjson.dumps(i).decode() for i in items]
    return [_item_key(i, keys) for i in items]


def path_string(path: Path) -> str:
    """``.spec.template.spec.containers[name="c"].image`` as fieldpath.Path.String() writes it."""
    out = []
    for el in path:
        kind, _, rest = el.partition(":")
        if kind == "f":
            out.append("." + rest)
        elif kind == "k":
            vals = orjson.loads(rest)
            out.append("[" + ",".join(f"{k}={orjson.dumps(v).decode()}" for k, v in vals.items()) + "]")
        elif kind == "v":
            out.append(f"[={rest}]")
        else:
            out.append(f"[{rest}]")
    return "".join(out)


def _is_empty(v: Json) -> bool:
    return v is None or v == {} or v == []


# ---- field sets of a value -------------------------------------------------------------------------


def to_field_set(obj: Json, schema: Schema) -> FieldSet:
    """The fields an applied configuration names (TypedValue.ToFieldSet): leaves and list items."""
    out: FieldSet = set()
    _walk_set(obj, (), (), schema, out)
    return out


def _walk_set(v: Json, path: Path, names: tuple[str, ...], schema: Schema, out: FieldSet) -> None:
    if isinstance(v, dict):
        if schema.atomic_map(names):
            out.add(path)
            return
        for k, child in v.items():
            _walk_set(child, (*path, f"f:{k}"), (*names, k), schema, out)
    elif isinstance(v, list) and names:
        ltype, keys = schema.list_type(names)
        if ltype == "atomic":
            out.add(path)
            return
        for i, (item, el) in enumerate(zip(v, _list_elements(v, ltype, keys), strict=True)):
            if el is None:
                raise _bad_item(path, i, keys)
            out.add((*path, el))
            if ltype == "map":
                _walk_set(item, (*path, el), names, schema, out)
    else:
        out.add(path)


def _bad_item(path: Path, index: int, keys: tuple[str, ...]) -> ApiError:
    """An applied list item without its key fields: 400 as the real server's typed conversion."""
    missing = ", ".join(f'"{k}"' for k in keys if k not in _KEY_DEFAULTS)
    return ApiError(
        400,
        "BadRequest",
        f"failed to create typed patch object: {path_string(path)}: element {index}: associative list "
        f"with keys has an element that omits key field {missing} (and doesn't have default value)",
    )


def compare(old: Json, new: Json, schema: Schema) -> tuple[FieldSet, FieldSet, FieldSet]:
    """(added, modified, removed) from ``old`` to ``new`` (TypedValue.Compare)."""
    added: FieldSet = set()
    modified: FieldSet = set()
    removed: FieldSet = set()
    _walk_cmp(old, new, (), (), schema, added, modified, removed)
    return added, modified, removed


def _walk_cmp(
    lhs: Json,
    rhs: Json,
    path: Path,
    names: tuple[str, ...],
    schema: Schema,
    added: FieldSet,
    modified: FieldSet,
    removed: FieldSet,
) -> None:
    def leaf() -> None:
        if lhs is None and rhs is None:
            return
        if lhs is None:
            added.add(path)
        elif rhs is None:
            removed.add(path)
        elif lhs != rhs:
            modified.add(path)

    both = (lhs, rhs)
    if all(isinstance(x, dict) or x is None for x in both) and any(isinstance(x, dict) for x in both):
        if schema.atomic_map(names) or (_is_empty(lhs) and _is_empty(rhs)):
            leaf()
            return
        lmap, rmap = lhs or {}, rhs or {}
        for k in list(lmap) + [k for k in rmap if k not in lmap]:
            sub = (*path, f"f:{k}")
            lv, rv = lmap.get(k), rmap.get(k)
            _walk_cmp(lv, rv, sub, (*names, k), schema, added, modified, removed)
            if lv is None and rv is not None:
                added.add(sub)
            elif rv is None and lv is not None:
                removed.add(sub)
        return
    is_list = all(isinstance(x, list) or x is None for x in both) and any(isinstance(x, list) for x in both)
    if names and is_list:
        ltype, keys = schema.list_type(names)
        if ltype == "atomic" or (_is_empty(lhs) and _is_empty(rhs)):
            leaf()
            return
        lidx = _index(lhs or [], ltype, keys)
        ridx = _index(rhs or [], ltype, keys)
        for el in list(lidx) + [e for e in ridx if e not in lidx]:
            sub = (*path, el)
            lv, rv = lidx.get(el), ridx.get(el)
            if ltype == "map":
                _walk_cmp(lv, rv, sub, names, schema, added, modified, removed)
            if lv is None and rv is not None:
                added.add(sub)
            elif rv is None and lv is not None:
                removed.add(sub)
        return
    leaf()


def _index(items: list[Json], ltype: str, keys: tuple[str, ...]) -> dict[str, Json]:
    out: dict[str, Json] = {}
    for item, el in zip(items, _list_elements(items, ltype, keys), strict=True):
        if el is not None:
            out.setdefault(el, item)
    return out


# ---- merge and removal -----------------------------------------------------------------------------


def merge(live: Json, config: Json, schema: Schema, names: tuple[str, ...] = ()) -> Json:
    """``live`` with ``config`` merged in (TypedValue.Merge): maps by key, keyed lists by item key."""
    if isinstance(config, dict) and isinstance(live, dict) and not schema.atomic_map(names):
        out = dict(live)
        for k, v in config.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = merge(live.get(k), v, schema, (*names, k))
        return out
    if isinstance(config, list) and isinstance(live, list) and names:
        ltype, keys = schema.list_type(names)
        if ltype != "atomic":
            return _merge_list(live, config, ltype, keys, schema, names)
    return copy.deepcopy(config)


def _merge_list(
    lhs: list[Json],
    rhs: list[Json],
    ltype: str,
    keys: tuple[str, ...],
    schema: Schema,
    names: tuple[str, ...],
) -> list[Json]:
    """The interleaving of structured-merge-diff's visitListItems: live order kept, config items placed
    where the shared ones fall, new config items before the live-only items that follow them."""
    lpe = _list_elements(lhs, ltype, keys)
    rpe = _list_elements(rhs, ltype, keys)
    lobs = dict(zip(lpe, lhs, strict=True))
    robs = dict(zip(rpe, rhs, strict=True))
    shared = [pe for pe in rpe if pe in lobs]
    nxt = shared.pop(0) if shared else None
    merged_rhs: set[str | None] = set()
    out: list[Json] = []

    def item(pe: str | None, lchild: Json, rchild: Json) -> Json:
        if rchild is None:
            return lchild
        if ltype == "map" and lchild is not None:
            return merge(lchild, rchild, schema, names)
        return copy.deepcopy(rchild)

    li = ri = 0
    while li < len(lhs) or ri < len(rhs):
        if li < len(lhs) and ri < len(rhs):
            pe = lpe[li]
            if pe == rpe[ri]:
                merged_rhs.add(pe)
                out.append(item(pe, lobs.get(pe), robs.get(pe)))
                li += 1
                ri += 1
                nxt = shared.pop(0) if shared else None
                continue
            if pe in robs and nxt is not None and nxt != pe:
                li += 1
                continue
        if li < len(lhs):
            pe = lpe[li]
            if pe not in robs:
                out.append(lhs[li])
                li += 1
                continue
            if pe in merged_rhs:
                li += 1
                continue
        if ri < len(rhs):
            pe = rpe[ri]
            merged_rhs.add(pe)
            out.append(item(pe, lobs.get(pe), robs.get(pe)))
            ri += 1
            if nxt is not None and nxt == pe:
                nxt = shared.pop(0) if shared else None
    return out


def remove_items(obj: Json, paths: Iterable[Path], schema: Schema) -> Json:
    """``obj`` without the given leaves and list items; maps and lists they leave empty go too
    (they are named fields of their struct, pruned with their last member)."""
    out = copy.deepcopy(obj)
    for path in sorted(paths, key=len, reverse=True):
        _remove(out, path, (), schema)
    return out


def _remove(cur: Json, path: Path, names: tuple[str, ...], schema: Schema) -> bool:
    """Remove ``path`` under ``cur``; True when ``cur`` became empty by it."""
    if not path:
        return False
    el, rest = path[0], path[1:]
    if isinstance(cur, dict) and el.startswith("f:"):
        key = el[2:]
        if key not in cur:
            return False
        if not rest or _remove(cur[key], rest, (*names, key), schema):
            del cur[key]
            return not cur
        return False
    if isinstance(cur, list) and names:
        ltype, keys = schema.list_type(names)
        if ltype == "atomic":
            return False
        els = _list_elements(cur, ltype, keys)
        if el not in els:
            return False
        i = els.index(el)
        if not rest or _remove(cur[i], rest, names, schema):
            del cur[i]
            return not cur
    return False


# ---- fieldsV1 encoding -----------------------------------------------------------------------------


def _el_order(el: str) -> tuple[int, str]:
    return ({"f": 0, "k": 1, "v": 2, "i": 3}.get(el[0], 4), el)


def encode(fields: FieldSet) -> dict[str, Json]:
    """fieldsV1 of a set: nested ``f:``/``k:``/``v:`` keys, ``.`` where a member also has children."""
    tree: dict[str, Any] = {}
    for path in fields:
        node = tree
        for el in path:
            node = node.setdefault(el, {})
        node["."] = {}

    def render(node: dict[str, Any]) -> dict[str, Json]:
        children = {k: v for k, v in node.items() if k != "."}
        out: dict[str, Json] = {}
        if "." in node and children:
            out["."] = {}
        for k in sorted(children, key=_el_order):
            out[k] = render(children[k])
        return out

    return render(tree)


def decode(fields_v1: Json, prefix: Path = ()) -> FieldSet:
    """The set a fieldsV1 document stands for."""
    out: FieldSet = set()
    if not isinstance(fields_v1, dict):
        return out
    if not fields_v1 and prefix:
        out.add(prefix)
    for k, v in fields_v1.items():
        if k == ".":
            out.add(prefix)
        else:
            out |= decode(v, (*prefix, k))
    return out
