"""Fixtures of the resource backup / migration tests: one sandbox for the session, blocks, the CMS app."""

from __future__ import annotations

import base64
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from blocks.kube import KubeCluster
from sandbox.cluster import SandboxError
from sandbox.testing import SandboxHandle, running_sandbox
from tasks.kube_export import KubeRest

#: Address plans tried for this package's sandbox (source 127.<n>.x.x, target 127.<n+1>.x.x): away
#: from the other suites' sandboxes, and free of a concurrent session running these same tests.
BASE_OCTETS = range(131, 200, 2)


def _octet_free(octet: int) -> bool:
    for o in (octet, octet + 1):
        with socket.socket() as s:
            try:
                s.bind((f"127.{o}.0.1", 6443))
            except OSError:
                return False
    return True


@pytest.fixture(scope="session")
def rsandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxHandle]:
    """The two-cluster sandbox, brought up once for these tests (on the first free address plan)."""
    root = tmp_path_factory.mktemp("resources-sbx")
    last: Exception | None = None
    for octet in BASE_OCTETS:
        if not _octet_free(octet):
            continue
        try:
            cm = running_sandbox(root / f"sbx{octet}", base_octet=octet)
            sb = cm.__enter__()
        except SandboxError as exc:  # lost a race with another session: try the next plan
            last = exc
            continue
        try:
            yield sb
        finally:
            cm.__exit__(None, None, None)
        return
    raise RuntimeError(f"no free sandbox address plan in {BASE_OCTETS}: {last}")


def kube_block(sb: SandboxHandle, context: str) -> KubeCluster:
    """A KubeCluster block for one sandbox context."""
    return KubeCluster(kubeconfig=SecretStr(Path(sb.kubeconfig_path).read_text()), context=context)


@pytest.fixture(scope="session")
def source_kube(rsandbox: SandboxHandle) -> KubeCluster:
    return kube_block(rsandbox, "source")


@pytest.fixture(scope="session")
def target_kube(rsandbox: SandboxHandle) -> KubeCluster:
    return kube_block(rsandbox, "target")


@pytest.fixture(scope="session")
def source_rest(source_kube: KubeCluster) -> KubeRest:
    return KubeRest(source_kube.api_client(), "source")


@pytest.fixture(scope="session")
def target_rest(target_kube: KubeCluster) -> KubeRest:
    return KubeRest(target_kube.api_client(), "target")


@pytest.fixture
def bucket() -> str:
    """A fresh bucket name per test."""
    return f"rb-{uuid.uuid4().hex[:12]}"


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def cms_objects(ns: str) -> list[dict[str, Any]]:
    """The seed's CMS app: MySQL + WordPress Deployments, Services, a Secret, two PVCs, a ConfigMap."""
    labels = {"app": "wordpress"}

    def deploy(name: str, tier: str, image: str, replicas: int, claim: str, mount: str) -> dict[str, Any]:
        sel = {**labels, "tier": tier}
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": sel},
                "strategy": {"type": "Recreate"},
                "template": {
                    "metadata": {"labels": sel},
                    "spec": {
                        "containers": [
                            {
                                "name": tier,
                                "image": image,
                                "env": [
                                    {
                                        "name": "MYSQL_ROOT_PASSWORD",
                                        "valueFrom": {
                                            "secretKeyRef": {"name": "mysql-pass", "key": "password"}
                                        },
                                    }
                                ],
                                "ports": [{"containerPort": 3306 if tier == "mysql" else 80, "name": tier}],
                                "volumeMounts": [{"name": "data", "mountPath": mount}],
                            }
                        ],
                        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
                    },
                },
            },
        }

    def pvc(name: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        }

    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "mysql-pass", "namespace": ns, "labels": labels},
            "type": "Opaque",
            "data": {"password": b64("s3cret-pw")},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "wp-config", "namespace": ns, "labels": labels},
            "data": {"WORDPRESS_DB_HOST": "wordpress-mysql"},
        },
        pvc("mysql-pv-claim"),
        pvc("wp-pv-claim"),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "wordpress-mysql", "namespace": ns, "labels": labels},
            "spec": {"clusterIP": "None", "selector": {**labels, "tier": "mysql"}, "ports": [{"port": 3306}]},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "wordpress", "namespace": ns, "labels": labels},
            "spec": {
                "type": "NodePort",
                "selector": {**labels, "tier": "frontend"},
                "ports": [{"port": 80, "targetPort": 80}],
            },
        },
        deploy("wordpress-mysql", "mysql", "mysql:5.6", 1, "mysql-pv-claim", "/var/lib/mysql"),
        deploy("wordpress", "frontend", "wordpress:4.8-apache", 2, "wp-pv-claim", "/var/www/html"),
    ]


