"""End-to-end: etcd layouts other than the seed's migrate 3 -> 3 while a client writes.

``test_layout_fqdn_*``: peer and client URLs are full names built from ``$(POD_NAME)`` and
``$(POD_NAMESPACE)`` (``<pod>.kv-peers.<ns>.svc.cluster.local``), the StatefulSet is ``kv-store`` and
its headless Service ``kv-peers`` (named unlike the seed), pods labelled ``app: kv``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from blocks.kube import KubeCluster
from etcd_migration.seed import SeedEtcd, apps_api, client_lb, core_api, delete_namespaces, deploy_fqdn_seed
from etcd_migration.writer import SequentialWriter, member_names, read_all
from flows.etcd_migration import etcd_stretch_migration
from sandbox.testing import SandboxHandle

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def fqdn_seed(sandbox: SandboxHandle, kube_blocks: tuple[KubeCluster, KubeCluster]) -> Iterator[SeedEtcd]:
    seed = deploy_fqdn_seed(sandbox, kube_blocks)
    try:
        yield seed
    finally:
        delete_namespaces(seed)


def test_layout_fqdn_pod_name_refs_3_to_3_while_writing(prefect_server: Any, fqdn_seed: SeedEtcd) -> None:
    ns = fqdn_seed.namespace
    core_src, core_tgt = core_api(fqdn_seed.src), core_api(fqdn_seed.tgt)
    core_src.create_namespaced_service(ns, client_lb("kv-client", "kv"))
    core_tgt.create_namespaced_service(ns, client_lb("kv-client", "kv"))  # the source pods' selector
    src_lb = f"{fqdn_seed.lb_ip(fqdn_seed.src, 'kv-client')}:2379"
    tgt_lb = f"{fqdn_seed.lb_ip(fqdn_seed.tgt, 'kv-client')}:2379"

    writer = SequentialWriter([src_lb, tgt_lb])
    writer.start()
    try:
        summary = etcd_stretch_migration(
            fqdn_seed.source, fqdn_seed.target, source_namespace=ns, statefulset="kv-store", auto_approve=True
        )
    finally:
        stats = writer.stop()
    new = ["kv-store-main-0", "kv-store-main-1", "kv-store-main-2"]
    assert summary["outcome"] == "migrated"
    assert summary["members"] == new
    assert member_names(tgt_lb) == new  # through a Service with the source pods' selector
    stored = asyncio.run(read_all(tgt_lb))
    missing = [n for n in stats.acked if stored.get(n) != str(n).encode()]
    assert not missing, f"{len(missing)} acknowledged writes lost: {missing[:10]}"
    assert len(stats.acked) > 100
    # the new members advertise the same full-name form, rendered for the new Service
    from blocks.etcd_client import EtcdClient

    async def peer_urls() -> list[str]:
        async with EtcdClient([tgt_lb], timeout=5) as etcd:
            return sorted(u for m in await etcd.member_list() for u in m.peer_urls)

    assert asyncio.run(peer_urls()) == [f"http://{p}.kv-store-main.{ns}.svc.cluster.local:2380" for p in new]
    sts = apps_api(fqdn_seed.tgt).read_namespaced_stateful_set("kv-store-main", ns)
    script = sts.spec.template.spec.containers[0].args[1]
    assert (
        "--initial-advertise-peer-urls=http://$(POD_NAME).kv-store-main.$(POD_NAMESPACE).svc.cluster.local:2380"
        in script
    )
    assert sts.spec.selector.match_labels == {"app": "kv"}
    assert [s.metadata.name for s in apps_api(fqdn_seed.src).list_namespaced_stateful_set(ns).items] == []
