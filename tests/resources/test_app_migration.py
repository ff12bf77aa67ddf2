"""app_migration + activate against the sandbox and a real S3 server."""

from __future__ import annotations

import os
import threading
from typing import Any
from uuid import UUID

import pytest

from blocks.kube import KubeCluster
from devservers.prefect_runs import find_flow_run, wait_for_approval_form
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
    src_root = pv_dir(source_rest, "shop", "mysql-pv-claim")
    write_tree(src_root, files)
    os.chown(src_root / "sub", 999, 999)
    os.chmod(src_root / "sub", 0o700)
    os.link(src_root / "db.sql", src_root / "db.sql.hardlink")
    (src_root / "latest").symlink_to("db.sql")

    target_rest.request(
        "POST",
        "/apis/storage.k8s.io/v1/storageclasses",
        body={"metadata": {"name": "fast"}, "provisioner": "sandbox.stateferry.io/hostpath"},
    )
    report = app_migration(
        source=source_kube,
        target=target_kube,
        namespaces=["shop"],
        object_store=object_store_a,
        bucket=bucket,
        migration_name="shop-move",
        start_applications=False,
        # "" = claims without a class (the sandbox does not default storageClassName as a real
        # cluster's DefaultStorageClass admission does)
        storage_class_mapping={"standard": "fast", "": "fast"},
    )
    statuses = {(r["resource"], r["name"]): r["status"] for r in report["resources"]}
    assert statuses[("Deployment", "wordpress")] == "migrated successfully (0 replicas until activation)"
    assert statuses[("Secret", "mysql-pass")] == "migrated successfully"
    assert {v["pvc"]: v["status"] for v in report["volumes"]} == {
        "mysql-pv-claim": "migrated successfully",
        "wp-pv-claim": "migrated successfully",
    }
    dst_root = pv_dir(target_rest, "shop", "mysql-pv-claim")
    assert read_tree(dst_root) == {**files, "db.sql.hardlink": files["db.sql"], "latest": files["db.sql"]}
    st = os.stat(dst_root / "sub")
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (999, 999, 0o700)
    assert os.stat(dst_root / "db.sql").st_ino == os.stat(dst_root / "db.sql.hardlink").st_ino
    assert os.readlink(dst_root / "latest") == "db.sql"
    claim = target_rest.request("GET", "/api/v1/namespaces/shop/persistentvolumeclaims/mysql-pv-claim")
    assert claim["spec"]["storageClassName"] == "fast"
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


def _paused_run(migration_name: str, timeout: float = 60.0) -> UUID:
    """The migration's run id once it is paused with its approval form (input schema) written."""
    run_id = find_flow_run("app_migration", timeout=timeout, parameters={"migration_name": migration_name})
    wait_for_approval_form(run_id, timeout)
    return run_id


def test_migration_waits_for_approval_then_activates(
    prefect_server: Any,
    object_store_a: Any,
    bucket: str,
    source_kube: KubeCluster,
    target_kube: KubeCluster,
    source_rest: KubeRest,
    target_rest: KubeRest,
) -> None:
    from prefect.flow_runs import resume_flow_run

    source_rest.request("POST", "/api/v1/namespaces", body={"metadata": {"name": "tiny"}})
    source_rest.request(
        "POST",
        "/apis/apps/v1/namespaces/tiny/deployments",
        body={
            "metadata": {"name": "api"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "api"}},
                "template": {
                    "metadata": {"labels": {"app": "api"}},
                    "spec": {"containers": [{"name": "api", "image": "nginx:1.25"}]},
                },
            },
        },
    )
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["report"] = app_migration(
                source=source_kube,
                target=target_kube,
                namespaces=["tiny"],
                namespace_mapping={"tiny": "tiny-dr"},
                object_store=object_store_a,
                bucket=bucket,
                migration_name="tiny-move",
                start_applications=False,
                approve_activation=True,
            )
        except BaseException as exc:
            out["error"] = exc

    th = threading.Thread(target=run)
    th.start()
    try:
        paused = _paused_run("tiny-move")
        dep = target_rest.request("GET", "/apis/apps/v1/namespaces/tiny-dr/deployments/api")
        assert dep["spec"]["replicas"] == 0  # parked while waiting for the approval
        resume_flow_run(paused, run_input={"approved": True, "comment": "go"})
    finally:
        th.join(120)
    assert "error" not in out, out.get("error")
    assert [a["message"] for a in out["report"]["activation"]] == ["scaled to 3 replicas"]
    assert (
        target_rest.request("GET", "/apis/apps/v1/namespaces/tiny-dr/deployments/api")["spec"]["replicas"]
        == 3
    )


