"""The restore/migration apply path against the sandbox API server (server-side apply, field
ownership, dry-run diffs): what the server says is what the report says."""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

import pytest

from blocks.kube import KubeCluster
from planning.kube_redaction import REDACTED
from planning.resources import ExistingPolicy
from tasks.kube_apply import ObjectResult, apply_objects
from tasks.kube_export import KubeRest

pytestmark = pytest.mark.timeout(120)

APPLY = "application/apply-patch+yaml"
OURS = {"app.kubernetes.io/managed-by": "stateferry", "stateferry.io/restore-name": "r1"}


def _ns(rest: KubeRest) -> str:
    ns = "ssa-" + secrets.token_hex(3)
    rest.request("POST", "/api/v1/namespaces", body={"metadata": {"name": ns}})
    return ns


def _cm(ns: str, data: dict[str, str], labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta = {"name": "cfg", "namespace": ns, "labels": dict(OURS if labels is None else labels)}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def _by_key(results: list[ObjectResult]) -> dict[str, ObjectResult]:
    return {r.key: r for r in results}


def _apply(
    kube: KubeCluster, objs: list[dict[str, Any]], policy: str, dry_run: bool
) -> dict[str, ObjectResult]:
    return _by_key(apply_objects(kube.api_client(), objs, policy=ExistingPolicy(policy), dry_run=dry_run))


def test_the_diff_is_the_servers_answer(target_kube: KubeCluster, target_rest: KubeRest) -> None:
    """Server defaults are no change, a field another manager changed shows, a field stateferry no
    longer applies is pruned, a field another manager added stays; the dry run writes nothing."""
    ns = _ns(target_rest)
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": ns, "labels": OURS},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    first = _apply(target_kube, [_cm(ns, {"a": "1", "b": "2"}), svc], "skip", False)
    assert {k: r.result for k, r in first.items()} == {
        f"ConfigMap {ns}/cfg": "created",
        f"Service {ns}/web": "created",
    }
    live_svc = target_rest.request("GET", f"/api/v1/namespaces/{ns}/services/web")
    # the server filled in what the backup never says
    assert live_svc["spec"]["clusterIP"] and live_svc["spec"]["sessionAffinity"] == "None"
    assert live_svc["spec"]["ports"][0]["protocol"] == "TCP"
    cm_url = f"/api/v1/namespaces/{ns}/configmaps/cfg"
    target_rest.request(
        "PATCH",
        cm_url,
        query=[("fieldManager", "kubectl-edit")],
        body={"data": {"a": "edited", "extra": "theirs"}},
        content_type="application/merge-patch+json",
    )
    # the next backup's version of the ConfigMap no longer has ``b``
    dry = _apply(target_kube, [_cm(ns, {"a": "1"}), svc], "update", True)
    cm = dry[f"ConfigMap {ns}/cfg"]
    assert (cm.result, cm.diff) == ("would-update", ['~ data.a: "edited" -> "1"', '- data.b: "2"'])
    assert cm.message == (
        "diff from a server-side dry run of the update; "
        'takes over fields last written by "kubectl-edit": .data.a'
    )
    assert (dry[f"Service {ns}/web"].result, dry[f"Service {ns}/web"].diff) == ("unchanged", [])
    assert target_rest.request("GET", cm_url)["data"] == {"a": "edited", "b": "2", "extra": "theirs"}
    done = _apply(target_kube, [_cm(ns, {"a": "1"}), svc], "update", False)
    assert done[f"ConfigMap {ns}/cfg"].result == "updated" and done[f"Service {ns}/web"].result == "unchanged"
    assert target_rest.request("GET", cm_url)["data"] == {"a": "1", "extra": "theirs"}
    assert target_rest.request("GET", f"/api/v1/namespaces/{ns}/services/web")["spec"] == live_svc["spec"]


def test_an_immutable_change_is_reported_and_the_object_left_alone(
    target_kube: KubeCluster, target_rest: KubeRest
) -> None:
    """A PVC whose spec the backup would change: the server refuses (422); the restore reports it per
    object and goes on with the next objects."""
    ns = _ns(target_rest)
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": ns, "labels": OURS},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    assert _apply(target_kube, [pvc], "update", False)[f"PersistentVolumeClaim {ns}/data"].result == "created"
    before = target_rest.request("GET", f"/api/v1/namespaces/{ns}/persistentvolumeclaims/data")
    changed = json.loads(json.dumps(pvc))
    changed["spec"]["accessModes"] = ["ReadWriteMany"]
    for policy, dry_run, result in (
        ("update", True, "failed"),
        ("update", False, "failed"),
        ("skip", False, "skipped-existing"),
    ):
        out = _apply(target_kube, [changed, _cm(ns, {"k": "v"})], policy, dry_run)
        r = out[f"PersistentVolumeClaim {ns}/data"]
        assert (r.result, r.diff) == (result, []), r.message
        assert "spec" in r.message
        if result == "failed":
            assert "left as it is" in r.message and "spec is immutable after creation" in r.message
        assert out[f"ConfigMap {ns}/cfg"].result == (
            "would-create" if dry_run else ("created" if policy == "update" else "unchanged")
        )
    after = target_rest.request("GET", f"/api/v1/namespaces/{ns}/persistentvolumeclaims/data")
    assert after["spec"]["accessModes"] == before["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_another_managers_object_is_a_conflict_and_not_forced(
    target_kube: KubeCluster, target_rest: KubeRest
) -> None:
    """An object Helm put there: update reports the conflicting fields and their manager and writes
    nothing; the same drift on stateferry's own object is taken back (the other test)."""
    ns = _ns(target_rest)
    url = f"/api/v1/namespaces/{ns}/configmaps/cfg"
    theirs = _cm(ns, {"k": "theirs", "other": "x"}, labels={"app.kubernetes.io/managed-by": "Helm"})
    target_rest.request("PATCH", url, query=[("fieldManager", "helm")], body=theirs, content_type=APPLY)
    rv = target_rest.request("GET", url)["metadata"]["resourceVersion"]
    for dry_run in (True, False):
        r = _apply(target_kube, [_cm(ns, {"k": "ours", "other": "x"})], "update", dry_run)[
            f"ConfigMap {ns}/cfg"
        ]
        assert r.result == "conflict"
        assert '"helm": .data.k, .metadata.labels.app.kubernetes.io/managed-by' in r.message
        assert "not forced" in r.message and "nothing was written" in r.message
        assert '~ data.k: "theirs" -> "ours"' in r.diff
    live = target_rest.request("GET", url)
    assert live["metadata"]["resourceVersion"] == rv and live["data"] == {"k": "theirs", "other": "x"}
    assert {m["manager"] for m in live["metadata"]["managedFields"]} == {"helm"}
    # an object equal to the backup but Helm's: skip reports the label it would take, nothing else
    r = _apply(target_kube, [_cm(ns, {"k": "theirs", "other": "x"})], "skip", False)[f"ConfigMap {ns}/cfg"]
    assert r.result == "skipped-existing"
    assert r.diff == ['~ metadata.labels.app.kubernetes.io/managed-by: "Helm" -> "stateferry"']


def test_secret_values_never_reach_a_result(target_kube: KubeCluster, target_rest: KubeRest) -> None:
    """Diffs name the keys; server messages (a refused type change) are scrubbed."""

    def b64(s: str) -> str:
        return base64.b64encode(s.encode()).decode()

    ns = _ns(target_rest)

    def secret(data: dict[str, str], stype: str = "Opaque") -> dict[str, Any]:
        meta = {"name": "creds", "namespace": ns, "labels": OURS}
        return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": stype, "data": data}

    values = ["backup-password-1", "live-password-22", "new-token-333"]
    assert (
        _apply(target_kube, [secret({"pw": b64(values[0])})], "skip", False)[f"Secret {ns}/creds"].result
        == "created"
    )
    target_rest.request(
        "PATCH",
        f"/api/v1/namespaces/{ns}/secrets/creds",
        query=[("fieldManager", "kubectl-edit")],
        body={"data": {"pw": b64(values[1])}},
        content_type="application/merge-patch+json",
    )
    results = apply_objects(
        target_kube.api_client(),
        [secret({"pw": b64(values[0]), "token": b64(values[2])})],
        policy=ExistingPolicy.UPDATE,
        dry_run=True,
    )
    assert [(r.result, r.diff) for r in results] == [
        (
            "would-update",
            [f"~ data.pw: changed (value {REDACTED})", f"+ data.token: added (value {REDACTED})"],
        )
    ]
    refused = apply_objects(
        target_kube.api_client(),
        [secret({"pw": b64(values[0])}, "kubernetes.io/basic-auth")],
        policy=ExistingPolicy.UPDATE,
    )
    assert refused[0].result == "failed" and "type" in refused[0].message
    text = json.dumps([r.to_dict() for r in results + refused])
    for v in values:
        assert v not in text and b64(v) not in text
