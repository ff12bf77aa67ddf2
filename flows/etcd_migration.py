"""Flow ``etcd_stretch_migration``: move an etcd cluster between two Kubernetes clusters, zero downtime.

The procedure of the seed ``etcd-stretch-migration.ru.txt`` automated: the etcd cluster is stretched
over both Kubernetes clusters (per-member LoadBalancer Services plus static DNS hosts on both sides),
the new members join one at a time (as learners, promoted once caught up), leadership moves to the
new side, clients switch, the old members leave one at a time and the old resources are deleted.

Every step reads state first; a re-run after a crash reconciles from the observed member list and
objects (:func:`planning.etcd_stretch.next_step`). Until the client cutover is approved, a rejection,
``rollback=True`` or a member that never catches up removes the new members and everything the flow
created, leaving the source as it was.

Test-only fault injection: the environment variable ``STATEFERRY_FAULT_AFTER`` names a point
(``lb_services``, ``dns``, ``member_add[:<pod>]``, ``member_deployed[:<pod>]``, ``member_promoted[:<pod>]``,
``move_leader``, ``remove_old``,
``remove_old:<pod>``, ``finalize``); the flow raises :class:`InjectedFault` right after it.
``STATEFERRY_FAULT_SKIP=dns`` skips writing the DNS hosts (a "wrong DNS" misconfiguration: the new
members never catch up, which the flow must detect and roll back).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from blocks.kube import KubeCluster
from planning.etcd import CurrentMember, PlannedMember, initial_cluster
from planning.etcd_stretch import (
    MIGRATION_LABEL,
    Layout,
    Observed,
    StepKind,
    check_target_count,
    check_versions,
    classify_members,
    command_initial_cluster,
    dns_names,
    foreign_host_names,
    host_entries,
    lb_service_manifest,
    new_headless_service_manifest,
    new_statefulset_manifest,
    next_step,
    plan_markdown,
)
from stateferry.errors import InputError, PreconditionFailed, StateferryError
from tasks.etcd_ops import (
    ClusterView,
    add_member,
    compact_and_defrag,
    move_leader,
    observe_cluster,
    observe_now,
    promote_when_caught_up,
    remove_member,
    wait_healthy,
)
from tasks.kube_objects import (
    delete_object,
    ensure_configmap,
    ensure_service,
    ensure_statefulset,
    get_object,
    list_pods,
    module_config_resource,
    patch_coredns_hosts,
    patch_module_config_hosts,
    scale_statefulset,
    wait_for_lb_ip,
    wait_pods_ready,
)

__all__ = ["InjectedFault", "MigrationComplete", "etcd_stretch_migration"]

FAULT_ENV = "STATEFERRY_FAULT_AFTER"
FAULT_SKIP_ENV = "STATEFERRY_FAULT_SKIP"
JOIN_STEP = "join new members"
CUTOVER_STEP = "clients switched"
DELETE_STEP = "delete old resources"


class MigrationComplete(StateferryError):
    """Preflight found the migration already complete (a re-run after the end)."""


class JoinFailed(PreconditionFailed):
    """A joining member did not run, start or catch up in time (rolled back before the cutover)."""


class InjectedFault(RuntimeError):
    """Raised at the point named by ``$STATEFERRY_FAULT_AFTER`` (tests simulate a crash with it)."""


def _fault(point: str, detail: str = "") -> None:
    wanted = os.environ.get(FAULT_ENV, "")
    if wanted and wanted in (point, f"{point}:{detail}"):
        raise InjectedFault(f"injected fault after {point}{':' + detail if detail else ''}")


@dataclass
class _Journal:
    """Steps done in this run, with durations (for the summary artifact)."""

    rows: list[tuple[str, str, float]] = field(default_factory=list)

    @contextmanager
    def step(self, name: str, detail: str = "") -> Iterator[dict[str, str]]:
        started = time.monotonic()
        note = {"detail": detail}
        yield note
        self.rows.append((name, note["detail"], time.monotonic() - started))


def _run_id() -> str:
    return str(flow_run.get_id() or "")


def _state_name(layout: Layout) -> str:
    return f"stateferry-etcd-{layout.new_sts}"[:63]


def _to_current(view: ClusterView) -> tuple[CurrentMember, ...]:
    return tuple(
        CurrentMember(m.id, m.name, m.peer_urls, m.is_learner, m.name not in view.unreachable)
        for m in view.members
    )


def _find_container_image(sts: Mapping[str, Any]) -> str:
    containers = ((sts.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []
    for c in containers:
        if "etcd" in str(c.get("image", "")):
            return str(c["image"])
    return str(containers[0].get("image", "")) if containers else ""


# ------------------------------------------------------------------------------------------ preflight


@dataclass
class _Context:
    src: Any
    tgt: Any
    layout: Layout
    source_sts: dict[str, Any]
    source_service: dict[str, Any]
    state: dict[str, str]
    dns_provider: str
    source_lb_annotations: dict[str, str]
    target_lb_annotations: dict[str, str]
    endpoints: dict[str, str] = field(default_factory=dict)  # member name -> lb ip:port
    lb_ips: dict[str, str] = field(default_factory=dict)  # pod -> lb ip
    warnings: list[str] = field(default_factory=list)


def _names_of(items: Any) -> list[str]:
    return sorted(i.metadata.name for i in items)


def _preflight(
    source: KubeCluster,
    target: KubeCluster,
    *,
    source_namespace: str,
    target_namespace: str,
    statefulset: str,
    service: str | None,
    new_statefulset: str,
    new_service: str,
    target_replicas: int | None,
    allow_even_size: bool,
    source_endpoints: list[str] | None,
    target_image: str | None,
    dns_provider: str,
    source_lb_annotations: dict[str, str],
    target_lb_annotations: dict[str, str],
) -> tuple[_Context, ClusterView]:
    import kubernetes.client

    if dns_provider not in ("coredns", "deckhouse"):
        raise InputError("dns_provider", f"{dns_provider!r} is not supported", "use 'coredns' or 'deckhouse'")
    src, tgt = source.api_client(), target.api_client()
    for name, api, ns, field_name in (
        ("source", src, source_namespace, "source_namespace"),
        ("target", tgt, target_namespace, "target_namespace"),
    ):
        if get_object(api, "namespace", "", ns) is None:
            raise InputError(
                field_name,
                f"namespace {ns!r} does not exist in the {name} cluster",
                f"use one of {_names_of(kubernetes.client.CoreV1Api(api).list_namespace().items)}"
                + (" or create it first" if name == "target" else ""),
            )
    sts = get_object(src, "statefulset", source_namespace, statefulset)
    state_cm = get_object(tgt, "configmap", target_namespace, f"stateferry-etcd-{new_statefulset}"[:63])
    state: dict[str, str] = dict((state_cm or {}).get("data") or {})
    if sts is None and state.get("phase") in ("done", "cleanup"):
        raise MigrationComplete(
            f"the migration of {source_namespace}/{statefulset} to {target_namespace}/{new_statefulset} is "
            "complete (the old StatefulSet is gone): nothing to do"
        )
    if sts is None:
        names = _names_of(
            kubernetes.client.AppsV1Api(src).list_namespaced_stateful_set(source_namespace).items
        )
        raise InputError(
            "statefulset",
            f"StatefulSet {statefulset!r} was not found in namespace {source_namespace!r} of the source "
            "cluster",
            f"use one of {names}" if names else "check source_namespace and the StatefulSet name",
        )
    service = service or str((sts.get("spec") or {}).get("serviceName") or statefulset)
    found = get_object(src, "service", source_namespace, service)
    if found is None:
        raise InputError(
            "service",
            f"headless Service {service!r} was not found in namespace {source_namespace!r}",
            "give the StatefulSet's serviceName (the headless Service of the etcd pods)",
        )
    svc: dict[str, Any] = found
    source_replicas = int(state.get("source_replicas") or (sts.get("spec") or {}).get("replicas") or 1)
    wanted = (
        target_replicas
        if target_replicas is not None
        else int(state.get("target_replicas") or source_replicas)
    )
    if state.get("target_replicas") and int(state["target_replicas"]) != wanted:
        raise InputError(
            "target_replicas",
            f"{wanted} differs from {state['target_replicas']} of the migration in progress",
            f"re-run with target_replicas={state['target_replicas']} or roll the migration back first",
        )
    check_target_count(wanted, allow_even_size)
    if new_statefulset == statefulset and source_namespace == target_namespace and source is target:
        raise InputError("new_statefulset", "equals the source StatefulSet", "choose another name")
    # another etcd in the target namespace? (pods, and StatefulSets that may be scaled to 0)
    ours = f"{source_namespace}.{statefulset}"[:63]
    workloads = [("pod", p) for p in list_pods(tgt, target_namespace)]
    workloads += [
        ("StatefulSet", kubernetes.client.ApiClient().sanitize_for_serialization(s))
        for s in kubernetes.client.AppsV1Api(tgt).list_namespaced_stateful_set(target_namespace).items
    ]
    for kind, obj in workloads:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        pod_spec = obj.get("spec") or {}
        if kind == "StatefulSet":
            pod_spec = (pod_spec.get("template") or {}).get("spec") or {}
        images = [str(c.get("image", "")) for c in pod_spec.get("containers") or []]
        if any("etcd" in i for i in images) and labels.get(MIGRATION_LABEL) != ours:
            raise PreconditionFailed(
                f"namespace {target_namespace!r} of the target cluster already runs etcd ({kind} "
                f"{obj['metadata']['name']!r}) that this migration did not create: choose another "
                "target_namespace (or remove that etcd first)"
            )
    existing_new = get_object(tgt, "statefulset", target_namespace, new_statefulset)
    if existing_new is not None:
        labels = (existing_new.get("metadata") or {}).get("labels") or {}
        if labels.get(MIGRATION_LABEL) != ours:
            raise PreconditionFailed(
                f"StatefulSet {target_namespace}/{new_statefulset} exists and was not created by this "
                "migration: choose another new_statefulset name"
            )
    # reach the source etcd: given endpoints, LB IPs of a run in progress, or pod IPs
    client_port = 2379
    for port in (svc.get("spec") or {}).get("ports") or []:
        if "client" in str(port.get("name", "")) or int(port.get("port", 0)) == 2379:
            client_port = int(port["port"])
    endpoints: dict[str, str] = {}
    if source_endpoints:
        endpoints = {e: e.split("://")[-1] for e in source_endpoints}
    else:
        for i in range(source_replicas):
            pod_name = f"{statefulset}-{i}"
            lb = get_object(src, "service", source_namespace, pod_name)
            ingress = (((lb or {}).get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            pod_obj = get_object(src, "pod", source_namespace, pod_name)
            if ingress and ingress[0].get("ip"):
                endpoints[pod_name] = f"{ingress[0]['ip']}:{client_port}"
            elif pod_obj and (pod_obj.get("status") or {}).get("podIP"):
                endpoints[pod_name] = f"{pod_obj['status']['podIP']}:{client_port}"
        new_replicas = int(state.get("target_replicas") or 0)
        for i in range(new_replicas):
            pod_name = f"{new_statefulset}-{i}"
            lb = get_object(tgt, "service", target_namespace, pod_name)
            ingress = (((lb or {}).get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            if ingress and ingress[0].get("ip"):
                endpoints[pod_name] = f"{ingress[0]['ip']}:{client_port}"
    if not endpoints:
        raise InputError(
            "source_endpoints",
            f"no running pod of {statefulset} with an IP was found",
            "start the source etcd, or give source_endpoints reachable from where the flow runs",
        )
    try:
        view = observe_cluster.with_options(retries=1, retry_delay_seconds=1)(endpoints, with_alarms=True)
    except StateferryError as exc:
        raise InputError(
            "source_endpoints",
            f"the source etcd did not answer at {sorted(endpoints.values())} ({exc})",
            "give source_endpoints reachable from where the flow runs (e.g. a LoadBalancer of the etcd "
            "client port), or run the flow inside the cluster network",
        ) from exc
    if not view.leader_id:
        raise PreconditionFailed("the source etcd has no leader: restore quorum before migrating")
    if view.alarms:
        raise PreconditionFailed(
            f"the source etcd has active alarms {list(view.alarms)}: resolve them (e.g. NOSPACE: compact, "
            "defrag, `etcdctl alarm disarm`) before migrating"
        )
    voters = [m for m in view.members if not m.is_learner]
    reference = next((m for m in voters if m.peer_urls), None)
    if reference is None:
        raise PreconditionFailed("the member list has no voting member with a peer URL")
    url = urlsplit(reference.peer_urls[0])
    layout = Layout(
        source_namespace=source_namespace,
        target_namespace=target_namespace,
        source_sts=statefulset,
        source_service=service,
        new_sts=new_statefulset,
        new_service=new_service,
        source_replicas=source_replicas,
        target_replicas=wanted,
        scheme=url.scheme or "http",
        peer_port=url.port or 2380,
        client_port=client_port,
    )
    new, old, unknown = classify_members(_to_current(view), layout)
    if unknown:
        raise PreconditionFailed(
            f"members {sorted(unknown)} match neither {statefulset}-N.{service} nor "
            f"{new_statefulset}-N.{new_service}: check statefulset/service, or remove those members first"
        )
    if not new and len(old) != source_replicas:
        raise PreconditionFailed(
            f"the StatefulSet has {source_replicas} replicas but etcd lists {len(old)} of its members: "
            "bring the source to a consistent state first"
        )
    if command_initial_cluster(sts) is None:
        raise PreconditionFailed(
            f"StatefulSet {statefulset}: the etcd container has no --initial-cluster (command, args or "
            "ETCD_INITIAL_CLUSTER): the new members' flags cannot be derived from it"
        )
    if dns_provider == "coredns":
        _check_dns_conflicts(src, tgt, layout)
    else:
        module_config_resource(src)
        module_config_resource(tgt)
    image = target_image or _find_container_image(sts)
    warnings = check_versions([s.version for s in view.statuses.values()], image)
    ctx = _Context(
        src=src,
        tgt=tgt,
        layout=layout,
        source_sts=sts,
        source_service=svc,
        state=state,
        dns_provider=dns_provider,
        source_lb_annotations=source_lb_annotations,
        target_lb_annotations=target_lb_annotations,
        warnings=warnings,
    )
    ctx.endpoints = dict(endpoints)
    return ctx, view


def _check_dns_conflicts(src: Any, tgt: Any, layout: Layout) -> None:
    """Refuse when a Corefile already maps a member name the migration will add (outside its section)."""
    key = _dns_key(layout)
    for side, api, names in (
        (
            "source",
            src,
            [n for p in layout.new_pods() for n in dns_names(p, layout.new_service, layout.target_namespace)],
        ),
        (
            "target",
            tgt,
            [
                n
                for p in layout.old_pods()
                for n in dns_names(p, layout.source_service, layout.source_namespace)
            ],
        ),
    ):
        cm = get_object(api, "configmap", "kube-system", "coredns")
        corefile = str(((cm or {}).get("data") or {}).get("Corefile") or "")
        clash = foreign_host_names(corefile, key, names)
        if clash:
            raise PreconditionFailed(
                f"the {side} cluster's CoreDNS hosts block already defines {clash[:6]} (another "
                "migration of an etcd with the same member names, or a hand-written entry): the entries "
                "would shadow each other. Remove those entries, or choose another new_statefulset name"
            )


# ------------------------------------------------------------------------------------- object helpers


def _save_state(ctx: _Context, **values: str) -> None:
    ctx.state.update(values)
    ensure_configmap(
        ctx.tgt,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": _state_name(ctx.layout),
                "namespace": ctx.layout.target_namespace,
                "labels": {
                    "app.kubernetes.io/managed-by": "stateferry",
                    MIGRATION_LABEL: ctx.layout.migration_id,
                },
            },
            "data": dict(ctx.state),
        },
    )


def _ensure_lb_services(ctx: _Context) -> dict[str, str]:
    layout, run_id = ctx.layout, _run_id()
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
            ensure_service(api, lb_service_manifest(pod, ns, layout, run_id=run_id, annotations=ann))
    ensure_service(ctx.tgt, new_headless_service_manifest(ctx.source_service, layout, run_id=run_id))
    for api, ns, pods, _ in sides:
        for pod in pods:
            ctx.lb_ips[pod] = wait_for_lb_ip(api, ns, pod)
    return dict(ctx.lb_ips)


def _wait_lb_reachable(ctx: _Context, timeout: float = 90.0) -> None:
    """Wait until every running member answers through its LoadBalancer (an LB may lag its IP)."""
    endpoints = _live_endpoints(ctx)
    deadline = time.monotonic() + timeout
    while True:
        try:
            view = observe_now(endpoints, timeout=1.0)
            listed = {m.name for m in view.members if m.name}
            missing = sorted(p for p in endpoints if p in listed and p not in view.statuses)
        except StateferryError as exc:
            missing = [str(exc)]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise PreconditionFailed(
                f"etcd members not reachable through their LoadBalancer addresses after {timeout:g}s: "
                f"{missing}; check the LoadBalancer provider, firewalls and loadBalancerSourceRanges"
            )
        time.sleep(0.3)


def _dns_key(layout: Layout) -> str:
    return f"etcd-migration {layout.migration_id}"


def _all_dns_names(layout: Layout) -> list[str]:
    names = [
        n for p in layout.old_pods() for n in dns_names(p, layout.source_service, layout.source_namespace)
    ]
    names += [n for p in layout.new_pods() for n in dns_names(p, layout.new_service, layout.target_namespace)]
    return names


def _set_dns(ctx: _Context, api: Any, entries: list[tuple[str, list[str]]]) -> str:
    if ctx.dns_provider == "deckhouse":
        return patch_module_config_hosts(api, _all_dns_names(ctx.layout), entries)
    return patch_coredns_hosts(api, _dns_key(ctx.layout), entries)


def _dns_entries(ctx: _Context, *, for_side: Literal["source", "target"]) -> list[tuple[str, list[str]]]:
    layout = ctx.layout
    if for_side == "source":  # source pods must resolve the new members
        ips = {p: ctx.lb_ips[p] for p in layout.new_pods()}
        return host_entries(ips, layout.new_service, layout.target_namespace)
    ips = {p: ctx.lb_ips[p] for p in layout.old_pods() if p in ctx.lb_ips}
    return host_entries(ips, layout.source_service, layout.source_namespace)


def _render_sts(ctx: _Context, replicas: int, ic: str, partition: int) -> dict[str, Any]:
    return new_statefulset_manifest(
        ctx.source_sts,
        ctx.layout,
        replicas=replicas,
        initial_cluster_value=ic,
        partition=partition,
        run_id=_run_id(),
    )


def _observed_sts(ctx: _Context) -> tuple[int | None, str, int, bool]:
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


def _live_endpoints(ctx: _Context) -> dict[str, str]:
    """Client endpoints (LB IPs) of the pods that should run now (old and new StatefulSet replicas)."""
    layout, port = ctx.layout, ctx.layout.client_port
    old = get_object(ctx.src, "statefulset", layout.source_namespace, layout.source_sts)
    new = get_object(ctx.tgt, "statefulset", layout.target_namespace, layout.new_sts)
    old_n = int((old or {}).get("spec", {}).get("replicas", 0)) if old else 0
    new_n = int((new or {}).get("spec", {}).get("replicas", 0)) if new else 0
    pods = layout.old_pods()[:old_n] + layout.new_pods()[:new_n]
    return {p: f"{ctx.lb_ips[p]}:{port}" for p in pods if p in ctx.lb_ips}


def _member_endpoints(ctx: _Context, view: ClusterView | None = None) -> dict[str, str]:
    """Client endpoints (LB IPs) of the members to talk to: those in the member list, or all known."""
    port = ctx.layout.client_port
    everyone = {p: f"{ip}:{port}" for p, ip in ctx.lb_ips.items()}
    if view is None:
        return everyone
    listed: set[str] = set()
    new, old, _ = classify_members(_to_current(view), ctx.layout)
    listed.update(new)
    listed.update(old)
    return {p: e for p, e in everyone.items() if p in listed}


# ------------------------------------------------------------------------------------------- rollback


def _rollback(ctx: _Context, journal: _Journal, reason: str) -> None:
    """Remove the new members (one at a time) and everything the flow created; the source stays as it was."""
    logger = get_run_logger()
    layout = ctx.layout
    if ctx.state.get("cutover_approved") == "true":
        raise PreconditionFailed(
            "the client cutover was approved (old members may be gone): a rollback is no longer safe; "
            "continue the migration instead"
        )
    logger.warning("rolling back: %s", reason)
    with journal.step("rollback", reason) as note:
        if ctx.lb_ips:
            endpoints = _live_endpoints(ctx)
            view = observe_cluster(endpoints)
            new, old, _ = classify_members(_to_current(view), layout)
            if view.leader_id in {m.id for m in new.values()} and old:
                target_old = next(m for m in old.values() if m.started)
                move_leader(endpoints, target_old.id)
            for pod in sorted(new, key=layout.ordinal, reverse=True):
                remove_member(endpoints, new[pod].id)
            wait_healthy({p: e for p, e in endpoints.items() if p in layout.old_pods()})
        ns = layout.target_namespace
        _delete_ours(ctx, ctx.tgt, "statefulset", ns, layout.new_sts, propagation="Foreground")
        _wait_gone(ctx.tgt, ns, layout.new_pods())
        _delete_ours(ctx, ctx.tgt, "service", ns, layout.new_service)
        for pod in layout.new_pods():
            _delete_ours(ctx, ctx.tgt, "service", ns, pod)
            delete_object(ctx.tgt, "pvc", ns, f"{_claim_name(ctx)}-{pod}")
        for pod in layout.old_pods():
            _delete_ours(ctx, ctx.src, "service", layout.source_namespace, pod)
        _set_dns(ctx, ctx.src, [])
        _set_dns(ctx, ctx.tgt, [])
        _delete_ours(ctx, ctx.tgt, "configmap", ns, _state_name(layout))
        note["detail"] = f"{reason}; new members removed, target objects and DNS entries deleted"


def _delete_ours(ctx: _Context, api: Any, kind: str, namespace: str, name: str, **kwargs: Any) -> str:
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


def _claim_name(ctx: _Context) -> str:
    claims = (ctx.source_sts.get("spec") or {}).get("volumeClaimTemplates") or []
    return str(claims[0]["metadata"]["name"]) if claims else "data"


def _wait_gone(api: Any, namespace: str, pods: list[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(get_object(api, "pod", namespace, p) is None for p in pods):
            return
        time.sleep(0.2)
    raise PreconditionFailed(f"pods {pods} in {namespace} did not terminate within {timeout:g}s")


# ----------------------------------------------------------------------------------------------- flow


@flow(name="etcd_stretch_migration", log_prints=True)
def etcd_stretch_migration(
    source: KubeCluster,
    target: KubeCluster,
    source_namespace: str = "default",
    target_namespace: str | None = None,
    statefulset: str = "etcd",
    service: str | None = None,
    new_statefulset: str | None = None,
    new_service: str | None = None,
    target_replicas: int | None = None,
    dns_provider: Literal["coredns", "deckhouse"] = "coredns",
    keep_revisions: int = 1000,
    use_learners: bool = True,
    auto_approve: bool = False,
    dry_run: bool = False,
    allow_even_size: bool = False,
    rollback: bool = False,
    delete_pvcs: bool = False,
    keep_source_dns: bool = False,
    source_endpoints: list[str] | None = None,
    target_image: str | None = None,
    catch_up_timeout_seconds: float = 120.0,
    source_lb_annotations: dict[str, str] | None = None,
    target_lb_annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Migrate an etcd StatefulSet from the source to the target Kubernetes cluster without downtime.

    Args:
        source: The cluster running etcd now.
        target: The cluster that will run it.
        source_namespace: Namespace of the etcd StatefulSet in ``source``.
        target_namespace: Namespace in ``target`` (default: ``source_namespace``); must exist.
        statefulset: The source StatefulSet.
        service: Its headless Service (default: the StatefulSet's ``serviceName``).
        new_statefulset: The new StatefulSet's name (default ``<statefulset>-main``); pod names must
            differ from the source's, they are the member names.
        new_service: The new headless Service (default: ``new_statefulset``).
        target_replicas: Members in the target (default: the source's).
        dns_provider: ``coredns`` (the ``kube-system/coredns`` Corefile ``hosts`` block) or
            ``deckhouse`` (``ModuleConfig kube-dns`` ``spec.settings.hosts``).
        keep_revisions: Revisions kept when compacting before the migration.
        use_learners: Add new members as learners (promoted once caught up).
        auto_approve: Approve every step (unattended runs).
        dry_run: Preflight and plan only.
        allow_even_size: Accept an even ``target_replicas``.
        rollback: Undo a migration that has not passed the client cutover.
        delete_pvcs: Also delete the old members' PVCs at cleanup.
        keep_source_dns: Keep the source cluster's DNS entries for the new members after cleanup (for
            source-side clients that use those names); default: every entry the flow added is removed.
        source_endpoints: etcd client endpoints reachable from where the flow runs, for the preflight
            (default: the source pods' IPs, or the LoadBalancers of a run in progress).
        target_image: etcd image for the new members' version check (default: the source's image).
        catch_up_timeout_seconds: How long a joining member may take to start and catch up before it is
            rolled back.
        source_lb_annotations / target_lb_annotations: Annotations for the per-member LoadBalancer
            Services (cloud provider settings such as internal LB and subnet).

    Returns:
        Summary: ``outcome`` (``migrated`` / ``planned`` / ``rolled_back`` / ``done``), ``steps``,
        ``members``, ``client_endpoints``, ``db_size``.
    """
    logger = get_run_logger()
    journal = _Journal()
    started = time.monotonic()
    target_namespace = target_namespace or source_namespace
    new_statefulset = new_statefulset or f"{statefulset}-main"
    new_service = new_service or new_statefulset

    with journal.step("preflight") as note:
        try:
            ctx, view = _preflight(
                source,
                target,
                source_namespace=source_namespace,
                target_namespace=target_namespace,
                statefulset=statefulset,
                service=service,
                new_statefulset=new_statefulset,
                new_service=new_service,
                target_replicas=target_replicas,
                allow_even_size=allow_even_size,
                source_endpoints=source_endpoints,
                target_image=target_image,
                dns_provider=dns_provider,
                source_lb_annotations=dict(source_lb_annotations or {}),
                target_lb_annotations=dict(target_lb_annotations or {}),
            )
        except MigrationComplete as done:
            _save_complete(target, target_namespace, new_statefulset)
            logger.info("%s", done)
            return {"outcome": "done", "detail": str(done), "steps": [], "members": []}
        layout = ctx.layout
        for w in ctx.warnings:
            logger.warning(w)
        plan = plan_markdown(layout, _to_current(view), view.leader_id, warnings=ctx.warnings)
        create_markdown_artifact(
            key="etcd-migration-plan", markdown=plan, description="etcd stretch migration plan"
        )
        note["detail"] = f"{len(view.members)} members, leader {view.leader_name}"
    summary: dict[str, Any] = {"plan": plan}
    if dry_run:
        summary["outcome"] = "planned"
        return _finish(summary, journal, started, view, ctx)

    in_progress = bool(ctx.state)
    if rollback:
        if in_progress:
            _lb_ips_from_cluster(ctx)
        _rollback(ctx, journal, "rollback=True")
        summary["outcome"] = "rolled_back"
        return _finish(summary, journal, started, None, ctx)

    if not in_progress or ctx.state.get("phase") == "prepare":
        _save_state(
            ctx,
            phase="prepare",
            source_replicas=str(layout.source_replicas),
            target_replicas=str(layout.target_replicas),
        )
        with journal.step("compact+defrag") as note:
            endpoints = dict(ctx.endpoints) if ctx.endpoints else {}
            if endpoints:
                result = compact_and_defrag(endpoints, keep_revisions)
                summary["db_size"] = result
                before = sum(result["db_size_before"].values())
                after = sum(result["db_size_after"].values())
                note["detail"] = f"compacted to {result['compacted_to']}; db size {before} -> {after} bytes"
    with journal.step("loadbalancer services") as note:
        ips = _ensure_lb_services(ctx)
        note["detail"] = ", ".join(f"{k}={v}" for k, v in sorted(ips.items()))
        _wait_lb_reachable(ctx)
    _fault("lb_services")
    with journal.step("dns hosts") as note:
        if os.environ.get(FAULT_SKIP_ENV) == "dns":
            logger.warning("%s=dns: DNS hosts NOT written (test fault injection)", FAULT_SKIP_ENV)
            note["detail"] = "skipped (fault injection)"
        else:
            a = _set_dns(ctx, ctx.src, _dns_entries(ctx, for_side="source"))
            b = _set_dns(ctx, ctx.tgt, _dns_entries(ctx, for_side="target"))
            note["detail"] = f"source {a}, target {b} ({dns_provider})"
    _fault("dns")

    try:
        _migrate(
            ctx,
            journal,
            summary,
            use_learners,
            auto_approve,
            catch_up_timeout_seconds,
            delete_pvcs,
            keep_source_dns,
        )
    except JoinFailed as exc:
        if ctx.state.get("cutover_approved") != "true":
            _rollback(ctx, journal, str(exc))
            raise PreconditionFailed(
                f"{exc} -- the new members were rolled back; the source is as it was"
            ) from exc
        raise
    except Exception as exc:
        from tasks.approvals import ApprovalRejected

        if isinstance(exc, ApprovalRejected) and exc.step in (JOIN_STEP, CUTOVER_STEP):
            _rollback(ctx, journal, f"step '{exc.step}' rejected")
            summary["outcome"] = "rolled_back"
            _finish(summary, journal, started, None, ctx)
        raise
    final_view = observe_cluster(_live_endpoints(ctx))
    return _finish(summary, journal, started, final_view, ctx)


