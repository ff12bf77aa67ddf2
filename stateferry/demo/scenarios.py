"""The demo's scenarios: each prepares what its flow needs, deploys the flow and triggers a run."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stateferry.demo import say
from stateferry.demo.clusters import DEMO_NAMESPACE, ensure_cms, ensure_sandbox, ensure_seed_etcd
from stateferry.demo.prefect_setup import (
    deploy,
    ensure_work_pool,
    ensure_worker,
    register_blocks,
    wait_for_run,
)


def _ensure_bucket(store: Any, bucket: str) -> None:
    """Create ``bucket`` through the ObjectStore block ``store`` unless it exists."""
    client = store.minio_client()
    if not client.bucket_exists(bucket):
        client.make_bucket(bucket)


def run_etcd_scenario(state_root: Path, stack: Any, auto_approve: bool) -> int:
    """Deploy and trigger the etcd stretch migration of the demo etcd."""
    from prefect.deployments import run_deployment

    sandbox = ensure_sandbox(state_root)
    ensure_seed_etcd(Path(sandbox.kubeconfig))
    blocks = register_blocks(Path(sandbox.kubeconfig), stack)
    ensure_work_pool()
    deploy(
        "flows/etcd_migration.py:etcd_stretch_migration",
        "demo",
        {
            "source": blocks["kube-source"],
            "target": blocks["kube-target"],
            "options": {"source_namespace": DEMO_NAMESPACE, "statefulset": "etcd"},
        },
        "Demo: move the 3-member etcd of source/demo to target/demo without downtime.",
    )
    ensure_worker(state_root, stack.prefect_api_url)
    run: Any = run_deployment(
        "etcd_stretch_migration/demo", parameters={"auto_approve": auto_approve}, timeout=0
    )
    return wait_for_run(run.id, stack.prefect_ui_url, auto_approve)


def run_mirror_scenario(state_root: Path, stack: Any, auto_approve: bool) -> int:
    """Fill a bucket on the source S3 store and mirror it (watch until the cutover approval)."""
    import io

    from prefect.deployments import run_deployment

    sandbox = ensure_sandbox(state_root)
    blocks = register_blocks(Path(sandbox.kubeconfig), stack)
    client = blocks["s3-source"].minio_client()
    if not client.bucket_exists("demo-assets"):
        client.make_bucket("demo-assets")
        for i in range(100):
            body = f"asset {i}\n".encode() * 100
            client.put_object("demo-assets", f"assets/{i:03d}.txt", io.BytesIO(body), len(body))
        say("source bucket demo-assets filled with 100 objects")
    ensure_work_pool()
    deploy(
        "flows/bucket_mirror.py:bucket_mirror",
        "demo",
        {
            "source": blocks["s3-source"],
            "destination": blocks["s3-target"],
            "options": {"bucket": "demo-assets", "watch": True, "watch_interval_seconds": 5, "remove": True},
        },
        "Demo: mirror demo-assets between the two local S3 stores until the DNS cutover is approved.",
    )
    ensure_worker(state_root, stack.prefect_api_url)
    run: Any = run_deployment("bucket_mirror/demo", parameters={"auto_approve": auto_approve}, timeout=0)
    return wait_for_run(run.id, stack.prefect_ui_url, auto_approve)


def run_app_scenario(state_root: Path, stack: Any, auto_approve: bool) -> int:
    """Migrate the CMS namespace with its volume data, parked at 0 replicas until activation is approved."""
    from prefect.deployments import run_deployment

    sandbox = ensure_sandbox(state_root)
    ensure_cms(Path(sandbox.kubeconfig))
    blocks = register_blocks(Path(sandbox.kubeconfig), stack)
    _ensure_bucket(blocks["s3-target"], "demo-migrations")
    ensure_work_pool()
    deploy(
        "flows/app_migration.py:app_migration",
        "demo",
        {
            # app_migration takes saved block names (KubeCluster | str)
            "source": "demo-source",
            "target": "demo-target",
            "object_store": "demo-s3-target",
            "options": {
                "namespaces": ["cms"],
                "bucket": "demo-migrations",
                "start_applications": False,
                "approve_activation": True,
            },
        },
        "Demo: move namespace cms with its volumes; workloads start when activation is approved.",
    )
    ensure_worker(state_root, stack.prefect_api_url)
    run: Any = run_deployment("app_migration/demo", parameters={"auto_approve": auto_approve}, timeout=0)
    return wait_for_run(run.id, stack.prefect_ui_url, auto_approve)


def ensure_demo_mariadb(state_root: Path) -> Any:
    """A MariaDB for the backup demo (kept running with the stack) holding a small shop database."""
    import pymysql

    from devservers.mariadb import LocalMariaDB

    info_file = state_root / "stack" / "mariadb.json"
    if info_file.exists():
        info = json.loads(info_file.read_text())
        try:
            os.kill(info["pid"], 0)
            return info
        except ProcessLookupError:
            info_file.unlink()
    db = LocalMariaDB(state_root / "stack" / "mariadb")
    db.start()
    conn = pymysql.connect(host=db.host, port=db.port, user=db.user, password=db.password, autocommit=True)
    with conn.cursor() as cur:
        cur.execute("CREATE DATABASE IF NOT EXISTS shop")
        cur.execute("CREATE TABLE IF NOT EXISTS shop.items (id INT PRIMARY KEY, name VARCHAR(64), img BLOB)")
        cur.execute("REPLACE INTO shop.items VALUES (1, 'kettle', 0x00ff10), (2, 'teapot', 0x89504e47)")
        cur.execute("CREATE OR REPLACE VIEW shop.cheap AS SELECT id, name FROM shop.items")
    conn.close()
    info = {
        "pid": db.process.pid if db.process else 0,
        "host": db.host,
        "port": db.port,
        "user": db.user,
        "password": db.password,
    }
    info_file.write_text(json.dumps(info))
    info_file.chmod(0o600)
    say(f"MariaDB for the backup demo on {db.host}:{db.port} with database shop")
    return info


def stop_demo_mariadb(state_root: Path) -> None:
    """Stop the backup demo's MariaDB if it runs."""
    info_file = state_root / "stack" / "mariadb.json"
    if not info_file.exists():
        return
    try:
        os.killpg(json.loads(info_file.read_text())["pid"], signal.SIGTERM)
    except (ProcessLookupError, ValueError, KeyError):
        pass
    info_file.unlink()


