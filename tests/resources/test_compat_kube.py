"""Saved prefect-kubernetes blocks drive resource_backup / resource_restore against the sandbox.

The conversions themselves are tested in ``tests/test_compat_blocks.py``; this file lives here to share
the session's sandbox (one per test session) with the other resource tests.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect_aws.client_parameters import AwsClientParameters
from prefect_aws.credentials import MinIOCredentials
from prefect_aws.s3 import S3Bucket
from prefect_kubernetes.credentials import KubernetesClusterConfig, KubernetesCredentials
from prefect_run import flow_run_texts

from blocks.object_store import ObjectStore
from flows.app_migration import deactivate
from flows.resource_backup import resource_backup, resource_restore
from sandbox.testing import SandboxHandle
from tasks.kube_export import KubeRest

pytestmark = pytest.mark.timeout(240)


def _cluster_config(sb: SandboxHandle, context: str, token: str) -> KubernetesClusterConfig:
    """The sandbox kubeconfig as prefect-kubernetes keeps it, its users given a bearer token."""
    config = yaml.safe_load(Path(sb.kubeconfig_path).read_text())
    for user in config["users"]:
        user["user"] = {"token": token}
    return KubernetesClusterConfig(config=config, context_name=context)


def _shown(state: Any) -> str:
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        parameters = client.read_flow_run(run_id).parameters
    return flow_run_texts(run_id) + json.dumps(parameters) + repr(state.result(raise_on_failure=False))


def test_saved_kubernetes_blocks_back_up_and_restore(
    prefect_server: Any,
    rsandbox: SandboxHandle,
    s3_a: Any,
    object_store_a: ObjectStore,
    source_rest: KubeRest,
    target_rest: KubeRest,
) -> None:
    uid = uuid.uuid4().hex[:8]
    token, ns, bucket = f"compat-kube-token-{uid}", f"compat-{uid}", f"compat-kube-{uid}"
    source_rest.request("POST", "/api/v1/namespaces", body={"metadata": {"name": ns}})
    source_rest.request(
        "POST",
        f"/api/v1/namespaces/{ns}/configmaps",
        body={"metadata": {"name": "settings"}, "data": {"mode": "compat"}},
    )
    _cluster_config(rsandbox, "source", token).save(f"compat-src-{uid}")
    KubernetesCredentials(cluster_config=_cluster_config(rsandbox, "target", token)).save(f"compat-dst-{uid}")
    minio = MinIOCredentials(
        minio_root_user=s3_a.access_key,
        minio_root_password=s3_a.secret_key,
        aws_client_parameters=AwsClientParameters(endpoint_url=f"http://{s3_a.endpoint}"),
    )
    S3Bucket(bucket_name=bucket, credentials=minio).save(f"compat-archive-{uid}")

    backup = resource_backup(
        source=f"kubernetes-cluster-config/compat-src-{uid}",
        object_store=f"s3-bucket/compat-archive-{uid}",  # no bucket parameter: the block's bucket
        backup_name="compat-1",
        include_namespaces=[ns],
        return_state=True,
    )
    assert backup.is_completed(), backup.message
    assert backup.result()["counts"] == {"ConfigMap": 1, "Namespace": 1}
    keys = [o.object_name for o in object_store_a.minio_client().list_objects(bucket, recursive=True)]
    assert any(str(k).endswith("compat-1/manifest.json") for k in keys), keys

    restore = resource_restore(
        target=f"kubernetes-credentials/compat-dst-{uid}",
        object_store=f"s3-bucket/compat-archive-{uid}",
        backup_name="compat-1",
        namespace_mapping={ns: f"{ns}-dr"},
        return_state=True,
    )
    assert restore.is_completed(), restore.message
    assert restore.result()["counts"] == {"created": 2}
    copied = target_rest.request("GET", f"/api/v1/namespaces/{ns}-dr/configmaps/settings")
    assert copied["data"] == {"mode": "compat"}

    for state in (backup, restore):
        shown = _shown(state)
        assert token not in shown and s3_a.secret_key not in shown

    # the same block passed as an unsaved instance works too, but Prefect records a flow's parameters as
    # given and a KubernetesClusterConfig holds its kubeconfig as a plain dict: the token is then on the
    # server (docs/security.md: pass prefect-kubernetes blocks by name). This also shows _shown sees it.
    state = deactivate(cluster=_cluster_config(rsandbox, "source", token), namespaces=[ns], return_state=True)
    assert state.is_completed(), state.message
    assert token in _shown(state)
