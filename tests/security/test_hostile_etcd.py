"""Hostile-input and safety findings of the etcd stretch migration (issue 11, finding 8).

The migrations run against the two-cluster sandbox and real etcd (the fixtures of
``tests/etcd_migration/conftest.py``, imported here: ``tests/security`` has no conftest of its own).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from etcd_migration import conftest as _etcd_fixtures
from etcd_migration.seed import SeedEtcd, apps_api, client_lb, core_api
from etcd_migration.writer import SequentialWriter, member_names, read_all

from flows.etcd_migration import etcd_stretch_migration

pytestmark = pytest.mark.timeout(300)

# the module-scoped two-cluster sandbox and the per-test seed etcd of tests/etcd_migration
sandbox = _etcd_fixtures.sandbox
kube_blocks = _etcd_fixtures.kube_blocks
seed_etcd = _etcd_fixtures.seed_etcd


def _migrate_while_writing(seed: SeedEtcd, replicas: int) -> tuple[dict[str, Any], list[str], str]:
    """Migrate the seed to ``replicas`` members while a client writes through the client
    LoadBalancers (the target's has the source pods' selector); every acknowledged write must be
    readable on the target afterwards. Returns the flow's summary and the member names read through
    the target's client LB (first: it retries while that LB catches up with the final rollout), and
    that LB's address."""
    ns = seed.namespace
    core_api(seed.src).create_namespaced_service(ns, client_lb("etcd-client", "etcd"))
    core_api(seed.tgt).create_namespaced_service(ns, client_lb("etcd-main-client", "etcd"))
    src_lb = f"{seed.lb_ip(seed.src, 'etcd-client')}:2379"
    tgt_lb = f"{seed.lb_ip(seed.tgt, 'etcd-main-client')}:2379"
    writer = SequentialWriter([src_lb, tgt_lb])
    writer.start()
    try:
        summary = etcd_stretch_migration(
            seed.source,
            seed.target,
            source_namespace=ns,
            target_replicas=replicas,
            auto_approve=True,
            catch_up_timeout_seconds=90,
        )
    finally:
        stats = writer.stop()
    assert summary["outcome"] == "migrated"
    names = member_names(tgt_lb)
    stored = asyncio.run(read_all(tgt_lb))
    missing = [n for n in stats.acked if stored.get(n) != str(n).encode()]
    assert not missing, f"{len(missing)} acknowledged writes lost: {missing[:10]}"
    assert len(stats.acked) > 50
    return summary, names, tgt_lb


def test_hostile_etcd_shrink_to_one_keeps_quorum(prefect_server: Any, seed_etcd: SeedEtcd) -> None:
    """3 -> 1: the last old member is removed from a 2-voter cluster.

    On main the flow scaled the old pod down before ``member remove``: 1 of 2 voters was left, the
    removal could never commit and the cluster stopped serving. Now ``member remove`` commits with both
    voters alive and the pod stops afterwards; a client writes through LoadBalancers throughout.
    """
    summary, names, tgt_lb = _migrate_while_writing(seed_etcd, 1)
    assert summary["members"] == ["etcd-main-0"]
    assert names == ["etcd-main-0"]  # through a Service with the source pods' selector
    removals = [s["step"] for s in summary["steps"] if s["step"].startswith("remove")]
    assert removals == ["remove etcd-2", "remove etcd-1", "remove etcd-0"]
    # the single member still takes writes after the migration (it has quorum on its own)
    from blocks.etcd_client import EtcdClient

    async def write_read() -> bytes | None:
        async with EtcdClient([tgt_lb], timeout=5) as etcd:
            await etcd.put("/after/shrink", b"ok")
            return await etcd.get("/after/shrink")

    value = asyncio.run(write_read())
    assert value == b"ok"
    assert [
        s.metadata.name
        for s in apps_api(seed_etcd.src).list_namespaced_stateful_set(seed_etcd.namespace).items
    ] == []
    sts = apps_api(seed_etcd.tgt).read_namespaced_stateful_set("etcd-main", seed_etcd.namespace)
    assert sts.spec.replicas == 1


