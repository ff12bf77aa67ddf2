"""The seed etcd with client and peer mutual TLS and root auth (``test_tls_*``, the TLS benchmark).

The seed's StatefulSet with ``https`` URLs, the TLS files from the Secret ``etcd-tls`` (mounted at
``/etc/etcd/tls``: ``tls.crt``, ``tls.key``, ``ca.crt``), ``--client-cert-auth``,
``--peer-client-cert-auth`` with ``--experimental-peer-skip-client-san-verification`` (members reach
each other through LoadBalancers), a TCP readiness probe, and auth enabled with a ``root`` user. The
CA that signed the members' certificate is in the Secret ``etcd-ca`` of the target namespace.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from blocks.etcd import EtcdCluster
from blocks.kube import KubeCluster
from etcd_migration.seed import (
    SEED_STS,
    SEED_SVC,
    SeedEtcd,
    _create_namespace,
    apps_api,
    core_api,
    wait_ready,
)
from sandbox.testing import SandboxHandle
from tasks.etcd_certs import IssuedCert, issue_member_cert, make_ca

TLS_DIR = "/etc/etcd/tls"
ROOT_PASSWORD = "r00t-pa55-" + uuid.uuid4().hex[:8]


@dataclass
class TlsSeed(SeedEtcd):
    """A TLS seed: the CA, the root client certificate and the name clients verify."""

    ca_pem: bytes = b""
    root: IssuedCert | None = None
    client_name: str = ""

    def client_kwargs(self) -> dict[str, Any]:
        """``EtcdClient`` keyword arguments of a root client that verifies ``client_name``."""
        assert self.root is not None
        return {
            "ca_cert": self.ca_pem,
            "cert_chain": self.root.cert_pem,
            "cert_key": self.root.key_pem,
            "user": "root",
            "password": ROOT_PASSWORD,
            "tls_server_name": self.client_name,
        }

    def block(self) -> EtcdCluster:
        """The flow's ``etcd_cluster`` block: CA, root client certificate and the root user."""
        assert self.root is not None
        return EtcdCluster(
            endpoints=["127.0.0.1:2379"],  # not used by the migration
            ca_cert=self.ca_pem.decode(),  # type: ignore[arg-type]
            client_cert=self.root.cert_pem.decode(),  # type: ignore[arg-type]
            client_key=self.root.key_pem.decode(),  # type: ignore[arg-type]
            username="root",
            password=ROOT_PASSWORD,  # type: ignore[arg-type]
        )


