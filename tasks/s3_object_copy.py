"""Move the bytes of one object from a source store to a destination store (the body of a mirror copy).

* Objects up to ``stream_min`` are read whole and written with one PUT (``Content-MD5`` set); with
  :class:`tasks.s3_clients.MirrorMinio` clients both requests take the lean
  :meth:`~tasks.s3_clients.MirrorMinio.direct` path (a failed request is repeated through the minio
  API, which raises the proper error).
* Larger objects up to ``single_put_max`` are piped from the GET into one PUT, never held whole.
* Larger ones go multipart, with the source's own part size when the source is multipart (so the
  multipart ETag stays comparable).
* Bytes in flight are capped by ``memory_budget`` (a byte semaphore), whatever the concurrency is.

Each copy returns the ETag of the source bytes read and the ETag the destination computed for what it
stored; :class:`tasks.s3_transfer.Transferrer` compares them.
"""

from __future__ import annotations

import hashlib
import io
import threading
from typing import Any

from minio import Minio

from planning.mirror import PRESERVED_HEADERS, USER_METADATA_PREFIX
from tasks.s3_clients import MirrorMinio, put_stream
from tasks.s3_listing import first_part_size

__all__ = ["BodyCopier", "Vanished", "etag_of", "preserved_headers", "s3_code"]

MiB = 1024 * 1024


class Vanished(Exception):
    """The source object disappeared between listing and copy."""


def s3_code(exc: BaseException) -> str:
    """The S3 error code of an exception (``""`` when it has none)."""
    return str(getattr(exc, "code", "") or "")


def etag_of(value: Any) -> str:
    """An ETag without quotes, lower case (``""`` for ``None``)."""
    return str(value or "").strip('"').lower()


def preserved_headers(headers: Any) -> tuple[str, dict[str, str]]:
    """Split response headers into (content type, headers/metadata to send with the PUT)."""
    content_type = "application/octet-stream"
    meta: dict[str, str] = {}
    for name, value in headers.items():
        low = name.lower()
        if low == "content-type":
            content_type = value
        elif low in PRESERVED_HEADERS or low.startswith(USER_METADATA_PREFIX):
            meta[low] = value
    return content_type, meta


