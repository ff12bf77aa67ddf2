"""LIST: label/field selectors and limit/continue paging over the stored objects of one kind."""

from __future__ import annotations

import base64

import orjson

from sandbox.apiserver import errors
from sandbox.apiserver.objmeta import view
from sandbox.apiserver.resources import ResourceType
from sandbox.apiserver.selectors import fields_match, labels_match, parse_field_selector, parse_label_selector
from sandbox.apiserver.store import Obj, Store


def list_objects(
    store: Store,
    rt: ResourceType,
    ns: str | None,
    label_selector: str = "",
    field_selector: str = "",
    limit: int = 0,
    cont: str = "",
) -> Obj:
    """A ``<Kind>List`` with selectors and limit/continue applied."""
    lreqs = parse_label_selector(label_selector) if label_selector else []
    freqs = parse_field_selector(field_selector, rt.plural) if field_selector else []
    start = ""
    if cont:
        try:
            token = orjson.loads(base64.b64decode(cont))
            start = str(token["start"])
        except Exception:
            raise errors.bad_request(f"invalid continue token: {cont}") from None
    with store.lock:
        items = store.items(rt.key, ns if rt.namespaced else None)
        rv = str(store.rv)
    if lreqs:
        items = [o for o in items if labels_match(lreqs, o["metadata"].get("labels") or {})]
    if freqs:
        items = [o for o in items if fields_match(freqs, o)]
    if start:
        items = [o for o in items if sort_key(o) > start]
    meta: Obj = {"resourceVersion": rv}
    if limit and len(items) > limit:
        remaining = len(items) - limit
        items = items[:limit]
        meta["continue"] = base64.b64encode(
            orjson.dumps({"v": "meta.k8s.io/v1", "rv": int(rv), "start": sort_key(items[-1])})
        ).decode()
        if not lreqs and not freqs:
            meta["remainingItemCount"] = remaining
    if rt.custom:
        if any(o.get("apiVersion") != rt.api_version for o in items):
            items = [view(rt, o) for o in items]
    else:
        # typed lists of a real server carry no kind/apiVersion on their items (watch events do)
        items = [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")} for o in items]
    return {"kind": f"{rt.kind}List", "apiVersion": rt.api_version, "metadata": meta, "items": items}


def sort_key(obj: Obj) -> str:
    meta = obj["metadata"]
    return f"{meta.get('namespace', '')}/{meta['name']}"