def tls_manifests(namespace: str, skip_san_check: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """The TLS seed StatefulSet and headless Service."""
    tls_flags = (
        f"--cert-file={TLS_DIR}/tls.crt --key-file={TLS_DIR}/tls.key --trusted-ca-file={TLS_DIR}/ca.crt "
        f"--client-cert-auth --peer-cert-file={TLS_DIR}/tls.crt --peer-key-file={TLS_DIR}/tls.key "
        f"--peer-trusted-ca-file={TLS_DIR}/ca.crt --peer-client-cert-auth"
        + (" --experimental-peer-skip-client-san-verification" if skip_san_check else "")
    )
    text = (
        SEED_STS.replace("http://", "https://")
        .replace(
            "--auto-compaction-retention=1000 &",
            f"--auto-compaction-retention=1000 \\\n          {tls_flags} &",
        )
        .replace(
            "        volumeMounts:\n        - name: data\n          mountPath: /var/lib/etcd\n",
            f"        volumeMounts:\n        - name: data\n          mountPath: /var/lib/etcd\n"
            f"        - name: tls\n          mountPath: {TLS_DIR}\n          readOnly: true\n",
        )
        .replace(
            "      imagePullSecrets:\n",
            "      volumes:\n      - name: tls\n        secret:\n          secretName: etcd-tls\n"
            "      imagePullSecrets:\n",
        )
    )
    sts = yaml.safe_load(text)
    container = sts["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"] = {"tcpSocket": {"port": 2379}, "periodSeconds": 2}
    return sts, yaml.safe_load(SEED_SVC)


def _etcdctl(endpoint: str, seed: TlsSeed, *args: str, auth: bool) -> None:
    assert seed.root is not None
    with tempfile.TemporaryDirectory() as tmp:
        files = {"ca": seed.ca_pem, "cert": seed.root.cert_pem, "key": seed.root.key_pem}
        for name, pem in files.items():
            Path(tmp, name).write_bytes(pem)
        cmd = [
            "etcdctl",
            f"--endpoints=https://{endpoint}",
            f"--cacert={tmp}/ca",
            f"--cert={tmp}/cert",
            f"--key={tmp}/key",
            "--insecure-skip-tls-verify",  # the pod address is not in the members' certificate
        ]
        if auth:
            cmd.append(f"--user=root:{ROOT_PASSWORD}")
        subprocess.run(
            [*cmd, *args], check=True, capture_output=True, timeout=30, env={**os.environ, "ETCDCTL_API": "3"}
        )


def deploy_tls_seed(
    sandbox: SandboxHandle,
    blocks: tuple[KubeCluster, KubeCluster],
    *,
    skip_san_check: bool = True,
    wait: bool = True,
) -> TlsSeed:
    """Deploy the TLS seed into a fresh namespace, wait until its 3 pods are Ready and enable auth
    (``wait=False``: only create the objects, for checks that read the StatefulSet alone)."""
    namespace = f"tl-{uuid.uuid4().hex[:6]}"
    src, tgt = blocks[0].api_client(), blocks[1].api_client()
    now = datetime.datetime.now(datetime.UTC)
    ca_pem, ca_key = make_ca("etcd-ca", now=now)
    client_name = f"etcd-client.{namespace}.svc.cluster.local"
    member_names = [
        f"*.etcd{s}" for s in ("", f".{namespace}", f".{namespace}.svc", f".{namespace}.svc.cluster.local")
    ]
    members = issue_member_cert(
        ca_pem, ca_key, "etcd", [*member_names, client_name, "localhost"], [], now=now
    )
    root = issue_member_cert(ca_pem, ca_key, "root", ["root"], [], now=now)
    _create_namespace(src, namespace)
    _create_namespace(tgt, namespace)
    core_api(src).create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "etcd-tls"},
            "stringData": {
                "tls.crt": members.cert_pem.decode(),
                "tls.key": members.key_pem.decode(),
                "ca.crt": ca_pem.decode(),
            },
        },
    )
    core_api(tgt).create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "etcd-ca"},
            "type": "kubernetes.io/tls",
            "stringData": {"tls.crt": ca_pem.decode(), "tls.key": ca_key.decode()},
        },
    )
    sts, svc = tls_manifests(namespace, skip_san_check)
    core_api(src).create_namespaced_service(namespace, svc)
    apps_api(src).create_namespaced_stateful_set(namespace, sts)
    seed = TlsSeed(
        namespace, src, tgt, blocks[0], blocks[1], ca_pem=ca_pem, root=root, client_name=client_name
    )
    if not wait:
        return seed
    try:
        wait_ready(src, namespace, "app=etcd", 3)
    except AssertionError as exc:
        pods = core_api(src).list_namespaced_pod(namespace).items
        logs = {
            p.metadata.name: core_api(src).read_namespaced_pod_log(p.metadata.name, namespace, tail_lines=15)
            for p in pods
        }
        raise AssertionError(f"{exc}: {[p.status for p in pods][:1]} {logs}") from None
    seed = TlsSeed(
        namespace, src, tgt, blocks[0], blocks[1], ca_pem=ca_pem, root=root, client_name=client_name
    )
    endpoint = seed.pod_endpoints()[0]
    _etcdctl(endpoint, seed, "user", "add", f"root:{ROOT_PASSWORD}", auth=False)
    _etcdctl(endpoint, seed, "user", "grant-role", "root", "root", auth=False)
    _etcdctl(endpoint, seed, "auth", "enable", auth=False)
    return seed