def test_hostile_etcd_grow_to_five_keeps_quorum(prefect_server: Any, seed_etcd: SeedEtcd) -> None:
    """3 -> 5 live: five members join one at a time (quorum 2 of 3 up to 3 of 5 on the way), the
    three old ones are removed while a client writes; no acknowledged write is lost."""
    summary, names, _ = _migrate_while_writing(seed_etcd, 5)
    new = [f"etcd-main-{i}" for i in range(5)]
    assert summary["members"] == new and names == new


def _everything(seed: SeedEtcd) -> dict[str, Any]:
    """Objects of the seed's namespace and the CoreDNS Corefile, in both clusters."""
    out: dict[str, Any] = {}
    for side, api in (("source", seed.src), ("target", seed.tgt)):
        core, apps = core_api(api), apps_api(api)
        ns = seed.namespace
        out[side] = (
            sorted(s.metadata.name for s in core.list_namespaced_service(ns).items),
            sorted(c.metadata.name for c in core.list_namespaced_config_map(ns).items),
            sorted(s.metadata.name for s in apps.list_namespaced_stateful_set(ns).items),
            core.read_namespaced_config_map("coredns", "kube-system").data["Corefile"],
        )
    return out


INJECT = "etcd-main\n    }\n    forward . 127.0.0.1\n    hosts {"


def test_hostile_etcd_names_cannot_inject_corefile(prefect_server: Any, seed_etcd: SeedEtcd) -> None:
    """``new_service`` / ``new_statefulset`` end up in the CoreDNS hosts of both clusters.

    On main nothing checked them: a newline in either wrote Corefile directives (here a ``forward``)
    into kube-system/coredns, which serves the whole cluster. Now preflight refuses them by name,
    before anything is created.
    """
    from stateferry.errors import InputError

    before = _everything(seed_etcd)
    for param in ("new_service", "new_statefulset"):
        hostile: dict[str, Any] = {param: INJECT}
        with pytest.raises(InputError) as refused:
            etcd_stretch_migration(
                seed_etcd.source,
                seed_etcd.target,
                source_namespace=seed_etcd.namespace,
                auto_approve=True,
                **hostile,
            )
        assert refused.value.field == param
        assert INJECT not in str(refused.value)  # shown escaped (repr), never with its newlines
        assert _everything(seed_etcd) == before


@pytest.mark.parametrize(
    "peer_url",
    [
        "http://etcd-0.etcd.prod.svc.cluster.local}:2380",  # a brace closes the hosts block
        "http://etcd-0.etcd.prod.svc.evil domain:2380",  # a space adds a name
    ],
)
def test_hostile_etcd_member_peer_url_cannot_reach_corefile(peer_url: str) -> None:
    """The cluster domain is read from the members' peer URLs (anyone with etcd access sets them).

    On main it went into the Corefile hosts lines as it was; now the layout refuses it, and the
    Corefile writer refuses any token that is not an IP address or a DNS name.
    """
    from planning.etcd_dns_hosts import coredns_with_hosts
    from planning.etcd_layout import Layout, derive_name_form
    from stateferry.errors import PreconditionFailed

    form = derive_name_form({"etcd-0": [peer_url]}, "etcd", "prod")
    with pytest.raises(PreconditionFailed, match="cluster domain"):
        Layout(
            "prod", "prod", "etcd", "etcd", "etcd-main", "etcd-main", 1, 1, cluster_domain=form.cluster_domain
        )
    corefile = ".:53 {\n    kubernetes cluster.local\n}\n"
    for names in ([f"etcd-main-0.etcd-main.prod.svc.{form.cluster_domain}"], ["a\n}"]):
        with pytest.raises(PreconditionFailed, match="refusing"):
            coredns_with_hosts(corefile, "k", [("10.0.0.1", names)])
    with pytest.raises(PreconditionFailed, match="refusing"):
        coredns_with_hosts(corefile, "k", [("10.0.0.1 evil", ["etcd-main-0"])])
    assert "10.0.0.1 etcd-main-0" in coredns_with_hosts(corefile, "k", [("10.0.0.1", ["etcd-main-0"])])