def _save_complete(target: KubeCluster, namespace: str, new_statefulset: str) -> None:
    """Mark the state ConfigMap done (a crash may have happened between the last delete and that)."""
    import kubernetes.client

    name = f"stateferry-etcd-{new_statefulset}"[:63]
    kubernetes.client.CoreV1Api(target.api_client()).patch_namespaced_config_map(
        name, namespace, {"data": {"phase": "done"}}
    )


def _lb_ips_from_cluster(ctx: _Context) -> None:
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


def _approve(ctx: _Context, step: str, text: str, auto_approve: bool, flag: str) -> None:
    from tasks.approvals import request_approval

    if ctx.state.get(flag) == "true":
        return
    request_approval(step, text, auto_approve=auto_approve)
    _save_state(ctx, **{flag: "true"})


def _migrate(
    ctx: _Context,
    journal: _Journal,
    summary: dict[str, Any],
    use_learners: bool,
    auto_approve: bool,
    catch_up_timeout: float,
    delete_pvcs: bool,
    keep_source_dns: bool,
) -> None:
    layout = ctx.layout
    logger = get_run_logger()
    port = layout.client_port
    for _ in range(8 * (layout.source_replicas + layout.target_replicas) + 16):
        endpoints = _live_endpoints(ctx)
        view = observe_now(endpoints)
        replicas, ic, partition, rolled = _observed_sts(ctx)
        old_sts = get_object(ctx.src, "statefulset", layout.source_namespace, layout.source_sts)
        step = next_step(
            Observed(
                members=_to_current(view),
                leader_id=view.leader_id,
                new_sts_replicas=replicas,
                new_sts_initial_cluster=ic,
                new_sts_partition=partition,
                new_sts_rolled_out=rolled,
                old_sts_exists=old_sts is not None,
                old_sts_replicas=None
                if old_sts is None
                else int((old_sts.get("spec") or {}).get("replicas", 1)),
            ),
            layout,
        )
        logger.info("next step: %s %s (%s)", step.kind.value, step.member, step.reason)
        if step.kind in (StepKind.ADD_MEMBER, StepKind.DEPLOY_MEMBER):
            if step.kind is StepKind.ADD_MEMBER:
                _approve(
                    ctx,
                    JOIN_STEP,
                    plan_markdown(layout, _to_current(view), view.leader_id, target_lb=ctx.lb_ips),
                    auto_approve,
                    "join_approved",
                )
                _save_state(ctx, phase="join")
            with journal.step(f"join {step.member}") as note:
                member_id = step.member_id
                if step.kind is StepKind.ADD_MEMBER:
                    member = add_member(endpoints, step.peer_url, as_learner=use_learners)
                    member_id = member.id
                    _fault("member_add", step.member)
                    members = observe_now(endpoints).members
                    joining = PlannedMember(step.member, step.peer_url, layout.new_client_url(step.member))
                    others = [
                        CurrentMember(m.id, m.name, m.peer_urls, m.is_learner)
                        for m in members
                        if m.name and step.peer_url not in m.peer_urls
                    ]
                    ic_value = initial_cluster([*others, joining])
                else:
                    ic_value = step.initial_cluster
                outcome = ensure_statefulset(
                    ctx.tgt, _render_sts(ctx, step.replicas, ic_value, partition=step.replicas - 1)
                )
                _fault("member_deployed", step.member)
                try:
                    wait_pods_ready(
                        ctx.tgt,
                        layout.target_namespace,
                        [step.member],
                        running_only=True,
                        timeout=catch_up_timeout,
                    )
                    took = promote_when_caught_up(
                        {**endpoints, step.member: f"{ctx.lb_ips[step.member]}:{port}"},
                        member_id,
                        step.member,
                        timeout=catch_up_timeout,
                    )
                except PreconditionFailed as exc:
                    raise JoinFailed(str(exc)) from exc
                _fault("member_promoted", step.member)
                note["detail"] = (
                    f"{'learner' if use_learners else 'voter'} {member_id:x}; StatefulSet {outcome}; "
                    f"caught up + promoted in {took:.1f}s; --initial-cluster {ic_value}"
                )
        elif step.kind is StepKind.MOVE_LEADER:
            with journal.step("move leader", step.member):
                move_leader(endpoints, step.member_id)
            _fault("move_leader")
        elif step.kind is StepKind.REMOVE_OLD:
            new_clients = ", ".join(f"{ctx.lb_ips[p]}:{port}" for p in layout.new_pods())
            dns_clients = ", ".join(f"{layout.new_client_url(p)}" for p in layout.new_pods())
            _approve(
                ctx,
                CUTOVER_STEP,
                f"Switch every etcd client to the new endpoints before approving.\n\n"
                f"- LoadBalancer endpoints: {new_clients}\n- in-cluster (target): {dns_clients}\n\n"
                f"After approval the old members {', '.join(layout.old_pods())} are removed one at a time; "
                "a rollback is no longer offered.",
                auto_approve,
                "cutover_approved",
            )
            _save_state(ctx, phase="remove")
            with journal.step(f"remove {step.member}"):
                # member remove first (it commits with every voter alive), then the pod stops: see
                # planning.etcd_stretch.REMOVAL_ORDER (the seed's order loses quorum at 2 voters)
                remaining = {p: e for p, e in endpoints.items() if p != step.member}
                remove_member(remaining, step.member_id)
                _fault("member_removed", step.member)
                scale_statefulset(ctx.src, layout.source_namespace, layout.source_sts, step.replicas)
                _wait_gone(ctx.src, layout.source_namespace, [step.member])
                wait_healthy(remaining, expect_members=sorted(remaining))
            _fault("remove_old", step.member)
        elif step.kind is StepKind.STOP_OLD:
            with journal.step(f"stop {step.member}", "its member was removed"):
                scale_statefulset(ctx.src, layout.source_namespace, layout.source_sts, step.replicas)
                gone = [f"{layout.source_sts}-{i}" for i in range(step.replicas, layout.source_replicas)]
                _wait_gone(ctx.src, layout.source_namespace, gone)
        elif step.kind is StepKind.FINALIZE_STS:
            with journal.step("finalize --initial-cluster", step.initial_cluster):
                _finalize(ctx, step.initial_cluster)
            _fault("finalize")
        elif step.kind is StepKind.CLEANUP:
            _approve(
                ctx,
                DELETE_STEP,
                f"Delete the old StatefulSet {layout.source_namespace}/{layout.source_sts}, its headless "
                f"Service {layout.source_service} and the per-member LoadBalancer Services "
                f"{', '.join(layout.old_pods())}; PVCs are {'deleted' if delete_pvcs else 'kept'}; the "
                "target's DNS entries for the old members are removed"
                + ("." if keep_source_dns else ", and so are the source's entries for the new members."),
                auto_approve,
                "delete_approved",
            )
            with journal.step("delete old resources") as note:
                _cleanup(ctx, delete_pvcs, keep_source_dns)
                note["detail"] = f"PVCs {'deleted' if delete_pvcs else 'kept'}"
            _save_state(ctx, phase="done")
        else:
            summary["outcome"] = "migrated"
            summary["client_endpoints"] = [f"{ctx.lb_ips[p]}:{port}" for p in layout.new_pods()]
            return
    raise PreconditionFailed(
        "the migration did not converge: re-run the flow to continue from the observed state"
    )


