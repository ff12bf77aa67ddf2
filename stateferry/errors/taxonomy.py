"""The stateferry exception classes: transient or permanent, and the permanent kinds callers test for."""

from __future__ import annotations

from typing import Any, NamedTuple


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
