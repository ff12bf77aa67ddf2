"""Bad input is refused in preflight with a message that says what to fix, and nothing is changed;
rejecting the first approval leaves ``source`` exactly as it was and ``target`` clean."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest

from blocks.etcd_client import EtcdClient
from blocks.kube import KubeCluster
from devservers.prefect_runs import find_flow_run, wait_for_approval_form
from etcd_migration.seed import SeedEtcd, apps_api, core_api, deploy_seed
from flows.etcd_migration import etcd_stretch_migration
from sandbox.testing import SandboxHandle
from stateferry.errors import InputError, PreconditionFailed
from tasks.approvals import ApprovalRejected

pytestmark = pytest.mark.timeout(240)


def _snapshot(seed: SeedEtcd) -> dict[str, Any]:
    """Everything a migration could change, in both clusters."""
    ns = seed.namespace
    out: dict[str, Any] = {}
    for side, api in (("source", seed.src), ("target", seed.tgt)):
        core = core_api(api)
        apps = apps_api(api)
        out[f"{side}/services"] = sorted(
            (s.metadata.name, s.spec.type) for s in core.list_namespaced_service(ns).items
        )
        out[f"{side}/statefulsets"] = sorted(
            (s.metadata.name, s.spec.replicas, str(s.spec.template.spec.containers[0].args))
            for s in apps.list_namespaced_stateful_set(ns).items
        )
        out[f"{side}/configmaps"] = sorted(c.metadata.name for c in core.list_namespaced_config_map(ns).items)
        out[f"{side}/pvcs"] = sorted(
            c.metadata.name for c in core.list_namespaced_persistent_volume_claim(ns).items
        )
        out[f"{side}/corefile"] = core.read_namespaced_config_map("coredns", "kube-system").data["Corefile"]

    async def members() -> list[tuple[str, tuple[str, ...], bool]]:
        async with EtcdClient(seed.pod_endpoints(), timeout=5) as etcd:
            return sorted((m.name, m.peer_urls, m.is_learner) for m in await etcd.member_list())

    out["members"] = asyncio.run(members())
    return out


@pytest.fixture(scope="module")
def idle_seed(sandbox: SandboxHandle, kube_blocks: tuple[KubeCluster, KubeCluster]) -> Iterator[SeedEtcd]:
    """One seed etcd shared by the refusal cases (none of them may change it)."""
    seed = deploy_seed(sandbox, kube_blocks)
    yield seed
    for api in (seed.src, seed.tgt):
        try:
            core_api(api).delete_namespace(seed.namespace)
        except Exception:
            pass


def _other_etcd_namespace(seed: SeedEtcd) -> str:
    """A target namespace that already has an etcd StatefulSet of its own."""
    ns = f"busy-{uuid.uuid4().hex[:6]}"
    core_api(seed.tgt).create_namespace({"metadata": {"name": ns}})
    apps_api(seed.tgt).create_namespaced_stateful_set(
        ns,
        {
            "metadata": {"name": "etcd-other"},
            "spec": {
                "replicas": 0,
                "serviceName": "etcd-other",
                "selector": {"matchLabels": {"app": "etcd-other"}},
                "template": {
                    "metadata": {"labels": {"app": "etcd-other"}},
                    "spec": {"containers": [{"name": "etcd", "image": "quay.io/coreos/etcd:v3.4.18"}]},
                },
            },
        },
    )
    return ns


CASES = [
    (
        "unknown statefulset",
        {"statefulset": "etcd-nope"},
        InputError,
        r"statefulset: .*etcd-nope.*use one of \['etcd'\]",
    ),
    (
        "wrong namespace",
        {"source_namespace": "no-such-ns"},
        InputError,
        r"source_namespace: namespace 'no-such-ns'",
    ),
    (  # a range of EtcdMigrationOptions: also in the JSON schema the server checks for deployment runs
        "target count 0",
        {"target_replicas": 0},
        InputError,
        r"target_replicas: Input should be greater than or equal to 1 .*Fix: give a value greater than or",
    ),
    ("even target", {"target_replicas": 4}, InputError, r"target_replicas: 4 is even.*allow_even_size=True"),
    (
        "unreachable source endpoints",
        {"source_endpoints": ["127.0.0.1:9"]},
        InputError,
        r"source_endpoints: the source etcd did not answer.*give source_endpoints reachable",
    ),
    (
        "target namespace runs etcd",
        {"target_namespace": "<busy>"},
        PreconditionFailed,
        r"already runs etcd \(StatefulSet 'etcd-other'\)",
    ),
    (
        "deckhouse dns, no deckhouse",
        {"dns_provider": "deckhouse"},
        PreconditionFailed,
        "not a Deckhouse cluster",
    ),
    (
        "wrong target image",
        {"target_image": "quay.io/coreos/etcd:v3.5.9"},
        PreconditionFailed,
        r"same minor version",
    ),
]


@pytest.mark.parametrize(("case", "params", "error", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_in_preflight_and_nothing_changes(
    prefect_server: Any,
    idle_seed: SeedEtcd,
    case: str,
    params: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    before = _snapshot(idle_seed)
    kwargs: dict[str, Any] = {"source_namespace": idle_seed.namespace, "auto_approve": True, **params}
    if kwargs.get("target_namespace") == "<busy>":
        kwargs["target_namespace"] = _other_etcd_namespace(idle_seed)
    t0 = time.monotonic()
    with pytest.raises(error, match=message):
        etcd_stretch_migration(idle_seed.source, idle_seed.target, **kwargs)
    assert time.monotonic() - t0 < 30
    assert _snapshot(idle_seed) == before


def _wait_paused_with_schema(run_name: str, key: str | None = None, timeout: float = 120) -> UUID:
    """The run's id once it is paused (at pause ``key`` if given) with its input schema written."""
    run_id = find_flow_run(run_name=run_name, timeout=timeout)
    wait_for_approval_form(run_id, timeout, key=key)
    return run_id


