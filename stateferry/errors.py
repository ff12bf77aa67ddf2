"""The stateferry error taxonomy and the ONE place that classifies client-library errors.

Every step decides whether to retry by asking :func:`is_transient`; every task that talks to a
server converts what the client library raised with :func:`translate`, so the messages users see say
what was expected, what was found and what to do, never a deep client stack trace.

Client libraries are never imported here: an exception of, say, ``kubernetes.client.ApiException``
can only exist if ``kubernetes`` is already imported, so the classifiers look the classes up in
:data:`sys.modules`. Importing this module is therefore cheap.
"""

from __future__ import annotations

import errno
import json
import socket
import ssl
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = [
    "Conflict",
    "FieldCause",
    "InputError",
    "Invalid",
    "NotFound",
    "PermanentError",
    "PreconditionFailed",
    "StateferryError",
    "TransientError",
    "is_transient",
    "translate",
]


class StateferryError(Exception):
    """Base of every stateferry error; the message says expected / found / what to do.

    Attributes:
        causes: the fields a Kubernetes API named in its ``Status`` (422 Invalid, 409 Conflict).
    """

    causes: tuple[FieldCause, ...] = ()


class TransientError(StateferryError):
    """A failure that may go away on its own: retry (connection refused/reset, timeouts, 5xx, 429,
    etcd "too many requests", leader changes, "unhealthy cluster")."""


class PermanentError(StateferryError):
    """A failure that retrying cannot fix (4xx, authentication, invalid input)."""


class PreconditionFailed(PermanentError):
    """The observed state is not what the step requires (e.g. quorum would be at risk)."""


class NotFound(PermanentError):
    """An API answered 404: the object does not exist (test with ``isinstance``, never the text)."""


class Conflict(PermanentError):
    """An API answered 409: the object exists already or changed since it was read."""


class Invalid(PermanentError):
    """An API answered 422: the object (or the change to it) failed validation; the server's
    ``causes`` (:class:`FieldCause`) name the fields, e.g. one that is immutable."""


class FieldCause(NamedTuple):
    """One ``details.causes`` entry of a Kubernetes ``Status``: the field, the reason, the message."""

    field: str
    reason: str
    message: str


