"""``resource_restore`` pauses before applying cluster-scoped kinds (issue 17: "pauses before applying
(always for `update`, and for cluster-scoped kinds)"); the `update` pause is tested with the edge cases."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from blocks.kube import KubeCluster
from flows.resource_backup import resource_backup, resource_restore
from tasks.kube_export import KubeRest

pytestmark = pytest.mark.timeout(240)

CRD = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gadgets.example.org"


def _crd() -> dict[str, Any]:
    spec = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    schema = {"type": "object", "properties": {"spec": spec}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.example.org"},
        "spec": {
            "group": "example.org",
            "scope": "Namespaced",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget", "listKind": "GadgetList"},
            "versions": [
                {"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": schema}}
            ],
        },
    }


def test_cluster_scoped_kinds_wait_for_approval(
    prefect_server: Any,
    object_store_a: Any,
    bucket: str,
    source_kube: KubeCluster,
    target_kube: KubeCluster,
    source_rest: KubeRest,
    target_rest: KubeRest,
) -> None:
    from prefect.flow_runs import resume_flow_run

    from devservers.prefect_runs import find_flow_run, wait_for_approval_form

    source_rest.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", body=_crd())
    source_rest.request("POST", "/api/v1/namespaces", body={"metadata": {"name": "gad"}})
    gadget = {"apiVersion": "example.org/v1", "kind": "Gadget", "metadata": {"name": "g1"}, "spec": {"n": 1}}
    deadline = time.monotonic() + 20
    while True:  # the CRD is served within a second of its creation
        try:
            source_rest.request("POST", "/apis/example.org/v1/namespaces/gad/gadgets", body=gadget)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    resource_backup(
        source=source_kube,
        object_store=object_store_a,
        bucket=bucket,
        backup_name="gad-1",
        include_namespaces=["gad"],
    )
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["report"] = resource_restore(
                target=target_kube,
                object_store=object_store_a,
                bucket=bucket,
                backup_name="gad-1",
                restore_name="gad-r",
                include_cluster_kinds=["CustomResourceDefinition"],
            )
        except BaseException as exc:
            out["error"] = exc

    th = threading.Thread(target=run)
    th.start()
    try:
        run_id = find_flow_run("resource_restore", timeout=90, parameters={"restore_name": "gad-r"})
        wait_for_approval_form(run_id, 90)
        assert target_rest.get_or_none(CRD) is None  # nothing applied while it waits
        assert target_rest.get_or_none("/api/v1/namespaces/gad") is None
        resume_flow_run(run_id, run_input={"approved": True, "comment": "ok"})
    finally:
        th.join(120)
    assert "error" not in out, out
    assert out["report"]["counts"] == {"created": 3}
    assert target_rest.get_or_none(CRD) is not None
