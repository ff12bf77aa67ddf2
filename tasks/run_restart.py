"""The ``on_crashed`` hook of ``bucket_mirror``: a crashed watch gets a successor run.

Prefect's runner (``serve``, process and Kubernetes workers) calls it after the flow's process died
(SIGKILL, OOM, eviction) and the run was marked *Crashed*. The rule is
:func:`planning.run_restart.decide_restart`; the successor is a new run of the same deployment with
the same parameters, which resumes from the mirror journal.
"""

from __future__ import annotations

from typing import Any

from planning.run_restart import decide_restart
from stateferry.logs import run_logger

__all__ = ["restart_crashed_watch"]


def restart_crashed_watch(flow: Any, flow_run: Any, state: Any) -> None:
    """Start a successor of a crashed journal-mode mirror run (never raises: a hook must not).

    Args:
        flow: The flow object (unused; part of Prefect's hook signature).
        flow_run: The crashed flow run.
        state: Its Crashed state.
    """
    del flow, state
    from prefect.client.orchestration import get_client

    logger = run_logger()
    decision = decide_restart(
        flow_run.parameters or {}, flow_run.tags or [], deployment=flow_run.deployment_id is not None
    )
    if not decision.restart:
        logger.info("crashed run %r not restarted: %s", flow_run.name, decision.reason)
        return
    try:
        with get_client(sync_client=True) as client:
            successor = client.create_flow_run_from_deployment(
                flow_run.deployment_id,
                parameters=flow_run.parameters,
                tags=list(decision.tags),
                name=f"{str(flow_run.name).split('-restart-')[0]}-restart-{decision.number}",
            )
    except Exception as exc:  # the operator re-runs the deployment; the journal makes that safe
        logger.error("could not restart crashed run %r: %s", flow_run.name, type(exc).__name__)
        return
    logger.info(
        "crashed run %r restarted as %r (%s); it resumes from the mirror journal",
        flow_run.name,
        successor.name,
        decision.reason,
    )
