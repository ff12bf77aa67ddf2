"""Table-driven: what a real API server rejects, with the status code and the field it names."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import ApiEnv


def _pod(**container: Any) -> dict[str, Any]:
    c = {"name": "c", "image": "busybox:1.36", **container}
    return {"metadata": {"name": "p"}, "spec": {"containers": [c]}}


def _sts(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "serviceName": "s",
        "selector": {"matchLabels": {"app": "s"}},
        "template": {
            "metadata": {"labels": {"app": "s"}},
            "spec": {"containers": [{"name": "c", "image": "x:1"}]},
        },
    }
    base.update(spec)
    return {"metadata": {"name": "s"}, "spec": base}


CASES: list[tuple[str, str, dict[str, Any], int, str]] = [
    ("no container image", "pods", _pod(image=""), 422, "spec.containers[0].image"),
    (
        "no containers",
        "pods",
        {"metadata": {"name": "p"}, "spec": {"containers": []}},
        422,
        "spec.containers",
    ),
    ("bad container name", "pods", _pod(name="Main_1"), 422, "spec.containers[0].name"),
    (
        "long port name",
        "pods",
        _pod(ports=[{"name": "etcd-server-port-x", "containerPort": 1}]),
        422,
        "spec.containers[0].ports[0].name",
    ),
    (
        "request above limit",
        "pods",
        _pod(resources={"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}),
        422,
        "spec.containers[0].resources.requests",
    ),
    (
        "mount of unknown volume",
        "pods",
        _pod(volumeMounts=[{"name": "data", "mountPath": "/d"}]),
        422,
        "spec.containers[0].volumeMounts[0].name",
    ),
    (
        "env name with space",
        "pods",
        _pod(env=[{"name": "A B", "value": "1"}]),
        422,
        "spec.containers[0].env[0].name",
    ),
    (
        "bad label value",
        "configmaps",
        {"metadata": {"name": "c", "labels": {"a": "bad value!"}}},
        422,
        "metadata.labels",
    ),
    ("subdomain name", "configmaps", {"metadata": {"name": "UPPER"}}, 422, "metadata.name"),
    (
        "service name must be DNS-1035",
        "services",
        {"metadata": {"name": "1svc"}, "spec": {"ports": [{"port": 80}]}},
        422,
        "metadata.name",
    ),
    (
        "nodePort out of range",
        "services",
        {"metadata": {"name": "np"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}},
        422,
        "spec.ports[0].nodePort",
    ),
    (
        "nodePort on ClusterIP",
        "services",
        {"metadata": {"name": "cip"}, "spec": {"ports": [{"port": 80, "nodePort": 30001}]}},
        422,
        "spec.ports[0].nodePort",
    ),
    (
        "cluster IP outside the range",
        "services",
        {"metadata": {"name": "ip"}, "spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}},
        422,
        "spec.clusterIPs",
    ),
    (
        "tls secret without key",
        "secrets",
        {"metadata": {"name": "t"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "YQ=="}},
        422,
        "data[tls.key]",
    ),
    (
        "secret key with slash",
        "secrets",
        {"metadata": {"name": "k"}, "data": {"bad/key": "YQ=="}},
        422,
        "data[bad/key]",
    ),
    (
        "sts selector mismatch",
        "statefulsets",
        _sts(selector={"matchLabels": {"app": "other"}}),
        422,
        "spec.template.metadata.labels",
    ),
    ("sts negative replicas", "statefulsets", _sts(replicas=-1), 422, "spec.replicas"),
    ("sts without selector", "statefulsets", _sts(selector=None), 422, "spec.selector"),
    (
        "job restartPolicy Always",
        "jobs",
        {
            "metadata": {"name": "j"},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}},
        },
        422,
        "spec.template.spec.restartPolicy",
    ),
    (
        "cronjob schedule",
        "cronjobs",
        {
            "metadata": {"name": "cj"},
            "spec": {
                "schedule": "every day",
                "jobTemplate": {
                    "spec": {
                        "template": {
                            "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}
                        }
                    }
                },
            },
        },
        422,
        "spec.schedule",
    ),
    (
        "owner reference without uid",
        "configmaps",
        {"metadata": {"name": "o", "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "p"}]}},
        422,
        "metadata.ownerReferences.uid",
    ),
    ("quantity that does not parse", "pods", _pod(resources={"limits": {"memory": "1gi"}}), 400, ""),
    ("string where a number belongs", "pods", _pod(ports=[{"containerPort": "80"}]), 400, ""),
]

_PATHS = {
    "pods": "/api/v1/namespaces/{ns}/pods",
    "configmaps": "/api/v1/namespaces/{ns}/configmaps",
    "services": "/api/v1/namespaces/{ns}/services",
    "secrets": "/api/v1/namespaces/{ns}/secrets",
    "statefulsets": "/apis/apps/v1/namespaces/{ns}/statefulsets",
    "jobs": "/apis/batch/v1/namespaces/{ns}/jobs",
    "cronjobs": "/apis/batch/v1/namespaces/{ns}/cronjobs",
}


@pytest.fixture(scope="module")
def validation_ns(api_env: ApiEnv) -> str:
    """One namespace for all cases (nothing is ever created in it)."""
    code, _ = api_env.request("POST", "/api/v1/namespaces", {"metadata": {"name": "validation"}})
    assert code == 201
    return "validation"


@pytest.mark.parametrize(("case", "resource", "body", "code", "field"), CASES, ids=[c[0] for c in CASES])
def test_rejected_with_the_field_named(
    api_env: ApiEnv, validation_ns: str, case: str, resource: str, body: dict[str, Any], code: int, field: str
) -> None:
    got, status = api_env.request("POST", _PATHS[resource].format(ns=validation_ns), body)
    assert got == code, status
    assert status["kind"] == "Status" and status["status"] == "Failure"
    if code == 422:
        assert status["reason"] == "Invalid"
        assert field in [c["field"] for c in status["details"]["causes"]], status
        assert f"{field}:" in status["message"]
    else:
        assert status["reason"] == "BadRequest" and "cannot be handled as a" in status["message"]
    listing = api_env.request("GET", _PATHS[resource].format(ns=validation_ns))[1]
    assert listing["items"] == [] or resource == "configmaps"  # nothing was stored
