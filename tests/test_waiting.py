"""The one wait policy (stateferry/waiting.py): value, timeout message from the last state, errors."""

from __future__ import annotations

import time

import pytest

from stateferry.errors import PermanentError, PreconditionFailed, TransientError
from stateferry.waiting import wait_until


def test_returns_the_value_once_the_predicate_holds() -> None:
    calls: list[float] = []

    def third_time() -> str | None:
        calls.append(time.monotonic())
        return "ready" if len(calls) == 3 else None

    assert wait_until(third_time, timeout=5, interval=0.01, describe=lambda: "never") == "ready"
    assert len(calls) == 3


def test_timeout_names_what_was_last_seen() -> None:
    seen: list[str] = []

    def never() -> bool:
        seen[:] = [f"pod-{len(seen)} (Pending)"]
        return False

    started = time.monotonic()
    with pytest.raises(PreconditionFailed, match=r"still waiting for pod-1 \(Pending\)"):
        wait_until(never, timeout=0.2, interval=0.05, describe=lambda: f"still waiting for {seen[0]}")
    assert 0.2 <= time.monotonic() - started < 2


def test_the_error_type_is_the_callers() -> None:
    with pytest.raises(PermanentError, match="gone") as info:
        wait_until(lambda: None, timeout=0, describe=lambda: "gone", error=PermanentError)
    assert not isinstance(info.value, PreconditionFailed)


def test_an_error_of_the_predicate_ends_the_wait_at_once() -> None:
    calls = []

    def broken() -> None:
        calls.append(1)
        raise TransientError("API down")

    with pytest.raises(TransientError, match="API down"):
        wait_until(broken, timeout=5, interval=0.01, describe=lambda: "x")
    assert calls == [1]  # the task's Prefect retry policy decides, not the wait


def test_await_until_polls_an_async_predicate_and_times_out_with_the_last_state() -> None:
    import asyncio

    from stateferry.waiting import await_until

    calls: list[int] = []

    async def second_time() -> str | None:
        calls.append(1)
        return "leader moved" if len(calls) == 2 else None

    assert (
        asyncio.run(await_until(second_time, timeout=5, interval=0.01, describe=lambda: "x"))
        == "leader moved"
    )

    async def never() -> None:
        return None

    with pytest.raises(TransientError, match="leadership did not move"):
        asyncio.run(
            await_until(
                never,
                timeout=0.05,
                interval=0.01,
                describe=lambda: "leadership did not move",
                error=TransientError,
            )
        )


@pytest.mark.parametrize(
    ("errors", "outcome"),
    [
        ([TransientError("etcd answered UNAVAILABLE: leader changed")] * 2, "done"),  # retried until it works
        ([PermanentError("etcd allows one learner at a time: too many learner members")], PermanentError),
        ([TransientError("unhealthy cluster")] * 1000, TransientError),  # budget spent: the last error
    ],
)
def test_retry_transient_retries_only_what_the_taxonomy_calls_transient(
    errors: list[Exception], outcome: object
) -> None:
    import asyncio

    from stateferry.waiting import retry_transient

    left = list(errors)
    calls: list[int] = []

    async def step() -> str:
        calls.append(1)
        if left:
            raise left.pop(0)
        return "done"

    if outcome == "done":
        assert asyncio.run(retry_transient(step, budget=5)) == "done"
        assert len(calls) == len(errors) + 1
    else:
        assert isinstance(outcome, type)
        with pytest.raises(outcome):
            asyncio.run(retry_transient(step, budget=0.5))
        if outcome is PermanentError:
            assert len(calls) == 1  # never retried
