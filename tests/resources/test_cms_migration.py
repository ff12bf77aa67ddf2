"""The seed's CMS migrated in the sandbox by one ``app_migration`` run (issue 14, "Must show").

A real ``mariadbd`` runs in a source pod as uid 999 on its data directory (created by
``mariadb-install-db`` in that pod: owner 999, mode 0700) while the test inserts rows through the
pod's address; the WordPress volume holds hard links, symlinks, xattrs, ACLs, an empty directory
and a 1 GiB sparse file. The flow copies both volumes while the rows go in, scales the source to 0
(the kubelet's SIGTERM shuts ``mariadbd`` down cleanly), copies the delta; the activated target's
``mariadbd`` then holds every acknowledged row.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pymysql
import pytest

from blocks.kube import KubeCluster
from flows.app_migration import activate, app_migration
from tasks.kube_export import KubeRest

from .conftest import create_all, pv_dir
from .volume_trees import SPARSE_SIZE, build_wordpress_volume, tree_metadata

pytestmark = pytest.mark.timeout(240)

NS = "cms-live"
APP_PASSWORD = "wp-app-pw"
DATADIR = "/var/lib/mysql"
INIT_SQL = f"""
CREATE DATABASE IF NOT EXISTS shop;
CREATE TABLE IF NOT EXISTS shop.t (id INT PRIMARY KEY, pad VARCHAR(200)) ENGINE=InnoDB;
CREATE USER IF NOT EXISTS 'app'@'%' IDENTIFIED BY '{APP_PASSWORD}';
GRANT ALL PRIVILEGES ON shop.* TO 'app'@'%';
"""
# The official image's entrypoint, reduced: initialise the data directory on first start (as the
# container's user, so it is 999:999, 0700), then exec the server (SIGTERM reaches mariadbd).
# The sandbox rewrites 0.0.0.0 to the pod IP (pods share the host's network).
SERVER_OPTS = "--innodb-buffer-pool-size=32M --innodb-log-file-size=16M"
MARIADB_SCRIPT = f"""set -e
if [ ! -d {DATADIR}/mysql ]; then
  mariadb-install-db --no-defaults --datadir={DATADIR} --skip-test-db \\
    --auth-root-authentication-method=normal {SERVER_OPTS}
fi
exec mariadbd --no-defaults --datadir={DATADIR} --socket=/run/mysqld/mysqld.sock \\
  --pid-file=/run/mysqld/mysqld.pid --bind-address=0.0.0.0 --port=3306 --skip-name-resolve \\
  {SERVER_OPTS} --init-file=/etc/mysql/initdb/init.sql