class InputError(PermanentError, ValueError):
    """Bad user input: names the field, the problem and the fix.

    It is also a :class:`ValueError`, so raising it inside a pydantic validator produces a
    ``ValidationError`` that carries the field location and this message.

    Args:
        field: The name of the offending field or parameter (e.g. ``"endpoint"``).
        problem: What is wrong with the value as given.
        fix: What the user should do instead.
    """

    def __init__(self, field: str, problem: str, fix: str) -> None:
        self.field = field
        self.problem = problem
        self.fix = fix
        super().__init__(f"{field}: {problem.rstrip('.')}. Fix: {fix}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.field, self.problem, self.fix))


# --------------------------------------------------------------------------------------------------
# helpers


def _cls(module: str, name: str) -> type[BaseException] | None:
    """Return the exception class ``module.name`` if that module is already imported."""
    mod = sys.modules.get(module)
    if mod is None:
        return None
    found = getattr(mod, name, None)
    return found if isinstance(found, type) and issubclass(found, BaseException) else None


def _isinstance(exc: BaseException, module: str, *names: str) -> bool:
    for name in names:
        cls = _cls(module, name)
        if cls is not None and isinstance(exc, cls):
            return True
    return False


def _prefix(context: str) -> str:
    return f"{context}: " if context else ""


def _http_status_error(status: int, what: str, detail: str, context: str) -> StateferryError:
    """Classify an HTTP status code: 408/429/5xx transient, other 4xx permanent."""
    detail = f": {detail}" if detail else ""
    base = f"{_prefix(context)}{what} answered HTTP {status}{detail}"
    if status in (408, 429) or status >= 500:
        return TransientError(f"{base} (transient: a retry may succeed)")
    hint = {
        400: "the request was rejected as malformed: fix the input named in the message",
        401: "the credentials were rejected: check the user/token/key configured in the block",
        403: "the credentials lack permission for this operation: grant it (RBAC/policy) or use others",
        404: "the object does not exist: check its name/namespace or create it first",
        409: "the object changed or already exists: re-read the current state and retry the step",
        422: "the object failed validation: fix the field named in the message",
    }.get(status, "the request was refused: fix the request before retrying")
    kind = {404: NotFound, 409: Conflict, 422: Invalid}.get(status, PermanentError)
    return kind(f"{base}. {hint}")


# --------------------------------------------------------------------------------------------------
# Kubernetes


def _k8s_status(body: Any) -> tuple[str, tuple[FieldCause, ...]]:
    """The message and the ``details.causes`` of a Kubernetes ``Status`` body."""
    if not body:
        return "", ()
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        parsed = json.loads(body)
    except (TypeError, ValueError):
        return str(body)[:300], ()
    if not isinstance(parsed, dict):
        return "", ()
    causes = ((parsed.get("details") or {}) if isinstance(parsed.get("details"), dict) else {}).get("causes")
    found = tuple(
        FieldCause(str(c.get("field") or ""), str(c.get("reason") or ""), str(c.get("message") or ""))
        for c in (causes if isinstance(causes, list) else [])
        if isinstance(c, dict)
    )
    return str(parsed.get("message") or parsed.get("reason") or ""), found


def _from_kubernetes(exc: BaseException, context: str) -> StateferryError | None:
    if _isinstance(exc, "kubernetes.client.exceptions", "ApiException"):
        status = getattr(exc, "status", None) or 0
        message, causes = _k8s_status(getattr(exc, "body", None))
        message = message or str(getattr(exc, "reason", "") or "")
        if status == 0:
            return TransientError(
                f"{_prefix(context)}Kubernetes API request failed without a response: {message}"
            )
        found = _http_status_error(int(status), "the Kubernetes API", message, context)
        found.causes = causes
        return found
    if _isinstance(exc, "kubernetes.config.config_exception", "ConfigException"):
        return InputError(
            "kubeconfig", f"{_prefix(context)}{exc}", "supply a valid kubeconfig and an existing context name"
        )
    return None


# --------------------------------------------------------------------------------------------------
# S3 (minio, botocore)

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
    base = f"{_prefix(context)}S3 answered{status_text} {code}{detail}"
    if code in _S3_TRANSIENT_CODES or (
        code not in _S3_PERMANENT_FIXES and status and (status >= 500 or status == 429)
    ):
        return TransientError(f"{base} (transient: a retry may succeed)")
    fix = _S3_PERMANENT_FIXES.get(code, "the request was refused: fix it before retrying")
    kind = NotFound if code in _S3_MISSING else PermanentError
    return kind(f"{base}. {fix}")


def _from_s3(exc: BaseException, context: str) -> StateferryError | None:
    if _isinstance(exc, "minio.error", "S3Error"):
        response = getattr(exc, "response", None)
        status = getattr(response, "status", None)
        return _s3_error(
            str(getattr(exc, "code", "") or ""), str(getattr(exc, "message", "") or ""), status, context
        )
    if _isinstance(exc, "minio.error", "ServerError"):
        return _http_status_error(int(getattr(exc, "status_code", 500)), "the S3 server", str(exc), context)
    if _isinstance(exc, "minio.error", "InvalidResponseError"):
        code = int(getattr(exc, "_code", 0) or 0)
        return _http_status_error(code or 502, "the S3 server (non-XML response)", "", context)
    if _isinstance(exc, "botocore.exceptions", "ClientError"):
        body: dict[str, Any] = getattr(exc, "response", {}) or {}
        error = body.get("Error", {}) or {}
        status = (body.get("ResponseMetadata", {}) or {}).get("HTTPStatusCode")
        return _s3_error(
            str(error.get("Code", "") or ""), str(error.get("Message", "") or ""), status, context
        )
    if _isinstance(exc, "botocore.exceptions", "SSLError"):
        return PermanentError(
            f"{_prefix(context)}TLS to the S3 endpoint failed ({exc}): check ObjectStore.ca_bundle and "
            "ObjectStore.secure"
        )
    if _isinstance(
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
        return TransientError(f"{_prefix(context)}could not reach the S3 endpoint: {exc}")
    if _isinstance(exc, "botocore.exceptions", "NoCredentialsError", "PartialCredentialsError"):
        return PermanentError(
            f"{_prefix(context)}{exc}: set ObjectStore.access_key and ObjectStore.secret_key"
        )
    return None


# --------------------------------------------------------------------------------------------------
# gRPC / etcd

_ETCD_TRANSIENT_MESSAGES = (
    "too many requests",
    "leader changed",
    "unhealthy cluster",
    "no leader",
    "request timed out",
    "timed out waiting for read index",
    "not enough started members",
    "can only promote a learner member which is in sync with leader",
    "server stopped",
)
_ETCD_PERMANENT_MESSAGES = {
    "peer urls already exists": "a member with these peer URLs is already registered: reuse it "
    "(re-read the member list) or remove it first",
    "member not found": "the member id is not in the cluster: re-read the member list",
    "permission denied": "the etcd user lacks permission: grant the role or use another user",
    "authentication failed": "etcd rejected the user name or password: check EtcdCluster.username/password",
    "invalid auth token": "the etcd auth token is invalid: check EtcdCluster.username/password",
    "user name is empty": "set EtcdCluster.username",
    "too many learner members": "etcd allows one learner at a time: promote or remove the existing learner",
    "required revision has been compacted": "the revision was compacted away: use a newer revision",
    "required revision is a future revision": "the revision does not exist yet: use the current revision",
    "can only promote a learner member": "the member is not a learner: nothing to promote",
    "learner": "learner members cannot serve this request: send it to a voting member",
    "member id already exist": "the member is already registered: re-read the member list",
}
_GRPC_TRANSIENT_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED"})


def _etcd_message_error(details: str, code_name: str, context: str) -> StateferryError:
    lowered = details.lower()
    where = f"{_prefix(context)}etcd answered {code_name}: {details}".rstrip(": ")
    for needle in _ETCD_TRANSIENT_MESSAGES:
        if needle in lowered:
            return TransientError(f"{where} (transient: a retry may succeed)")
    for needle, fix in _ETCD_PERMANENT_MESSAGES.items():
        if needle in lowered:
            return PermanentError(f"{where}. {fix}")
    if code_name in _GRPC_TRANSIENT_CODES:
        return TransientError(f"{where} (transient: a retry may succeed)")
    if code_name == "UNAUTHENTICATED":
        return PermanentError(f"{where}. {_ETCD_PERMANENT_MESSAGES['authentication failed']}")
    if code_name == "PERMISSION_DENIED":
        return PermanentError(f"{where}. {_ETCD_PERMANENT_MESSAGES['permission denied']}")
    if code_name == "FAILED_PRECONDITION":
        return PreconditionFailed(f"{where}. Re-read the cluster state before retrying")
    return PermanentError(f"{where}. The request was refused: fix it before retrying")


def _from_grpc(exc: BaseException, context: str) -> StateferryError | None:
    rpc_error = _cls("grpc", "RpcError")
    if rpc_error is None or not isinstance(exc, rpc_error):
        return None
    code_fn: Callable[[], Any] | None = getattr(exc, "code", None)
    details_fn: Callable[[], Any] | None = getattr(exc, "details", None)
    code = code_fn() if callable(code_fn) else None
    details = details_fn() if callable(details_fn) else ""
    code_name = getattr(code, "name", str(code or "UNKNOWN"))
    return _etcd_message_error(str(details or ""), code_name, context)


def _from_etcd3aio(exc: BaseException, context: str) -> StateferryError | None:
    if not _isinstance(exc, "etcd3aio.errors", "EtcdError"):
        return None
    cause = exc.__cause__
    if cause is not None:
        translated = _from_grpc(cause, context)
        if translated is not None:
            return translated
    text = str(exc)
    if _isinstance(exc, "etcd3aio.errors", "EtcdUnauthenticatedError"):
        return _etcd_message_error(text or "authentication failed", "UNAUTHENTICATED", context)
    if _isinstance(exc, "etcd3aio.errors", "EtcdPermissionDeniedError"):
        return _etcd_message_error(text or "permission denied", "PERMISSION_DENIED", context)
    if _isinstance(exc, "etcd3aio.errors", "EtcdConnectionError", "EtcdTransientError"):
        return TransientError(
            f"{_prefix(context)}etcd is unreachable: {text} (transient: a retry may succeed)"
        )
    return _etcd_message_error(text, "UNKNOWN", context)


# --------------------------------------------------------------------------------------------------
# HTTP clients (urllib3, requests, httpx)


def _from_http_clients(exc: BaseException, context: str) -> StateferryError | None:
    p = _prefix(context)
    # urllib3
    if _isinstance(exc, "urllib3.exceptions", "MaxRetryError"):
        reason = getattr(exc, "reason", None)
        if isinstance(reason, BaseException):
            inner = translate(reason, context=context)
            inner.args = (f"{inner} (url: {getattr(exc, 'url', '?')})",)
            inner.__cause__ = None  # translate() links it to the MaxRetryError itself
            return inner
        return TransientError(f"{p}gave up connecting: {exc}")
    if _isinstance(exc, "urllib3.exceptions", "SSLError"):
        return PermanentError(f"{p}TLS handshake failed ({exc}): check the CA bundle and the server name")
    if _isinstance(exc, "urllib3.exceptions", "LocationValueError"):
        return InputError("endpoint", f"{p}{exc}", "use a URL like https://host:port")
    if _isinstance(
        exc,
        "urllib3.exceptions",
        "TimeoutError",
        "NewConnectionError",
        "ProtocolError",
        "ProxyError",
        "ClosedPoolError",
        "EmptyPoolError",
        "IncompleteRead",
    ):
        return TransientError(f"{p}connection problem: {exc} (transient: a retry may succeed)")
    # requests
    if _isinstance(exc, "requests.exceptions", "SSLError"):
        return PermanentError(f"{p}TLS handshake failed ({exc}): check the CA bundle and the server name")
    if _isinstance(exc, "requests.exceptions", "HTTPError"):
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
        if status:
            return _http_status_error(
                int(status), "the server", getattr(response, "reason", "") or "", context
            )
    if _isinstance(exc, "requests.exceptions", "ConnectionError", "Timeout", "ChunkedEncodingError"):
        return TransientError(f"{p}connection problem: {exc} (transient: a retry may succeed)")
    if _isinstance(exc, "requests.exceptions", "InvalidURL", "MissingSchema", "InvalidSchema"):
        return InputError("endpoint", f"{p}{exc}", "use a URL like https://host:port")
    # httpx
    if _isinstance(exc, "httpx", "HTTPStatusError"):
        response = getattr(exc, "response", None)
        status = int(getattr(response, "status_code", 0) or 0)
        return _http_status_error(status, "the server", getattr(response, "reason_phrase", "") or "", context)
    if _isinstance(exc, "httpx", "UnsupportedProtocol", "InvalidURL"):
        return InputError("endpoint", f"{p}{exc}", "use a URL like https://host:port")
    if _isinstance(exc, "httpx", "TransportError"):
        return TransientError(
            f"{p}connection problem: {type(exc).__name__}: {exc} (transient: a retry may succeed)"
        )
    return None


# --------------------------------------------------------------------------------------------------
# OS level

_TRANSIENT_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.EPIPE,
        errno.EAGAIN,
        errno.EADDRNOTAVAIL,
    }
)


