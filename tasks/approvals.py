"""Human approvals at cutover points, answered from the Prefect UI (Resume -> Approved).

One helper, :func:`request_approval`, publishes the plan as a Markdown artifact and pauses the flow
run with a :class:`ApprovalInput` form whose description is that plan. Pauses are keyed by the step,
so a flow run that is retried does not ask twice for a step already answered. Where the run belongs
to a deployment the flow is *suspended* instead (no process or pod is held while a person decides);
otherwise it is paused in-process. ``auto_approve=True`` records the plan and continues unattended.
"""

from __future__ import annotations

import re
from typing import Any

from prefect.input import RunInput
from pydantic import ConfigDict

from stateferry.errors import PermanentError, PreconditionFailed

_KEY_RE = re.compile(r"^[a-z0-9-]+$")


class ApprovalInput(RunInput):
    """The approval form shown in the Prefect UI.

    Attributes:
        approved: switch on to approve; resuming with it off is a rejection.
        comment: optional note recorded with the decision.
    """

    model_config = ConfigDict(extra="forbid")

    approved: bool = False
    comment: str = ""


class ApprovalRejected(PermanentError):
    """The operator resumed the run without approving the step."""

    def __init__(self, step: str, comment: str = "") -> None:
        self.step = step
        self.comment = comment
        note = f" (comment: {comment})" if comment else ""
        super().__init__(
            f"Step '{step}' was not approved{note}. Nothing further was changed; re-run the flow to be "
            "asked again, or pass rollback=True where the flow offers it."
        )


class ApprovalTimedOut(PreconditionFailed):
    """Nobody answered within the approval timeout."""


def approval_key(text: str) -> str:
    """Slugify ``text`` into a pause / artifact key matching ``^[a-z0-9-]+$``.

    Args:
        text: a step name such as ``"Join new members"``.

    Returns:
        ``"join-new-members"``.

    Raises:
        ValueError: when nothing usable is left.
    """
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    slug = re.sub(r"-{2,}", "-", slug)[:60].strip("-")
    if not slug or not _KEY_RE.match(slug):
        raise ValueError(f"cannot derive an approval key from {text!r}: use letters or digits")
    return slug


def _deployment_backed() -> bool:
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return bool(ctx and ctx.flow_run and ctx.flow_run.deployment_id)


def request_approval(
    step: str,
    plan_markdown: str,
    *,
    key: str | None = None,
    auto_approve: bool = False,
    timeout_seconds: int = 24 * 3600,
    poll_interval_seconds: int = 2,
    suspend: bool | None = None,
) -> ApprovalInput:
    """Publish ``plan_markdown`` and wait until an operator approves ``step`` in the UI.

    Args:
        step: human-readable step name, e.g. ``"Join new members"``.
        plan_markdown: what will change, what was verified so far and how to roll back.
        key: pause key (slugified); defaults to the step name, so re-runs do not ask twice.
        auto_approve: approve at once (unattended runs); the plan is still recorded.
        timeout_seconds: how long to wait for an answer before failing the run.
        poll_interval_seconds: how often an in-process pause checks for the answer.
        suspend: suspend (release the process) instead of pausing; default: when the run has a deployment.

    Returns:
        The operator's :class:`ApprovalInput` (``approved`` is True).

    Raises:
        ApprovalRejected: the run was resumed with ``approved`` off.
        ApprovalTimedOut: nobody answered within ``timeout_seconds``.
    """
    from prefect import get_run_logger
    from prefect.artifacts import create_markdown_artifact
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run, suspend_flow_run

    slug = approval_key(key or step)
    logger = get_run_logger()
    header = f"# Approval: {step}\n\n"
    create_markdown_artifact(
        key=f"approval-{slug}",
        markdown=header + plan_markdown,
        description=f"Plan awaiting approval: {step}",
    )
    if auto_approve:
        logger.info(
            "Step %r auto-approved (auto_approve=True); plan recorded as artifact approval-%s", step, slug
        )
        return ApprovalInput(approved=True, comment="auto-approved")

    form: Any = ApprovalInput.with_initial_data(
        description=header + plan_markdown + "\n\n---\nSwitch **Approved** on and submit to continue. "
        "Submitting with Approved off rejects the step.",
        approved=False,
    )
    use_suspend = _deployment_backed() if suspend is None else suspend
    logger.info("Waiting for approval of step %r (Resume -> Approved in the Prefect UI)", step)
    try:
        if use_suspend:
            answer = suspend_flow_run(wait_for_input=form, timeout=timeout_seconds, key=slug)
        else:
            answer = pause_flow_run(
                wait_for_input=form, timeout=timeout_seconds, poll_interval=poll_interval_seconds, key=slug
            )
    except FlowPauseTimeout as exc:
        raise ApprovalTimedOut(
            f"Step '{step}' was not answered within {timeout_seconds} s; nothing further was changed. "
            "Re-run the flow (it continues from the observed state) and approve in the UI."
        ) from exc
    if answer is None or not getattr(answer, "approved", False):
        comment = getattr(answer, "comment", "") if answer is not None else ""
        logger.warning("Step %r rejected%s", step, f": {comment}" if comment else "")
        raise ApprovalRejected(step, comment)
    logger.info("Step %r approved%s", step, f": {answer.comment}" if answer.comment else "")
    return ApprovalInput(approved=True, comment=answer.comment)