"""


def cms_live_objects(ns: str) -> list[dict[str, Any]]:
    """MariaDB (a real server, uid 999) and WordPress (volume only) with a PVC each."""
    labels = {"app": "wordpress"}

    def pvc(name: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}},
        }

    def deployment(tier: str, pod_spec: dict[str, Any]) -> dict[str, Any]:
        sel = {**labels, "tier": tier}
        name = "wordpress-mysql" if tier == "mysql" else "wordpress"
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": sel},
                "strategy": {"type": "Recreate"},
                "template": {"metadata": {"labels": sel}, "spec": pod_spec},
            },
        }

    mysql_pod = {
        # no fsGroup: the kubelet would make the data directory group-writable (2770) on every start
        "securityContext": {"runAsUser": 999, "runAsGroup": 999, "runAsNonRoot": True},
        "terminationGracePeriodSeconds": 30,
        "initContainers": [
            {  # the charts' "volume-permissions" step: the claim's root belongs to the server's user
                "name": "volume-permissions",
                "image": "stateferry/app:dev",
                "command": ["sh", "-c", f"chown 999:999 {DATADIR} && chmod 0700 {DATADIR}"],
                "securityContext": {"runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": False},
                "volumeMounts": [{"name": "data", "mountPath": DATADIR}],
            }
        ],
        "containers": [
            {
                "name": "mysql",
                "image": "stateferry/app:dev",
                "command": ["sh", "-c", MARIADB_SCRIPT],
                "ports": [{"containerPort": 3306, "name": "mysql"}],
                "readinessProbe": {"tcpSocket": {"port": 3306}, "periodSeconds": 1},
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [
                    {"name": "data", "mountPath": DATADIR},
                    {"name": "run", "mountPath": "/run/mysqld"},
                    {"name": "initdb", "mountPath": "/etc/mysql/initdb"},
                ],
            }
        ],
        "volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": "mysql-pv-claim"}},
            {"name": "run", "emptyDir": {}},
            {"name": "initdb", "configMap": {"name": "mysql-initdb"}},
        ],
    }
    wordpress_pod = {
        "containers": [
            {
                "name": "wordpress",
                "image": "wordpress:6.5-apache",
                "volumeMounts": [{"name": "content", "mountPath": "/var/www/html"}],
            }
        ],
        "volumes": [{"name": "content", "persistentVolumeClaim": {"claimName": "wp-pv-claim"}}],
    }
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "mysql-initdb", "namespace": ns, "labels": labels},
            "data": {"init.sql": INIT_SQL},
        },
        pvc("mysql-pv-claim"),
        pvc("wp-pv-claim"),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "wordpress-mysql", "namespace": ns, "labels": labels},
            "spec": {"clusterIP": "None", "selector": {**labels, "tier": "mysql"}, "ports": [{"port": 3306}]},
        },
        deployment("mysql", mysql_pod),
        deployment("frontend", wordpress_pod),
    ]


def ready_pod(rest: KubeRest, ns: str, tier: str, timeout: float = 90.0) -> tuple[str, str]:
    """``(name, IP)`` of the Ready pod of ``tier``."""
    deadline = time.monotonic() + timeout
    seen: list[Any] = []
    while time.monotonic() < deadline:
        pods = (rest.get_or_none(f"/api/v1/namespaces/{ns}/pods") or {}).get("items") or []
        pods = [p for p in pods if p["metadata"].get("labels", {}).get("tier") == tier]
        seen = [p.get("status") for p in pods]
        for p in pods:
            st = p.get("status") or {}
            ready = any(c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions") or [])
            if ready and st.get("podIP"):
                return str(p["metadata"]["name"]), str(st["podIP"])
        time.sleep(0.3)
    raise AssertionError(f"no Ready {tier} pod in {rest.name}/{ns} after {timeout:.0f}s: {seen}")


def server_log(kube: KubeCluster, pod: str) -> str:
    """The ``mysql`` container's log (``kubectl logs``): mariadbd's error log goes to stderr."""
    from kubernetes.client import CoreV1Api

    return str(CoreV1Api(kube.api_client()).read_namespaced_pod_log(pod, NS, container="mysql"))


def connect(host: str, timeout: float = 60.0) -> Any:
    """A pymysql connection to the pod's server (retried while it starts)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return pymysql.connect(
                host=host, port=3306, user="app", password=APP_PASSWORD, autocommit=True, connect_timeout=5
            )
        except pymysql.err.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@dataclass
class RowWriter:
    """Inserts rows until the server goes away; ``acked`` holds each committed id with its time."""

    host: str
    acked: list[tuple[int, float]] = field(default_factory=list)
    in_flight: int | None = None
    ended_by: str = ""
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        """The thread's body: autocommit INSERTs (acknowledged = returned), a short pause between."""
        try:
            conn = connect(self.host)
        except pymysql.err.MySQLError as exc:
            self.ended_by = f"connect: {exc}"
            return
        i = 0
        try:
            with conn.cursor() as cur:
                while not self.stop.is_set():
                    i += 1
                    self.in_flight = i
                    cur.execute("INSERT INTO shop.t VALUES (%s, %s)", (i, "x" * 200))
                    self.acked.append((i, time.time()))
                    self.in_flight = None
                    time.sleep(0.005)
            self.ended_by = "stopped"
        except (pymysql.err.MySQLError, OSError) as exc:  # the server shut down (or the link dropped)
            self.ended_by = f"server gone: {exc!r}"
        finally:
            try:
                conn.close()
            except Exception:  # already closed by the server
                pass


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``cond`` until true."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:.0f}s")
        time.sleep(0.1)


