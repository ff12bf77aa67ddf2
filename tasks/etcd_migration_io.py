"""I/O of the etcd stretch migration's steps: LoadBalancers, DNS hosts, StatefulSets, endpoints, waits.

Every function reads before it writes and may be repeated (a re-run after a crash repeats the step
that was in progress). Called by the steps in :mod:`flows.etcd_migration_steps`.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from prefect import get_run_logger
from prefect.runtime import flow_run

from planning.etcd_dns_hosts import host_entries
from planning.etcd_layout import MIGRATION_LABEL, Layout, dns_names
from planning.etcd_manifests import (
    command_initial_cluster,
    lb_service_manifest,
    new_headless_service_manifest,
    new_statefulset_manifest,
)
from planning.etcd_stretch import Observed, classify_members
from planning.etcd_tls import rewrite_secret_volumes
from stateferry.errors import PreconditionFailed, StateferryError
from stateferry.waiting import wait_until
from tasks.etcd_ops import ClusterView, observe_now
from tasks.etcd_preflight import MigrationContext, dns_key, to_current
from tasks.kube_objects import (
    apply_object,
    delete_object,
    get_object,
    patch_coredns_hosts,
    patch_module_config_hosts,
    wait_for_lb_ip,
    wait_pods_ready,
)


def current_run_id() -> str:
    """The current flow run's id ("" outside a run): labels objects with the run that made them."""
    return str(flow_run.get_id() or "")


def ensure_lb_services(ctx: MigrationContext) -> dict[str, str]:
    layout, run_id = ctx.layout, current_run_id()
    sides = (
        (ctx.src, layout.source_namespace, layout.old_pods(), ctx.source_lb_annotations),
        (ctx.tgt, layout.target_namespace, layout.new_pods(), ctx.target_lb_annotations),
    )
    for api, ns, pods, ann in sides:
        for pod in pods:
            existing = get_object(api, "service", ns, pod)
            if (
                existing is not None
                and (existing["metadata"].get("labels") or {}).get(MIGRATION_LABEL) != layout.migration_id
            ):
                raise PreconditionFailed(
                    f"Service {ns}/{pod} exists and was not created by this migration: rename or delete it "
                    "(the flow names each member's LoadBalancer Service after the pod)"
                )
            apply_object(api, lb_service_manifest(pod, ns, layout, run_id=run_id, annotations=ann))
    apply_object(ctx.tgt, new_headless_service_manifest(ctx.source_service, layout, run_id=run_id))
    for api, ns, pods, _ in sides:
        for pod in pods:
            ctx.lb_ips[pod] = wait_for_lb_ip(api, ns, pod)
    return dict(ctx.lb_ips)


def wait_lb_reachable(ctx: MigrationContext, timeout: float = 90.0) -> None:
    """Wait until every running member answers through its LoadBalancer (an LB may lag its IP)."""
    endpoints = live_endpoints(ctx)
    missing: list[str] = []

    def all_answer() -> bool:
        try:
            view = observe_now(endpoints, timeout=1.0)
            listed = {m.name for m in view.members if m.name}
            missing[:] = sorted(p for p in endpoints if p in listed and p not in view.statuses)
        except StateferryError as exc:
            missing[:] = [str(exc)]
        return not missing

    wait_until(
        all_answer,
        timeout=timeout,
        interval=0.3,
        describe=lambda: (
            f"etcd members not reachable through their LoadBalancer addresses after {timeout:g}s: "
            f"{missing}; check the LoadBalancer provider, firewalls and loadBalancerSourceRanges"
        ),
    )


def all_dns_names(layout: Layout) -> list[str]:
    names = [
        n
        for p in layout.old_pods()
        for n in dns_names(p, layout.source_service, layout.source_namespace, layout.cluster_domain)
    ]
    names += [
        n
        for p in layout.new_pods()
        for n in dns_names(p, layout.new_service, layout.target_namespace, layout.cluster_domain)
    ]
    return names


def set_dns(ctx: MigrationContext, api: Any, entries: list[tuple[str, list[str]]]) -> str:
    if ctx.dns_provider == "deckhouse":
        return patch_module_config_hosts(api, all_dns_names(ctx.layout), entries)
    return patch_coredns_hosts(api, dns_key(ctx.layout), entries)


def dns_entries(
    ctx: MigrationContext, *, for_side: Literal["source", "target"]
) -> list[tuple[str, list[str]]]:
    layout = ctx.layout
    if for_side == "source":  # source pods must resolve the new members
        ips = {p: ctx.lb_ips[p] for p in layout.new_pods()}
        return host_entries(ips, layout.new_service, layout.target_namespace, layout.cluster_domain)
    ips = {p: ctx.lb_ips[p] for p in layout.old_pods() if p in ctx.lb_ips}
    return host_entries(ips, layout.source_service, layout.source_namespace, layout.cluster_domain)


def render_sts(ctx: MigrationContext, replicas: int, ic: str, partition: int) -> dict[str, Any]:
    manifest = new_statefulset_manifest(
        ctx.source_sts,
        ctx.layout,
        replicas=replicas,
        initial_cluster_value=ic,
        partition=partition,
        run_id=current_run_id(),
    )
    if ctx.tls is not None:  # the same mounts, the new members' own Secrets
        template = manifest["spec"]["template"]
        template["spec"] = rewrite_secret_volumes(template.get("spec") or {}, ctx.tls.renames)
    return manifest