def _finalize(ctx: _Context, final_ic: str) -> None:
    """Roll out the new-members-only ``--initial-cluster`` one pod at a time, never restarting the leader."""
    layout = ctx.layout
    port = layout.client_port
    n = layout.target_replicas
    for ordinal in reversed(range(n)):
        pod = f"{layout.new_sts}-{ordinal}"
        endpoints = {p: f"{ctx.lb_ips[p]}:{port}" for p in layout.new_pods()}
        view = observe_now(endpoints)
        if view.leader_name == pod and n > 1:
            other = next(m for m in view.members if m.name != pod and not m.is_learner)
            move_leader(endpoints, other.id)
        ensure_statefulset(ctx.tgt, _render_sts(ctx, n, final_ic, partition=ordinal))
        _wait_pod_revision(ctx, pod)
        wait_healthy(endpoints, expect_members=layout.new_pods())


def _wait_pod_revision(ctx: _Context, pod: str, timeout: float = 120.0) -> None:
    layout = ctx.layout
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sts = get_object(ctx.tgt, "statefulset", layout.target_namespace, layout.new_sts) or {}
        status = sts.get("status") or {}
        p = get_object(ctx.tgt, "pod", layout.target_namespace, pod)
        if (
            p is not None
            and status.get("observedGeneration") == (sts.get("metadata") or {}).get("generation")
            and (p["metadata"].get("labels") or {}).get("controller-revision-hash")
            == status.get("updateRevision")
            and not p["metadata"].get("deletionTimestamp")
        ):
            wait_pods_ready(
                ctx.tgt, layout.target_namespace, [pod], timeout=max(deadline - time.monotonic(), 5)
            )
            return
        time.sleep(0.2)
    raise PreconditionFailed(f"pod {pod} did not restart with the new --initial-cluster within {timeout:g}s")