def test_mover_without_root_fails_like_on_a_real_cluster(
    prefect_server: Any, object_store_a: Any, bucket: str, source_kube: KubeCluster, source_rest: KubeRest
) -> None:
    """A MySQL-like data directory (owner 999, 0700): the first version's mover (image user 10001,
    no securityContext) cannot read it in the sandbox either; the default mover (root with
    DAC_READ_SEARCH only, claim read-only) can."""
    import os

    from tasks.volume_mover import pack_volumes

    ns = "perm-check"
    source_rest.request("POST", "/api/v1/namespaces", body={"metadata": {"name": ns}})
    source_rest.request(
        "POST",
        f"/api/v1/namespaces/{ns}/persistentvolumeclaims",
        body={
            "metadata": {"name": "db"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        },
    )
    root = pv_dir(source_rest, ns, "db")
    (root / "mysql" / "shop").mkdir(parents=True)
    (root / "mysql" / "shop" / "t.ibd").write_bytes(b"rows")
    for p in (root / "mysql", root / "mysql" / "shop", root / "mysql" / "shop" / "t.ibd"):
        os.chown(p, 999, 999)
        os.chmod(p, 0o700 if p.is_dir() else 0o600)
    claims = [(ns, "db")]
    legacy = pack_volumes(
        source_kube, "source", object_store_a, bucket, "p", "perm", claims, "run-perm-1", security="image"
    )
    assert legacy[0].status == "failed"
    assert "cannot read /stateferry-volume/mysql: Permission denied" in legacy[0].reason
    assert "uid 10001" in legacy[0].reason and "run the mover as root" in legacy[0].reason
    ok = pack_volumes(source_kube, "source", object_store_a, bucket, "p", "perm", claims, "run-perm-2")
    assert ok[0].status == "packed" and ok[0].files == 1, ok[0].reason
    assert os.stat(root / "mysql").st_uid == 999  # the source was only read


WRITER = """
import os, signal, time
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
fd = os.open('/data/rows.log', os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
n = sum(1 for _ in open('/data/rows.log'))
while not stop:
    n += 1
    os.write(fd, f'row {n}\\n'.encode())
    os.fsync(fd)  # acknowledged
    time.sleep(0.02)
"""


def test_quiesce_bulk_copy_stop_delta_then_rollback(
    prefect_server: Any,
    object_store_a: Any,
    bucket: str,
    source_kube: KubeCluster,
    target_kube: KubeCluster,
    source_rest: KubeRest,
    target_rest: KubeRest,
) -> None:
    """A writer appends fsync'ed rows while the bulk copy runs; after the stop, the delta brings
    every acknowledged row; the source keeps its counts and comes back with ``reactivate``."""
    import time

    from flows.app_migration import reactivate
    from planning.app_migration import SOURCE_REPLICAS_ANNOTATION
    from tasks.archive_store import get_json

    ns = "quiesce"
    labels = {"app": "writer"}
    create_all(
        source_rest,
        [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "data", "namespace": ns},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
            },
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "writer", "namespace": ns},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "securityContext": {"fsGroup": 10001},  # the image's user writes via its group
                            "terminationGracePeriodSeconds": 5,
                            "containers": [
                                {
                                    "name": "w",
                                    "image": "stateferry/app:dev",
                                    "command": ["python", "-c", WRITER],
                                    "volumeMounts": [{"name": "d", "mountPath": "/data"}],
                                }
                            ],
                            "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}],
                        },
                    },
                },
            },
            {
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "metadata": {"name": "report", "namespace": ns},
                "spec": {
                    "schedule": "*/30 * * * *",
                    "jobTemplate": {
                        "spec": {
                            "template": {
                                "spec": {
                                    "restartPolicy": "Never",
                                    "containers": [{"name": "r", "image": "busybox"}],
                                }
                            }
                        }
                    },
                },
            },
        ],
    )
    src_root = pv_dir(source_rest, ns, "data")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (
        (src_root / "rows.log").exists() and (src_root / "rows.log").read_bytes().count(b"\n") > 20
    ):
        time.sleep(0.2)
    report = app_migration(
        source=source_kube,
        target=target_kube,
        namespaces=[ns],
        object_store=object_store_a,
        bucket=bucket,
        migration_name="quiesce-move",
        start_applications=False,
        quiesce="scale",
        auto_approve=True,
    )
    vols = report["volumes"]
    assert len(vols) == 1, [(v["level"], v["status"], v["reason"]) for v in vols]
    [vol] = vols
    assert (vol["level"], vol["status"]) == (1, "migrated successfully"), vol
    bulk = get_json(object_store_a, bucket, vol["key"] + ".result.json")
    final = (src_root / "rows.log").read_bytes()
    assert bulk["bytes"] < len(final)  # rows written after the bulk copy came with the delta
    assert (pv_dir(target_rest, ns, "data") / "rows.log").read_bytes() == final  # every acknowledged row
    lines = final.decode().splitlines()
    assert lines == [f"row {i}" for i in range(1, len(lines) + 1)]
    src_dep = source_rest.request("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/writer")
    assert src_dep["spec"]["replicas"] == 0
    assert src_dep["metadata"]["annotations"][SOURCE_REPLICAS_ANNOTATION] == "1"
    assert (
        source_rest.request("GET", f"/apis/batch/v1/namespaces/{ns}/cronjobs/report")["spec"]["suspend"]
        is True
    )
    dst_dep = target_rest.request("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/writer")
    assert dst_dep["spec"]["replicas"] == 0  # parked until activation

    # rollback before activation: the source gets back exactly what it had
    out = reactivate(cluster=source_kube, namespaces=[ns])
    assert sorted((r["kind"], r["result"]) for r in out["results"]) == [
        ("CronJob", "updated"),
        ("Deployment", "updated"),
    ]
    src_dep = source_rest.request("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/writer")
    assert src_dep["spec"]["replicas"] == 1
    assert SOURCE_REPLICAS_ANNOTATION not in (src_dep["metadata"].get("annotations") or {})
    assert (
        source_rest.request("GET", f"/apis/batch/v1/namespaces/{ns}/cronjobs/report")["spec"]["suspend"]
        is False
    )


