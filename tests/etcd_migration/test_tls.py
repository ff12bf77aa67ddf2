"""3 -> 3 migration of a client- and peer-mTLS etcd with root auth, a client writing throughout (issue 13)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509
from prefect_run import flow_run_texts

from blocks.etcd_client import EtcdClient
from blocks.kube import KubeCluster
from etcd_migration.seed import apps_api, client_lb, core_api, delete_namespaces
from etcd_migration.tls_seed import ROOT_PASSWORD, TlsSeed, deploy_tls_seed
from etcd_migration.writer import SequentialWriter, read_all
from flows.etcd_migration import etcd_stretch_migration
from sandbox.testing import SandboxHandle
from stateferry.errors import PreconditionFailed


@pytest.fixture
def tls_seed(sandbox: SandboxHandle, kube_blocks: tuple[KubeCluster, KubeCluster]) -> Iterator[TlsSeed]:
    seed = deploy_tls_seed(sandbox, kube_blocks)
    try:
        yield seed
    finally:
        delete_namespaces(seed)


def _members(endpoint: str, seed: TlsSeed) -> list[tuple[str, tuple[str, ...]]]:
    async def go() -> list[tuple[str, tuple[str, ...]]]:
        async with EtcdClient([endpoint], timeout=5, **seed.client_kwargs()) as etcd:
            return sorted((m.name, m.peer_urls) for m in await etcd.member_list())

    return asyncio.run(go())


def test_tls_mtls_root_auth_3_to_3_while_writing(prefect_server: Any, tls_seed: TlsSeed) -> None:
    ns = tls_seed.namespace
    for api in (tls_seed.src, tls_seed.tgt):
        core_api(api).create_namespaced_service(ns, client_lb("etcd-client", "etcd"))
    src_lb = f"{tls_seed.lb_ip(tls_seed.src, 'etcd-client')}:2379"
    tgt_lb = f"{tls_seed.lb_ip(tls_seed.tgt, 'etcd-client')}:2379"

    writer = SequentialWriter([src_lb, tgt_lb], client_kwargs=tls_seed.client_kwargs())
    writer.start()
    try:
        state = etcd_stretch_migration(
            tls_seed.source,
            tls_seed.target,
            source_namespace=ns,
            auto_approve=True,
            etcd_cluster=tls_seed.block(),
            tls_ca_secret="etcd-ca",
            return_state=True,
        )
    finally:
        stats = writer.stop()
    summary = state.result()
    new = ["etcd-main-0", "etcd-main-1", "etcd-main-2"]
    assert summary["outcome"] == "migrated", summary
    assert summary["members"] == new
    # through a Service with the source pods' selector, over mutual TLS as root
    members = _members(tgt_lb, tls_seed)
    assert [m[0] for m in members] == new
    assert all(urls == (f"https://{name}.etcd-main:2380",) for name, urls in members)
    stored = asyncio.run(read_all(tgt_lb, **tls_seed.client_kwargs()))
    missing = [n for n in stats.acked if stored.get(n) != str(n).encode()]
    assert not missing, f"{len(missing)} acknowledged writes lost: {missing[:10]}"
    assert len(stats.acked) > 100
    print(f"TLS 3->3: {summary['duration_seconds']} s, worst gap {stats.longest_gap_seconds * 1000:.0f} ms")

    # the new members' Secret: the source keys, a certificate of the CA for every new name and LB address
    secret = core_api(tls_seed.tgt).read_namespaced_secret("etcd-main-etcd-tls", ns)
    assert secret.metadata.labels["stateferry.io/etcd-migration"] == f"{ns}.etcd"
    data = {k: base64.b64decode(v) for k, v in secret.data.items()}
    assert sorted(data) == ["ca.crt", "tls.crt", "tls.key"]
    cert = x509.load_pem_x509_certificate(data["tls.crt"])
    assert cert.issuer == x509.load_pem_x509_certificate(tls_seed.ca_pem).subject
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = set(sans.get_values_for_type(x509.DNSName))
    assert {f"etcd-main-{i}.etcd-main" for i in range(3)} <= names
    assert f"etcd-main-0.etcd-main.{ns}.svc.cluster.local" in names
    assert tls_seed.client_name in names  # clients that verified the old members verify the new ones
    lb_ips = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    for pod in new:
        svc = core_api(tls_seed.tgt).read_namespaced_service(pod, ns)
        assert svc.status.load_balancer.ingress[0].ip in lb_ips
    sts = apps_api(tls_seed.tgt).read_namespaced_stateful_set("etcd-main", ns)
    volumes = {v.name: v.secret.secret_name for v in sts.spec.template.spec.volumes if v.secret}
    assert volumes == {"tls": "etcd-main-etcd-tls"}
    assert [s.metadata.name for s in apps_api(tls_seed.src).list_namespaced_stateful_set(ns).items] == []

    # nothing secret reached the run's logs or artifacts
    assert state.state_details.flow_run_id is not None
    texts = flow_run_texts(state.state_details.flow_run_id)
    assert "PRIVATE KEY" not in texts and ROOT_PASSWORD not in texts
    assert data["tls.key"].decode().splitlines()[1] not in texts


def test_tls_peer_san_check_refused_before_anything_changes(
    sandbox: SandboxHandle, kube_blocks: tuple[KubeCluster, KubeCluster], prefect_server: Any
) -> None:
    seed = deploy_tls_seed(sandbox, kube_blocks, skip_san_check=False, wait=False)
    try:
        with pytest.raises(PreconditionFailed, match="experimental-peer-skip-client-san-verification"):
            etcd_stretch_migration(
                seed.source,
                seed.target,
                source_namespace=seed.namespace,
                auto_approve=True,
                etcd_cluster=seed.block(),
                tls_ca_secret="etcd-ca",
            )
        assert [
            s.metadata.name for s in core_api(seed.tgt).list_namespaced_service(seed.namespace).items
        ] == []
        assert [
            s.metadata.name for s in core_api(seed.src).list_namespaced_service(seed.namespace).items
        ] == ["etcd"]
        secrets = [s.metadata.name for s in core_api(seed.tgt).list_namespaced_secret(seed.namespace).items]
        assert "etcd-main-etcd-tls" not in secrets
    finally:
        delete_namespaces(seed)
