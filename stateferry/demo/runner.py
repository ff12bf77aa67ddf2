"""The local demo: everything a new user needs to see a zero-downtime etcd migration, in one command.

``stateferry demo`` (the README's first command runs it through ``scripts/demo``):

1. starts (or reuses) the local stack: a long-lived Prefect server with its UI and two S3 stores;
2. starts (or reuses) the two-cluster Kubernetes sandbox;
3. deploys a 3-member etcd (the field report's StatefulSet) with some data into ``source``;
4. registers the blocks and a process work pool, deploys the flows, starts a worker;
5. triggers the etcd stretch migration and waits at the first approval, printing where to approve.

``--auto-approve`` runs it through unattended; ``--scenario`` picks another flow's demo; re-running
reuses what is running and cleanly replaces what died. ``stateferry demo down`` stops everything.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from stateferry.errors import PreconditionFailed
from stateferry.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
ASSETS = Path(__file__).resolve().parent
WORK_POOL = "stateferry-demo"
DEMO_NAMESPACE = "demo"


def say(msg: str) -> None:
    """Progress line for the person running the demo."""
    print(f"[demo] {msg}", flush=True)


@contextmanager
def prefect_api(api_url: str) -> Iterator[None]:
    """Point this process's Prefect client at the demo server."""
    os.environ["PREFECT_API_URL"] = api_url
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        yield


# -- the Kubernetes side ------------------------------------------------------------------------------
def ensure_sandbox(state_root: Path) -> Any:
    """Start the sandbox unless it runs; returns its status (kubeconfig path, URLs)."""
    from sandbox.cluster import Sandbox

    sb = Sandbox(state_root / "sandbox")
    status = sb.status()
    if status.running:
        say(f"sandbox already running ({status.kubeconfig})")
        return status
    if status.stray_pids:
        say("sandbox left processes behind from an earlier run: cleaning them up")
        sb.down()
    say("starting the two-cluster Kubernetes sandbox (source, target)")
    return sb.up(timeout=120)


