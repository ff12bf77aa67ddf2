"""Watch streams: ``?watch=true`` on a collection answered as chunked JSON events (initial state,
resourceVersion replay, bookmarks, 410 Expired, selector transitions as ADDED/DELETED)."""

from __future__ import annotations

import queue
import select
import socket
import time
from typing import Any

import orjson

from sandbox.apiserver.errors import ApiError
from sandbox.apiserver.resources import ResourceType
from sandbox.apiserver.selectors import fields_match, labels_match, parse_field_selector, parse_label_selector
from sandbox.apiserver.store import Event, Obj
from sandbox.apiserver.tables import resource_table


def serve(handler: Any, rt: ResourceType, ns: str | None, q: dict[str, str], as_table: bool) -> None:
    """Stream the watch asked for by query ``q`` on ``handler``'s connection until it times out,
    the peer goes or the server stops.

    Raises:
        ApiError: before the stream starts (a malformed resourceVersion or selector).
    """
    store = handler.server.registry.store
    rv_text = q.get("resourceVersion", "")
    if rv_text and not rv_text.isdigit():
        raise ApiError(500, "", f"strconv.ParseUint: parsing {rv_text!r}: invalid syntax")
    lreqs = parse_label_selector(q["labelSelector"]) if q.get("labelSelector") else []
    freqs = parse_field_selector(q["fieldSelector"], rt.plural) if q.get("fieldSelector") else []
    timeout = float(q.get("timeoutSeconds") or 1800)
    bookmarks = q.get("allowWatchBookmarks") == "true"
    include = q.get("includeObject", "Metadata")

    def matches(obj: Obj | None) -> bool:
        if obj is None:
            return False
        meta = obj["metadata"]
        if ns is not None and meta.get("namespace") != ns:
            return False
        if lreqs and not labels_match(lreqs, meta.get("labels") or {}):
            return False
        return not freqs or fields_match(freqs, obj)

    initial: list[Obj] = []
    # watch-list (client-go's WatchListClient): the current state as ADDED events, then a bookmark
    send_initial = q.get("sendInitialEvents") == "true"
    with store.lock:
        if rv_text in ("", "0") or send_initial:
            initial = [o for o in store.items(rt.key, ns if rt.namespaced else None) if matches(o)]
            sub = store.watch(rt.key, None)
        else:
            sub = store.watch(rt.key, int(rv_text))
        initial_rv = store.rv
    handler.wfile.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: no-cache, private\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    sock: socket.socket = handler.connection
    try:
        if sub is None:
            gone = ApiError(410, "Expired", f"too old resource version: {rv_text} ({store.rv})")
            _chunk(handler.wfile, {"type": "ERROR", "object": gone.status()})
            return
        watcher, replay = sub
        try:
            for obj in initial:
                _chunk(handler.wfile, _event("ADDED", rt, obj, as_table, include))
            if send_initial and bookmarks:
                mark = _bookmark(rt, initial_rv)
                mark["object"]["metadata"]["annotations"] = {"k8s.io/initial-events-end": "true"}
                _chunk(handler.wfile, mark)
            deadline = time.monotonic() + timeout
            pending: list[Event] = list(replay)
            last_bookmark = time.monotonic()
            while not handler.server.stopping.is_set():
                for ev in pending:
                    out = _translate(ev, matches)
                    if out is not None:
                        _chunk(handler.wfile, _event(out[0], rt, out[1], as_table, include))
                pending = []
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = watcher.queue.get(timeout=min(remaining, 1.0))
                except queue.Empty:
                    if _peer_closed(sock):
                        return
                    if bookmarks and time.monotonic() - last_bookmark > 10:
                        last_bookmark = time.monotonic()
                        _chunk(handler.wfile, _bookmark(rt, store.rv))
                    continue
                if item is None:
                    break
                pending.append(item)
                while True:
                    try:
                        nxt = watcher.queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        break
                    pending.append(nxt)
        finally:
            store.unwatch(watcher)
        handler.wfile.write(b"0\r\n\r\n")
    except OSError:
        handler.close_connection = True
    handler.close_connection = True


def _event(etype: str, rt: ResourceType, obj: Obj, as_table: bool, include: str) -> Obj:
    if obj.get("apiVersion") != rt.api_version:
        obj = dict(obj, apiVersion=rt.api_version)
    if as_table:
        return {
            "type": etype,
            "object": resource_table(
                rt, [obj], {"resourceVersion": obj["metadata"]["resourceVersion"]}, include
            ),
        }
    return {"type": etype, "object": obj}


def _chunk(wfile: Any, event: Obj) -> None:
    data = orjson.dumps(event) + b"\n"
    wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")


def _bookmark(rt: ResourceType, rv: int) -> Obj:
    return {
        "type": "BOOKMARK",
        "object": {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": {"resourceVersion": str(rv)}},
    }


def _translate(ev: Event, matches: Any) -> tuple[str, Obj] | None:
    new_ok = matches(ev.obj)
    if ev.type == "ADDED":
        return ("ADDED", ev.obj) if new_ok else None
    if ev.type == "DELETED":
        return ("DELETED", ev.obj) if new_ok else None
    old_ok = matches(ev.prev)
    if new_ok and old_ok:
        return ("MODIFIED", ev.obj)
    if new_ok:
        return ("ADDED", ev.obj)
    if old_ok and ev.prev is not None:
        prev = dict(
            ev.prev, metadata=dict(ev.prev["metadata"], resourceVersion=ev.obj["metadata"]["resourceVersion"])
        )
        return ("DELETED", prev)
    return None


def _peer_closed(sock: socket.socket) -> bool:
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if readable:
            return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True
    return False
