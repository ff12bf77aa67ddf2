"""The one wait policy: poll a readiness predicate until it holds or the time is up (tenacity).

Every "wait until X" in ``tasks/`` goes through :func:`wait_until`: the predicate returns the awaited
value (anything but ``None``/``False``) once X holds; errors it raises end the wait at once (a
transient one is then retried by the task's Prefect retry policy, :mod:`tasks.retry`, not here);
after ``timeout`` seconds :class:`~stateferry.errors.PreconditionFailed` (or ``error``) is raised with
the message ``describe()`` builds from what was last seen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

from stateferry.errors import PreconditionFailed, StateferryError

__all__ = ["wait_until"]

T = TypeVar("T")


def _not_yet(value: object) -> bool:
    return value is None or value is False


def wait_until(
    check: Callable[[], T | None],
    *,
    timeout: float,
    describe: Callable[[], str],
    interval: float = 0.2,
    error: type[StateferryError] = PreconditionFailed,
) -> T:
    """Call ``check`` every ``interval`` seconds until it returns a value; return that value.

    Args:
        check: Reads the state; returns the awaited value, or ``None``/``False`` while not there yet.
        timeout: Seconds before giving up (``check`` runs at least once).
        describe: Builds the error message (what is missing and what to check) at the timeout.
        interval: Seconds between two checks.
        error: The error raised at the timeout.

    Raises:
        PreconditionFailed: (or ``error``) when ``check`` did not succeed within ``timeout``.
    """
    retrying = Retrying(
        stop=stop_after_delay(max(timeout, 0.0)),
        wait=wait_fixed(interval),
        retry=retry_if_result(_not_yet),
    )
    try:
        value = retrying(check)
    except RetryError:
        raise error(describe()) from None
    return value  # type: ignore[return-value]
