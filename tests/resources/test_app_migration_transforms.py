"""app_migration's exclude_kinds and transforms against the sandbox (Stork ResourceTransformation)."""

from __future__ import annotations

from typing import Any

import pytest

from blocks.kube import KubeCluster
from flows.app_migration import app_migration
from stateferry.errors import InputError
from tasks.kube_export import KubeRest

from .conftest import create_all

pytestmark = pytest.mark.timeout(240)


def _objects(ns: str) -> list[dict[str, Any]]:
    pod = {"containers": [{"name": "web", "image": "nginx:1.25"}], "restartPolicy": "OnFailure"}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cfg", "namespace": ns},
            "data": {"db": "old-db:3306"},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {**pod, "restartPolicy": "Always"},
                },
            },
        },
        {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": "report", "namespace": ns},
            "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"spec": pod}}}},
        },
    ]


def test_transforms_land_in_the_target_and_excluded_kinds_do_not(
    prefect_server: Any,
    object_store_a: Any,
    bucket: str,
    source_kube: KubeCluster,
    target_kube: KubeCluster,
    source_rest: KubeRest,
    target_rest: KubeRest,
) -> None:
    create_all(source_rest, _objects("xform"))
    common = {
        "source": source_kube,
        "target": target_kube,
        "namespaces": ["xform"],
        "object_store": object_store_a,
        "bucket": bucket,
        "include_volumes": False,
    }
    # an unknown kind and a path that would make an object cluster-scoped: refused, nothing changed
    for bad, fld in (
        ({"exclude_kinds": ["cronjob", "NoSuchKindAnywhere"]}, "exclude_kinds"),
        (
            {"transforms": [{"kind": "ConfigMap", "path": "/metadata/namespace", "op": "delete"}]},
            "transforms[0].path",
        ),
    ):
        with pytest.raises(InputError) as e:
            app_migration(**common, migration_name="xform-bad", **bad)
        assert e.value.field == fld
        assert target_rest.get_or_none("/api/v1/namespaces/xform") is None

    report = app_migration(
        **common,
        migration_name="xform-move",
        exclude_kinds=["cronjobs.batch"],
        transforms=[
            {"kind": "Deployment", "path": "spec.template.spec.containers[0].image", "value": "nginx:1.27"},
            {
                "kind": "deployments.apps",
                "path": 'metadata.annotations["example.com/moved-by"]',
                "value": "stateferry",
            },
            {"kind": "ConfigMap", "name": "cfg", "path": "/data/db", "value": "new-db:3306"},
        ],
    )
    dep = target_rest.request("GET", "/apis/apps/v1/namespaces/xform/deployments/web")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27"
    assert dep["metadata"]["annotations"]["example.com/moved-by"] == "stateferry"
    cm = target_rest.request("GET", "/api/v1/namespaces/xform/configmaps/cfg")
    assert cm["data"] == {"db": "new-db:3306"}
    assert target_rest.get_or_none("/apis/batch/v1/namespaces/xform/cronjobs/report") is None
    # the source is untouched and the plan (report) lists every change
    src_cm = source_rest.request("GET", "/api/v1/namespaces/xform/configmaps/cfg")
    assert src_cm["data"] == {"db": "old-db:3306"}
    changes = {(r["object"], r["change"]) for r in report["transforms"]}
    assert ("CronJob xform/report", "excluded (exclude_kinds)") in changes
    assert ("ConfigMap xform/cfg", 'transforms[2]: set /data/db = "new-db:3306"') in changes
    assert "CronJob" not in {r["resource"] for r in report["resources"]}