def _from_os(exc: BaseException, context: str) -> StateferryError | None:
    p = _prefix(context)
    if isinstance(exc, socket.gaierror):
        if exc.errno in (socket.EAI_AGAIN,):
            return TransientError(
                f"{p}name resolution temporarily failed: {exc} (transient: a retry may succeed)"
            )
        return PermanentError(f"{p}the host name does not resolve ({exc}): check the host in the endpoint")
    if isinstance(exc, ssl.SSLError):
        return PermanentError(f"{p}TLS handshake failed ({exc}): check the CA bundle and the server name")
    if isinstance(exc, TimeoutError):
        return TransientError(
            f"{p}timed out{': ' + str(exc) if str(exc) else ''} (transient: a retry may succeed)"
        )
    if isinstance(exc, ConnectionError):
        return TransientError(
            f"{p}connection problem: {type(exc).__name__}: {exc} (transient: a retry may succeed)"
        )
    if isinstance(exc, OSError):
        if exc.errno in _TRANSIENT_ERRNOS:
            return TransientError(f"{p}connection problem: {exc} (transient: a retry may succeed)")
        return PermanentError(f"{p}{type(exc).__name__}: {exc}")
    return None


# --------------------------------------------------------------------------------------------------
# database drivers (pymysql, psycopg 3)

