"""Fixtures of the etcd stretch migration tests: the two-cluster sandbox and a seed etcd per test.

The sandbox (``sandbox.testing.running_sandbox``) runs on its own address plan (``127.60.x.x`` /
``127.61.x.x``) and state directory, so it never collides with other sandboxes on the machine.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from blocks.kube import KubeCluster
from etcd_migration.seed import SeedEtcd, deploy_seed
from sandbox.testing import SandboxHandle, running_sandbox


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxHandle]:
    """The two-cluster sandbox (session-scoped, shared by xdist workers through its state dir)."""
    state = Path(tempfile.gettempdir()) / "stateferry-etcd-migration-sandbox"
    with running_sandbox(state, base_octet=60, timeout=120) as handle:
        yield handle


@pytest.fixture(scope="session")
def kube_blocks(sandbox: SandboxHandle) -> tuple[KubeCluster, KubeCluster]:
    """KubeCluster blocks (unsaved) for the contexts ``source`` and ``target``."""
    text = sandbox.kubeconfig_path.read_text()
    return KubeCluster(kubeconfig=text, context="source"), KubeCluster(kubeconfig=text, context="target")


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
            except Exception:
                pass