def run_backup_scenario(state_root: Path, stack: Any, auto_approve: bool) -> int:
    """Back up a MariaDB database to a local dir + S3 (cron deployment), then restore it under a new name."""
    from prefect.deployments import run_deployment
    from pydantic import SecretStr

    from blocks.database import Database

    db = ensure_demo_mariadb(state_root)
    blocks = register_blocks(None, stack)
    Database(
        engine="mysql",
        host=db["host"],
        port=db["port"],
        user=db["user"],
        password=SecretStr(db["password"]),
        databases=["shop"],
    ).save("demo-mariadb", overwrite=True)
    job: dict[str, Any] = {
        "job": "demo-shop",
        "type": "mysql",
        "schedule": "*/15 * * * *",
        "sources": [{"connect": {"block": "demo-mariadb"}, "target": ["shop"]}],
        "storages": [
            {
                "storage": "local",
                "backup_dir": str(state_root / "backups"),
                "store": {"days": 6, "weeks": 4, "months": 6},
            },
            {
                "storage": "s3",
                "object_store": "demo-s3-target",
                "bucket_name": "demo-backups",
                "backup_dir": "shop",
                "store": {"days": 2, "weeks": 1, "months": 6},
            },
        ],
        "verify": True,
    }
    _ensure_bucket(blocks["s3-target"], "demo-backups")
    ensure_work_pool()
    deploy(
        "flows/backup.py:scheduled_backup",
        "demo-shop",
        {"job": job},
        cron=job["schedule"],
        concurrency_limit=1,
    )
    deploy(
        "flows/restore.py:restore_backup",
        "demo-shop-restore",
        {"job": job},
        "Demo: restore the newest shop backup.",
    )
    ensure_worker(state_root, stack.prefect_api_url)
    say("running the backup now (it also runs every 15 minutes)")
    run: Any = run_deployment("scheduled_backup/demo-shop", timeout=0)
    code = wait_for_run(run.id, stack.prefect_ui_url, True)
    if code:
        return code
    say("restoring the newest backup into database shop_restored")
    run = run_deployment(
        "restore_backup/demo-shop-restore",
        parameters={
            "options": {"target_database": "shop_restored", "overwrite": True},
            "auto_approve": auto_approve,
        },
        timeout=0,
    )
    return wait_for_run(run.id, stack.prefect_ui_url, auto_approve)


SCENARIOS: dict[str, Callable[[Path, Any, bool], int]] = {
    "etcd": run_etcd_scenario,
    "mirror": run_mirror_scenario,
    "app": run_app_scenario,
    "backup": run_backup_scenario,
}
