"""OpenAPI documents, as far as kubectl needs them.

kubectl (1.27+) asks ``/openapi/v3`` whether a kind's PATCH operation takes the ``fieldValidation``
query parameter; if it does, it leaves validation to the server (``fieldValidation=Strict``) instead of
validating client-side against the OpenAPI schemas. The group-version documents served here describe
every path with its operations, GVK extensions and parameters — but no component schemas, and PATCH
operations do not advertise strategic merge patch, so ``kubectl apply`` computes its three-way patches
from the types compiled into kubectl (built-in kinds) or as JSON merge patches (custom resources), as it
does for any server without those schemas. ``/openapi/v2`` is not served (404), like a server with
OpenAPI v2 disabled.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from sandbox.apiserver.registry import Registry
from sandbox.apiserver.resources import ResourceType

Obj = dict[str, Any]
_NOT_FOUND = (404, b"404 page not found\n", "text/plain; charset=utf-8")


def _gv_path(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def _param(name: str, where: str = "query", required: bool = False) -> Obj:
    return {
        "name": name,
        "in": where,
        "required": required,
        "schema": {"type": "string", "uniqueItems": True},
    }


_WRITE_PARAMS = [_param("dryRun"), _param("fieldManager"), _param("fieldValidation"), _param("pretty")]
_PATCH_CONTENT = {
    ct: {"schema": {"type": "object"}}
    for ct in ("application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml")
}


def _gvk(rt: ResourceType) -> Obj:
    return {"group": rt.group, "version": rt.version, "kind": rt.kind}


def _op(rt: ResourceType, action: str, op_id: str, body: Obj | None = None) -> Obj:
    op: Obj = {
        "operationId": op_id,
        "parameters": list(_WRITE_PARAMS) if action in ("post", "put", "patch") else [],
        "responses": {"200": {"description": "OK"}, "401": {"description": "Unauthorized"}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": _gvk(rt),
        "tags": [rt.group or "core"],
    }
    if body is not None:
        op["requestBody"] = {"content": body, "required": True}
    return op


def _paths(rt: ResourceType) -> dict[str, Obj]:
    base = "/" + _gv_path(rt.group, rt.version)
    coll = f"{base}/namespaces/{{namespace}}/{rt.plural}" if rt.namespaced else f"{base}/{rt.plural}"
    scope = [_param("namespace", "path", True)] if rt.namespaced else []
    json_body = {"application/json": {"schema": {"type": "object"}}}
    kind = rt.kind
    paths: dict[str, Obj] = {
        coll: {
            "get": _op(rt, "list", f"list{kind}"),
            "post": _op(rt, "post", f"create{kind}", json_body),
            "delete": _op(rt, "deletecollection", f"deletecollection{kind}"),
            "parameters": [*scope, *_WRITE_PARAMS],
        },
        f"{coll}/{{name}}": {
            "get": _op(rt, "get", f"read{kind}"),
            "put": _op(rt, "put", f"replace{kind}", json_body),
            "delete": _op(rt, "delete", f"delete{kind}"),
            "patch": _op(rt, "patch", f"patch{kind}", _PATCH_CONTENT),
            "parameters": [_param("name", "path", True), *scope, *_WRITE_PARAMS, _param("force")],
        },
    }
    for sub in sorted(rt.subresources):
        paths[f"{coll}/{{name}}/{sub}"] = {
            "get": _op(rt, "get", f"read{kind}{sub.title()}"),
            "put": _op(rt, "put", f"replace{kind}{sub.title()}", json_body),
            "patch": _op(rt, "patch", f"patch{kind}{sub.title()}", _PATCH_CONTENT),
            "parameters": [_param("name", "path", True), *scope, *_WRITE_PARAMS, _param("force")],
        }
    return paths


def _gv_doc(reg: Registry, group: str, version: str) -> Obj | None:
    rts = [rt for (g, v, _p), rt in reg.types.items() if g == group and v == version]
    if not rts:
        return None
    paths: dict[str, Obj] = {}
    for rt in sorted(rts, key=lambda r: r.plural):
        paths.update(_paths(rt))
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.37.1-stateferry-sandbox"},
        "paths": paths,
        "components": {"schemas": {}},
    }


def _gv_list(reg: Registry) -> list[tuple[str, str]]:
    return sorted({(g, v) for (g, v, _p) in reg.types})


def _documents(reg: Registry) -> dict[str, bytes]:
    """Every served document by path (rebuilt only when the set of resource types changes)."""
    key = tuple(sorted(reg.types))
    cached = reg.openapi_cache
    if cached is not None and cached[0] == key:
        return cached[1]
    docs: dict[str, bytes] = {}
    root: Obj = {"paths": {}}
    for g, v in _gv_list(reg):
        body = orjson.dumps(_gv_doc(reg, g, v))
        rel = _gv_path(g, v)
        digest = hashlib.sha512(body).hexdigest()[:64].upper()
        root["paths"][rel] = {"serverRelativeURL": f"/openapi/v3/{rel}?hash={digest}"}
        docs[f"/openapi/v3/{rel}"] = body
    docs["/openapi/v3"] = orjson.dumps(root)
    reg.openapi_cache = (key, docs)
    return docs


def serve(reg: Registry, path: str, q: dict[str, str]) -> tuple[int, bytes, str]:
    """Answer ``/openapi/...``: (status code, body, content type)."""
    body = _documents(reg).get(path.rstrip("/"))
    if body is None:
        return _NOT_FOUND
    return 200, body, "application/json"
