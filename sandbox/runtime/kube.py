"""A thin JSON-dict REST layer over the official ``kubernetes`` client, as the controllers use it.

Controllers work on plain dicts (the API's JSON) but every request goes through
``kubernetes.client.ApiClient`` over HTTP, exactly like a real controller talks to the API server.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes.client
from kubernetes.client.exceptions import ApiException
from kubernetes.client.rest import RESTResponse

log = logging.getLogger(__name__)

Obj = dict[str, Any]

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"

# (plural, api prefix) of every kind the runtime reads.
PATHS: dict[str, str] = {
    "pods": "/api/v1",
    "services": "/api/v1",
    "endpoints": "/api/v1",
    "persistentvolumeclaims": "/api/v1",
    "persistentvolumes": "/api/v1",
    "configmaps": "/api/v1",
    "secrets": "/api/v1",
    "nodes": "/api/v1",
    "namespaces": "/api/v1",
    "events": "/api/v1",
    "statefulsets": "/apis/apps/v1",
    "deployments": "/apis/apps/v1",
    "replicasets": "/apis/apps/v1",
    "daemonsets": "/apis/apps/v1",
    "controllerrevisions": "/apis/apps/v1",
    "jobs": "/apis/batch/v1",
    "cronjobs": "/apis/batch/v1",
    "endpointslices": "/apis/discovery.k8s.io/v1",
    "storageclasses": "/apis/storage.k8s.io/v1",
}
CLUSTER_SCOPED = {"persistentvolumes", "nodes", "namespaces", "storageclasses"}


def path_of(
    plural: str, namespace: str | None = None, name: str | None = None, sub: str | None = None
) -> str:
    """Build the REST path of a collection or an object."""
    base = PATHS[plural]
    path = (
        f"{base}/namespaces/{namespace}/{plural}"
        if namespace and plural not in CLUSTER_SCOPED
        else f"{base}/{plural}"
    )
    if name:
        path += f"/{name}"
    if sub:
        path += f"/{sub}"
    return path


class Kube:
    """JSON requests to one API server.

    Args:
        url: API server base URL (``http://127.1.0.1:6443``).
    """

    def __init__(self, url: str) -> None:
        cfg = kubernetes.client.Configuration()
        cfg.host = url
        cfg.verify_ssl = False
        cfg.connection_pool_maxsize = 32
        self.url = url
        self.api = kubernetes.client.ApiClient(cfg)
        # the field manager of the runtime's writes in managedFields (a real cluster's controllers)
        self.api.user_agent = "kube-controller-manager/v1.24.0 (linux/amd64) kubernetes/sandbox"
        self.events: Any = None  # an EventRecorder, set by the cluster runtime
        self._local = threading.local()

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: list[tuple[str, Any]] | None = None,
        content_type: str = "application/json",
        timeout: float = 15.0,
    ) -> Obj:
        """Send a request; return the decoded JSON answer (raises ``ApiException`` on errors)."""
        resp = self._call(method, path, body, query or [], content_type, timeout)
        data = resp.read()
        if not 200 <= resp.status <= 299:
            raise ApiException.from_response(http_resp=resp, body=None, data=None)
        return json.loads(data) if data else {}

    def _call(
        self, method: str, path: str, body: Any, query: list[tuple[str, Any]], ctype: str, timeout: Any
    ) -> RESTResponse:
        req = self.api.param_serialize(
            method,
            path,
            query_params=query,
            header_params={"Content-Type": ctype, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        return self.api.call_api(*req, _request_timeout=timeout)

    def list(self, plural: str, namespace: str | None = None, **query: str) -> tuple[list[Obj], str]:
        """List a collection; returns (items, resourceVersion)."""
        out = self.request("GET", path_of(plural, namespace), query=list(query.items()))
        items = out.get("items") or []
        return items, str((out.get("metadata") or {}).get("resourceVersion") or "")

    def get(self, plural: str, namespace: str | None, name: str) -> Obj | None:
        """Get one object; None when it does not exist."""
        try:
            return self.request("GET", path_of(plural, namespace, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create(self, plural: str, namespace: str | None, body: Obj, *, exist_ok: bool = False) -> Obj | None:
        """Create an object; with ``exist_ok`` a 409 AlreadyExists returns None."""
        try:
            return self.request("POST", path_of(plural, namespace), body)
        except ApiException as exc:
            if exist_ok and exc.status == 409:
                return None
            raise

    def patch(
        self,
        plural: str,
        namespace: str | None,
        name: str,
        body: Any,
        *,
        sub: str | None = None,
        ctype: str = MERGE,
    ) -> Obj:
        """Patch an object (merge patch by default) or its ``status`` / ``scale`` subresource."""
        return self.request("PATCH", path_of(plural, namespace, name, sub), body, content_type=ctype)

    def delete(
        self,
        plural: str,
        namespace: str | None,
        name: str,
        *,
        grace: int | None = None,
        uid: str | None = None,
        propagation: str | None = None,
    ) -> bool:
        """Delete an object; False if it was already gone (404) or the uid precondition failed (409)."""
        body: Obj = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if grace is not None:
            body["gracePeriodSeconds"] = grace
        if uid:
            body["preconditions"] = {"uid": uid}
        if propagation:
            body["propagationPolicy"] = propagation
        try:
            self.request("DELETE", path_of(plural, namespace, name), body)
            return True
        except ApiException as exc:
            if exc.status in (404, 409):
                return False
            raise

    def watch(self, plural: str, resource_version: str, stop: threading.Event) -> Iterator[Obj]:
        """Yield watch events of a collection (all namespaces) from ``resource_version``."""
        resp = self._call(
            "GET",
            path_of(plural),
            None,
            [("watch", "true"), ("resourceVersion", resource_version), ("timeoutSeconds", 60)],
            "application/json",
            (5, 90),
        )
        if not 200 <= resp.status <= 299:
            resp.read()
            raise ApiException.from_response(http_resp=resp, body=None, data=None)
        raw = resp.response
        try:
            buf = b""
            for chunk in raw.stream(4096, decode_content=False):
                if stop.is_set():
                    return
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            raw.release_conn()


def watch_forever(kube: Kube, plural: str, on_event: Callable[[Obj], None], stop: threading.Event) -> None:
    """Keep a watch on ``plural`` open (re-listing after errors) and call ``on_event`` for each event."""
    while not stop.is_set():
        try:
            _, rv = kube.list(plural)
            on_event({"type": "RESYNC"})
            for event in kube.watch(plural, rv, stop):
                if event.get("type") == "ERROR":
                    break
                on_event(event)
        except Exception as exc:
            log.debug("watch %s: %s", plural, exc)
        stop.wait(0.5)
