"""Approvals against a real Prefect server: pause with a form, resume like the UI does."""

from __future__ import annotations

import threading
from typing import Any
from uuid import UUID

import pytest
from prefect import flow
from prefect.client.orchestration import get_client

from devservers.prefect_runs import find_flow_run, resume_with_input, wait_for_approval_form
from tasks.approvals import ApprovalRejected, approval_key, request_approval

PLAN = "## Plan\n\n| step | change |\n|---|---|\n| 1 | add member `etcd-main-0` |\n"


@flow(name="approval-probe")
def approval_probe(auto_approve: bool = False) -> str:
    answer = request_approval("Join new members", PLAN, auto_approve=auto_approve, timeout_seconds=120)
    return f"approved:{answer.comment}"


def _run_in_thread() -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def target() -> None:
        box["state"] = approval_probe(return_state=True)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("Join new members", "join-new-members"),
        ("clients switched!", "clients-switched"),
        ("  Delete OLD resources  ", "delete-old-resources"),
        ("DNS cutover done", "dns-cutover-done"),
        ("step_7 / remove etcd-0", "step-7-remove-etcd-0"),
    ],
)
def test_approval_key_is_a_valid_pause_key(text: str, key: str) -> None:
    assert approval_key(text) == key


def test_approval_key_refuses_text_without_letters() -> None:
    with pytest.raises(ValueError, match="approval key"):
        approval_key("!!!")


def test_auto_approve_records_the_plan(prefect_server: Any) -> None:
    state = approval_probe(auto_approve=True, return_state=True)
    assert state.is_completed()
    assert state.result() == "approved:auto-approved"
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts()
    assert any(a.key == "approval-join-new-members" and "etcd-main-0" in str(a.data) for a in artifacts)


def test_approve_through_the_api_continues_the_run(prefect_server: Any) -> None:
    thread, box = _run_in_thread()
    run_id = find_flow_run("approval-probe")
    details = wait_for_approval_form(run_id)
    assert details["pause_key"] == "join-new-members"
    assert resume_with_input(run_id, {"approved": True, "comment": "looks good"}) == "ACCEPT"
    thread.join(60)
    assert box["state"].is_completed()
    assert box["state"].result() == "approved:looks good"


def test_resume_without_approved_is_a_rejection(prefect_server: Any) -> None:
    thread, box = _run_in_thread()
    run_id = find_flow_run("approval-probe")
    assert resume_with_input(run_id, {"comment": "not now"}) == "ACCEPT"
    thread.join(60)
    state = box["state"]
    assert state.is_failed()
    with pytest.raises(ApprovalRejected, match=r"not approved.*not now"):
        state.result()


@pytest.mark.parametrize("bad", [{"approved": "yes please"}, {"approved": True, "unknown": 1}])
def test_bad_input_is_refused_and_the_run_stays_paused(prefect_server: Any, bad: dict[str, Any]) -> None:
    thread, box = _run_in_thread()
    run_id = find_flow_run("approval-probe")
    assert resume_with_input(run_id, bad) == "REJECT"
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(str(run_id)))
        assert run.state is not None and run.state.is_paused()
    assert resume_with_input(run_id, {"approved": True}) == "ACCEPT"
    thread.join(60)
    assert box["state"].is_completed()
