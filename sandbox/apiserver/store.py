"""In-memory object store with a global resourceVersion, watch fan-out and crash-safe persistence."""

from __future__ import annotations

import collections
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

Obj = dict[str, Any]
Key = tuple[str, str]  # (group, plural)
ObjKey = tuple[str, str]  # (namespace, name)

EVENT_LOG_SIZE = 10_000  # watch history kept for resourceVersion replay (older: 410 Gone)


@dataclass(frozen=True)
class Event:
    """One change: ``obj`` is the new state (the last state for DELETED), ``prev`` the state before."""

    rv: int
    key: Key
    type: str  # ADDED | MODIFIED | DELETED
    obj: Obj
    prev: Obj | None


class Watcher:
    """A subscription to the events of one resource; events are queued for the watch thread."""

    def __init__(self, key: Key) -> None:
        self.key = key
        self.queue: queue.SimpleQueue[Event | None] = queue.SimpleQueue()


class Store:
    """All objects of one cluster. Stored objects are never mutated: every write stores a new dict."""

    def __init__(self, state_file: Path | None) -> None:
        self.lock = threading.RLock()
        self.rv = 1
        self.log_start = 1  # the event log holds every event after this resourceVersion
        self.objects: dict[Key, dict[ObjKey, Obj]] = collections.defaultdict(dict)
        self.by_uid: dict[str, tuple[Key, ObjKey]] = {}
        self.events: collections.deque[Event] = collections.deque(maxlen=EVENT_LOG_SIZE)
        self.watchers: dict[Key, set[Watcher]] = collections.defaultdict(set)
        self.listeners: list[Callable[[Event], None]] = []
        self.state_file = state_file
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._persist_thread: threading.Thread | None = None

    # ---- persistence -------------------------------------------------------------------------------
    def load(self) -> bool:
        """Load a previous state; return whether one existed."""
        if self.state_file is None or not self.state_file.exists():
            return False
        data = orjson.loads(self.state_file.read_bytes())
        self.rv = int(data["rv"])
        self.log_start = self.rv
        for entry in data["objects"]:
            key = (entry["group"], entry["plural"])
            for obj in entry["items"]:
                meta = obj["metadata"]
                ok = (meta.get("namespace", ""), meta["name"])
                self.objects[key][ok] = obj
                self.by_uid[meta["uid"]] = (key, ok)
        return True

    def start_persisting(self) -> None:
        """Start the background writer (batches writes; temp file + rename)."""
        if self.state_file is None:
            return
        self._persist_thread = threading.Thread(
            target=self._persist_loop, name="apiserver-persist", daemon=True
        )
        self._persist_thread.start()

    def _persist_loop(self) -> None:
        while not self._stop.is_set():
            self._dirty.wait(0.5)
            if self._dirty.is_set():
                self._stop.wait(0.2)  # batch a burst of writes into one file write (at most 5 per second)
                self.flush()

    def flush(self) -> None:
        """Write the whole state now (atomically)."""
        if self.state_file is None:
            return
        with self.lock:
            self._dirty.clear()
            snapshot = {
                "rv": self.rv,
                "objects": [
                    {"group": k[0], "plural": k[1], "items": list(v.values())}
                    for k, v in self.objects.items()
                    if v
                ],
            }
        tmp = self.state_file.with_suffix(".tmp")
        # the state holds Secrets: readable by the owner only
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(orjson.dumps(snapshot))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.state_file)

    def close(self) -> None:
        """Stop the writer after a final flush and end every watch."""
        self._stop.set()
        self._dirty.set()  # wake the writer
        if self._persist_thread is not None:
            self._persist_thread.join(timeout=5)
        self.flush()
        with self.lock:
            for ws in self.watchers.values():
                for w in ws:
                    w.queue.put(None)

    # ---- access ------------------------------------------------------------------------------------
    def next_rv(self) -> int:
        """Allocate the next resourceVersion (caller holds the lock)."""
        self.rv += 1
        return self.rv

    def get(self, key: Key, ns: str, name: str) -> Obj | None:
        """The stored object or None."""
        return self.objects[key].get((ns, name))

    def by_uid_get(self, uid: str) -> Obj | None:
        """The stored object with this uid, or None."""
        loc = self.by_uid.get(uid)
        if loc is None:
            return None
        return self.objects[loc[0]].get(loc[1])

    def items(self, key: Key, ns: str | None) -> list[Obj]:
        """Objects of one resource (one namespace or all), sorted by namespace then name."""
        objs = self.objects[key]
        if ns is None:
            return [objs[k] for k in sorted(objs)]
        return [objs[k] for k in sorted(k for k in objs if k[0] == ns)]

    def commit(self, key: Key, obj: Obj, prev: Obj | None) -> Obj:
        """Store ``obj`` (ADDED if ``prev`` is None) with a fresh resourceVersion; return it."""
        with self.lock:
            rv = self.next_rv()
            obj["metadata"]["resourceVersion"] = str(rv)
            meta = obj["metadata"]
            ok = (meta.get("namespace", ""), meta["name"])
            self.objects[key][ok] = obj
            self.by_uid[meta["uid"]] = (key, ok)
            self._emit(Event(rv, key, "MODIFIED" if prev is not None else "ADDED", obj, prev))
            return obj

    def remove(self, key: Key, obj: Obj) -> Obj:
        """Delete ``obj``; the DELETED event carries its last state with a new resourceVersion."""
        with self.lock:
            rv = self.next_rv()
            meta = obj["metadata"]
            ok = (meta.get("namespace", ""), meta["name"])
            prev = self.objects[key].pop(ok, None)
            self.by_uid.pop(meta["uid"], None)
            final = dict(obj)
            final["metadata"] = dict(meta, resourceVersion=str(rv))
            self._emit(Event(rv, key, "DELETED", final, prev))
            return final

    def _emit(self, event: Event) -> None:
        self.events.append(event)
        self._dirty.set()
        for w in self.watchers.get(event.key, ()):
            w.queue.put(event)
        for listener in self.listeners:
            listener(event)

    def watch(self, key: Key, since: int | None) -> tuple[Watcher, list[Event]] | None:
        """Subscribe; return the events after ``since`` to replay (None if ``since`` is too old)."""
        with self.lock:
            replay: list[Event] = []
            if since is not None and since < self.rv:
                log_start = (
                    self.events[0].rv - 1 if len(self.events) == self.events.maxlen else self.log_start
                )
                if since < log_start:
                    return None
                replay = [e for e in self.events if e.rv > since and e.key == key]
            w = Watcher(key)
            self.watchers[key].add(w)
            return w, replay

    def unwatch(self, w: Watcher) -> None:
        """End a subscription."""
        with self.lock:
            self.watchers[w.key].discard(w)
