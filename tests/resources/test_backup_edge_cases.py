"""Custom resources, bad input, corrupt archives and retention (sandbox + real S3)."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from blocks.kube import KubeCluster
from flows.resource_backup import RestoreFailed, resource_backup, resource_restore
from planning.archive_layout import ArchiveError, manifest_key, tarball_key
from stateferry.errors import InputError, PreconditionFailed
from tasks.archive_store import list_archives
from tasks.kube_export import KubeRest

pytestmark = pytest.mark.timeout(240)

CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}
                        },
                    }
                },
            }
        ],
    },
}


@pytest.fixture(scope="module")
def widgets_ns(source_rest: KubeRest) -> str:
    """Namespace ``crs`` in source with a Widget custom resource and a ConfigMap."""
    import time

    source_rest.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", body=CRD)
    source_rest.request("POST", "/api/v1/namespaces", body={"metadata": {"name": "crs"}})
    source_rest.request(
        "POST", "/api/v1/namespaces/crs/configmaps", body={"metadata": {"name": "c1", "labels": {"app": "w"}}}
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            source_rest.request(
                "POST",
                "/apis/example.com/v1/namespaces/crs/widgets",
                body={
                    "apiVersion": "example.com/v1",
                    "kind": "Widget",
                    "metadata": {"name": "w1"},
                    "spec": {"size": 3},
                },
            )
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
    return "crs"


def test_custom_resource_restores_after_its_crd(
    prefect_server: Any,
    object_store_a: Any,
    bucket: str,
    source_kube: KubeCluster,
    target_kube: KubeCluster,
    target_rest: KubeRest,
    widgets_ns: str,
) -> None:
    b = resource_backup(
        source=source_kube,
        object_store=object_store_a,
        bucket=bucket,
        backup_name="crs-1",
        include_namespaces=[widgets_ns],
    )
    assert b["counts"] == {
        "ConfigMap": 1,
        "CustomResourceDefinition.apiextensions.k8s.io": 1,
        "Namespace": 1,
        "Widget.example.com": 1,
    }
    crd_kind = {"include_cluster_kinds": ["CustomResourceDefinition"]}
    dry = resource_restore(
        target=target_kube,
        object_store=object_store_a,
        bucket=bucket,
        backup_name="crs-1",
        dry_run=True,
        **crd_kind,
    )
    assert dry["counts"] == {"would-create": 4}
    assert (
        target_rest.get_or_none("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com")
        is None
    )
    r = resource_restore(
        target=target_kube,
        object_store=object_store_a,
        bucket=bucket,
        backup_name="crs-1",
        auto_approve=True,
        **crd_kind,
    )
    keys = [x["key"] for x in r["results"]]
    assert keys.index("CustomResourceDefinition.apiextensions.k8s.io widgets.example.com") < keys.index(
        "Widget.example.com crs/w1"
    )
    assert r["counts"] == {"created": 4}
    w = target_rest.request("GET", "/apis/example.com/v1/namespaces/crs/widgets/w1")
    assert w["spec"] == {"size": 3}
    assert w["metadata"]["labels"]["stateferry.io/backup-name"] == "crs-1"


def test_bad_input_and_corrupt_archives(
    prefect_server: Any,
    object_store_a: Any,
    bucket: str,
    source_kube: KubeCluster,
    target_kube: KubeCluster,
    widgets_ns: str,
) -> None:
    common = {"source": source_kube, "object_store": object_store_a, "bucket": bucket}
    with pytest.raises(InputError, match="namespace nope does not exist in cluster 'source'"):
        resource_backup(**common, include_namespaces=["nope"])
    with pytest.raises(InputError, match="label_selector"):
        resource_backup(**common, include_namespaces=[widgets_ns], label_selector="app in (x")
    with pytest.raises(PreconditionFailed, match="matched no object"):
        resource_backup(**common, include_namespaces=[widgets_ns], label_selector="app=nothing")
    assert list_archives(object_store_a, bucket, "resource-backups") == []
    empty = resource_backup(
        **common,
        backup_name="empty",
        include_namespaces=[widgets_ns],
        label_selector="app=nothing",
        allow_empty=True,
    )
    assert empty["counts"] in ({}, {"Namespace": 1}) and "matched no object" in empty["warnings"][0]

    resource_backup(**common, backup_name="good", include_namespaces=[widgets_ns], label_selector="app=w")
    restore = {"target": target_kube, "object_store": object_store_a, "bucket": bucket}
    with pytest.raises(InputError, match=r"no backup 'missing'.*found: empty, good"):
        resource_restore(**restore, backup_name="missing")
    with pytest.raises(InputError, match="existing_resource_policy"):
        resource_restore(**restore, backup_name="good", existing_resource_policy="overwrite")

    client = object_store_a.minio_client()
    garbage = b"this is not gzip"
    client.put_object(bucket, tarball_key("resource-backups", "good"), io.BytesIO(garbage), len(garbage))
    with pytest.raises(ArchiveError, match="the archive is corrupt"):
        resource_restore(**restore, backup_name="good")

    resp = client.get_object(bucket, manifest_key("resource-backups", "empty"))
    manifest = json.loads(resp.read())
    manifest["layout_version"] = 2
    raw = json.dumps(manifest).encode()
    client.put_object(bucket, manifest_key("resource-backups", "empty"), io.BytesIO(raw), len(raw))
    with pytest.raises(ArchiveError, match="layout version 2 is not supported"):
        resource_restore(**restore, backup_name="empty")


def test_retention_keeps_the_newest(
    prefect_server: Any, object_store_a: Any, bucket: str, source_kube: KubeCluster, widgets_ns: str
) -> None:
    common = {
        "source": source_kube,
        "object_store": object_store_a,
        "bucket": bucket,
        "include_namespaces": [widgets_ns],
    }
    resource_backup(**common, backup_name="r1")
    import time

    time.sleep(1.1)  # manifests carry second-resolution timestamps
    out = resource_backup(**common, backup_name="r2", keep_last=1)
    assert out["deleted"] == ["r1"]
    assert [a.name for a in list_archives(object_store_a, bucket, "resource-backups")] == ["r2"]


def test_partial_failure_is_reported_per_object(
    prefect_server: Any,
    object_store_a: Any,
    bucket: str,
    source_kube: KubeCluster,
    target_kube: KubeCluster,
    source_rest: KubeRest,
    target_rest: KubeRest,
) -> None:
    source_rest.request("POST", "/api/v1/namespaces", body={"metadata": {"name": "np"}})
    source_rest.request("POST", "/api/v1/namespaces/np/configmaps", body={"metadata": {"name": "cfg"}})
    svc = source_rest.request(
        "POST",
        "/api/v1/namespaces/np/services",
        body={
            "metadata": {"name": "web"},
            "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80}]},
        },
    )
    node_port = svc["spec"]["ports"][0]["nodePort"]
    resource_backup(
        source=source_kube,
        object_store=object_store_a,
        bucket=bucket,
        backup_name="np-1",
        include_namespaces=["np"],
    )
    restore: dict[str, Any] = {
        "target": target_kube,
        "object_store": object_store_a,
        "bucket": bucket,
        "backup_name": "np-1",
        "keep_node_ports": True,
    }
    first = resource_restore(**restore, namespace_mapping={"np": "np-a"})
    assert first["counts"] == {"created": 3}
    got = target_rest.request("GET", "/api/v1/namespaces/np-a/services/web")
    assert got["spec"]["ports"][0]["nodePort"] == node_port

    # the same nodePort cannot be allocated twice: that object fails, the others are restored
    second = resource_restore(**restore, namespace_mapping={"np": "np-b"}, fail_on_error=False)
    by_key = {r["key"]: r for r in second["results"]}
    assert second["counts"] == {"created": 2, "failed": 1}
    assert by_key["Service np-b/web"]["result"] == "failed"
    assert "already allocated" in by_key["Service np-b/web"]["message"]
    assert by_key["ConfigMap np-b/cfg"]["result"] == "created"
    with pytest.raises(RestoreFailed, match=r"1 of 3 objects failed to restore \(Service np-c/web: "):
        resource_restore(**restore, namespace_mapping={"np": "np-c"})
    assert target_rest.request("GET", "/api/v1/namespaces/np-c/configmaps/cfg")["metadata"]["name"] == "cfg"


def test_whole_cluster_backup_like_the_seed(
    prefect_server: Any, object_store_a: Any, bucket: str, source_kube: KubeCluster, widgets_ns: str
) -> None:
    """`ark create schedule k8sbackup --exclude-namespaces kube-system`, with cluster resources."""
    out = resource_backup(
        source=source_kube,
        object_store=object_store_a,
        bucket=bucket,
        backup_name="k8sbackup",
        include_namespaces=["*"],
        exclude_namespaces=["kube-system"],
        include_cluster_resources=True,
    )
    assert "kube-system" not in out["namespaces"] and {"crs", "default"} <= set(out["namespaces"])
    assert out["counts"]["StorageClass.storage.k8s.io"] >= 1
    assert out["counts"]["Widget.example.com"] >= 1
    resp = object_store_a.minio_client().get_object(bucket, manifest_key("resource-backups", "k8sbackup"))
    manifest = json.loads(resp.read())
    assert manifest["layout_version"] == 1 and manifest["selection"]["exclude_namespaces"] == ["kube-system"]
    assert sum(manifest["counts"].values()) == manifest["total_objects"] == out["total_objects"]
    skipped = " ".join(manifest["skipped"])
    assert "ConfigMap: the target cluster publishes its own CA bundle" in skipped
    assert "Service: the API server's own Service exists in every cluster" in skipped


def test_update_waits_for_approval_and_a_rejection_changes_nothing(
    prefect_server: Any,
    object_store_a: Any,
    bucket: str,
    source_kube: KubeCluster,
    target_kube: KubeCluster,
    source_rest: KubeRest,
    target_rest: KubeRest,
) -> None:
    import threading

    from prefect.flow_runs import resume_flow_run

    from devservers.prefect_runs import find_flow_run, wait_for_approval_form
    from tasks.approvals import ApprovalRejected

    source_rest.request("POST", "/api/v1/namespaces", body={"metadata": {"name": "ap"}})
    source_rest.request(
        "POST",
        "/api/v1/namespaces/ap/configmaps",
        body={"metadata": {"name": "cfg"}, "data": {"k": "backup"}},
    )
    resource_backup(
        source=source_kube,
        object_store=object_store_a,
        bucket=bucket,
        backup_name="ap-1",
        include_namespaces=["ap"],
    )
    restore = {"target": target_kube, "object_store": object_store_a, "bucket": bucket, "backup_name": "ap-1"}
    assert resource_restore(**restore)["counts"] == {"created": 2}  # new objects, policy skip: no pause
    cm = "/api/v1/namespaces/ap/configmaps/cfg"
    target_rest.request(
        "PATCH", cm, body={"data": {"k": "live"}}, content_type="application/merge-patch+json"
    )
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["report"] = resource_restore(
                **restore, existing_resource_policy="update", restore_name="ap-upd"
            )
        except BaseException as exc:
            out["error"] = exc

    th = threading.Thread(target=run)
    th.start()
    try:
        run_id = find_flow_run("resource_restore", timeout=90, parameters={"restore_name": "ap-upd"})
        wait_for_approval_form(run_id, 90)
        assert target_rest.request("GET", cm)["data"] == {"k": "live"}
        resume_flow_run(run_id, run_input={"approved": False, "comment": "not now"})
    finally:
        th.join(120)
    assert isinstance(out.get("error"), ApprovalRejected), out
    assert target_rest.request("GET", cm)["data"] == {"k": "live"}
