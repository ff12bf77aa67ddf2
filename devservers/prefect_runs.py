"""Drive paused flow runs the way the UI does: wait for the approval form, then resume with input.

Used by tests and the demo's ``--auto-approve`` path. The paused state is written *before* the input
schema, so :func:`wait_for_approval_form` waits for the schema before anyone may resume.
"""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID


def wait_for_approval_form(flow_run_id: UUID | str, timeout: float = 60.0) -> dict[str, Any]:
    """Wait until ``flow_run_id`` is paused and its input schema is stored.

    Returns:
        The flow run's state details (``pause_key``, ``run_input_keyset`` ...) as a dict.

    Raises:
        TimeoutError: when the run did not reach a paused state with a form in time.
    """
    from prefect.client.orchestration import get_client

    rid = UUID(str(flow_run_id))
    deadline = time.monotonic() + timeout
    last = "unknown"
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(rid)
            state = run.state
            last = state.type.value if state else "none"
            if state and state.is_final():
                raise RuntimeError(f"flow run {rid} finished ({last}) instead of pausing: {state.message}")
            if state and state.is_paused() and state.state_details.run_input_keyset:
                try:
                    client.read_flow_run_input(rid, state.state_details.run_input_keyset["schema"])
                    return state.state_details.model_dump(mode="json")
                except Exception:
                    pass
            time.sleep(0.25)
    raise TimeoutError(f"flow run {rid} did not show an approval form within {timeout}s (last state {last})")


def resume_with_input(flow_run_id: UUID | str, run_input: dict[str, Any], timeout: float = 60.0) -> str:
    """Resume a paused run with ``run_input`` after its form exists.

    Returns:
        The orchestration status (``"ACCEPT"``, or ``"REJECT"`` when the server refused the input).
    """
    from prefect.client.orchestration import get_client

    wait_for_approval_form(flow_run_id, timeout)
    with get_client(sync_client=True) as client:
        result = client.resume_flow_run(UUID(str(flow_run_id)), run_input=run_input)
    return str(result.status.value).upper()


def find_flow_run(flow_name: str, timeout: float = 60.0, states: tuple[str, ...] = ("PAUSED",)) -> UUID:
    """The newest run of ``flow_name`` in one of ``states`` (waits for it)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType(s) for s in states]))
                ),
                sort=FlowRunSort.EXPECTED_START_TIME_DESC,
                limit=1,
            )
            if runs:
                return runs[0].id
            time.sleep(0.25)
    raise TimeoutError(f"no run of flow {flow_name!r} in states {states} within {timeout}s")
