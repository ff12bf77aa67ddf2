"""The S3 writability probe (I/O); the verdict is :func:`planning.storage_probe.judge_probe`'s."""

from __future__ import annotations

import io
from typing import Any

from planning.storage_probe import Answer, judge_probe, must_create_bucket
from stateferry.errors import PermanentError, translate


def _denied(exc: Exception) -> bool:
    """True when S3 answered "permission denied" (``AccessDenied``; not a bad key or signature,
    which are 403 too and are reported as such)."""
    return str(getattr(exc, "code", "") or "") in ("AccessDenied", "AllAccessDisabled")


def probe_s3(client: Any, bucket: str, key: str, context: str, *, rotation: bool) -> list[str]:
    """Check the bucket (creating it only when reported missing), write ``key``, try to remove it.

    Returns:
        Warnings about what the bucket refuses that retention needs (see ``judge_probe``).

    Raises:
        StateferryError: (translated) server down, wrong credentials, writing denied, ...
    """
    exists: Answer
    try:
        exists = "ok" if client.bucket_exists(bucket) else "missing"
    except Exception as exc:
        if not _denied(exc):
            raise translate(exc, context=context) from None
        exists = "denied"
    put: Answer = "ok"
    try:
        if must_create_bucket(exists):
            client.make_bucket(bucket)
        client.put_object(bucket, key, io.BytesIO(b"ok"), 2)
    except Exception as exc:
        if not _denied(exc):
            raise translate(exc, context=context) from None
        put = "denied"
    delete: Answer | None = None
    if put == "ok":
        try:
            client.remove_object(bucket, key)
            delete = "ok"
        except Exception as exc:
            delete = "denied" if _denied(exc) else "error"
    verdict = judge_probe(exists, put, delete, rotation=rotation)
    if not verdict.writable:
        raise PermanentError(f"{context}: {verdict.problem}")
    return list(verdict.warnings)
