"""Classify any exception: translate() and is_transient() run the classifiers over it and its causes."""

from __future__ import annotations

from collections.abc import Callable

from stateferry.errors.connections import from_http_clients, from_os
from stateferry.errors.databases import from_databases
from stateferry.errors.etcd import from_etcd3aio, from_grpc
from stateferry.errors.kube import from_kubernetes
from stateferry.errors.matching import context_prefix, is_instance
from stateferry.errors.s3 import from_s3
from stateferry.errors.taxonomy import InputError, PermanentError, StateferryError, TransientError

__all__ = ["is_transient", "translate"]


def _from_max_retry(exc: BaseException, context: str) -> StateferryError | None:
    """urllib3's ``MaxRetryError`` wraps the last attempt's failure: translate that one, naming the URL."""
    if not is_instance(exc, "urllib3.exceptions", "MaxRetryError"):
        return None
    reason = getattr(exc, "reason", None)
    if isinstance(reason, BaseException):
        inner = translate(reason, context=context)
        inner.args = (f"{inner} (url: {getattr(exc, 'url', '?')})",)
        inner.__cause__ = None  # translate() links it to the MaxRetryError itself
        return inner
    return TransientError(f"{context_prefix(context)}gave up connecting: {exc}")


def _from_pydantic(exc: BaseException, context: str) -> StateferryError | None:
    """A pydantic ``ValidationError`` is bad input: an :class:`InputError` naming the first field."""
    if not is_instance(exc, "pydantic_core._pydantic_core", "ValidationError") and not is_instance(
        exc, "pydantic", "ValidationError"
    ):
        return None
    errors_fn = getattr(exc, "errors", None)
    errors = errors_fn(include_input=False) if callable(errors_fn) else []
    if errors:
        first = errors[0]
        field = ".".join(str(part) for part in first.get("loc", ())) or "input"
        return InputError(
            field, f"{context_prefix(context)}{first.get('msg', exc)}", "correct the value and try again"
        )
    return InputError("input", f"{context_prefix(context)}{exc}", "correct the value and try again")


_CLASSIFIERS: tuple[Callable[[BaseException, str], StateferryError | None], ...] = (
    from_kubernetes,
    from_s3,
    from_etcd3aio,
    from_grpc,
    _from_max_retry,
    from_http_clients,
    from_databases,
    _from_pydantic,
    from_os,
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
        found = PermanentError(f"{context_prefix(context)}unexpected error {type(exc).__name__}: {exc}")
    if found is not exc and found.__cause__ is None:
        found.__cause__ = exc
    return found


def is_transient(exc: BaseException) -> bool:
    """Return True when retrying the failed step may succeed (see :func:`translate`)."""
    return isinstance(translate(exc), TransientError)
