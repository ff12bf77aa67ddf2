"""Drive paused flow runs the way the UI does: wait for the approval form, then resume with input.

Used by tests and the demo's ``--auto-approve`` path. The paused state is written *before* the input
schema, so :func:`wait_for_approval_form` waits for the schema before anyone may resume.
"""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID


def wait_for_approval_form(
    flow_run_id: UUID | str, timeout: float = 60.0, *, key: str | None = None
) -> dict[str, Any]:
    """Wait until ``flow_run_id`` is paused (at pause ``key`` if given) and its input schema is stored.

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
            details = state.state_details if state else None
            if (
                state
                and details
                and state.is_paused()
                and details.run_input_keyset
                and (key is None or details.pause_key == key)
            ):
                try:
                    client.read_flow_run_input(rid, details.run_input_keyset["schema"])
                    return details.model_dump(mode="json")
                except Exception:
                    pass
            time.sleep(0.25)
    raise TimeoutError(
        f"flow run {rid} did not show an approval form{f' at {key}' if key else ''} within {timeout}s "
        f"(last state {last})"
    )


def resume_with_input(
    flow_run_id: UUID | str, run_input: dict[str, Any], timeout: float = 60.0, *, key: str | None = None
) -> str:
    """Resume a paused run with ``run_input`` after its form (at pause ``key`` if given) exists.

    Returns:
        The orchestration status (``"ACCEPT"``, or ``"REJECT"`` when the server refused the input).
    """
    from prefect.client.orchestration import get_client

    wait_for_approval_form(flow_run_id, timeout, key=key)
    with get_client(sync_client=True) as client:
        result = client.resume_flow_run(UUID(str(flow_run_id)), run_input=run_input)
    return str(result.status.value).upper()


def find_flow_run(
    flow_name: str | None = None,
    timeout: float = 60.0,
    states: tuple[str, ...] = ("PAUSED",),
    *,
    run_name: str | None = None,
    parameters: dict[str, Any] | None = None,
) -> UUID:
    """The newest run in one of ``states`` (waits for it), by flow name and/or flow run name.

    Args:
        flow_name: the flow's name.
        timeout: seconds to wait.
        states: state types to accept.
        run_name: the flow run's name.
        parameters: only runs whose parameters include these values.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterName,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    if flow_name is None and run_name is None:
        raise ValueError("give flow_name or run_name")
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])) if flow_name else None,
                flow_run_filter=FlowRunFilter(
                    name=FlowRunFilterName(any_=[run_name]) if run_name else None,
                    state=FlowRunFilterState(
                        type=FlowRunFilterStateType(any_=[StateType(s) for s in states])
                    ),
                ),
                sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            )
            for run in runs:
                if all(run.parameters.get(k) == v for k, v in (parameters or {}).items()):
                    return run.id
            time.sleep(0.25)
    raise TimeoutError(f"no run of {run_name or flow_name!r} in states {states} within {timeout}s")