def ensure_seed_etcd(kubeconfig: Path, namespace: str = DEMO_NAMESPACE, keys: int = 200) -> list[str]:
    """Deploy the field report's 3-member etcd into ``source`` (once) and fill it with demo keys.

    Returns:
        The client endpoints (pod IPs) of the source members.
    """
    import kubernetes.client
    import kubernetes.config
    from kubernetes.client.exceptions import ApiException

    src = kubernetes.config.new_client_from_config(config_file=str(kubeconfig), context="source")
    tgt = kubernetes.config.new_client_from_config(config_file=str(kubeconfig), context="target")
    sts, svc = list(yaml.safe_load_all((ASSETS / "etcd-source.yaml").read_text()))
    name = sts["metadata"]["name"]
    if _exists(
        kubernetes.client.AppsV1Api(tgt).read_namespaced_stateful_set, f"{name}-main", namespace
    ) and not _exists(kubernetes.client.AppsV1Api(src).read_namespaced_stateful_set, name, namespace):
        say("an earlier demo migration finished: resetting the demo namespace in both clusters")
        for api in (src, tgt):
            _delete_namespace(api, namespace)
    for api in (src, tgt):
        try:
            body: Any = {"metadata": {"name": namespace}}
            kubernetes.client.CoreV1Api(api).create_namespace(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
    core = kubernetes.client.CoreV1Api(src)
    apps = kubernetes.client.AppsV1Api(src)
    if _exists(apps.read_namespaced_stateful_set, name, namespace):
        say("source etcd already deployed")
    else:
        say("deploying a 3-member etcd (StatefulSet + headless Service) into source/demo")
        if not _exists(core.read_namespaced_service, svc["metadata"]["name"], namespace):
            core.create_namespaced_service(namespace, svc)
        apps.create_namespaced_stateful_set(namespace, sts)

    def ready_endpoints() -> list[str] | None:
        pods: list[Any] = core.list_namespaced_pod(namespace, label_selector="app=etcd").items
        ready = [
            p
            for p in pods
            if p.status.pod_ip
            and any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))
        ]
        return sorted(f"{p.status.pod_ip}:2379" for p in ready) if len(ready) == 3 else None

    endpoints = wait_until(
        ready_endpoints,
        timeout=180,
        interval=1,
        describe=lambda: "the demo etcd did not become Ready within 180 s; see `stateferry sandbox status`",
    )
    env = {**os.environ, "ETCDCTL_API": "3"}
    last_key = f"/demo/key-{keys - 1:04d}"
    existing = subprocess.run(
        ["etcdctl", f"--endpoints={','.join(endpoints)}", "get", last_key, "--print-value-only"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if not existing.stdout.strip():
        say(f"writing {keys} demo keys into the source etcd")
        for i in range(keys):
            subprocess.run(
                ["etcdctl", f"--endpoints={','.join(endpoints)}", "put", f"/demo/key-{i:04d}", f"value-{i}"],
                capture_output=True,
                env=env,
                check=True,
            )
    say(f"source etcd ready: {', '.join(endpoints)}")
    return endpoints


def _exists(read: Any, name: str, namespace: str) -> bool:
    from kubernetes.client.exceptions import ApiException

    try:
        read(name, namespace)
        return True
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise


def _delete_namespace(api: Any, namespace: str, timeout: float = 120) -> None:
    """Delete ``namespace`` with everything in it (PVCs included) and wait until it is gone."""
    import kubernetes.client
    from kubernetes.client.exceptions import ApiException

    core = kubernetes.client.CoreV1Api(api)
    try:
        core.delete_namespace(namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise

    def gone() -> bool:
        try:
            core.read_namespace(namespace)
        except ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return False

    wait_until(
        gone,
        timeout=timeout,
        interval=0.5,
        describe=lambda: f"namespace {namespace} was not deleted within {timeout:.0f} s",
    )


# -- the Prefect side ---------------------------------------------------------------------------------
def register_blocks(kubeconfig: Path | None, stack: Any) -> dict[str, Any]:
    """Save the demo's blocks (idempotent: overwritten every run)."""
    from pydantic import SecretStr

    from blocks import ALL_BLOCKS
    from blocks.kube import KubeCluster
    from blocks.object_store import ObjectStore

    for block_cls in ALL_BLOCKS:
        block_cls.register_type_and_schema()
    blocks: dict[str, Any] = {}
    for ctx in ("source", "target") if kubeconfig else ():
        text = kubeconfig.read_text() if kubeconfig else ""
        block = KubeCluster(kubeconfig=SecretStr(text), context=ctx)
        block.save(f"demo-{ctx}", overwrite=True)
        blocks[f"kube-{ctx}"] = KubeCluster.load(f"demo-{ctx}")
    import json

    for name, s3 in stack.s3.items():
        cfg = json.loads(Path(s3["secret_key_file"]).read_text())
        secret = cfg["identities"][0]["credentials"][0]["secretKey"]
        store = ObjectStore(
            endpoint=s3["endpoint"], access_key=s3["access_key"], secret_key=SecretStr(secret)
        )
        store.save(f"demo-s3-{name}", overwrite=True)
        blocks[f"s3-{name}"] = ObjectStore.load(f"demo-s3-{name}")
    say("blocks saved: demo-source, demo-target (KubeCluster), demo-s3-source, demo-s3-target (ObjectStore)")
    return blocks


def ensure_work_pool() -> None:
    """Create the demo's process work pool if missing."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=WORK_POOL, type="process"))
            say(f"work pool {WORK_POOL} created")
        except ObjectAlreadyExists:
            pass


def deploy(entrypoint: str, name: str, parameters: dict[str, Any], description: str) -> str:
    """Create/update a deployment of ``entrypoint`` from the project directory on the demo pool."""
    from prefect import flow

    source_flow: Any = flow.from_source(source=str(ROOT), entrypoint=entrypoint)
    deployment_id = source_flow.deploy(
        name=name,
        work_pool_name=WORK_POOL,
        parameters=parameters,
        description=description,
        tags=["stateferry", "demo"],
        print_next_steps=False,
    )
    return str(deployment_id)


def ensure_worker(state_root: Path, api_url: str) -> int:
    """Start a process worker for the demo pool unless one runs; returns its pid."""
    pid_file = state_root / "stack" / "worker.pid"
    if pid_file.exists():
        try:
            pid = int(pid_file.read_text())
            os.kill(pid, 0)
            return pid
        except (ValueError, ProcessLookupError):
            pid_file.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"PREFECT_API_URL": api_url, "PREFECT_HOME": str(state_root / "stack" / "worker-home")})
    log = open(state_root / "stack" / "worker.log", "ab")  # noqa: SIM115 - owned by the child
    prefect = str(Path(sys.executable).parent / "prefect")
    proc = subprocess.Popen(
        [prefect, "worker", "start", "--pool", WORK_POOL, "--type", "process", "--limit", "4"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    pid_file.write_text(str(proc.pid))
    say(f"worker started (pid {proc.pid}, log {state_root / 'stack' / 'worker.log'})")
    return proc.pid


def stop_worker(state_root: Path) -> None:
    """Stop the demo worker if it runs."""
    pid_file = state_root / "stack" / "worker.pid"
    if not pid_file.exists():
        return
    try:
        os.killpg(int(pid_file.read_text()), signal.SIGTERM)
    except (ValueError, ProcessLookupError):
        pass
    pid_file.unlink(missing_ok=True)


def wait_for_run(flow_run_id: Any, ui_url: str, auto_approve: bool, timeout: float = 900) -> int:
    """Follow a run until it pauses for approval (interactive) or finishes."""
    from prefect.client.orchestration import get_client

    url = f"{ui_url}/runs/flow-run/{flow_run_id}"
    say(f"flow run: {url}")
    last = None
    banner = [
        "=" * 78,
        " The run is waiting for your approval.",
        f"   1. open {url}",
        "   2. read the plan (Artifacts tab, or the Resume form)",
        "   3. click Resume, switch 'Approved' on, Submit",
        " The flow continues after each approval (the etcd migration asks again before the",
        " client cutover and before deleting the old resources).",
        " `scripts/demo --auto-approve` runs it through unattended.",
        "=" * 78,
    ]
    with get_client(sync_client=True) as client:

        def outcome() -> int | None:
            nonlocal last
            state = client.read_flow_run(flow_run_id).state
            name = state.name if state else "?"
            if name != last:
                say(f"state: {name}")
                last = name
            if state and state.is_paused() and not auto_approve:
                print("\n" + "\n".join(banner))
                return 0
            if state and state.is_final():
                if state.is_completed():
                    say(f"run finished: {url} (summary in the Artifacts tab)")
                    return 0
                say(f"the run ended {name}: {state.message}. Logs: {url}")
                return 1
            return None

        try:
            return wait_until(outcome, timeout=timeout, interval=1, describe=lambda: "")
        except PreconditionFailed:
            say(f"still running after {timeout:.0f} s: follow it at {url}")
            return 0


# -- scenarios ---------------------------------------------------------------------------------------
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


def cms_objects(namespace: str = "cms") -> list[dict[str, Any]]:
    """The field report's CMS: MySQL and WordPress Deployments, Services, a Secret, two PVCs."""
    return list(yaml.safe_load_all((ASSETS / "cms.yaml").read_text().replace("__NS__", namespace)))


def ensure_cms(kubeconfig: Path, namespace: str = "cms") -> None:
    """Deploy the CMS into ``source`` once and put files into its volumes."""
    import kubernetes.client
    import kubernetes.config
    import kubernetes.utils

    src = kubernetes.config.new_client_from_config(config_file=str(kubeconfig), context="source")
    core = kubernetes.client.CoreV1Api(src)
    if _exists(lambda n, _ns: core.read_namespace(n), namespace, ""):
        say(f"source/{namespace} already deployed")
        return
    say(f"deploying the CMS (MySQL + WordPress, 2 PVCs) into source/{namespace}")
    for obj in cms_objects(namespace):
        kubernetes.utils.create_from_dict(src, obj)
    files = {
        "mysql-pv-claim": {"ibdata1": b"\x00\x01" * 50_000, "wordpress/wp_posts.frm": b"posts-table"},
        "wp-pv-claim": {
            "wp-config.php": b"<?php define('DB_NAME','wordpress');",
            "wp-content/uploads/logo.png": bytes(range(256)) * 400,
        },
    }
    for claim, tree in files.items():

        def bound(claim: str = claim) -> Any:
            pvc: Any = core.read_namespaced_persistent_volume_claim(claim, namespace)
            return pvc if pvc.status and pvc.status.phase == "Bound" and pvc.spec.volume_name else None

        why = f"PVC {namespace}/{claim} was not bound within 60 s"
        pvc = wait_until(bound, timeout=60, interval=0.5, describe=why.format)
        pv: Any = core.read_persistent_volume(pvc.spec.volume_name)
        root = Path(pv.spec.host_path.path)
        for rel, data in tree.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
    say("CMS deployed with files in both volumes")


def run_app_scenario(state_root: Path, stack: Any, auto_approve: bool) -> int:
    """Migrate the CMS namespace with its volume data, parked at 0 replicas until activation is approved."""
    from prefect.deployments import run_deployment

    sandbox = ensure_sandbox(state_root)
    ensure_cms(Path(sandbox.kubeconfig))
    blocks = register_blocks(Path(sandbox.kubeconfig), stack)
    client = blocks["s3-target"].minio_client()
    if not client.bucket_exists("demo-migrations"):
        client.make_bucket("demo-migrations")
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
    import json

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
    job = {
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
    client = blocks["s3-target"].minio_client()
    if not client.bucket_exists("demo-backups"):
        client.make_bucket("demo-backups")
    ensure_work_pool()
    from prefect import flow

    backup_flow: Any = flow.from_source(source=str(ROOT), entrypoint="flows/backup.py:scheduled_backup")
    backup_flow.deploy(
        name="demo-shop",
        work_pool_name=WORK_POOL,
        parameters={"job": job},
        cron=job["schedule"],
        concurrency_limit=1,
        tags=["stateferry", "demo"],
        print_next_steps=False,
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


SCENARIOS = {
    "etcd": run_etcd_scenario,
    "mirror": run_mirror_scenario,
    "app": run_app_scenario,
    "backup": run_backup_scenario,
}


def run(scenario: str = "etcd", auto_approve: bool = False, state_root: Path = Path(".stateferry")) -> int:
    """Bring everything up and run one scenario; returns the exit code."""
    from devservers import stack as stack_mod

    state_root = state_root.absolute()
    say("starting the local stack (Prefect server with UI, two S3 stores)")
    info = stack_mod.up(state_root / "stack")
    say(f"Prefect UI: {info.prefect_ui_url}")
    with prefect_api(info.prefect_api_url):
        code = SCENARIOS[scenario](state_root, info, auto_approve)
    say(f"Prefect UI: {info.prefect_ui_url}   (stop everything: scripts/demo down)")
    return code


def down(state_root: Path = Path(".stateferry")) -> None:
    """Stop the worker, the sandbox and the stack (state kept)."""
    from devservers import stack as stack_mod
    from sandbox.cluster import Sandbox

    state_root = state_root.absolute()
    stop_worker(state_root)
    mariadb_info = state_root / "stack" / "mariadb.json"
    if mariadb_info.exists():
        import json

        try:
            os.killpg(json.loads(mariadb_info.read_text())["pid"], signal.SIGTERM)
        except (ProcessLookupError, ValueError, KeyError):
            pass
        mariadb_info.unlink()
    Sandbox(state_root / "sandbox").down()
    stack_mod.down(state_root / "stack")
    say("worker, sandbox and stack stopped")
