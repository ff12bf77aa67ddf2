"""Resource backup/restore against the sandbox and a real S3 server (SeaweedFS)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from blocks.kube import KubeCluster
from flows.resource_backup import resource_backup, resource_restore
from tasks.kube_export import KubeRest

from .conftest import pv_dir, read_tree

pytestmark = pytest.mark.timeout(240)


def _get(rest: KubeRest, path: str) -> dict[str, Any]:
    return rest.request("GET", path)


def _by_result(report: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in report["results"]:
        out.setdefault(r["result"], []).append(r["key"])
    return out


def test_cms_backup_restore_into_dr_namespace(
    prefect_server: Any,
    object_store_a: Any,
    bucket: str,
    source_kube: KubeCluster,
    target_kube: KubeCluster,
    source_rest: KubeRest,
    target_rest: KubeRest,
    cms_source: dict[str, dict[str, bytes]],
) -> None:
    backup = resource_backup(
        source=source_kube,
        object_store=object_store_a,
        bucket=bucket,
        backup_name="cms-1",
        include_namespaces=["cms"],
        include_volumes=True,
    )
    assert backup["counts"] == {
        "ConfigMap": 1,
        "Deployment.apps": 2,
        "Namespace": 1,
        "PersistentVolumeClaim": 2,
        "Secret": 1,
        "Service": 2,
    }
    skipped = " ".join(backup["skipped"])
    assert "ReplicaSet: owned by Deployment" in skipped and "Pod: owned by ReplicaSet" in skipped
    assert "kube-root-ca.crt" not in json.dumps(backup) or "ConfigMap" in skipped
    assert {v["pvc"] for v in backup["volumes"]} == {"mysql-pv-claim", "wp-pv-claim"}

    report = resource_restore(
        target=target_kube,
        object_store=object_store_a,
        bucket=bucket,
        backup_name="cms-1",
        restore_name="dr-1",
        namespace_mapping={"cms": "cms-dr"},
    )
    assert report["counts"] == {"created": 9}, report["counts"]
    assert [r["kind"] for r in report["results"]][:3] == [
        "Namespace",
        "PersistentVolumeClaim",
        "PersistentVolumeClaim",
    ]
    assert report["results"][-1]["kind"] == "Deployment"
    # all objects present in cms-dr with provenance labels
    for path in (
        "/apis/apps/v1/namespaces/cms-dr/deployments/wordpress",
        "/apis/apps/v1/namespaces/cms-dr/deployments/wordpress-mysql",
        "/api/v1/namespaces/cms-dr/secrets/mysql-pass",
        "/api/v1/namespaces/cms-dr/configmaps/wp-config",
        "/api/v1/namespaces/cms-dr/persistentvolumeclaims/mysql-pv-claim",
    ):
        labels = _get(target_rest, path)["metadata"]["labels"]
        assert labels["stateferry.io/backup-name"] == "cms-1"
        assert labels["stateferry.io/restore-name"] == "dr-1"
    assert _get(target_rest, "/apis/apps/v1/namespaces/cms-dr/deployments/wordpress")["spec"]["replicas"] == 2
    assert (
        _get(target_rest, "/api/v1/namespaces/cms-dr/secrets/mysql-pass")["data"]
        == _get(source_rest, "/api/v1/namespaces/cms/secrets/mysql-pass")["data"]
    )
    # services: fresh cluster IPs (headless stays headless), nodePort re-allocated
    src_svc = _get(source_rest, "/api/v1/namespaces/cms/services/wordpress")["spec"]
    dst_svc = _get(target_rest, "/api/v1/namespaces/cms-dr/services/wordpress")["spec"]
    assert dst_svc["clusterIP"] and dst_svc["clusterIP"] != src_svc["clusterIP"]
    assert dst_svc["clusterIPs"] == [dst_svc["clusterIP"]]
    assert (
        _get(target_rest, "/api/v1/namespaces/cms-dr/services/wordpress-mysql")["spec"]["clusterIP"] == "None"
    )
    # PVC files identical
    assert {v["status"] for v in report["volumes"]} == {"migrated successfully"}, report["volumes"]
    for claim, tree in cms_source.items():
        assert read_tree(pv_dir(target_rest, "cms-dr", claim)) == tree, (claim, report["volumes"])

    # restore again with skip: nothing changes
    rv_before = _get(target_rest, "/api/v1/namespaces/cms-dr/configmaps/wp-config")["metadata"][
        "resourceVersion"
    ]
    again = resource_restore(
        target=target_kube,
        object_store=object_store_a,
        bucket=bucket,
        backup_name="cms-1",
        namespace_mapping="cms:cms-dr",
        existing_resource_policy="skip",
    )
    assert set(_by_result(again)) == {"unchanged"}, again["counts"]
    assert (
        _get(target_rest, "/api/v1/namespaces/cms-dr/configmaps/wp-config")["metadata"]["resourceVersion"]
        == rv_before
    )

    # drift in the target: skip leaves it (and reports the diff), dry_run shows it, update fixes it
    cm_path = "/api/v1/namespaces/cms-dr/configmaps/wp-config"
    target_rest.request(
        "PATCH",
        cm_path,
        body={"data": {"WORDPRESS_DB_HOST": "elsewhere"}},
        content_type="application/merge-patch+json",
    )
    target_rest.request(
        "PATCH",
        "/apis/apps/v1/namespaces/cms-dr/deployments/wordpress",
        body={"spec": {"replicas": 5, "minReadySeconds": 7}},
        content_type="application/merge-patch+json",
    )
    skip = resource_restore(
        target=target_kube,
        object_store=object_store_a,
        bucket=bucket,
        backup_name="cms-1",
        namespace_mapping={"cms": "cms-dr"},
    )
    assert sorted(_by_result(skip)["skipped-existing"]) == [
        "ConfigMap cms-dr/wp-config",
        "Deployment.apps cms-dr/wordpress",
    ]
    dry = resource_restore(
        target=target_kube,
        object_store=object_store_a,
        bucket=bucket,
        backup_name="cms-1",
        namespace_mapping={"cms": "cms-dr"},
        existing_resource_policy="update",
        dry_run=True,
    )
    diffs = {r["key"]: r["diff"] for r in dry["results"] if r["result"] == "would-update"}
    assert diffs == {
        "ConfigMap cms-dr/wp-config": ['~ data.WORDPRESS_DB_HOST: "elsewhere" -> "wordpress-mysql"'],
        # from the server's dry run of the server-side apply: minReadySeconds, a field another
        # manager added and the backup does not set, stays (it is no change)
        "Deployment.apps cms-dr/wordpress": ["~ spec.replicas: 5 -> 2"],
    }
    # the drift was written by the Python client (manager OpenAPI-Generator): the objects are
    # stateferry's own (it restored them), so the update takes those fields back
    assert {r["key"]: r["message"] for r in dry["results"] if r["result"] == "would-update"} == {
        "ConfigMap cms-dr/wp-config": "diff from a server-side dry run of the update; takes over fields "
        'last written by "OpenAPI-Generator": .data.WORDPRESS_DB_HOST',
        "Deployment.apps cms-dr/wordpress": "diff from a server-side dry run of the update; takes over "
        'fields last written by "OpenAPI-Generator": .spec.replicas',
    }
    assert _get(target_rest, cm_path)["data"]["WORDPRESS_DB_HOST"] == "elsewhere"
    upd = resource_restore(
        target=target_kube,
        object_store=object_store_a,
        bucket=bucket,
        backup_name="cms-1",
        namespace_mapping={"cms": "cms-dr"},
        existing_resource_policy="update",
        auto_approve=True,
    )
    assert sorted(_by_result(upd)["updated"]) == sorted(diffs)
    assert _get(target_rest, cm_path)["data"]["WORDPRESS_DB_HOST"] == "wordpress-mysql"
    deployment = _get(target_rest, "/apis/apps/v1/namespaces/cms-dr/deployments/wordpress")
    assert (deployment["spec"]["replicas"], deployment["spec"]["minReadySeconds"]) == (2, 7)
    owners = {m["manager"]: m["fieldsV1"] for m in deployment["metadata"]["managedFields"]}
    assert "f:replicas" in owners["stateferry"]["f:spec"]
    assert "f:replicas" not in owners["OpenAPI-Generator"].get("f:spec", {})
