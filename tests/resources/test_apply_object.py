"""``apply_object``: the flows' one write path for objects they render (server-side apply as field
manager ``stateferry``), against the sandbox API server and its field ownership."""

from __future__ import annotations

import secrets
from typing import Any

from blocks.kube import KubeCluster
from tasks.kube_export import KubeRest
from tasks.kube_objects import FIELD_MANAGER, apply_object


def _cm(name: str, ns: str, data: dict[str, str], labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def test_apply_object_creates_reports_and_keeps_other_managers_fields(
    source_kube: KubeCluster, source_rest: KubeRest
) -> None:
    """Created, then unchanged on the same manifest (no new resourceVersion), patched on a change;
    a key stateferry stops naming goes, a key another manager wrote stays; managedFields name us."""
    api = source_kube.api_client()
    ns = "apply-" + secrets.token_hex(3)
    source_rest.request("POST", "/api/v1/namespaces", body={"metadata": {"name": ns}})
    url = f"/api/v1/namespaces/{ns}/configmaps/state"
    assert apply_object.fn(api, _cm("state", ns, {"a": "1", "b": "2"})) == "created"
    rv = source_rest.request("GET", url)["metadata"]["resourceVersion"]
    assert apply_object.fn(api, _cm("state", ns, {"a": "1", "b": "2"})) == "unchanged"
    assert source_rest.request("GET", url)["metadata"]["resourceVersion"] == rv
    # another writer (an operator's kubectl edit) adds a key of its own
    source_rest.request(
        "PATCH",
        url,
        query=[("fieldManager", "kubectl-edit")],
        body={"data": {"theirs": "x"}},
        content_type="application/merge-patch+json",
    )
    assert apply_object.fn(api, _cm("state", ns, {"a": "3"}, {"app": "etcd"})) == "patched"
    obj = source_rest.request("GET", url)
    assert obj["data"] == {"a": "3", "theirs": "x"} and obj["metadata"]["labels"] == {"app": "etcd"}
    managers = {m["manager"]: m["operation"] for m in obj["metadata"]["managedFields"]}
    assert managers[FIELD_MANAGER] == "Apply" and managers["kubectl-edit"] == "Update"