def _cleanup(ctx: _Context, delete_pvcs: bool, keep_source_dns: bool) -> None:
    layout = ctx.layout
    ns = layout.source_namespace
    _save_state(ctx, phase="cleanup")
    for pod in layout.old_pods():
        _delete_ours(ctx, ctx.src, "service", ns, pod)
        if delete_pvcs:
            delete_object(ctx.src, "pvc", ns, f"{_claim_name(ctx)}-{pod}")
    _set_dns(ctx, ctx.tgt, [])  # the old members' names are stale in the target
    if not keep_source_dns:  # the stretch is over: the source needs no names of the new members
        _set_dns(ctx, ctx.src, [])
    delete_object(ctx.src, "service", ns, layout.source_service)
    # last: while the StatefulSet exists a re-run finds the migration in progress and repeats this step
    delete_object(ctx.src, "statefulset", ns, layout.source_sts)


def _finish(
    summary: dict[str, Any], journal: _Journal, started: float, view: ClusterView | None, ctx: _Context
) -> dict[str, Any]:
    summary["duration_seconds"] = round(time.monotonic() - started, 2)
    summary["steps"] = [{"step": s, "detail": d, "seconds": round(t, 2)} for s, d, t in journal.rows]
    summary["members"] = sorted(m.name for m in view.members) if view else []
    lines = [
        f"# etcd stretch migration: {summary.get('outcome', 'stopped')}",
        "",
        f"{ctx.layout.source_namespace}/{ctx.layout.source_sts} -> "
        f"{ctx.layout.target_namespace}/{ctx.layout.new_sts}, {summary['duration_seconds']} s",
        "",
        "| step | detail | seconds |",
        "|---|---|---|",
        *[f"| {s} | {d} | {t:.2f} |" for s, d, t in journal.rows],
        "",
        f"Final member list: {', '.join(summary['members']) or '(not observed)'}",
    ]
    if summary.get("client_endpoints"):
        lines.append(f"\nClient endpoints: {', '.join(summary['client_endpoints'])}")
    create_markdown_artifact(
        key="etcd-migration-summary", markdown="\n".join(lines), description="etcd stretch migration summary"
    )
    return summary
