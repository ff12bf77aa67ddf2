"""app_migration + activate against the sandbox and a real S3 server."""

from __future__ import annotations

from typing import Any

import pytest

from blocks.kube import KubeCluster
from flows.app_migration import activate, app_migration
from planning.resources import MIGRATION_REPLICAS_ANNOTATION
from tasks.kube_export import KubeRest

from .conftest import cms_objects, create_all, pv_dir, read_tree, write_tree

pytestmark = pytest.mark.timeout(240)


def test_migration_parked_then_activated(
    prefect_server: Any,
    object_store_a: Any,
    bucket: str,
    source_kube: KubeCluster,
    target_kube: KubeCluster,
    source_rest: KubeRest,
    target_rest: KubeRest,
) -> None:
    create_all(source_rest, cms_objects("shop"))
    files = {"db.sql": b"INSERT INTO t VALUES (1);\n" * 100, "sub/dir/x.bin": b"\x00\xff" * 333}
    write_tree(pv_dir(source_rest, "shop", "mysql-pv-claim"), files)

    report = app_migration(
        source=source_kube,
        target=target_kube,
        namespaces=["shop"],
        object_store=object_store_a,
        bucket=bucket,
        migration_name="shop-move",
        start_applications=False,
    )
    statuses = {(r["resource"], r["name"]): r["status"] for r in report["resources"]}
    assert statuses[("Deployment", "wordpress")] == "migrated successfully (0 replicas until activation)"
    assert statuses[("Secret", "mysql-pass")] == "migrated successfully"
    assert {v["pvc"]: v["status"] for v in report["volumes"]} == {
        "mysql-pv-claim": "migrated successfully",
        "wp-pv-claim": "migrated successfully",
    }
    assert read_tree(pv_dir(target_rest, "shop", "mysql-pv-claim")) == files
    dep = target_rest.request("GET", "/apis/apps/v1/namespaces/shop/deployments/wordpress")
    assert dep["spec"]["replicas"] == 0
    assert dep["metadata"]["annotations"][MIGRATION_REPLICAS_ANNOTATION] == "2"

    out = activate(target=target_kube, namespaces=["shop"])
    assert out["counts"] == {"updated": 2}
    for name, replicas in (("wordpress", 2), ("wordpress-mysql", 1)):
        d = target_rest.request("GET", f"/apis/apps/v1/namespaces/shop/deployments/{name}")
        assert d["spec"]["replicas"] == replicas
        assert MIGRATION_REPLICAS_ANNOTATION not in (d["metadata"].get("annotations") or {})
    # activating again is a no-op
    assert activate(target=target_kube, namespaces=["shop"])["counts"] == {"unchanged": 2}
