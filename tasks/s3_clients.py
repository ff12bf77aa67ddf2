"""S3 clients tuned for mirroring: one connection pool sized for the transfer workers.

``ObjectStore.minio_client()`` builds a general-purpose client whose pool keeps 10 connections; the
mirror runs ``workers`` parallel transfers and would churn connections, so it builds its own client from
the same block fields with a pool of ``workers`` connections and short connect retries (per-object
retries are done by the transfer code, which knows what is safe to repeat).
"""

from __future__ import annotations

import os
import tempfile
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import certifi
import urllib3
from minio import Minio
from urllib3.util import Retry, Timeout

if TYPE_CHECKING:
    from blocks.object_store import ObjectStore

__all__ = ["describe_store", "mirror_client", "same_store"]

_CA_FILES: dict[str, str] = {}


def _ca_file(pem: str) -> str:
    """Write a PEM bundle to a private temp file once per process and return its path."""
    path = _CA_FILES.get(pem)
    if path is None:
        fd, path = tempfile.mkstemp(prefix="stateferry-ca-", suffix=".pem")
        with os.fdopen(fd, "w") as fh:
            fh.write(pem)
        _CA_FILES[pem] = path
    return path


def _split(store: ObjectStore) -> tuple[str, bool]:
    """Return (host:port, secure) of a store."""
    parsed = urlparse(store.url)
    return parsed.netloc, parsed.scheme == "https"


def mirror_client(store: ObjectStore, pool_size: int = 16, *, connect_timeout: float = 5.0) -> Minio:
    """Build a MinIO client for mirroring with a connection pool of ``pool_size``.

    Args:
        store: The ObjectStore block.
        pool_size: Connections kept per host (the number of parallel transfers).
        connect_timeout: Seconds to wait for a TCP connection.

    Returns:
        A ``minio.Minio`` client.
    """
    netloc, secure = _split(store)
    ca_bundle = getattr(store, "ca_bundle", None)
    ca_certs = _ca_file(ca_bundle.get_secret_value()) if ca_bundle is not None else certifi.where()
    http = urllib3.PoolManager(
        timeout=Timeout(connect=connect_timeout, read=120.0),
        maxsize=max(pool_size, 1) + 2,
        block=False,
        cert_reqs="CERT_REQUIRED",
        ca_certs=ca_certs,
        retries=Retry(total=2, connect=2, read=0, status=0, backoff_factor=0.2),
    )
    return Minio(
        netloc,
        access_key=store.access_key,
        secret_key=store.secret_key.get_secret_value(),
        secure=secure,
        region=store.region,
        http_client=http,
    )


def describe_store(store: ObjectStore) -> str:
    """Return the store's URL (never credentials) for messages."""
    return str(store.url)


def same_store(a: ObjectStore, b: ObjectStore) -> bool:
    """True when both blocks address the same S3 endpoint (server-side copy possible)."""
    return _split(a)[0].lower() == _split(b)[0].lower()