def test_quiesce_cms_real_mariadbd_and_wordpress_volume_while_writing(
    prefect_server: Any,
    object_store_a: Any,
    bucket: str,
    source_kube: KubeCluster,
    target_kube: KubeCluster,
    source_rest: KubeRest,
    target_rest: KubeRest,
) -> None:
    """Bulk copy while rows go in, scale the source to 0, delta; the target's mariadbd holds every
    acknowledged row and the WordPress volume arrives with identical metadata."""
    create_all(source_rest, cms_live_objects(NS))
    wp_src = pv_dir(source_rest, NS, "wp-pv-claim")
    build_wordpress_volume(wp_src)
    src_pod, src_ip = ready_pod(source_rest, NS, "mysql")
    writer = RowWriter(src_ip)
    db_src = pv_dir(source_rest, NS, "mysql-pv-claim")
    st = os.stat(db_src)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (999, 999, 0o700)
    assert f"Installing MariaDB/MySQL system tables in '{DATADIR}'" in server_log(source_kube, src_pod)
    thread = threading.Thread(target=writer.run, name="row-writer")
    thread.start()
    try:
        wait_for(lambda: len(writer.acked) >= 50 or bool(writer.ended_by), 60, "50 acknowledged rows")
        assert not writer.ended_by, writer.ended_by
        report = app_migration(
            source=source_kube,
            target=target_kube,
            namespaces=[NS],
            object_store=object_store_a,
            bucket=bucket,
            migration_name="cms-live-move",
            start_applications=False,
            quiesce="scale",
            auto_approve=True,
        )
        thread.join(30)  # the scale to 0 stopped the server: the writer has ended by itself
        assert writer.ended_by.startswith("server gone"), writer.ended_by
    finally:
        writer.stop.set()
        thread.join(30)

    vols = {v["pvc"]: v for v in report["volumes"]}
    assert {p: (v["level"], v["status"]) for p, v in vols.items()} == {
        "mysql-pv-claim": (1, "migrated successfully"),
        "wp-pv-claim": (1, "migrated successfully"),
    }, report["volumes"]
    assert vols["wp-pv-claim"]["skipped"] == [["null", "device"], ["php.sock", "socket"]]  # reported
    assert vols["mysql-pv-claim"]["skipped"] == []
    # rows were acknowledged after the bulk copy was packed: only the delta can carry them
    bulk_done = object_store_a.minio_client().stat_object(
        bucket, vols["mysql-pv-claim"]["key"] + ".result.json"
    )
    assert any(t > bulk_done.last_modified.timestamp() + 1 for _, t in writer.acked)

    wp_dst = pv_dir(target_rest, NS, "wp-pv-claim")
    db_dst = pv_dir(target_rest, NS, "mysql-pv-claim")
    # owners, groups, modes, mtimes, symlinks, hard links (link counts), xattrs, ACLs, empty dirs
    assert tree_metadata(wp_dst) == tree_metadata(wp_src)
    assert tree_metadata(db_dst) == tree_metadata(db_src)  # the stopped server's whole directory
    assert os.stat(wp_dst / "index.php").st_ino == os.stat(wp_dst / "uploads" / "hardlink.php").st_ino
    sparse = os.stat(wp_dst / "sparse.img")
    assert sparse.st_size == SPARSE_SIZE and sparse.st_blocks * 512 < (1 << 20)
    st = os.stat(db_dst)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (999, 999, 0o700)

    activate(target=target_kube, namespaces=[NS])  # the target's mariadbd starts on the copy
    dst_pod, dst_ip = ready_pod(target_rest, NS, "mysql")
    with connect(dst_ip) as conn, conn.cursor() as cur:
        cur.execute("SELECT id FROM shop.t ORDER BY id")
        rows = [r[0] for r in cur.fetchall()]
    acked = [i for i, _ in writer.acked]
    # exactly the acknowledged rows, plus at most the one INSERT the shutdown cut off (commit unacked)
    assert rows in (acked, [*acked, writer.in_flight]), (len(rows), len(acked), writer.in_flight)
    # the source server was shut down cleanly (SIGTERM): its copy needs no crash recovery
    log = server_log(target_kube, dst_pod)
    assert "ready for connections" in log and "crash recovery" not in log, log[-3000:]
    assert "Installing MariaDB" not in log  # the migrated directory, never a fresh one
