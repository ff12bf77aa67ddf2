"""Table tests of planning/app_migration.py: deactivate/reactivate, parked CronJobs, Services."""

from __future__ import annotations

import json
from typing import Any

import pytest

from planning.app_migration import (
    MIGRATION_SUSPEND_ANNOTATION,
    SOURCE_REPLICAS_ANNOTATION,
    SOURCE_SUSPEND_ANNOTATION,
    cronjob_activation_patch,
    deactivation_patch,
    park_cronjob,
    parse_quiesce,
    prepare_service,
    reactivation_patch,
)
from stateferry.errors import InputError


def _obj(kind: str, spec: dict[str, Any], ann: dict[str, str] | None = None) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": "x", "annotations": ann or {}}, "spec": spec}


@pytest.mark.parametrize(
    ("obj", "patch"),
    [
        (
            _obj("Deployment", {"replicas": 3}),
            {"spec": {"replicas": 0}, "metadata": {"annotations": {SOURCE_REPLICAS_ANNOTATION: "3"}}},
        ),
        (_obj("StatefulSet", {"replicas": 0}), None),  # nothing to stop, nothing to remember
        # a re-run after a crash keeps the first recorded count
        (_obj("Deployment", {"replicas": 2}, {SOURCE_REPLICAS_ANNOTATION: "3"}), {"spec": {"replicas": 0}}),
        (_obj("Deployment", {"replicas": 0}, {SOURCE_REPLICAS_ANNOTATION: "3"}), None),
        (
            _obj("CronJob", {"suspend": False}),
            {"spec": {"suspend": True}, "metadata": {"annotations": {SOURCE_SUSPEND_ANNOTATION: "false"}}},
        ),
        (_obj("CronJob", {"suspend": True}), None),
        (_obj("ConfigMap", {}), None),
    ],
)
def test_park_deactivation_patch(obj: dict[str, Any], patch: dict[str, Any] | None) -> None:
    assert deactivation_patch(obj) == patch


def test_park_reactivation_restores_what_was_recorded() -> None:
    dep = _obj("Deployment", {"replicas": 0}, {SOURCE_REPLICAS_ANNOTATION: "3"})
    assert reactivation_patch(dep) == {
        "spec": {"replicas": 3},
        "metadata": {"annotations": {SOURCE_REPLICAS_ANNOTATION: None}},
    }
    cj = _obj("CronJob", {"suspend": True}, {SOURCE_SUSPEND_ANNOTATION: "false"})
    assert reactivation_patch(cj) == {
        "spec": {"suspend": False},
        "metadata": {"annotations": {SOURCE_SUSPEND_ANNOTATION: None}},
    }
    assert reactivation_patch(_obj("Deployment", {"replicas": 2})) is None
    with pytest.raises(InputError, match="source-replicas"):
        reactivation_patch(_obj("Deployment", {"replicas": 0}, {SOURCE_REPLICAS_ANNOTATION: "-1"}))


def test_park_cronjob_round_trip() -> None:
    for was in (False, True):
        parked = park_cronjob(_obj("CronJob", {"suspend": was, "schedule": "* * * * *"}))
        assert parked["spec"]["suspend"] is True
        assert parked["metadata"]["annotations"][MIGRATION_SUSPEND_ANNOTATION] == str(was).lower()
        patch = cronjob_activation_patch(parked)
        assert patch == {
            "spec": {"suspend": was},
            "metadata": {"annotations": {MIGRATION_SUSPEND_ANNOTATION: None}},
        }
    assert cronjob_activation_patch(_obj("CronJob", {"suspend": True})) is None


def test_park_service_drops_lb_fields_and_server_allocated_node_ports() -> None:
    applied = {"spec": {"type": "LoadBalancer", "ports": [{"port": 80, "nodePort": 30080}, {"port": 443}]}}
    svc = {
        "kind": "Service",
        "metadata": {
            "name": "web",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": json.dumps(applied)},
            "managedFields": [
                {
                    "manager": "helm",
                    "operation": "Update",
                    "fieldsV1": {
                        "f:spec": {"f:ports": {'k:{"port":8443,"protocol":"TCP"}': {"f:nodePort": {}}}}
                    },
                }
            ],
        },
        "spec": {
            "type": "LoadBalancer",
            "loadBalancerIP": "10.0.0.5",
            "loadBalancerClass": "example.com/lb",
            "ports": [
                {"port": 80, "protocol": "TCP", "nodePort": 30080},  # user-set (last-applied)
                {"port": 443, "protocol": "TCP", "nodePort": 31443},  # allocated by the server
                {"port": 8443, "protocol": "TCP", "nodePort": 32443},  # user-set (managedFields)
            ],
        },
    }
    out = prepare_service(svc)
    assert "loadBalancerIP" not in out["spec"] and "loadBalancerClass" not in out["spec"]
    assert [p.get("nodePort") for p in out["spec"]["ports"]] == [30080, None, 32443]
    assert svc["spec"]["loadBalancerIP"] == "10.0.0.5"  # the input is not modified


def test_park_quiesce_mode_is_validated() -> None:
    assert parse_quiesce("Scale") == "scale" and parse_quiesce("") == "none"
    with pytest.raises(InputError, match="quiesce"):
        parse_quiesce("freeze")


def _ck(**over: Any) -> dict[str, Any]:
    v = {
        "namespace": "cms",
        "pvc": "data",
        "sha256_tree": "a" * 64,
        "target_sha256": "b" * 64,
        "files": 3,
        "bytes": 10,
        "target_namespace": "cms2",
        "target_pvc": "data",
        "status": "ignored",
    }
    return {"version": 1, "volumes": [{**v, **over}]}


def test_bulk_checkpoint_round_trip() -> None:
    from planning.app_migration import bulk_checkpoint, parse_bulk_checkpoint

    rec = bulk_checkpoint(_ck()["volumes"])
    assert "status" not in rec["volumes"][0]
    got = parse_bulk_checkpoint(json.loads(json.dumps(rec)), [("cms", "data")])
    assert got is not None and got[("cms", "data")]["target_sha256"] == "b" * 64


@pytest.mark.parametrize(
    ("record", "claims"),
    [
        (None, [("cms", "data")]),
        ({"version": 2, "volumes": []}, [("cms", "data")]),
        (_ck(), [("cms", "data"), ("cms", "logs")]),  # claims changed: copy again
        (_ck(), [("other", "data")]),
        (_ck(sha256_tree="A" * 64), [("cms", "data")]),
        (_ck(target_sha256=""), [("cms", "data")]),
        (_ck(files=-1), [("cms", "data")]),
        (_ck(bytes=True), [("cms", "data")]),
        (_ck(target_namespace="../x"), [("cms", "data")]),
        (_ck(target_pvc=""), [("cms", "data")]),
        ({"version": 1, "volumes": "x"}, [("cms", "data")]),
        ({"version": 1, "volumes": [_ck()["volumes"][0]] * 2}, [("cms", "data")]),  # duplicate
    ],
)
def test_bulk_checkpoint_refused(record: Any, claims: list[tuple[str, str]]) -> None:
    from planning.app_migration import parse_bulk_checkpoint

    assert parse_bulk_checkpoint(record, claims) is None