_MYSQL_TRANSIENT_CODES = frozenset({1040, 1205, 1213, 2002, 2003, 2006, 2013, 2055})
_MYSQL_FIXES = {
    1044: "the user lacks access to this database: grant it or use another user",
    1045: "MySQL rejected the user or password: check Database.user and Database.password",
    1049: "the database does not exist: create it or fix the name in Database.databases",
    1698: "MySQL rejected the login: check Database.user and Database.password",
}
_PG_TRANSIENT_SQLSTATES = frozenset(
    {"57P01", "57P02", "57P03", "53300", "40001", "40P01", "08000", "08001", "08006"}
)
_PG_TRANSIENT_TEXT = (
    "connection refused",
    "could not connect",
    "timeout expired",
    "server closed the connection",
    "the database system is starting up",
    "the database system is shutting down",
    "connection timed out",
)
_PG_PERMANENT_TEXT = {
    "password authentication failed": "PostgreSQL rejected the user or password: check Database.user and "
    "Database.password",
    "no pg_hba.conf entry": "the server refuses this client: add a pg_hba.conf rule or use another user",
    "does not exist": "the role or database does not exist: fix Database.user / Database.databases",
}


def _from_databases(exc: BaseException, context: str) -> StateferryError | None:
    p = _prefix(context)
    if _isinstance(exc, "pymysql.err", "MySQLError"):
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
        message = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
        base = f"{p}MySQL answered {code}: {message}"
        if code in _MYSQL_TRANSIENT_CODES:
            return TransientError(f"{base} (transient: a retry may succeed)")
        return PermanentError(f"{base}. {_MYSQL_FIXES.get(code, 'fix the request before retrying')}")
    if _isinstance(exc, "psycopg", "Error"):
        sqlstate = getattr(exc, "sqlstate", None) or ""
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        base = f"{p}PostgreSQL answered {sqlstate or type(exc).__name__}: {message}"
        lowered = str(exc).lower()
        for needle, fix in _PG_PERMANENT_TEXT.items():
            if needle in lowered:
                return PermanentError(f"{base}. {fix}")
        if sqlstate in _PG_TRANSIENT_SQLSTATES or any(needle in lowered for needle in _PG_TRANSIENT_TEXT):
            return TransientError(f"{base} (transient: a retry may succeed)")
        return PermanentError(f"{base}. Fix the request before retrying")
    return None


