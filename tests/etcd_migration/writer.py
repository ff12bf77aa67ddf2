"""A client that writes sequential keys during a migration and measures the longest write gap."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from blocks.etcd_client import EtcdClient


@dataclass
class WriteStats:
    """What the writer saw.

    Attributes:
        acked: Sequence numbers whose put was acknowledged.
        failures: Failed put attempts.
        longest_failed_run: Most consecutive failed attempts.
        longest_gap_seconds: Longest time between the first failure after a success and the next success.
        switches: Endpoint switches (``(seconds since start, endpoint)``).
    """

    acked: list[int] = field(default_factory=list)
    failures: int = 0
    longest_failed_run: int = 0
    longest_gap_seconds: float = 0.0
    switches: list[tuple[float, str]] = field(default_factory=list)


class SequentialWriter(threading.Thread):
    """Writes ``<prefix><n>`` = ``n`` for n = 0, 1, ... through one endpoint at a time.

    On a failure the client is dropped and the next endpoint of ``endpoints`` is used (a client that
    fails over between the old and the new LoadBalancer addresses); :meth:`switch_to` moves it at once.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        prefix: str = "/migration/seq/",
        timeout: float = 0.5,
        failover_after: int = 1,
        client_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.endpoints = list(endpoints)
        self.prefix = prefix
        self.timeout = timeout
        self.failover_after = failover_after
        self.client_kwargs = dict(client_kwargs or {})  # TLS and auth of the client
        self.stats = WriteStats()
        self._stop_event = threading.Event()
        self._index = 0
        self._wanted: int | None = None
        self._t0 = time.monotonic()

    def switch_to(self, index: int) -> None:
        """Ask the writer to use ``endpoints[index]`` from its next write on."""
        self._wanted = index

    def stop(self) -> WriteStats:
        """Stop writing and return the statistics."""
        self._stop_event.set()
        self.join(timeout=30)
        return self.stats

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        client: EtcdClient | None = None
        n = 0
        run = 0
        gap_start: float | None = None
        while not self._stop_event.is_set():
            if self._wanted is not None and self._wanted != self._index:
                self._index, self._wanted = self._wanted, None
                if client is not None:
                    await client.close()
                    client = None
                self.stats.switches.append((time.monotonic() - self._t0, self.endpoints[self._index]))
            try:
                if client is None:
                    client = EtcdClient(
                        [self.endpoints[self._index]], timeout=self.timeout, **self.client_kwargs
                    )
                    await client.connect()
                await client.put(f"{self.prefix}{n:08d}", str(n))
            except Exception:
                self.stats.failures += 1
                run += 1
                self.stats.longest_failed_run = max(self.stats.longest_failed_run, run)
                if gap_start is None:
                    gap_start = time.monotonic()
                if client is not None:
                    await client.close()
                    client = None
                if run % self.failover_after == 0:  # fail over to the next endpoint
                    self._index = (self._index + 1) % len(self.endpoints)
                    self.stats.switches.append((time.monotonic() - self._t0, self.endpoints[self._index]))
                await asyncio.sleep(0.005)
                continue
            if gap_start is not None:
                self.stats.longest_gap_seconds = max(
                    self.stats.longest_gap_seconds, time.monotonic() - gap_start
                )
                gap_start = None
            run = 0
            self.stats.acked.append(n)
            n += 1
            await asyncio.sleep(0.002)
        if client is not None:
            await client.close()


async def read_all(endpoint: str, prefix: str = "/migration/seq/", **client_kwargs: Any) -> dict[int, bytes]:
    """Every written key under ``prefix`` (sequence number -> value)."""
    async with EtcdClient([endpoint], timeout=10, **client_kwargs) as etcd:
        kvs = await etcd.get_prefix(prefix)
    return {int(kv.key.decode().rsplit("/", 1)[1]): kv.value for kv in kvs}


def member_names(endpoint: str, timeout: float = 30.0) -> list[str]:
    """The member names through ``endpoint`` (a client LoadBalancer), retried while the answer is
    transient: right after the final ``--initial-cluster`` rollout a restarted pod's endpoint can lag
    its readiness briefly, as on a real cluster; a permanent error fails at once."""
    from stateferry.errors import TransientError

    async def go() -> list[str]:
        async with EtcdClient([endpoint], timeout=5) as etcd:
            return sorted(m.name for m in await etcd.member_list())

    deadline = time.monotonic() + timeout
    while True:
        try:
            return asyncio.run(go())
        except TransientError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
