"""What a restore by server-side apply meets on a real API server: dry-run applies, immutable PVC specs."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from .conftest import ApiEnv

APPLY = "application/apply-patch+yaml"


def _pvc(name: str, storage: str = "1Gi", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": storage}}, **spec},
    }


def _causes(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["field"], c["reason"]) for c in body["details"]["causes"]]


def test_fidelity_pvc_spec_is_immutable_except_requests_of_bound_claims(
    api_env: ApiEnv, namespace: str
) -> None:
    """kube-apiserver's ValidatePersistentVolumeClaimUpdate (1.24 line): 422 ``spec: Forbidden: spec
    is immutable after creation except resources.requests for bound claims``; ``volumeName`` may be
    set once; a bound claim's ``resources.requests.storage`` may grow, never shrink ("field can not be
    less than previous value"); a Pending claim's requests are part of the immutable spec."""
    base = f"/api/v1/namespaces/{namespace}/persistentvolumeclaims"
    code, _ = api_env.request("POST", base, _pvc("data"))
    assert code == 201
    url = f"{base}/data"
    merge = "application/merge-patch+json"
    code, body = api_env.request("PATCH", url, {"spec": {"storageClassName": "fast"}}, content_type=merge)
    assert code == 422 and body["reason"] == "Invalid"
    assert _causes(body) == [("spec", "FieldValueForbidden")]
    assert body["message"].startswith(
        'PersistentVolumeClaim "data" is invalid: spec: Forbidden: spec is immutable after creation '
        "except resources.requests for bound claims"
    )
    code, body = api_env.request(
        "PATCH", url, {"spec": {"resources": {"requests": {"storage": "2Gi"}}}}, merge
    )
    assert code == 422 and _causes(body) == [("spec", "FieldValueForbidden")]  # Pending: not resizable
    code, _ = api_env.request("PATCH", url, {"spec": {"volumeName": "pv-1"}}, content_type=merge)
    assert code == 200  # the binder's one change
    code, body = api_env.request("PATCH", url, {"spec": {"volumeName": "pv-2"}}, content_type=merge)
    assert code == 422 and _causes(body) == [("spec", "FieldValueForbidden")]
    code, _ = api_env.request("PATCH", url + "/status", {"status": {"phase": "Bound"}}, content_type=merge)
    assert code == 200
    code, body = api_env.request(
        "PATCH", url, {"spec": {"resources": {"requests": {"storage": "2Gi"}}}}, merge
    )
    assert code == 200 and body["spec"]["resources"]["requests"]["storage"] == "2Gi"
    code, body = api_env.request(
        "PATCH", url, {"spec": {"resources": {"requests": {"storage": "1Gi"}}}}, merge
    )
    assert code == 422
    assert _causes(body) == [("spec.resources.requests.storage", "FieldValueForbidden")]
    assert "field can not be less than previous value" in body["message"]
    # the same answer to a server-side apply, dry run included
    code, body = api_env.request(
        "PATCH",
        url + "?fieldManager=restore&force=true&dryRun=All",
        _pvc("data", "2Gi", storageClassName="x"),
        APPLY,
    )
    assert code == 422 and _causes(body) == [("spec", "FieldValueForbidden")]


def test_fidelity_dry_run_apply_answers_the_forced_result_and_stores_nothing(
    api_env: ApiEnv, namespace: str
) -> None:
    """ "?dryRun=All create -> 201 with the object, nothing stored", for a forced server-side apply
    of an existing object: the answer is the object as the apply would leave it, managedFields
    included (the conflicting field moved to the applier), and the stored object does not change."""
    api_env.core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cm"), data={"k": "theirs", "z": "1"})
    )
    url = f"/api/v1/namespaces/{namespace}/configmaps/cm"
    code, live = api_env.request("GET", url)
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"k": "ours"}}
    code, body = api_env.request("PATCH", url + "?fieldManager=restore&dryRun=All", config, APPLY)
    assert code == 409 and _causes(body) == [(".data.k", "FieldManagerConflict")]
    code, after = api_env.request("PATCH", url + "?fieldManager=restore&force=true&dryRun=All", config, APPLY)
    assert code == 200
    assert after["data"] == {"k": "ours", "z": "1"}
    owners = {m["manager"]: m["fieldsV1"] for m in after["metadata"]["managedFields"]}
    assert owners["restore"] == {"f:data": {"f:k": {}}}
    assert owners["OpenAPI-Generator"] == {"f:data": {".": {}, "f:z": {}}}
    code, stored = api_env.request("GET", url)
    assert stored == live
