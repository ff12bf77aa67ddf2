"""S3 clients tuned for mirroring: connection pools sized for the transfer workers, unsigned payloads.

``ObjectStore.minio_client()`` builds a general-purpose client whose pool keeps 10 connections; the
mirror runs ``workers`` parallel transfers (and up to 3 parallel parts each for multipart objects) and
would churn connections, so it builds its own client from the same block fields with a pool sized for
that and short connect retries (per-object retries are done by the transfer code, which knows what is
safe to repeat).

Payloads are sent as ``UNSIGNED-PAYLOAD`` (what the MinIO client already does over TLS) with a
``Content-MD5`` where the body is in memory: over plain HTTP the MinIO client would otherwise hash every
body with SHA-256 for the signature, which costs more CPU than the copy itself. Integrity does not
depend on that hash: the mirror checks the ETag the destination computed on the bytes it stored against
the ETag of the source GET (see ``tasks.s3_transfer``), and ``Content-MD5`` makes the server reject a
damaged in-memory body. Streamed bodies (file-like) are sent with their ``Content-Length`` and no hash.
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import certifi
import urllib3
from minio import Minio
from minio.credentials import Credentials
from minio.helpers import md5sum_hash
from minio.signer import sign_v4_s3
from minio.time import to_amz_date, utcnow
from urllib3.util import Retry, Timeout

if TYPE_CHECKING:
    from blocks.object_store import ObjectStore

__all__ = ["MirrorMinio", "describe_store", "mirror_client", "put_stream", "same_store"]

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"


class MirrorMinio(Minio):
    """A ``Minio`` client that signs requests with ``UNSIGNED-PAYLOAD`` and accepts streamed bodies."""

    def _build_headers(
        self,
        host: str,
        headers: dict[str, Any] | None = None,
        body: Any = None,
        creds: Credentials | None = None,
    ) -> tuple[dict[str, Any], datetime]:
        headers = headers or {}
        headers["Host"] = host
        headers["User-Agent"] = self._user_agent
        if isinstance(body, (bytes, bytearray)):
            headers["Content-Length"] = str(len(body))
            if body and "Content-MD5" not in headers:
                headers["Content-MD5"] = md5sum_hash(bytes(body))
        if creds:
            headers["x-amz-content-sha256"] = UNSIGNED_PAYLOAD
            if creds.session_token:
                headers["X-Amz-Security-Token"] = creds.session_token
        date = utcnow()
        headers["x-amz-date"] = to_amz_date(date)
        return headers, date

    def direct(
        self,
        method: str,
        bucket: str,
        key: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> urllib3.BaseHTTPResponse:
        """One signed request on the object ``bucket/key``, its response whatever the status.

        The hot path of small-object copies: minio's URL building and signing, sent straight to the
        host's connection pool (no ``PoolManager`` routing, header-dict copies or error parsing, a
        fifth of the client CPU per object). The body is read in full; callers check the status and
        repeat a failed request through the regular minio API, which raises its proper ``S3Error``.
        """
        region = self._get_region(bucket)
        url = self._base_url.build(method=method, region=region, bucket_name=bucket, object_name=key)
        creds = self._provider.retrieve() if self._provider else None
        sent, date = self._build_headers(url.netloc, dict(headers or {}), body, creds)
        if creds:
            sent = sign_v4_s3(
                method=method,
                url=url,
                region=region,
                headers=sent,
                credentials=creds,
                content_sha256=UNSIGNED_PAYLOAD,
                date=date,
            )
        pool = self._http.connection_from_host(url.hostname, url.port, url.scheme)
        return pool.urlopen(
            method, url.path, body=body, headers=sent, assert_same_host=False, decode_content=False
        )


def put_stream(client: Minio, bucket: str, key: str, body: Any, length: int, headers: dict[str, str]) -> str:
    """PUT one object from a file-like ``body`` of ``length`` bytes (one request, no client-side hash).

    Args:
        client: A :class:`MirrorMinio` client.
        bucket: Destination bucket.
        key: Destination key.
        body: Object with ``read(n)``, e.g. the raw stream of a source GET.
        length: Exact number of bytes ``body`` yields (sent as ``Content-Length``).
        headers: Content-Type, preserved headers and ``x-amz-meta-*`` metadata.

    Returns:
        The ETag the destination computed (without quotes, lower case).

    Raises:
        minio.error.S3Error: The destination refused the request.
    """
    if not isinstance(client, MirrorMinio):
        raise TypeError("put_stream needs a MirrorMinio client (tasks.s3_clients.mirror_client)")
    sent: dict[str, Any] = dict(headers)
    sent["Content-Length"] = str(length)
    response = client._url_open(  # minio's own URL building, signing and error parsing
        "PUT", client._get_region(bucket), bucket_name=bucket, object_name=key, body=body, headers=sent
    )
    return str(response.headers.get("etag", "")).strip('"').lower()


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


def mirror_client(store: ObjectStore, pool_size: int = 16, *, connect_timeout: float = 30.0) -> MirrorMinio:
    """Build a MinIO client for mirroring with connection pools sized for ``pool_size`` transfers.

    Args:
        store: The ObjectStore block.
        pool_size: Parallel transfers; the pool keeps connections for them, their multipart parts
            (3 in parallel) and the listings.
        connect_timeout: Seconds to wait for a TCP connection. urllib3 also applies it to each
            write of the request body (the read timeout starts only once the request is sent), so
            it must outlast a busy server that stops reading an upload for a while: a 5 s value
            aborted 20 MiB PUTs on a loaded machine.

    Returns:
        A :class:`MirrorMinio` client.
    """
    netloc, secure = _split(store)
    ca_bundle = getattr(store, "ca_bundle", None)
    ca_certs = _ca_file(ca_bundle.get_secret_value()) if ca_bundle is not None else certifi.where()
    http = urllib3.PoolManager(
        timeout=Timeout(connect=connect_timeout, read=120.0),
        maxsize=max(pool_size, 1) * 3 + 4,  # 2 x small transfers, parts of large ones, listings
        block=False,
        blocksize=256 * 1024,  # streamed bodies are sent in 256 KiB writes, not urllib3's 16 KiB
        cert_reqs="CERT_REQUIRED",
        ca_certs=ca_certs,
        retries=Retry(total=2, connect=2, read=0, status=0, backoff_factor=0.2),
    )
    return MirrorMinio(
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
