"""A deployment of a pydantic-options flow against the real Prefect server: a value outside the options
model's schema is refused when the run is created; a value its validators refuse fails the run at
parameter validation, before the flow touches a store."""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any

import pytest
from minio import Minio
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.exceptions import PrefectHTTPStatusError
from served_deployment import block_ref, served_deployment, wait_final

from blocks.object_store import ObjectStore


def _runs(client: Any, deployment_id: Any) -> list[Any]:
    return list(
        client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))
    )


def _keys(client: Minio, bucket: str) -> dict[str, str]:
    return {o.object_name: str(o.etag) for o in client.list_objects(bucket, recursive=True)}


def test_bad_options_are_refused_before_the_run_starts(
    prefect_server: Any, object_store_a: ObjectStore, object_store_b: ObjectStore, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    bucket = f"opts-{tag}"
    src, dst = object_store_a.minio_client(), object_store_b.minio_client()
    for store, body in ((src, b"new"), (dst, b"old")):
        store.make_bucket(bucket)
        store.put_object(bucket, "logs/a.txt", io.BytesIO(body), len(body))
    destination_before = _keys(dst, bucket)
    params = {
        "source": block_ref(object_store_a, f"opts-src-{tag}"),
        "destination": block_ref(object_store_b, f"opts-dst-{tag}"),
    }
    with (
        served_deployment(
            "flows/bucket_mirror.py:bucket_mirror", f"opts-{tag}", params, tmp_path / "runner.log"
        ) as deployment_id,
        get_client(sync_client=True) as client,
    ):
        # an unknown enum value: the server refuses to create the run
        with pytest.raises(PrefectHTTPStatusError) as refused:
            client.create_flow_run_from_deployment(
                deployment_id, parameters={"options": {"bucket": bucket, "verify": "sha1"}}
            )
        assert refused.value.response.status_code == 409
        assert "sha1" in refused.value.response.text
        with pytest.raises(PrefectHTTPStatusError):  # out of range
            client.create_flow_run_from_deployment(
                deployment_id, parameters={"options": {"bucket": bucket, "max_delete_ratio": 3}}
            )
        assert _runs(client, deployment_id) == []

        # a prefix the model's validator refuses: the run fails at parameter validation, nothing written
        run = client.create_flow_run_from_deployment(
            deployment_id, parameters={"options": {"bucket": bucket, "prefix": "lo*gs", "remove": True}}
        )
        final = wait_final(run.id)
        assert final.state.is_failed(), final.state
        assert "Validation of flow parameters failed" in str(final.state.message)
        assert "only a trailing '*' is allowed" in str(final.state.result(raise_on_failure=False))
        assert _keys(dst, bucket) == destination_before

        # the same deployment with good options runs (the runner works, so the failure above was the check)
        good = client.create_flow_run_from_deployment(
            deployment_id, parameters={"options": {"bucket": bucket, "prefix": "logs"}}
        )
        assert wait_final(good.id).state.is_completed()
        assert dst.get_object(bucket, "logs/a.txt").read() == b"new"
