"""Events (``kubectl describe`` / ``kubectl get events``) recorded by the sandbox's components."""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from typing import Any

from sandbox.runtime.kube import Kube, Obj
from sandbox.runtime.objects import meta, now_iso

log = logging.getLogger(__name__)


class EventRecorder:
    """Posts core/v1 Events asynchronously (a slow API never blocks a controller or the kubelet).

    Args:
        kube: API access.
        component: ``source.component`` (``kubelet``, ``statefulset-controller`` ...).
        host: ``source.host`` (the Node name for the kubelet).
    """

    def __init__(self, kube: Kube, component: str, host: str = "") -> None:
        self.kube = kube
        self.component = component
        self.host = host
        self._queue: queue.Queue[Obj | None] = queue.Queue(maxsize=10000)
        self._thread = threading.Thread(target=self._run, name=f"events-{component}", daemon=True)
        self._thread.start()

    def record(
        self,
        obj: Obj,
        reason: str,
        message: str,
        *,
        warning: bool = False,
        field_path: str | None = None,
        component: str | None = None,
        kind: str | None = None,
        api_version: str | None = None,
    ) -> None:
        """Queue an Event about ``obj`` (``kind``/``api_version`` when list items lack them)."""
        md = meta(obj)
        namespace = md.get("namespace") or "default"
        involved: dict[str, Any] = {
            "kind": kind or obj.get("kind") or "",
            "namespace": md.get("namespace") or "",
            "name": md.get("name"),
            "uid": md.get("uid"),
            "apiVersion": api_version or obj.get("apiVersion") or "",
            "resourceVersion": md.get("resourceVersion") or "",
        }
        if field_path:
            involved["fieldPath"] = field_path
        ts = now_iso()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{md.get('name')}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": "Warning" if warning else "Normal",
            "source": {
                "component": component or self.component,
                **({"host": self.host} if self.host else {}),
            },
            "firstTimestamp": ts,
            "lastTimestamp": ts,
            "count": 1,
            "reportingComponent": component or self.component,
            "reportingInstance": self.host,
        }
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            pass

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                return
            try:
                self.kube.create("events", event["metadata"]["namespace"], event, exist_ok=True)
            except Exception as exc:
                log.debug("event %s: %s", event.get("reason"), exc)

    def close(self) -> None:
        """Stop the sender thread (pending events are dropped)."""
        self._queue.put(None)


def emit(
    kube: Kube,
    obj: Obj,
    reason: str,
    message: str,
    *,
    component: str,
    kind: str,
    api_version: str,
    warning: bool = False,
) -> None:
    """Record an Event through ``kube.events`` (no-op when the Kube has no recorder)."""
    recorder = getattr(kube, "events", None)
    if isinstance(recorder, EventRecorder):
        recorder.record(
            obj, reason, message, warning=warning, component=component, kind=kind, api_version=api_version
        )
