"""Fixtures of the etcd stretch migration tests: the two-cluster sandbox and a seed etcd per test.

The sandbox (``sandbox.testing.running_sandbox``) runs on its own address plan (``127.60.x.x`` /
``127.61.x.x``) and state directory, so it never collides with other sandboxes on the machine.
"""

from __future__ import annotations

import fcntl
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from blocks.kube import KubeCluster
from etcd_migration.seed import SeedEtcd, deploy_seed
from sandbox.testing import SandboxHandle, running_sandbox
from tasks.kube_objects import patch_coredns_hosts


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxHandle]:
    """The two-cluster sandbox, fresh per test module (it comes up in ~2 s).

    A lock file serialises test modules of concurrent pytest sessions on this machine: they would
    share the sandbox (same state dir and addresses) and the cluster-wide CoreDNS hosts of two
    migrations of etcds with the same member names would shadow each other.
    """
    state = Path(tempfile.gettempdir()) / "stateferry-etcd-migration-sandbox"
    with open(str(state) + ".migrations.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with running_sandbox(state, base_octet=60, timeout=120) as handle:
                yield handle
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="module")
def kube_blocks(sandbox: SandboxHandle) -> tuple[KubeCluster, KubeCluster]:
    """KubeCluster blocks (unsaved) for the contexts ``source`` and ``target``."""
    text = sandbox.kubeconfig_path.read_text()
    return KubeCluster(kubeconfig=SecretStr(text), context="source"), KubeCluster(
        kubeconfig=SecretStr(text), context="target"
    )


@pytest.fixture
def seed_etcd(sandbox: SandboxHandle, kube_blocks: tuple[KubeCluster, KubeCluster]) -> Iterator[SeedEtcd]:
    """A fresh seed etcd (3 members) in its own namespace; the namespaces are deleted afterwards."""
    seed = deploy_seed(sandbox, kube_blocks)
    try:
        yield seed
    finally:
        import kubernetes.client

        for api in (seed.src, seed.tgt):
            try:
                kubernetes.client.CoreV1Api(api).delete_namespace(seed.namespace)
                patch_coredns_hosts.fn(api, f"etcd-migration {seed.namespace}.etcd", [])
            except Exception:
                pass