class _ByteBudget:
    """A counting semaphore over bytes: at most ``limit`` bytes of bodies held at once."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._free = limit
        self._cond = threading.Condition()

    def acquire(self, n: int) -> int:
        n = max(1, min(n, self._limit))
        with self._cond:
            while self._free < n:
                self._cond.wait()
            self._free -= n
        return n

    def release(self, n: int) -> None:
        with self._cond:
            self._free += n
            self._cond.notify_all()


class _RawReader:
    """File-like view of a urllib3 response returning stored bytes (no Content-Encoding decoding).

    With ``digest=True`` it also keeps the MD5 of every byte read (to confirm a streamed copy of a
    multipart source, whose ETag is not an MD5, against the destination's MD5 ETag).
    """

    def __init__(self, response: Any, *, digest: bool = False) -> None:
        self._response = response
        self.md5 = hashlib.md5(usedforsecurity=False) if digest else None

    def read(self, n: int = -1) -> bytes:
        data: bytes = self._response.read(None if n is None or n < 0 else n, decode_content=False)
        if self.md5 is not None:
            self.md5.update(data)
        return data


class BodyCopier:
    """Copies object bodies between two stores, memory-bounded.

    Args:
        source: Source client.
        destination: Destination client.
        memory_budget: Largest number of body bytes held in memory at once.
        single_put_max: Objects up to this size are copied with one PUT, multipart sources too (their
            destination copy is then single-part; its bytes are confirmed by the MD5 of the stream).
        part_size: Part size for multipart copies of single-part sources larger than ``single_put_max``.
        stream_min: Objects larger than this are piped from the GET into the PUT instead of being read
            into memory first.
    """

    def __init__(
        self,
        source: Minio,
        destination: Minio,
        *,
        memory_budget: int = 256 * MiB,
        single_put_max: int = 64 * MiB,
        part_size: int = 16 * MiB,
        stream_min: int = 1 * MiB,
    ) -> None:
        self.source = source
        self.destination = destination
        self.budget = _ByteBudget(memory_budget)
        self.single_put_max = single_put_max
        self.part_size = part_size
        self.stream_min = stream_min
        self._lean = isinstance(source, MirrorMinio) and isinstance(destination, MirrorMinio)

    def copy(
        self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str, size: int, listed_etag: str
    ) -> tuple[str, str]:
        """Copy one object; return (ETag of the source bytes read, ETag the destination stored).

        Raises:
            Vanished: The source object no longer exists.
            Exception: Any request failure (the caller retries transient ones).
        """
        if size <= self.single_put_max and ("-" not in listed_etag or self._can_stream(size)):
            if self._lean and size <= self.stream_min:
                return self._copy_small(src_bucket, src_key, dst_bucket, dst_key, size)
            return self._copy_single(src_bucket, src_key, dst_bucket, dst_key, size)
        part = first_part_size(self.source, src_bucket, src_key) if "-" in listed_etag else None
        return self._copy_multipart(src_bucket, src_key, dst_bucket, dst_key, size, part or self.part_size)

    def _can_stream(self, size: int) -> bool:
        return size > self.stream_min and isinstance(self.destination, MirrorMinio)

    def _get(self, bucket: str, key: str) -> Any:
        try:
            return self.source.get_object(bucket, key)
        except Exception as exc:
            if s3_code(exc) == "NoSuchKey":
                raise Vanished(key) from exc
            raise

    def _copy_small(
        self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str, size: int
    ) -> tuple[str, str]:
        """GET whole, PUT whole, both on the lean request path (failures repeat through minio)."""
        assert isinstance(self.source, MirrorMinio) and isinstance(self.destination, MirrorMinio)
        held = self.budget.acquire(size)
        try:
            got = self.source.direct("GET", src_bucket, src_key)
            if got.status == 200:
                content_type, meta = preserved_headers(got.headers)
                headers = {"Content-Type": content_type, **meta}
                put = self.destination.direct("PUT", dst_bucket, dst_key, body=got.data, headers=headers)
                if put.status == 200:
                    written = etag_of(put.headers.get("etag"))
                else:
                    written = self._put_whole(dst_bucket, dst_key, got.data, content_type, meta)
                return etag_of(got.headers.get("etag")), written
        finally:
            self.budget.release(held)
        return self._copy_single(src_bucket, src_key, dst_bucket, dst_key, size)  # raises minio's error

    def _put_whole(self, bucket: str, key: str, data: bytes, content_type: str, meta: dict[str, str]) -> str:
        """PUT an in-memory body through the minio API; return the ETag the destination stored."""
        result = self.destination.put_object(
            bucket,
            key,
            io.BytesIO(data),
            len(data),
            content_type=content_type,
            metadata=meta,  # type: ignore[arg-type]
        )
        return etag_of(result.etag)

    def _copy_single(
        self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str, size: int
    ) -> tuple[str, str]:
        stream = self._can_stream(size)
        held = self.budget.acquire(min(size, 1 * MiB) if stream else size)
        try:
            response = self._get(src_bucket, src_key)
            try:
                content_type, meta = preserved_headers(response.headers)
                source_etag = etag_of(response.headers.get("etag"))
                if stream:
                    length = int(response.headers.get("content-length", size))
                    headers = {"Content-Type": content_type, **meta}
                    reader = _RawReader(response, digest="-" in source_etag)
                    written = put_stream(self.destination, dst_bucket, dst_key, reader, length, headers)
                    if reader.md5 is not None:  # multipart source: confirm by the MD5 of the bytes read
                        source_etag = reader.md5.hexdigest()
                    return source_etag, written
                data = response.read(decode_content=False)
            finally:
                response.close()
                response.release_conn()
            # len(data) may differ from the listing: the object changed since; copy what is there now.
            return source_etag, self._put_whole(dst_bucket, dst_key, data, content_type, meta)
        finally:
            self.budget.release(held)

    def _copy_multipart(
        self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str, size: int, part_size: int
    ) -> tuple[str, str]:
        part_size = max(part_size, 5 * MiB)
        held = self.budget.acquire(part_size * 3)  # minio uploads up to 3 parts in parallel
        try:
            response = self._get(src_bucket, src_key)
            try:
                content_type, meta = preserved_headers(response.headers)
                source_etag = etag_of(response.headers.get("etag"))
                length = int(response.headers.get("content-length", size))
                result = self.destination.put_object(
                    dst_bucket,
                    dst_key,
                    _RawReader(response),  # type: ignore[arg-type]
                    length,
                    content_type=content_type,
                    metadata=meta,  # type: ignore[arg-type]
                    part_size=part_size,
                )
            finally:
                response.close()
                response.release_conn()
            return source_etag, etag_of(result.etag)
        finally:
            self.budget.release(held)
