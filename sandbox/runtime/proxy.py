"""TCP proxies for LoadBalancer Services: ``<lb-ip>:<port>`` -> a ready pod's ``<pod-ip>:<targetPort>``."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
from collections.abc import Coroutine, Sequence
from typing import Any

log = logging.getLogger(__name__)

Backend = tuple[str, int]


class _Listener:
    def __init__(self, server: asyncio.base_events.Server, backends: list[Backend]) -> None:
        self.server = server
        self.backends = backends
        self.counter = itertools.count()


class ProxyManager:
    """Runs every TCP proxy of one process on a private asyncio loop in a daemon thread.

    Connections are accepted even without backends and closed at once (like a cloud LB with no
    healthy targets). Backends are tried round-robin; a backend that refuses is skipped.
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="lb-proxy", daemon=True)
        self._thread.start()
        self._listeners: dict[Backend, _Listener] = {}

    def _call(self, coro: Coroutine[Any, Any, None], timeout: float = 10.0) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def ensure(self, listen: Backend, backends: Sequence[Backend]) -> None:
        """Listen on ``listen`` (if not yet) and route new connections to ``backends``."""
        self._call(self._ensure(listen, list(backends)))

    def remove(self, listen: Backend) -> None:
        """Stop listening on ``listen`` and close its server."""
        self._call(self._remove(listen))

    def listening(self) -> dict[Backend, list[Backend]]:
        """Return listen address -> current backends."""
        return {k: list(v.backends) for k, v in self._listeners.items()}

    def close(self) -> None:
        """Stop every listener and the loop thread."""
        with contextlib.suppress(Exception):
            for listen in list(self._listeners):
                self.remove(listen)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    async def _ensure(self, listen: Backend, backends: list[Backend]) -> None:
        existing = self._listeners.get(listen)
        if existing is not None:
            existing.backends = backends
            return
        holder: dict[str, _Listener] = {}

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._handle(holder["l"], reader, writer)

        server = await asyncio.start_server(handle, listen[0], listen[1], reuse_address=True)
        holder["l"] = _Listener(server, backends)
        self._listeners[listen] = holder["l"]

    async def _remove(self, listen: Backend) -> None:
        lst = self._listeners.pop(listen, None)
        if lst is not None:
            lst.server.close()
            with contextlib.suppress(Exception):
                await lst.server.wait_closed()

    async def _handle(
        self, lst: _Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        backends = list(lst.backends)
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        if backends:
            start = next(lst.counter)
            for i in range(len(backends)):
                host, port = backends[(start + i) % len(backends)]
                try:
                    upstream = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=3)
                    break
                except (TimeoutError, OSError):
                    continue
        if upstream is None:
            writer.close()
            return
        up_reader, up_writer = upstream
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                with contextlib.suppress(Exception):
                    w.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()
