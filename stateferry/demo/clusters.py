"""The demo's Kubernetes side: the two-cluster sandbox and the workloads a scenario migrates (the field
report's 3-member etcd, the CMS with files in its volumes)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from stateferry.demo import say
from stateferry.waiting import wait_until

ASSETS = Path(__file__).resolve().parent
DEMO_NAMESPACE = "demo"


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
