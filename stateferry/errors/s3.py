"""Classify what an S3 server answered through minio or botocore."""

from __future__ import annotations

from typing import Any

from stateferry.errors.matching import context_prefix, http_status_error, is_instance
from stateferry.errors.taxonomy import NotFound, PermanentError, StateferryError, TransientError

_S3_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "ServiceUnavailable",
        "InternalError",
        "RequestTimeout",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequests",
        "OperationAborted",
    }
)
#: codes of an absent bucket or object (minio answers a HEAD's bare 404 with these too): ``NotFound``
_S3_MISSING = frozenset({"NoSuchBucket", "NoSuchKey", "ResourceNotFound"})
_S3_PERMANENT_FIXES = {
    "NoSuchBucket": "the bucket does not exist: create it or fix the bucket name",
    "NoSuchKey": "the object does not exist: check the key",
    "AccessDenied": "the credentials lack permission on this bucket/object: grant the permission or use "
    "another access key",
    "InvalidAccessKeyId": "the server does not know this access key: check ObjectStore.access_key",
    "SignatureDoesNotMatch": "the request signature was rejected: check ObjectStore.secret_key "
    "(and ObjectStore.region)",
    "InvalidBucketName": "the bucket name is not valid: use 3-63 lowercase letters, digits, dots and hyphens",
    "BucketAlreadyOwnedByYou": "the bucket already exists and is yours: nothing to create",
    "BucketAlreadyExists": "the bucket name is taken: choose another name",
    "BucketNotEmpty": "the bucket is not empty: delete its objects first",
    "RequestTimeTooSkewed": "the local clock differs too much from the server's: synchronise the clock",
    "AuthorizationHeaderMalformed": "the region does not match the server's: check ObjectStore.region",
    "NotImplemented": "the server does not implement this S3 operation: use a fallback",
}


def _s3_error(code: str, message: str, status: int | None, context: str) -> StateferryError:
    detail = f" ({message})" if message else ""
    status_text = f" HTTP {status}" if status else ""
    base = f"{context_prefix(context)}S3 answered{status_text} {code}{detail}"
    if code in _S3_TRANSIENT_CODES or (
        code not in _S3_PERMANENT_FIXES and status and (status >= 500 or status == 429)
    ):
        return TransientError(f"{base} (transient: a retry may succeed)")
    fix = _S3_PERMANENT_FIXES.get(code, "the request was refused: fix it before retrying")
    kind = NotFound if code in _S3_MISSING else PermanentError
    return kind(f"{base}. {fix}")


def from_s3(exc: BaseException, context: str) -> StateferryError | None:
    """Classify minio's ``S3Error``/``ServerError`` and botocore's errors (by S3 error code or status)."""
    if is_instance(exc, "minio.error", "S3Error"):
        response = getattr(exc, "response", None)
        status = getattr(response, "status", None)
        return _s3_error(
            str(getattr(exc, "code", "") or ""), str(getattr(exc, "message", "") or ""), status, context
        )
    if is_instance(exc, "minio.error", "ServerError"):
        return http_status_error(int(getattr(exc, "status_code", 500)), "the S3 server", str(exc), context)
    if is_instance(exc, "minio.error", "InvalidResponseError"):
        code = int(getattr(exc, "_code", 0) or 0)
        return http_status_error(code or 502, "the S3 server (non-XML response)", "", context)
    if is_instance(exc, "botocore.exceptions", "ClientError"):
        body: dict[str, Any] = getattr(exc, "response", {}) or {}
        error = body.get("Error", {}) or {}
        status = (body.get("ResponseMetadata", {}) or {}).get("HTTPStatusCode")
        return _s3_error(
            str(error.get("Code", "") or ""), str(error.get("Message", "") or ""), status, context
        )
    if is_instance(exc, "botocore.exceptions", "SSLError"):
        return PermanentError(
            f"{context_prefix(context)}TLS to the S3 endpoint failed ({exc}): check "
            "ObjectStore.ca_bundle and ObjectStore.secure"
        )
    if is_instance(
        exc,
        "botocore.exceptions",
        "EndpointConnectionError",
        "ConnectionClosedError",
        "ReadTimeoutError",
        "ConnectTimeoutError",
        "ProxyConnectionError",
        "ResponseStreamingError",
        "HTTPClientError",
        "ConnectionError",
    ):
        return TransientError(f"{context_prefix(context)}could not reach the S3 endpoint: {exc}")
    if is_instance(exc, "botocore.exceptions", "NoCredentialsError", "PartialCredentialsError"):
        return PermanentError(
            f"{context_prefix(context)}{exc}: set ObjectStore.access_key and ObjectStore.secret_key"
        )
    return None
