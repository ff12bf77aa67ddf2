"""The retry policy shared by every task: retry transient errors only.

Usage::

    from tasks.retry import TRANSIENT_RETRY

    @task(**TRANSIENT_RETRY)
    def ensure_bucket(...): ...

A bad request (4xx, authentication, invalid input, failed precondition) fails at once with its clear
message; a connection problem, timeout, 5xx, 429 or etcd leader change is retried with back-off.
"""

from __future__ import annotations

from typing import Any

from stateferry.errors import is_transient

__all__ = ["TRANSIENT_RETRY", "failure_exception", "retry_transient"]


def failure_exception(state: Any) -> BaseException | None:
    """Return the exception a failed Prefect state carries, or None if it carries none.

    Args:
        state: A Prefect ``State`` (normally ``Failed``) as given to ``retry_condition_fn``.

    Returns:
        The exception raised by the task run, if the state holds one.
    """
    data = getattr(state, "data", None)
    if isinstance(data, BaseException):
        return data
    try:
        result = state.result(raise_on_failure=False)
    except Exception:  # the state holds no retrievable result; treat as not retryable
        return None
    return result if isinstance(result, BaseException) else None


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only when the failure is transient.

    Args:
        task: The Prefect task (unused).
        task_run: The task run (unused).
        state: The failed state of the attempt.

    Returns:
        True when the exception is classified transient by :func:`stateferry.errors.is_transient`.
    """
    exc = failure_exception(state)
    return exc is not None and is_transient(exc)


TRANSIENT_RETRY: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": [1, 2, 5],
    "retry_jitter_factor": 0.2,
    "retry_condition_fn": retry_transient,
}
"""Keyword arguments for ``@task(**TRANSIENT_RETRY)``: 3 retries after ~1 s, 2 s, 5 s, transient only."""
