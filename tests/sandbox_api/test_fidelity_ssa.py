"""Server-side apply field ownership of the sandbox, checked against ../shared/k8s-fidelity.md and
issue 17 ("conflicts 409 without force, managedFields per manager, fields removed when their only
manager drops them")."""

from __future__ import annotations

import uuid
from typing import Any

from kubernetes import client

from .conftest import ApiEnv

APPLY = "application/apply-patch+yaml"


def _ns(api_env: ApiEnv) -> str:
    name = f"ssa-{uuid.uuid4().hex[:8]}"
    api_env.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


def _apply(
    api_env: ApiEnv, path: str, body: dict[str, Any], manager: str, force: bool = False
) -> tuple[int, dict[str, Any]]:
    query = f"?fieldManager={manager}" + ("&force=true" if force else "")
    return api_env.request("PATCH", path + query, body, content_type=APPLY)


def _cm(name: str, data: dict[str, str] | None = None, **meta: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, **meta}}
    if data is not None:
        body["data"] = data
    return body


def _entries(obj: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(e["manager"], e["operation"]): e for e in obj["metadata"]["managedFields"]}


def test_fidelity_managed_fields_per_manager(api_env: ApiEnv) -> None:
    """Spec: "create -> 201 with metadata.{creationTimestamp, managedFields, resourceVersion, uid}";
    "managedFields list each manager (the Python client's own manager is `OpenAPI-Generator`)"."""
    ns = _ns(api_env)
    api_env.core.create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cm", labels={"app": "x"}), data={"a": "1"})
    )
    path = f"/api/v1/namespaces/{ns}/configmaps/cm"
    code, body = api_env.request("GET", path)
    assert code == 200
    [entry] = body["metadata"]["managedFields"]
    assert entry["manager"] == "OpenAPI-Generator"
    assert entry["operation"] == "Update"
    assert entry["apiVersion"] == "v1"
    assert entry["fieldsType"] == "FieldsV1"
    assert entry["time"].endswith("Z")
    assert entry["fieldsV1"] == {
        "f:data": {".": {}, "f:a": {}},
        "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
    }

    code, body = _apply(api_env, path, _cm("cm", {"b": "2"}), "alice")
    assert code == 200, body
    entries = _entries(body)
    assert set(entries) == {("alice", "Apply"), ("OpenAPI-Generator", "Update")}
    assert entries[("alice", "Apply")]["fieldsV1"] == {"f:data": {"f:b": {}}}
    assert body["data"] == {"a": "1", "b": "2"}  # keeps fields it does not mention
    assert body["metadata"]["managedFields"][0]["operation"] == "Apply"  # Apply sorts before Update

    # a merge patch names its manager by ?fieldManager, else by the user agent's prefix
    code, body = api_env.request(
        "PATCH", path + "?fieldManager=editor", {"data": {"c": "3"}}, "application/merge-patch+json"
    )
    assert code == 200
    assert _entries(body)[("editor", "Update")]["fieldsV1"] == {"f:data": {"f:c": {}}}
    code, body = api_env.request("PATCH", path, {"data": {"d": "4"}}, "application/merge-patch+json")
    assert _entries(body)[("python-httpx", "Update")]["fieldsV1"] == {"f:data": {"f:d": {}}}

    # a write that changes nothing keeps the resourceVersion ("same rv")
    rv = body["metadata"]["resourceVersion"]
    code, again = _apply(api_env, path, _cm("cm", {"b": "2"}), "alice")
    assert code == 200
    assert again["metadata"]["resourceVersion"] == rv


