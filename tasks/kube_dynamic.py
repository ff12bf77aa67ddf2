"""The one Kubernetes access layer of the apply paths: ``kubernetes.dynamic.DynamicClient``.

Discovery is the client's own (``LazyDiscoverer``), with a private cache file per client, so what a
run sees is what the server serves now (never another process's stale cache); after a
CustomResourceDefinition appears, :func:`refresh_discovery` calls ``invalidate_cache()``. Bodies are
read as plain JSON dicts (no ``ResourceInstance`` wrapping). Every client error leaves here as a
:mod:`stateferry.errors` type (``NotFound``, ``Conflict``, ``Invalid``, ``TransientError``...).
"""

from __future__ import annotations

import atexit
import itertools
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from planning.apply_decision import FIELD_MANAGER
from planning.resources import ResourceType
from stateferry.errors import NotFound, PreconditionFailed, StateferryError, translate

__all__ = [
    "FIELD_MANAGER",
    "call",
    "create",
    "delete",
    "dynamic_client",
    "get_or_none",
    "list_objects",
    "list_selected",
    "merge_patch",
    "refresh_discovery",
    "resource_for",
    "resource_type",
    "served_resource",
    "served_types",
    "server_side_apply",
]

T = TypeVar("T")
PAGE_SIZE = 500
_DYNAMIC: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_CACHE_DIR: list[Path] = []
_SEQ = itertools.count()


def call(what: str, fn: Callable[[], T]) -> T:
    """Run one client call; any error comes out translated (:func:`stateferry.errors.translate`)."""
    try:
        return fn()
    except StateferryError:
        raise
    except Exception as exc:
        raise translate(exc, context=what) from exc


def _cache_file() -> str:
    """A fresh discovery cache file in this process's own directory (removed at exit)."""
    if not _CACHE_DIR:
        d = Path(tempfile.mkdtemp(prefix="stateferry-discovery-"))
        atexit.register(shutil.rmtree, d, True)
        _CACHE_DIR.append(d)
    return str(_CACHE_DIR[0] / f"{next(_SEQ)}.json")


def dynamic_client(api: Any) -> Any:
    """One ``kubernetes.dynamic.DynamicClient`` per ``ApiClient`` (discovery read once, then lazily
    per API group; a kind it does not know makes it re-discover)."""
    from kubernetes.dynamic import DynamicClient

    client = _DYNAMIC.get(api)
    if client is None:
        client = _DYNAMIC[api] = call(
            "reading the API discovery", lambda: DynamicClient(api, cache_file=_cache_file())
        )
    return client


def refresh_discovery(dyn: Any) -> None:
    """Forget what discovery knows (a CustomResourceDefinition has just been established)."""
    call("reading the API discovery", dyn.resources.invalidate_cache)


def _raw(_client: Any, data: Any) -> Any:
    return data


def resource_type(resource: Any) -> ResourceType:
    """The :class:`planning.resources.ResourceType` of a discovered dynamic-client ``Resource``."""
    return ResourceType(
        str(resource.group or ""),
        str(resource.api_version),
        str(resource.kind),
        str(resource.name),
        bool(resource.namespaced),
    )


def resource_for(dyn: Any, api_version: str, kind: str) -> Any | None:
    """The served ``Resource`` of ``apiVersion``/``kind``, or None when the server does not serve it
    (discovery is re-read once on a miss, by the client itself)."""
    from kubernetes.dynamic.exceptions import NotFoundError, ResourceNotFoundError, ResourceNotUniqueError

    try:
        return dyn.resources.get(api_version=api_version, kind=kind)
    except (ResourceNotFoundError, ResourceNotUniqueError, NotFoundError):  # NotFoundError: group gone
        return None
    except Exception as exc:
        raise translate(exc, context=f"discovering {api_version} {kind}") from exc


def served_types(dyn: Any) -> list[ResourceType]:
    """Every listable resource type the server offers, each group's preferred version first."""
    from kubernetes.dynamic.resource import Resource, ResourceList

    found: list[tuple[bool, ResourceType]] = []

    def walk() -> None:
        for entries in dyn.resources:
            for r in entries:
                if isinstance(r, ResourceList) or not isinstance(r, Resource):
                    continue
                if "list" in (r.verbs or []):
                    found.append((bool(r.preferred), resource_type(r)))

    call("reading the API discovery", walk)
    return [t for pref, t in sorted(found, key=lambda x: not x[0])]


def list_objects(dyn: Any, resource: Any, namespace: str | None) -> Iterator[dict[str, Any]]:
    """Every object of ``resource`` (in ``namespace``; all namespaces when None), page by page,
    with ``apiVersion`` and ``kind`` set."""
    path = resource.path(namespace=namespace) if resource.namespaced else resource.path()

    def page(token: str | None) -> dict[str, Any]:
        return dict(
            call(
                f"listing {resource.kind} in {namespace or 'the cluster'}",
                lambda: dyn.request("get", path, limit=PAGE_SIZE, _continue=token, serializer=_raw),
            )
        )

    cont: str | None = None
    while True:
        data = page(cont)
        for item in data.get("items") or []:
            item.setdefault("apiVersion", resource.group_version)
            item.setdefault("kind", resource.kind)
            yield item
        cont = (data.get("metadata") or {}).get("continue") or None
        if not cont:
            return


