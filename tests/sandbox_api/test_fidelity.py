"""The sandbox answers as k8s-fidelity.md says a real kube-apiserver does (issue 17, "kinder" points)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from kubernetes import client

from sandbox.runtime.timescale import TIME_SCALE_ENV

from .conftest import ApiEnv


def test_fidelity_namespace_delete_is_asynchronous(
    api_env: ApiEnv, wait_for: Callable[..., object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spec: DELETE -> 200 with the object (deletionTimestamp, phase Terminating), a repeat also 200,
    creating inside is 403 NamespaceTerminating on metadata.namespace, gone (with its content) later."""
    monkeypatch.setenv(TIME_SCALE_ENV, "1.2")  # the ~5 s of a real cluster (6 s: room on a loaded machine)
    name = f"t-{uuid.uuid4().hex[:8]}"
    assert api_env.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})[0] == 201
    cm = {"metadata": {"name": "keep"}, "data": {"k": "v"}}
    assert api_env.request("POST", f"/api/v1/namespaces/{name}/configmaps", cm)[0] == 201

    for _ in range(2):  # a repeated DELETE answers the object too
        code, body = api_env.request("DELETE", f"/api/v1/namespaces/{name}")
        assert code == 200
        assert body["kind"] == "Namespace"
        assert body["metadata"]["deletionTimestamp"]
        assert body["status"]["phase"] == "Terminating"

    code, body = api_env.request(
        "POST", f"/api/v1/namespaces/{name}/configmaps", {"metadata": {"name": "new"}}
    )
    assert code == 403
    assert body["reason"] == "Forbidden"
    assert body["message"] == (
        f'configmaps "new" is forbidden: unable to create new content in namespace {name} '
        "because it is being terminated"
    )
    assert body["details"]["causes"] == [
        {
            "field": "metadata.namespace",
            "reason": "NamespaceTerminating",
            "message": f"namespace {name} is being terminated",
        }
    ]
    assert api_env.core.read_namespace(name).status.phase == "Terminating"

    wait_for(lambda: api_env.request("GET", f"/api/v1/namespaces/{name}")[0] == 404, timeout=30)
    assert api_env.request("GET", f"/api/v1/namespaces/{name}/configmaps/keep")[0] == 404
    assert api_env.request("DELETE", f"/api/v1/namespaces/{name}")[0] == 404


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [({}, "FieldValueRequired"), ({"name": "Bad_Name"}, "FieldValueInvalid")],
)
def test_fidelity_namespace_name_missing_or_bad_is_invalid(
    api_env: ApiEnv, metadata: dict[str, str], reason: str
) -> None:
    """Spec: no name / `Bad_Name` -> 422 Invalid, cause metadata.name, details.kind Namespace."""
    code, body = api_env.request("POST", "/api/v1/namespaces", {"metadata": metadata})
    assert code == 422
    assert body["reason"] == "Invalid"
    assert body["details"]["kind"] == "Namespace"
    assert [(c["field"], c["reason"]) for c in body["details"]["causes"]] == [("metadata.name", reason)]
    assert body["message"].startswith(f'Namespace "{metadata.get("name", "")}" is invalid: metadata.name: ')


def test_fidelity_typed_client_namespace_without_name(api_env: ApiEnv) -> None:
    """The Python client sees the same 422 (not a 500) for a nameless namespace."""
    with pytest.raises(client.ApiException) as err:
        api_env.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta()))
    assert err.value.status == 422


def test_fidelity_service_status_load_balancer_empty(api_env: ApiEnv, namespace: str) -> None:
    """Spec: a Service carries `status: {loadBalancer: {}}` (stays `{}` until a client writes /status)."""
    body = {"metadata": {"name": "s"}, "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}
    code, created = api_env.request("POST", f"/api/v1/namespaces/{namespace}/services", body)
    assert code == 201
    assert created["status"] == {"loadBalancer": {}}
    assert api_env.request("GET", f"/api/v1/namespaces/{namespace}/services/s")[1]["status"] == {
        "loadBalancer": {}
    }


def test_fidelity_orphan_delete_keeps_the_object_briefly(
    api_env: ApiEnv, namespace: str, wait_for: Callable[..., object]
) -> None:
    """Spec: "Not deleted at once -> 200 with the object carrying deletionTimestamp: ... Orphan
    (`[orphan]`)"; "Orphan -> pods and ControllerRevision stay, ownerReferences removed"."""
    base = f"/api/v1/namespaces/{namespace}/configmaps"
    code, owner = api_env.request("POST", base, {"metadata": {"name": "owner"}})
    assert code == 201
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    assert api_env.request("POST", base, {"metadata": {"name": "dep", "ownerReferences": [ref]}})[0] == 201

    code, body = api_env.request("DELETE", f"{base}/owner", {"propagationPolicy": "Orphan"})
    assert code == 200
    assert body["kind"] == "ConfigMap"
    assert body["metadata"]["deletionTimestamp"]
    assert body["metadata"]["finalizers"] == ["orphan"]
    code, still = api_env.request("GET", f"{base}/owner")  # not gone at once
    assert code == 200
    assert still["metadata"]["finalizers"] == ["orphan"]

    wait_for(lambda: api_env.request("GET", f"{base}/owner")[0] == 404, timeout=10)
    code, dep = api_env.request("GET", f"{base}/dep")
    assert code == 200
    assert "ownerReferences" not in dep["metadata"]


def test_fidelity_pvc_protection_until_no_pod_uses_the_claim(
    api_env: ApiEnv, namespace: str, wait_for: Callable[..., object]
) -> None:
    """Spec: PVCs carry "finalizer `kubernetes.io/pvc-protection`"; a claim a pod mounts stays
    Terminating until the pod is gone (the PVC-protection controller)."""
    base = f"/api/v1/namespaces/{namespace}"
    pvc = {
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    code, created = api_env.request("POST", f"{base}/persistentvolumeclaims", pvc)
    assert code == 201
    assert created["metadata"]["finalizers"] == ["kubernetes.io/pvc-protection"]
    wait_for(lambda: api_env.core.list_namespaced_service_account(namespace).items)
    pod = {
        "metadata": {"name": "user"},
        "spec": {
            "containers": [{"name": "c", "image": "busybox"}],
            "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}],
        },
    }
    assert api_env.request("POST", f"{base}/pods", pod)[0] == 201

    code, body = api_env.request("DELETE", f"{base}/persistentvolumeclaims/data")
    assert code == 200
    assert body["metadata"]["deletionTimestamp"]
    assert body["metadata"]["finalizers"] == ["kubernetes.io/pvc-protection"]
    time.sleep(0.5)  # the controller has had its chance: the claim is in use, it stays
    assert api_env.request("GET", f"{base}/persistentvolumeclaims/data")[0] == 200

    assert api_env.request("DELETE", f"{base}/pods/user")[0] == 200  # unbound: gone at once
    wait_for(lambda: api_env.request("GET", f"{base}/persistentvolumeclaims/data")[0] == 404)
