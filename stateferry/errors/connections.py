"""Classify connection-level failures: the HTTP clients (urllib3, requests, httpx) and the OS
(sockets, name resolution, TLS, timeouts).

urllib3's ``MaxRetryError`` wraps the failure of the last attempt:
:func:`~stateferry.errors.classify.translate` unwraps it.
"""

from __future__ import annotations

import errno
import socket
import ssl

from stateferry.errors.matching import context_prefix, http_status_error, is_instance
from stateferry.errors.taxonomy import InputError, PermanentError, StateferryError, TransientError


def from_http_clients(exc: BaseException, context: str) -> StateferryError | None:
    """Classify urllib3, requests and httpx errors (TLS, bad URLs, HTTP statuses, connections)."""
    p = context_prefix(context)
    # urllib3
    if is_instance(exc, "urllib3.exceptions", "SSLError"):
        return PermanentError(f"{p}TLS handshake failed ({exc}): check the CA bundle and the server name")
    if is_instance(exc, "urllib3.exceptions", "LocationValueError"):
        return InputError("endpoint", f"{p}{exc}", "use a URL like https://host:port")
    if is_instance(
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
    if is_instance(exc, "requests.exceptions", "SSLError"):
        return PermanentError(f"{p}TLS handshake failed ({exc}): check the CA bundle and the server name")
    if is_instance(exc, "requests.exceptions", "HTTPError"):
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
        if status:
            return http_status_error(
                int(status), "the server", getattr(response, "reason", "") or "", context
            )
    if is_instance(exc, "requests.exceptions", "ConnectionError", "Timeout", "ChunkedEncodingError"):
        return TransientError(f"{p}connection problem: {exc} (transient: a retry may succeed)")
    if is_instance(exc, "requests.exceptions", "InvalidURL", "MissingSchema", "InvalidSchema"):
        return InputError("endpoint", f"{p}{exc}", "use a URL like https://host:port")
    # httpx
    if is_instance(exc, "httpx", "HTTPStatusError"):
        response = getattr(exc, "response", None)
        status = int(getattr(response, "status_code", 0) or 0)
        return http_status_error(status, "the server", getattr(response, "reason_phrase", "") or "", context)
    if is_instance(exc, "httpx", "UnsupportedProtocol", "InvalidURL"):
        return InputError("endpoint", f"{p}{exc}", "use a URL like https://host:port")
    if is_instance(exc, "httpx", "TransportError"):
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


def from_os(exc: BaseException, context: str) -> StateferryError | None:
    """Classify OS-level errors: name resolution, TLS, timeouts, connections and errnos."""
    p = context_prefix(context)
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
