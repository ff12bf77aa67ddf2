"""Test helper: everything a flow run shows a user (artifacts, log lines, the final state message)."""

from __future__ import annotations

import json
import time
from uuid import UUID


def flow_run_texts(run_id: UUID | None) -> str:
    """Every artifact, log line and the final state message of a flow run, as one string."""
    assert run_id is not None, "the state carries no flow run id"
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    time.sleep(1.0)
    with get_client(sync_client=True) as c:
        arts = c.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
        logs = c.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
        run = c.read_flow_run(run_id)
    return (
        json.dumps([a.data for a in arts] + [a.description for a in arts], default=str)
        + "\n".join(x.message for x in logs)
        + str(run.state.message if run.state else "")
    )


def latest_artifact(key: str) -> str:
    """The data of the newest artifact with this key."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    assert found, f"no artifact {key}"
    return str(found[0].data)
