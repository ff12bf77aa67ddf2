"""The one wait policy: poll a readiness predicate until it holds or the time is up (tenacity).

Every "wait until X" in ``tasks/`` goes through :func:`wait_until`: the predicate returns the awaited
value (anything but ``None``/``False``) once X holds; errors it raises end the wait at once (a
transient one is then retried by the task's Prefect retry policy, :mod:`tasks.retry`, not here);
after ``timeout`` seconds :class:`~stateferry.errors.PreconditionFailed` (or ``error``) is raised with
the message ``describe()`` builds from what was last seen. :func:`await_until` is the same for an
``async`` predicate.

:func:`retry_transient` is the one in-call retry: it repeats an idempotent ``async`` step while it
fails with an error :func:`stateferry.errors.is_transient` calls transient (an etcd leader change,
"unhealthy cluster" right after a member change), for a time budget; a task using it has no Prefect
retries of its own, so there is one retry policy per step, never two stacked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryError,
    Retrying,
    retry_if_exception,
    retry_if_result,
    stop_after_delay,
    wait_exponential,
    wait_fixed,
)

from stateferry.errors import PreconditionFailed, StateferryError, is_transient

__all__ = ["await_until", "retry_transient", "wait_until"]

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


async def await_until(
    check: Callable[[], Awaitable[T | None]],
    *,
    timeout: float,
    describe: Callable[[], str],
    interval: float = 0.2,
    error: type[StateferryError] = PreconditionFailed,
) -> T:
    """:func:`wait_until` for an ``async`` predicate (the event loop keeps running between checks).

    Raises:
        PreconditionFailed: (or ``error``) when ``check`` did not succeed within ``timeout``.
    """
    retrying = AsyncRetrying(
        stop=stop_after_delay(max(timeout, 0.0)),
        wait=wait_fixed(interval),
        retry=retry_if_result(_not_yet),
    )
    try:
        value: T = await retrying(check)
    except RetryError:
        raise error(describe()) from None
    return value


async def retry_transient(
    step: Callable[[], Awaitable[T]],
    *,
    budget: float,
    retry_on: Callable[[BaseException], bool] = is_transient,
) -> T:
    """Run an idempotent ``async`` step again while it fails transiently, for up to ``budget`` seconds.

    Back-off starts at 0.2 s and grows to 1 s. A permanent error, or the last transient one once the
    budget is spent, is raised as it is. ``retry_on`` widens "transient" for one step whose server
    answers "not yet" with errors that are permanent elsewhere (etcd's leader transfer to a member
    still catching up).
    """
    retrying = AsyncRetrying(
        stop=stop_after_delay(max(budget, 0.0)),
        wait=wait_exponential(multiplier=0.2, min=0.2, max=1.0),
        retry=retry_if_exception(retry_on),
        reraise=True,
    )
    return await retrying(step)