@pytest.mark.parametrize("reject_at", ["join-new-members", "clients-switched"])
def test_rejecting_before_the_cutover_leaves_source_as_it_was_and_target_clean(
    prefect_server: Any, seed_etcd: SeedEtcd, reject_at: str
) -> None:
    from prefect.flow_runs import resume_flow_run

    before = _snapshot(seed_etcd)
    run_name = f"reject-{uuid.uuid4().hex[:8]}"
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = etcd_stretch_migration.with_options(flow_run_name=run_name)(
                seed_etcd.source, seed_etcd.target, source_namespace=seed_etcd.namespace
            )
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        paused = _wait_paused_with_schema(run_name, "join-new-members")
        # while paused: the per-member LoadBalancers and DNS hosts exist, nobody joined yet
        during = _snapshot(seed_etcd)
        assert ("etcd-main-0", "LoadBalancer") in during["target/services"]
        assert "etcd-main-0.etcd-main" in during["source/corefile"]
        assert during["members"] == before["members"]
        if reject_at == "clients-switched":
            resume_flow_run(paused, run_input={"approved": True})
            paused = _wait_paused_with_schema(run_name, "clients-switched", timeout=150)
            joined = _snapshot(seed_etcd)["members"]
            assert sorted(m[0] for m in joined) == [
                "etcd-0",
                "etcd-1",
                "etcd-2",
                "etcd-main-0",
                "etcd-main-1",
                "etcd-main-2",
            ]
        resume_flow_run(paused, run_input={"approved": False, "comment": "not today"})
        thread.join(timeout=120)
    finally:
        if thread.is_alive():
            resume_flow_run(_wait_paused_with_schema(run_name, timeout=5), run_input={"approved": False})
            thread.join(timeout=60)
    assert isinstance(outcome.get("error"), ApprovalRejected), outcome
    assert "not today" in str(outcome["error"])
    assert _snapshot(seed_etcd) == before


