"""End-to-end: the seed's 3-member etcd in ``source`` migrates to 3 members in ``target``.

A client writes sequential keys through LoadBalancer addresses during the whole migration; the flow
is crashed once after a member add (before the StatefulSet update) and re-run, and completes.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from etcd_migration.seed import SeedEtcd, apps_api, client_lb, core_api
from etcd_migration.writer import SequentialWriter, member_names, read_all
from flows.etcd_migration import etcd_stretch_migration
from tasks.fault_points import InjectedFault, crash_after

pytestmark = pytest.mark.timeout(300)


# A crash (the flow run dies) after each kind of step in turn; the next run continues from what it observes.
CRASH_POINTS = [
    "lb_services",
    "dns",
    "member_add:etcd-main-0",  # registered as a learner, StatefulSet not yet updated
    "member_deployed:etcd-main-0",  # StatefulSet updated, not yet caught up / promoted
    "member_promoted:etcd-main-1",
    "member_add:etcd-main-2",
    "move_leader",
    "remove_old:etcd-2",
    "member_removed:etcd-1",  # member removed, its pod not yet stopped: the next run stops it
    "finalize",
]


def test_migrates_3_to_3_while_writing_and_resumes_after_crashes(
    prefect_server: Any, seed_etcd: SeedEtcd
) -> None:
    ns = seed_etcd.namespace
    core_src = core_api(seed_etcd.src)
    core_tgt = core_api(seed_etcd.tgt)
    core_src.create_namespaced_service(ns, client_lb("etcd-client", "etcd"))
    # the source pods' selector: the new pods keep the source pods' labels
    core_tgt.create_namespaced_service(ns, client_lb("etcd-main-client", "etcd"))
    src_lb = f"{seed_etcd.lb_ip(seed_etcd.src, 'etcd-client')}:2379"
    tgt_lb = f"{seed_etcd.lb_ip(seed_etcd.tgt, 'etcd-main-client')}:2379"

    writer = SequentialWriter([src_lb, tgt_lb])
    writer.start()
    t0 = time.monotonic()
    try:
        # crash after a step, re-run; at each point in turn (the first one before the StatefulSet update)
        for point in CRASH_POINTS:
            with crash_after(point), pytest.raises(InjectedFault, match=point):
                etcd_stretch_migration(
                    seed_etcd.source, seed_etcd.target, source_namespace=ns, auto_approve=True
                )
        summary = etcd_stretch_migration(
            seed_etcd.source, seed_etcd.target, source_namespace=ns, auto_approve=True
        )
    finally:
        stats = writer.stop()
    took = time.monotonic() - t0
    assert summary["outcome"] == "migrated"
    assert summary["members"] == ["etcd-main-0", "etcd-main-1", "etcd-main-2"]
    assert member_names(tgt_lb) == ["etcd-main-0", "etcd-main-1", "etcd-main-2"]
    # every acknowledged write is there
    stored = asyncio.run(read_all(tgt_lb))
    missing = [n for n in stats.acked if stored.get(n) != str(n).encode()]
    print(
        f"migration {took:.1f}s, {len(stats.acked)} writes acked, {stats.failures} failed attempts, "
        f"longest failed run {stats.longest_failed_run}, "
        f"longest gap {stats.longest_gap_seconds * 1000:.0f} ms"
    )
    assert not missing, f"{len(missing)} acknowledged writes lost: {missing[:10]}"
    assert len(stats.acked) > 100
    # the old side is gone, PVCs kept; the new StatefulSet describes the new members only
    apps_src = apps_api(seed_etcd.src)
    assert [s.metadata.name for s in apps_src.list_namespaced_stateful_set(ns).items] == []
    assert sorted(s.metadata.name for s in core_src.list_namespaced_service(ns).items) == ["etcd-client"]
    assert len(core_src.list_namespaced_persistent_volume_claim(ns).items) == 3
    sts = apps_api(seed_etcd.tgt).read_namespaced_stateful_set("etcd-main", ns)
    # a Service in the target with the source pods' selector reaches exactly the new members
    assert sts.spec.selector.match_labels == {"app": "etcd"}
    pods = core_tgt.list_namespaced_pod(ns, label_selector="app=etcd").items
    assert sorted(p.metadata.name for p in pods) == ["etcd-main-0", "etcd-main-1", "etcd-main-2"]
    eps = core_tgt.read_namespaced_endpoints("etcd-main-client", ns)
    ips = sorted(a.ip for sub in eps.subsets or [] for a in sub.addresses or [])
    assert ips == sorted(p.status.pod_ip for p in pods)
    script = sts.spec.template.spec.containers[0].args[1]
    assert "--initial-cluster etcd-main-0=http://etcd-main-0.etcd-main:2380,etcd-main-1=" in script
    assert "etcd-0=" not in script and "--initial-cluster-state=existing" in script
    corefile = core_tgt.read_namespaced_config_map("coredns", "kube-system").data["Corefile"]
    assert f"etcd-0.etcd.{ns}" not in corefile
    assert (
        "etcd-main-0.etcd-main"
        not in core_src.read_namespaced_config_map("coredns", "kube-system").data["Corefile"]
    )
    # the last run continued where the crashed one stopped (the final rollout), nothing was redone
    steps = [s["step"] for s in summary["steps"]]
    assert not any(s.startswith(("join", "remove", "move", "stop")) for s in steps), steps
    assert steps[-1] == "delete old resources"
    # a re-run after completion changes nothing
    again = etcd_stretch_migration(seed_etcd.source, seed_etcd.target, source_namespace=ns, auto_approve=True)
    assert again["outcome"] == "done"
    assert member_names(tgt_lb) == ["etcd-main-0", "etcd-main-1", "etcd-main-2"]