def test_fidelity_apply_conflict_is_409_unless_forced(api_env: ApiEnv) -> None:
    """Spec: "Server-side apply (`application/apply-patch+yaml`, `fieldManager` required, `force=true`
    to take over)"; issue 17: "conflicts 409 without force"."""
    ns = _ns(api_env)
    path = f"/apis/apps/v1/namespaces/{ns}/deployments/web"
    dep: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "nginx:1"}]},
            },
        },
    }
    code, body = _apply(api_env, path, dep, "alice")
    assert code == 201, body
    [entry] = body["metadata"]["managedFields"]
    assert entry["operation"] == "Apply"
    spec = entry["fieldsV1"]["f:spec"]
    assert spec["f:selector"] == {}  # a label selector is atomic
    assert spec["f:template"]["f:spec"]["f:containers"] == {
        'k:{"name":"c"}': {".": {}, "f:image": {}, "f:name": {}}
    }

    # the same value is shared ownership, no conflict
    assert _apply(api_env, path, dep, "bob")[0] == 200

    changed = {**dep, "spec": {**dep["spec"], "replicas": 3}}
    changed["spec"]["template"] = {
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "nginx:2"}]},
    }
    code, status = _apply(api_env, path, changed, "carol")
    assert code == 409
    assert status["kind"] == "Status"
    assert status["reason"] == "Conflict"
    assert status["message"].startswith('Apply failed with 4 conflicts: conflicts with "alice":\n')
    assert {(c["reason"], c["message"], c["field"]) for c in status["details"]["causes"]} == {
        ("FieldManagerConflict", f'conflict with "{m}"', f)
        for m in ("alice", "bob")
        for f in (".spec.replicas", '.spec.template.spec.containers[name="c"].image')
    }
    assert api_env.apps.read_namespaced_deployment("web", ns).spec.replicas == 1

    # an Update manager is named with its apiVersion
    code, body = api_env.request(
        "PATCH", path + "?fieldManager=scaler", {"spec": {"replicas": 2}}, "application/merge-patch+json"
    )
    assert code == 200
    code, status = _apply(api_env, path, {**dep, "spec": {**dep["spec"], "replicas": 5}}, "alice")
    assert code == 409
    assert status["message"] == (
        'Apply failed with 1 conflict: conflict with "scaler" using apps/v1: .spec.replicas'
    )

    code, body = _apply(api_env, path, changed, "carol", force=True)
    assert code == 200, body
    assert body["spec"]["replicas"] == 3
    assert body["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:2"
    entries = _entries(body)
    assert ("scaler", "Update") not in entries  # it owned nothing else
    assert "f:replicas" not in entries[("alice", "Apply")]["fieldsV1"]["f:spec"]
    assert "f:replicas" in entries[("carol", "Apply")]["fieldsV1"]["f:spec"]

    # force is for apply only (the real PatchOptions validation)
    code, status = api_env.request(
        "PATCH", path + "?force=true", {"spec": {"replicas": 1}}, "application/merge-patch+json"
    )
    assert (code, status["details"]["kind"], status["details"]["causes"][0]["field"]) == (
        422,
        "PatchOptions",
        "force",
    )
    # the apply patch needs its manager (k8s-fidelity.md: 422 PatchOptions fieldManager)
    code, status = api_env.request("PATCH", path, dep, content_type=APPLY)
    assert (code, status["details"]["kind"], status["details"]["causes"][0]["field"]) == (
        422,
        "PatchOptions",
        "fieldManager",
    )


def test_fidelity_apply_removes_fields_only_their_manager_dropped(api_env: ApiEnv) -> None:
    """Issue 17: "fields removed when their only manager drops them"; k8s-fidelity.md: apply "keeps
    fields it does not mention" (a field another manager owns stays)."""
    ns = _ns(api_env)
    path = f"/api/v1/namespaces/{ns}/configmaps/cm"
    assert (
        _apply(api_env, path, _cm("cm", {"a": "1", "b": "2", "c": "3"}, labels={"l": "1"}), "alice")[0] == 201
    )
    assert _apply(api_env, path, _cm("cm", {"b": "2"}), "bob")[0] == 200  # co-owns b

    code, body = _apply(api_env, path, _cm("cm", {"a": "1"}), "alice")
    assert code == 200
    assert body["data"] == {"a": "1", "b": "2"}  # c dropped; b still owned by bob
    assert "labels" not in body["metadata"]  # the emptied map goes with its last field
    assert _entries(body)[("alice", "Apply")]["fieldsV1"] == {"f:data": {"f:a": {}}}

    code, body = _apply(api_env, path, _cm("cm"), "bob")
    assert code == 200
    assert body["data"] == {"a": "1"}
    assert ("bob", "Apply") not in _entries(body)