def _from_pydantic(exc: BaseException, context: str) -> StateferryError | None:
    if not _isinstance(exc, "pydantic_core._pydantic_core", "ValidationError") and not _isinstance(
        exc, "pydantic", "ValidationError"
    ):
        return None
    errors_fn = getattr(exc, "errors", None)
    errors = errors_fn(include_input=False) if callable(errors_fn) else []
    if errors:
        first = errors[0]
        field = ".".join(str(part) for part in first.get("loc", ())) or "input"
        return InputError(
            field, f"{_prefix(context)}{first.get('msg', exc)}", "correct the value and try again"
        )
    return InputError("input", f"{_prefix(context)}{exc}", "correct the value and try again")


_CLASSIFIERS: tuple[Callable[[BaseException, str], StateferryError | None], ...] = (
    _from_kubernetes,
    _from_s3,
    _from_etcd3aio,
    _from_grpc,
    _from_http_clients,
    _from_databases,
    _from_pydantic,
    _from_os,
)


def _classify(exc: BaseException, context: str) -> StateferryError | None:
    if isinstance(exc, StateferryError):
        return exc
    for classify in _CLASSIFIERS:
        found = classify(exc, context)
        if found is not None:
            return found
    return None


def translate(exc: BaseException, *, context: str = "") -> StateferryError:
    """Map any exception to the stateferry taxonomy.

    A :class:`StateferryError` is returned unchanged. Known client-library errors (Kubernetes
    ``ApiException``, urllib3/requests/httpx connection errors and timeouts, minio ``S3Error``,
    botocore ``ClientError``, gRPC errors and etcd messages, etcd3aio's exceptions, pymysql and
    psycopg errors, pydantic ``ValidationError`` (as :class:`InputError`), ``OSError``) are
    classified as :class:`TransientError` or :class:`PermanentError`. For anything else the chain of
    causes is searched; an unknown error is permanent (retrying blindly hides bugs).

    Args:
        exc: The exception raised by a client library.
        context: What was being done (e.g. ``"listing etcd members"``); prefixes the message.

    Returns:
        A new stateferry exception whose ``__cause__`` is ``exc`` (or ``exc`` itself if it already
        is one). Raise it with ``raise translate(e, context=...) from e``.
    """
    found = _classify(exc, context)
    seen: set[int] = {id(exc)}
    link: BaseException | None = exc
    while found is None and link is not None:
        link = link.__cause__ or link.__context__
        if link is None or id(link) in seen:
            break
        seen.add(id(link))
        found = _classify(link, context)
    if found is None:
        found = PermanentError(f"{_prefix(context)}unexpected error {type(exc).__name__}: {exc}")
    if found is not exc and found.__cause__ is None:
        found.__cause__ = exc
    return found


def is_transient(exc: BaseException) -> bool:
    """Return True when retrying the failed step may succeed (see :func:`translate`)."""
    return isinstance(translate(exc), TransientError)