def get_or_none(dyn: Any, resource: Any, name: str, namespace: str | None) -> dict[str, Any] | None:
    """The object as a plain dict, or None when it does not exist."""
    try:
        obj: dict[str, Any] = call(
            f"reading {resource.kind} {name}",
            lambda: dyn.get(resource, name=name, namespace=namespace, serializer=_raw),
        )
    except NotFound:
        return None
    obj.setdefault("apiVersion", resource.group_version)
    obj.setdefault("kind", resource.kind)
    return obj


def server_side_apply(
    dyn: Any, resource: Any, body: dict[str, Any], *, dry_run: bool = False, force: bool = False
) -> dict[str, Any]:
    """Server-side apply ``body`` as field manager :data:`FIELD_MANAGER`; the server's answer.

    Raises:
        Conflict: 409: another manager owns a field the apply changes (not forced), or the
            ``metadata.resourceVersion`` precondition of ``body`` no longer holds.
        Invalid: 422: the server refused the object or the change (``causes`` name the fields).
    """
    meta = body["metadata"]
    ns = meta.get("namespace") if resource.namespaced else None
    where = f"{'dry-run ' if dry_run else ''}applying {resource.kind} {ns + '/' if ns else ''}{meta['name']}"
    out: dict[str, Any] = call(
        where,
        lambda: dyn.server_side_apply(
            resource,
            body=body,
            name=meta["name"],
            namespace=ns,
            field_manager=FIELD_MANAGER,
            force_conflicts=True if force else None,
            dry_run="All" if dry_run else None,
            serializer=_raw,
        ),
    )
    return out


def merge_patch(dyn: Any, resource: Any, name: str, namespace: str | None, patch: dict[str, Any]) -> None:
    """A JSON merge patch of a few fields as field manager :data:`FIELD_MANAGER` (an ``Update``)."""
    call(
        f"patching {resource.kind} {namespace + '/' if namespace else ''}{name}",
        lambda: dyn.patch(
            resource,
            body=patch,
            name=name,
            namespace=namespace,
            content_type="application/merge-patch+json",
            field_manager=FIELD_MANAGER,
            serializer=_raw,
        ),
    )


def served_resource(dyn: Any, api_version: str, kind: str) -> Any:
    """The served ``Resource`` of ``apiVersion``/``kind`` (a type the caller cannot do without).

    Raises:
        PreconditionFailed: the server does not serve it.
    """
    resource = resource_for(dyn, api_version, kind)
    if resource is None:
        raise PreconditionFailed(f"the cluster serves no {api_version} {kind}")
    return resource


def _where(resource: Any, namespace: str | None, name: str) -> str:
    return f"{resource.kind} {namespace + '/' if namespace else ''}{name}"


def create(dyn: Any, resource: Any, body: dict[str, Any], namespace: str | None) -> dict[str, Any]:
    """Create ``body`` as field manager :data:`FIELD_MANAGER`; the server's answer (the new object).

    Raises:
        Conflict: 409: an object of that name exists (or is still being deleted).
        Invalid: 422: the server refused the object.
    """
    full = {"apiVersion": resource.group_version, "kind": resource.kind, **body}
    out: dict[str, Any] = call(
        f"creating {_where(resource, namespace, body['metadata']['name'])}",
        lambda: dyn.create(
            resource, body=full, namespace=namespace, field_manager=FIELD_MANAGER, serializer=_raw
        ),
    )
    return out


def delete(
    dyn: Any, resource: Any, name: str, namespace: str | None, *, propagation: str = "Background"
) -> None:
    """Delete one object; its dependents go by ``propagation`` (``Background``/``Foreground``/``Orphan``).

    Raises:
        NotFound: it does not exist.
    """
    call(
        f"deleting {_where(resource, namespace, name)}",
        lambda: dyn.delete(
            resource, name=name, namespace=namespace, propagation_policy=propagation, serializer=_raw
        ),
    )


def list_selected(dyn: Any, resource: Any, namespace: str, label_selector: str) -> list[dict[str, Any]]:
    """The objects of ``resource`` in ``namespace`` whose labels match ``label_selector`` (all of
    them when it is empty), in one request: for the few objects a selector picks."""
    data: dict[str, Any] = call(
        f"listing {resource.kind} {label_selector!r} in {namespace}",
        lambda: dyn.get(resource, namespace=namespace, label_selector=label_selector, serializer=_raw),
    )
    return list(data.get("items") or [])