def create_all(rest: KubeRest, objects: list[dict[str, Any]]) -> None:
    """POST each object (namespaces first, as given)."""
    for o in objects:
        group_version = o["apiVersion"]
        plural = {
            "Namespace": "namespaces",
            "Secret": "secrets",
            "ConfigMap": "configmaps",
            "PersistentVolumeClaim": "persistentvolumeclaims",
            "Service": "services",
            "Deployment": "deployments",
            "CronJob": "cronjobs",
        }[o["kind"]]
        base = f"/apis/{group_version}" if "/" in group_version else f"/api/{group_version}"
        ns = o["metadata"].get("namespace")
        path = f"{base}/namespaces/{ns}/{plural}" if ns else f"{base}/{plural}"
        rest.request("POST", path, body=o)


def pv_dir(rest: KubeRest, ns: str, pvc: str, timeout: float = 30.0) -> Path:
    """Host directory of the PV bound to ``ns/pvc`` (the sandbox reports it as hostPath)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        claim = rest.get_or_none(f"/api/v1/namespaces/{ns}/persistentvolumeclaims/{pvc}") or {}
        vol = (claim.get("spec") or {}).get("volumeName")
        if vol and (claim.get("status") or {}).get("phase") == "Bound":
            pv = rest.request("GET", f"/api/v1/persistentvolumes/{vol}")
            return Path(pv["spec"]["hostPath"]["path"])
        time.sleep(0.2)
    raise AssertionError(f"PVC {ns}/{pvc} not bound")


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def read_tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def cms_source(rsandbox: SandboxHandle, source_rest: KubeRest) -> dict[str, dict[str, bytes]]:
    """Namespace ``cms`` in ``source`` with the CMS app and files in both PVCs; returns the files."""
    create_all(source_rest, cms_objects("cms"))
    files = {
        "mysql-pv-claim": {
            "ibdata1": b"\x00\x01" * 5000,
            "wordpress/wp_posts.frm": b"posts-table",
            "auto.cnf": b"[auto]\nserver-uuid=1\n",
        },
        "wp-pv-claim": {
            "wp-config.php": b"<?php define('DB_NAME','wordpress');",
            "wp-content/uploads/2018/07/logo.png": bytes(range(256)) * 40,
        },
    }
    for claim, tree in files.items():
        write_tree(pv_dir(source_rest, "cms", claim), tree)
    # The Deployments' pods exist and are placed before any test backs the namespace up (the backup
    # lists them as skipped, and a ReadWriteOnce claim's mover follows its pod's node).
    deadline = time.monotonic() + 90
    placed: list[str] = []
    while time.monotonic() < deadline:
        pods = source_rest.request("GET", "/api/v1/namespaces/cms/pods").get("items") or []
        placed = [p["metadata"]["name"] for p in pods if (p.get("spec") or {}).get("nodeName")]
        if {n.rsplit("-", 2)[0] for n in placed} >= {"wordpress", "wordpress-mysql"}:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"the cms pods were not placed in time (placed: {placed})")
    return files
