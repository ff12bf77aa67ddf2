"""The etcd adapter's endpoints: parse what the user wrote, resolve it to the IPv4 address etcd3aio dials.

etcd3aio dials ``ipv4:`` targets only, so host names are resolved here (to IPv4); with TLS the
original host name is the TLS server name (:func:`tls_server_name`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from stateferry.errors import InputError, PermanentError, translate

__all__ = ["DEFAULT_CLIENT_PORT", "Resolved", "Target", "parse_target", "resolve", "tls_server_name"]

DEFAULT_CLIENT_PORT = 2379


@dataclass(frozen=True)
class Target:
    """A client endpoint as the user wrote it, split into host and port."""

    original: str  # as the user wrote it, e.g. "https://etcd-0.etcd:2379"
    host: str  # host part as written
    port: int


@dataclass
class Resolved:
    """A :class:`Target` with the address etcd3aio dials."""

    target: Target
    address: str  # "ipv4:port" for etcd3aio


def parse_target(endpoint: str) -> Target:
    """Parse ``host[:port]`` or ``http(s)://host[:port]`` (the port defaults to 2379).

    Raises:
        InputError: The scheme is not http(s), the host is an IPv6 address, or it is not host:port.
    """
    text = endpoint.strip()
    if "://" in text:
        scheme, _, text = text.partition("://")
        if scheme.lower() not in ("http", "https"):
            raise InputError(
                "endpoints", f"unsupported scheme in {endpoint!r}", "use host:port or http(s)://host:port"
            )
    text = text.rstrip("/")
    if text.startswith("["):
        raise InputError(
            "endpoints", f"{endpoint!r} is IPv6", "etcd3aio dials IPv4 only: use an IPv4 address or name"
        )
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = text, str(DEFAULT_CLIENT_PORT)
    if not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise InputError("endpoints", f"{endpoint!r} is not host:port", "use host:port, e.g. 127.0.0.1:2379")
    return Target(original=endpoint, host=host, port=int(port_text))


def _is_ipv4(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


async def resolve(target: Target, timeout: float) -> Resolved:
    """Resolve ``target``'s host to its first IPv4 address (``localhost`` is 127.0.0.1).

    Raises:
        TransientError: Name resolution failed temporarily or timed out.
        PermanentError: The name does not resolve, or has no IPv4 address.
    """
    if _is_ipv4(target.host):
        return Resolved(target, f"{target.host}:{target.port}")
    host = "127.0.0.1" if target.host == "localhost" else target.host
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, target.port, family=socket.AF_INET, type=socket.SOCK_STREAM),
            timeout,
        )
    except Exception as exc:
        raise translate(exc, context=f"resolving etcd endpoint {target.original!r}") from exc
    if not infos:
        raise PermanentError(f"etcd endpoint {target.original!r} has no IPv4 address: check the host name")
    return Resolved(target, f"{infos[0][4][0]}:{target.port}")


def tls_server_name(targets: Sequence[Target]) -> str | None:
    """The first host name (not an IPv4 address) among ``targets``: the name TLS certificates carry."""
    for target in targets:
        if not _is_ipv4(target.host):
            return target.host
    return None
