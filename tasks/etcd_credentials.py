"""Client TLS and auth for every etcd call of the stretch migration (issue 13).

The flow enters :func:`use_credentials` once; every ``EtcdClient`` the migration tasks build goes
through :func:`etcd_client`, so compact, defrag, member add/promote/remove, move-leader, health and
status all use the same CA, client certificate and root user. Nothing here is ever logged; the repr
is redacted.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from blocks.etcd_client import EtcdClient

if TYPE_CHECKING:
    from blocks.etcd import EtcdCluster


@dataclass(frozen=True)
class EtcdCredentials:
    """PEMs and user/password for the source etcd's client port (all optional)."""

    ca_cert: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    username: str | None = None
    password: str | None = None
    server_name: str | None = None  # TLS name all member certificates cover (members are dialled by IP)

    def __repr__(self) -> str:
        return (
            f"EtcdCredentials(tls={self.ca_cert is not None}, mtls={self.client_cert is not None}, "
            f"auth={self.username is not None})"
        )

    @property
    def scheme(self) -> str:
        """``https`` when a CA is set, else ``http``."""
        return "https" if self.ca_cert else "http"

    @classmethod
    def from_block(cls, block: EtcdCluster) -> EtcdCredentials:
        """The credentials of an :class:`~blocks.etcd.EtcdCluster` block (endpoints are not used)."""
        return cls(
            ca_cert=block.ca_cert.get_secret_value() if block.ca_cert else None,
            client_cert=block.client_cert.get_secret_value() if block.client_cert else None,
            client_key=block.client_key.get_secret_value() if block.client_key else None,
            username=block.username,
            password=block.password.get_secret_value() if block.password else None,
        )


_CURRENT: contextvars.ContextVar[EtcdCredentials | None] = contextvars.ContextVar(
    "stateferry_etcd_credentials", default=None
)


@contextlib.contextmanager
def use_credentials(creds: EtcdCredentials) -> Iterator[None]:
    """Make ``creds`` the credentials of every :func:`etcd_client` built inside the block."""
    token = _CURRENT.set(creds)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def refine_credentials(**changes: str | None) -> EtcdCredentials:
    """Fill what the credentials in force leave empty (a block's values always win); return the result.

    The preflight calls it with what it read from the source (the TLS server name, the CA and client
    certificate the members mount) inside the flow's :func:`use_credentials` block, whose exit
    restores what was in force before.
    """
    creds = current_credentials()
    fill = {k: v for k, v in changes.items() if v is not None and getattr(creds, k) is None}
    refined = dataclasses.replace(creds, **fill)
    _CURRENT.set(refined)
    return refined


def current_credentials() -> EtcdCredentials:
    """The credentials in force (empty: plain http without auth)."""
    return _CURRENT.get() or EtcdCredentials()


def etcd_client(endpoints: Sequence[str], *, timeout: float) -> EtcdClient:
    """An ``EtcdClient`` to ``endpoints`` with the credentials in force.

    Endpoints without a scheme get ``https://`` when a CA is set; the TLS server name is the one the
    preflight found in the members' certificate (members are dialled by LoadBalancer or pod IP).
    """
    creds = current_credentials()
    urls = [e if "://" in e or not creds.ca_cert else f"https://{e}" for e in endpoints]
    return EtcdClient(
        urls,
        ca_cert=creds.ca_cert,
        cert_chain=creds.client_cert,
        cert_key=creds.client_key,
        user=creds.username,
        password=creds.password,
        timeout=timeout,
        tls_server_name=creds.server_name if creds.ca_cert else None,
    )