def test_park_cronjobs_services_deactivate_and_failback(
    prefect_server: Any,
    object_store_a: Any,
    bucket: str,
    source_kube: KubeCluster,
    target_kube: KubeCluster,
    source_rest: KubeRest,
    target_rest: KubeRest,
) -> None:
    """Parked: CronJobs arrive suspended and resume at activation; the LoadBalancer's IP/class are
    dropped and only the user's nodePort kept; deactivate the source, then fail back."""
    import json

    from flows.app_migration import deactivate, reactivate
    from planning.app_migration import MIGRATION_SUSPEND_ANNOTATION

    ns = "parked"
    applied = {"spec": {"type": "LoadBalancer", "ports": [{"name": "http", "port": 80, "nodePort": 30480}]}}
    create_all(
        source_rest,
        [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "api", "namespace": ns},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": {"app": "api"}},
                    "template": {
                        "metadata": {"labels": {"app": "api"}},
                        "spec": {"containers": [{"name": "api", "image": "nginx:1.25"}]},
                    },
                },
            },
            {
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "metadata": {"name": "nightly", "namespace": ns},
                "spec": {
                    "schedule": "0 3 * * *",
                    "jobTemplate": {
                        "spec": {
                            "template": {
                                "spec": {
                                    "restartPolicy": "Never",
                                    "containers": [{"name": "r", "image": "busybox"}],
                                }
                            }
                        }
                    },
                },
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": "api",
                    "namespace": ns,
                    "annotations": {"kubectl.kubernetes.io/last-applied-configuration": json.dumps(applied)},
                },
                "spec": {
                    "type": "LoadBalancer",
                    "loadBalancerIP": "127.31.200.77",
                    "selector": {"app": "api"},
                    "ports": [
                        {"name": "http", "port": 80, "nodePort": 30480},
                        {"name": "admin", "port": 8080},
                    ],
                },
            },
        ],
    )
    app_migration(
        source=source_kube,
        target=target_kube,
        namespaces=[ns],
        object_store=object_store_a,
        bucket=bucket,
        migration_name="parked-move",
        start_applications=False,
    )
    cj = target_rest.request("GET", f"/apis/batch/v1/namespaces/{ns}/cronjobs/nightly")
    assert (
        cj["spec"]["suspend"] is True
        and cj["metadata"]["annotations"][MIGRATION_SUSPEND_ANNOTATION] == "false"
    )
    svc = target_rest.request("GET", f"/api/v1/namespaces/{ns}/services/api")
    assert "loadBalancerIP" not in svc["spec"]
    ports = {p["name"]: p["nodePort"] for p in svc["spec"]["ports"]}
    src_ports = {
        p["name"]: p["nodePort"]
        for p in source_rest.request("GET", f"/api/v1/namespaces/{ns}/services/api")["spec"]["ports"]
    }
    assert ports["http"] == 30480  # the user's
    assert 30000 <= ports["admin"] <= 32767 and "admin" in src_ports  # allocated by the target itself

    out = activate(target=target_kube, namespaces=[ns])
    assert [(c["name"], c["result"]) for c in out["cronjobs"]] == [("nightly", "updated")]
    cj = target_rest.request("GET", f"/apis/batch/v1/namespaces/{ns}/cronjobs/nightly")
    assert cj["spec"]["suspend"] is False and MIGRATION_SUSPEND_ANNOTATION not in (
        cj["metadata"].get("annotations") or {}
    )

    # the old side is deactivated (counts remembered) ...
    deactivate(cluster=source_kube, namespaces=[ns])
    dep = source_rest.request("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/api")
    assert dep["spec"]["replicas"] == 0
    assert (
        source_rest.request("GET", f"/apis/batch/v1/namespaces/{ns}/cronjobs/nightly")["spec"]["suspend"]
        is True
    )
    # ... and failback: the target stops, the source gets back exactly what it had
    deactivate(cluster=target_kube, namespaces=[ns])
    reactivate(cluster=source_kube, namespaces=[ns])
    assert (
        source_rest.request("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/api")["spec"]["replicas"] == 2
    )
    assert (
        source_rest.request("GET", f"/apis/batch/v1/namespaces/{ns}/cronjobs/nightly")["spec"]["suspend"]
        is False
    )
    assert (
        target_rest.request("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/api")["spec"]["replicas"] == 0
    )
    assert (
        target_rest.request("GET", f"/apis/batch/v1/namespaces/{ns}/cronjobs/nightly")["spec"]["suspend"]
        is True
    )
