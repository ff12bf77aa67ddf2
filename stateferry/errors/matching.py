"""What every classifier shares: client-library classes looked up without importing the library, the
context prefix of a message, and the classification of an HTTP status code.

A client library's exception can only exist if the library is already imported, so its classes are
looked up in :data:`sys.modules`; importing :mod:`stateferry.errors` never imports a client library.
"""

from __future__ import annotations

import sys

from stateferry.errors.taxonomy import (
    Conflict,
    Invalid,
    NotFound,
    PermanentError,
    StateferryError,
    TransientError,
)


def loaded_class(module: str, name: str) -> type[BaseException] | None:
    """Return the exception class ``module.name`` if that module is already imported."""
    mod = sys.modules.get(module)
    if mod is None:
        return None
    found = getattr(mod, name, None)
    return found if isinstance(found, type) and issubclass(found, BaseException) else None


def is_instance(exc: BaseException, module: str, *names: str) -> bool:
    """Return True when ``exc`` is an instance of one of the classes ``module.<name>`` already imported."""
    for name in names:
        cls = loaded_class(module, name)
        if cls is not None and isinstance(exc, cls):
            return True
    return False


def context_prefix(context: str) -> str:
    """The ``"<context>: "`` a message starts with (nothing without a context)."""
    return f"{context}: " if context else ""


def http_status_error(status: int, what: str, detail: str, context: str) -> StateferryError:
    """Classify an HTTP status code: 408/429/5xx transient, other 4xx permanent."""
    detail = f": {detail}" if detail else ""
    base = f"{context_prefix(context)}{what} answered HTTP {status}{detail}"
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
