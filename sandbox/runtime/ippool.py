"""Loopback IP pools of a sandbox cluster (pods, load balancers)."""

from __future__ import annotations

import ipaddress
import threading


class PoolExhausted(RuntimeError):
    """No free address is left in a pool."""


class IpPool:
    """A thread-safe pool of IPv4 addresses handed out to named owners.

    Args:
        first: the first address of the pool, e.g. ``127.1.1.1``.
        size: how many consecutive addresses the pool holds (addresses ending in .0/.255 are skipped).
    """

    def __init__(self, first: str, size: int) -> None:
        start = int(ipaddress.IPv4Address(first))
        self._addresses = [
            str(ipaddress.IPv4Address(start + i)) for i in range(size) if (start + i) % 256 not in (0, 255)
        ]
        self._by_owner: dict[str, str] = {}
        self._lock = threading.Lock()

    def __contains__(self, ip: object) -> bool:
        return ip in self._addresses

    def allocate(self, owner: str) -> str:
        """Return the owner's address, allocating the lowest free one the first time."""
        with self._lock:
            if owner in self._by_owner:
                return self._by_owner[owner]
            used = set(self._by_owner.values())
            for ip in self._addresses:
                if ip not in used:
                    self._by_owner[owner] = ip
                    return ip
        raise PoolExhausted(f"no free address left in pool starting at {self._addresses[0]}")

    def reserve(self, owner: str, ip: str) -> bool:
        """Record that ``owner`` already holds ``ip`` (after a restart). False if taken by another owner."""
        with self._lock:
            for other, held in self._by_owner.items():
                if held == ip and other != owner:
                    return False
            if ip not in self._addresses:
                return False
            self._by_owner[owner] = ip
            return True

    def release(self, owner: str) -> None:
        """Give the owner's address back to the pool (no-op if it holds none)."""
        with self._lock:
            self._by_owner.pop(owner, None)

    def owner_of(self, ip: str) -> str | None:
        """Return who holds ``ip``, if anyone."""
        with self._lock:
            for owner, held in self._by_owner.items():
                if held == ip:
                    return owner
        return None

    def allocations(self) -> dict[str, str]:
        """Return a copy of the owner -> address map."""
        with self._lock:
            return dict(self._by_owner)


def cluster_octet(cluster: str, base: int = 1) -> int:
    """Second octet of a cluster's loopback range: ``source`` = ``base`` (1), ``target`` = ``base + 1``."""
    known = {"source": base, "target": base + 1}
    if cluster in known:
        return known[cluster]
    return base + 2 + (sum(cluster.encode()) % 50)


def api_server_ip(octet: int) -> str:
    """Address of a cluster's API server (and of its Node): ``127.<c>.0.1``."""
    return f"127.{octet}.0.1"


def pod_pool(octet: int) -> IpPool:
    """Pod addresses ``127.<c>.1.1`` .. ``127.<c>.63.254``."""
    return IpPool(f"127.{octet}.1.1", 63 * 256)


def load_balancer_pool(octet: int) -> IpPool:
    """LoadBalancer addresses ``127.<c>.200.1`` .. ``127.<c>.200.254``."""
    return IpPool(f"127.{octet}.200.1", 255)