def test_member_that_never_catches_up_is_detected_and_rolled_back(
    prefect_server: Any, seed_etcd: SeedEtcd
) -> None:
    from tasks.fault_points import skipping

    before = _snapshot(seed_etcd)
    t0 = time.monotonic()
    # the peers cannot resolve each other's names, and the DNS check that would say so is left out
    with (
        skipping("dns"),
        skipping("dns_check"),
        pytest.raises(
            PreconditionFailed, match=r"etcd-main-0 did not start and catch up within 15s.*rolled back"
        ),
    ):
        etcd_stretch_migration(
            seed_etcd.source,
            seed_etcd.target,
            source_namespace=seed_etcd.namespace,
            auto_approve=True,
            catch_up_timeout_seconds=15,
        )
    assert time.monotonic() - t0 < 60
    assert _snapshot(seed_etcd) == before


def test_wrong_dns_is_reported_before_any_member_is_added(prefect_server: Any, seed_etcd: SeedEtcd) -> None:
    from flows.etcd_migration_steps import DnsCheckFailed
    from tasks.fault_points import skipping

    before = _snapshot(seed_etcd)
    with skipping("dns"), pytest.raises(PreconditionFailed) as caught:  # no hosts entries were written
        etcd_stretch_migration(
            seed_etcd.source, seed_etcd.target, source_namespace=seed_etcd.namespace, auto_approve=True
        )
    assert isinstance(caught.value.__cause__, DnsCheckFailed)  # raised before the first member add
    message = str(caught.value)
    assert "DNS check before adding a member" in message and "rolled back" in message
    # every name a joining member uses, in each cluster, with what it resolved to
    for name in ("etcd-main-0.etcd-main", "etcd-main-2.etcd-main"):
        assert f"source: {name} -> does not resolve (expected 127." in message
    assert "target: etcd-0.etcd -> does not resolve" in message
    assert _snapshot(seed_etcd) == before


def test_dry_run_publishes_the_plan_and_changes_nothing(prefect_server: Any, idle_seed: SeedEtcd) -> None:
    before = _snapshot(idle_seed)
    result = etcd_stretch_migration(
        idle_seed.source, idle_seed.target, source_namespace=idle_seed.namespace, dry_run=True
    )
    assert result["outcome"] == "planned"
    plan = result["plan"]
    assert "| 1 | add_member | etcd-main-0 | `etcd-0=http://etcd-0.etcd:2380," in plan
    assert plan.count("remove_old") == 3 and "finalize_sts" in plan
    assert _snapshot(idle_seed) == before
    # rollback with nothing in progress: nothing to undo, and nothing of the user's is touched
    undone = etcd_stretch_migration(
        idle_seed.source, idle_seed.target, source_namespace=idle_seed.namespace, rollback=True
    )
    assert undone["outcome"] == "rolled_back"
    assert _snapshot(idle_seed) == before


def test_dns_names_already_defined_elsewhere_are_refused(prefect_server: Any, idle_seed: SeedEtcd) -> None:
    from planning.etcd_dns_hosts import coredns_with_hosts

    core = core_api(idle_seed.src)
    original = core.read_namespaced_config_map("coredns", "kube-system").data["Corefile"]
    taken = coredns_with_hosts(original, "someone else", [("10.9.9.9", ["etcd-main-0.etcd-main"])])
    core.patch_namespaced_config_map("coredns", "kube-system", {"data": {"Corefile": taken}})
    try:
        before = _snapshot(idle_seed)
        with pytest.raises(PreconditionFailed, match=r"source cluster's CoreDNS hosts block already defines"):
            etcd_stretch_migration(
                idle_seed.source, idle_seed.target, source_namespace=idle_seed.namespace, auto_approve=True
            )
        assert _snapshot(idle_seed) == before
    finally:
        core.patch_namespaced_config_map("coredns", "kube-system", {"data": {"Corefile": original}})