def observed_sts(ctx: MigrationContext) -> tuple[int | None, str, int, bool]:
    sts = get_object(ctx.tgt, "statefulset", ctx.layout.target_namespace, ctx.layout.new_sts)
    if sts is None:
        return None, "", 0, False
    spec, status = sts.get("spec") or {}, sts.get("status") or {}
    replicas = int(spec.get("replicas", 0))
    ic = command_initial_cluster(sts) or ""
    partition = int(((spec.get("updateStrategy") or {}).get("rollingUpdate") or {}).get("partition") or 0)
    rolled = (
        status.get("observedGeneration") == (sts.get("metadata") or {}).get("generation")
        and int(status.get("updatedReplicas") or 0) == replicas
        and int(status.get("readyReplicas") or 0) == replicas
    )
    return replicas, ic, partition, rolled


def live_endpoints(ctx: MigrationContext) -> dict[str, str]:
    """Client endpoints (LB IPs) of the pods that should run now (old and new StatefulSet replicas)."""
    layout, port = ctx.layout, ctx.layout.client_port
    old = get_object(ctx.src, "statefulset", layout.source_namespace, layout.source_sts)
    new = get_object(ctx.tgt, "statefulset", layout.target_namespace, layout.new_sts)
    old_n = int((old or {}).get("spec", {}).get("replicas", 0)) if old else 0
    new_n = int((new or {}).get("spec", {}).get("replicas", 0)) if new else 0
    pods = layout.old_pods()[:old_n] + layout.new_pods()[:new_n]
    return {p: f"{ctx.lb_ips[p]}:{port}" for p in pods if p in ctx.lb_ips}


def member_endpoints(ctx: MigrationContext, view: ClusterView | None = None) -> dict[str, str]:
    """Client endpoints (LB IPs) of the members to talk to: those in the member list, or all known."""
    port = ctx.layout.client_port
    everyone = {p: f"{ip}:{port}" for p, ip in ctx.lb_ips.items()}
    if view is None:
        return everyone
    listed: set[str] = set()
    new, old, _ = classify_members(to_current(view), ctx.layout)
    listed.update(new)
    listed.update(old)
    return {p: e for p, e in everyone.items() if p in listed}


def delete_ours(ctx: MigrationContext, api: Any, kind: str, namespace: str, name: str, **kwargs: Any) -> str:
    """Delete an object only when it carries this migration's label (never a user's namesake)."""
    obj = get_object(api, kind, namespace, name)
    if obj is None:
        return "absent"
    if ((obj.get("metadata") or {}).get("labels") or {}).get(MIGRATION_LABEL) != ctx.layout.migration_id:
        get_run_logger().warning(
            "not deleting %s %s/%s: not created by this migration", kind, namespace, name
        )
        return "kept"
    return delete_object(api, kind, namespace, name, **kwargs)


def claim_name(ctx: MigrationContext) -> str:
    claims = (ctx.source_sts.get("spec") or {}).get("volumeClaimTemplates") or []
    return str(claims[0]["metadata"]["name"]) if claims else "data"


def wait_gone(api: Any, namespace: str, pods: list[str], timeout: float = 60.0) -> None:
    wait_until(
        lambda: all(get_object(api, "pod", namespace, p) is None for p in pods),
        timeout=timeout,
        describe=lambda: f"pods {pods} in {namespace} did not terminate within {timeout:g}s",
    )


def lb_ips_from_cluster(ctx: MigrationContext) -> None:
    layout = ctx.layout
    for api, ns, pods in (
        (ctx.src, layout.source_namespace, layout.old_pods()),
        (ctx.tgt, layout.target_namespace, layout.new_pods()),
    ):
        for pod in pods:
            svc = get_object(api, "service", ns, pod)
            ingress = (((svc or {}).get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            if ingress and ingress[0].get("ip"):
                ctx.lb_ips[pod] = str(ingress[0]["ip"])


def wait_pod_revision(ctx: MigrationContext, pod: str, timeout: float = 120.0) -> None:
    layout = ctx.layout
    started = time.monotonic()

    def restarted() -> bool:
        sts = get_object(ctx.tgt, "statefulset", layout.target_namespace, layout.new_sts) or {}
        status = sts.get("status") or {}
        p = get_object(ctx.tgt, "pod", layout.target_namespace, pod)
        return (
            p is not None
            and status.get("observedGeneration") == (sts.get("metadata") or {}).get("generation")
            and (p["metadata"].get("labels") or {}).get("controller-revision-hash")
            == status.get("updateRevision")
            and not p["metadata"].get("deletionTimestamp")
        )

    wait_until(
        restarted,
        timeout=timeout,
        describe=lambda: f"pod {pod} did not restart with the new --initial-cluster within {timeout:g}s",
    )
    left = max(timeout - (time.monotonic() - started), 5)
    wait_pods_ready(ctx.tgt, layout.target_namespace, [pod], timeout=left)


def observe_objects(ctx: MigrationContext, view: ClusterView) -> Observed:
    """The planner's input: the member list plus the new and old StatefulSets as they are now."""
    layout = ctx.layout
    replicas, ic, partition, rolled = observed_sts(ctx)
    old_sts = get_object(ctx.src, "statefulset", layout.source_namespace, layout.source_sts)
    return Observed(
        members=to_current(view),
        leader_id=view.leader_id,
        new_sts_replicas=replicas,
        new_sts_initial_cluster=ic,
        new_sts_partition=partition,
        new_sts_rolled_out=rolled,
        old_sts_exists=old_sts is not None,
        old_sts_replicas=None if old_sts is None else int((old_sts.get("spec") or {}).get("replicas", 1)),
    )
