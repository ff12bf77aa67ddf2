"""Preflight of the etcd stretch migration: every read that decides whether and how it may run.

Also the migration's typed state (one ConfigMap in the target namespace, one load and one save) and
the context the flow's steps share.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from blocks.kube import KubeCluster
from planning.etcd import CurrentMember
from planning.etcd_dns_hosts import foreign_host_names
from planning.etcd_layout import MIGRATION_LABEL, Layout, derive_name_form, dns_names
from planning.etcd_manifests import command_initial_cluster, etcd_container
from planning.etcd_stretch import check_target_count, check_versions, classify_members
from stateferry.errors import InputError, PreconditionFailed, StateferryError
from tasks.etcd_credentials import refine_credentials
from tasks.etcd_ops import ClusterView, observe_cluster
from tasks.etcd_tls_setup import SourceTls, read_source_tls
from tasks.kube_objects import (
    apply_object,
    get_object,
    list_kind,
    list_pods,
    module_config_resource,
    patch_object,
)

__all__ = [
    "MigrationComplete",
    "MigrationContext",
    "MigrationState",
    "dns_key",
    "etcd_image",
    "preflight",
    "save_complete",
    "save_state",
    "state_name",
    "to_current",
]


class MigrationComplete(StateferryError):
    """Preflight found the migration already complete (a re-run after the end)."""


@dataclass
class MigrationState:
    """What a run must remember for the next one (the ConfigMap ``stateferry-etcd-<new sts>``).

    Everything else (members, replicas, ``--initial-cluster``) is observed, never stored.

    Attributes:
        phase: ``""`` (no migration yet), ``prepare``, ``join``, ``remove``, ``cleanup`` or ``done``.
        source_replicas: Members of the source at the start (the old StatefulSet shrinks later).
        target_replicas: Members wanted in the target.
        rename_labels: The label mode the new StatefulSet was created with (its selector is immutable).
        join_approved / cutover_approved / delete_approved: Approvals already given.
    """

    phase: str = ""
    source_replicas: int = 0
    target_replicas: int = 0
    rename_labels: bool = False
    join_approved: bool = False
    cutover_approved: bool = False
    delete_approved: bool = False

    @classmethod
    def from_data(cls, data: Mapping[str, str]) -> MigrationState:
        """Parse the ConfigMap's ``data`` (unknown keys ignored, bad numbers refused)."""
        try:
            return cls(
                phase=str(data.get("phase", "")),
                source_replicas=int(data.get("source_replicas") or 0),
                target_replicas=int(data.get("target_replicas") or 0),
                rename_labels=data.get("rename_labels") == "true",
                join_approved=data.get("join_approved") == "true",
                cutover_approved=data.get("cutover_approved") == "true",
                delete_approved=data.get("delete_approved") == "true",
            )
        except ValueError as exc:
            raise PreconditionFailed(
                f"the migration state ConfigMap holds a bad replica count ({exc}): fix or delete it"
            ) from exc

    def to_data(self) -> dict[str, str]:
        """The ConfigMap ``data``."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
        return out

    @property
    def in_progress(self) -> bool:
        """True once a run has started the migration."""
        return bool(self.phase)


@dataclass
class MigrationContext:
    """What the steps share: API clients, the layout, the source objects, state and LB addresses."""

    src: Any
    tgt: Any
    layout: Layout
    source_sts: dict[str, Any]
    source_service: dict[str, Any]
    state: MigrationState
    dns_provider: str
    source_lb_annotations: dict[str, str]
    target_lb_annotations: dict[str, str]
    tls: SourceTls | None = None  # the source members' TLS set-up (None: plain text)
    endpoints: dict[str, str] = field(default_factory=dict)  # member name -> lb ip:port
    lb_ips: dict[str, str] = field(default_factory=dict)  # pod -> lb ip
    warnings: list[str] = field(default_factory=list)


def state_name(new_sts: str) -> str:
    """Name of the state ConfigMap."""
    return f"stateferry-etcd-{new_sts}"[:63]


def save_state(ctx: MigrationContext, **changes: Any) -> None:
    """Update the state and write it (the only writer of the state ConfigMap)."""
    for key, value in changes.items():
        setattr(ctx.state, key, value)
    apply_object(
        ctx.tgt,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": state_name(ctx.layout.new_sts),
                "namespace": ctx.layout.target_namespace,
                "labels": {
                    "app.kubernetes.io/managed-by": "stateferry",
                    MIGRATION_LABEL: ctx.layout.migration_id,
                },
            },
            "data": ctx.state.to_data(),
        },
    )


def _load_state(tgt: Any, namespace: str, new_sts: str) -> MigrationState:
    cm = get_object(tgt, "configmap", namespace, state_name(new_sts))
    return MigrationState.from_data((cm or {}).get("data") or {})


def save_complete(target: KubeCluster, namespace: str, new_statefulset: str) -> None:
    """Mark the state ConfigMap done (a crash may have happened between the last delete and that)."""
    patch_object(
        target.api_client(), "configmap", namespace, state_name(new_statefulset), {"data": {"phase": "done"}}
    )


def to_current(view: ClusterView) -> tuple[CurrentMember, ...]:
    """The observed member list as the planner's members (unreachable ones unhealthy)."""
    return tuple(
        CurrentMember(m.id, m.name, m.peer_urls, m.is_learner, m.name not in view.unreachable)
        for m in view.members
    )


def dns_key(layout: Layout) -> str:
    """The key of this migration's section in a Corefile hosts block."""
    return f"etcd-migration {layout.migration_id}"


def etcd_image(sts: Mapping[str, Any]) -> str:
    """The etcd container's image of a StatefulSet."""
    container = etcd_container(((sts.get("spec") or {}).get("template") or {}).get("spec") or {})
    return str((container or {}).get("image", ""))


def _api_server(api: Any) -> str:
    return str(getattr(getattr(api, "configuration", None), "host", "") or "")


def _names_of(objects: list[dict[str, Any]]) -> list[str]:
    return sorted(o["metadata"]["name"] for o in objects)


def preflight(
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
    rename_labels: bool = False,
    tls_ca_secret: str | None = None,
    tls_issuer: str | None = None,
) -> tuple[MigrationContext, ClusterView]:
    """Check everything before a change and read what the migration needs (nothing is changed).

    Raises:
        InputError: A parameter names something that does not exist or cannot be used.
        PreconditionFailed: The clusters are not in a state the migration can start or continue from.
        MigrationComplete: The migration is already complete.
    """
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
                f"use one of {_names_of(list_kind(api, 'namespace'))}"
                + (" or create it first" if name == "target" else ""),
            )
    sts = get_object(src, "statefulset", source_namespace, statefulset)
    state = _load_state(tgt, target_namespace, new_statefulset)
    if sts is None and state.phase in ("done", "cleanup"):
        raise MigrationComplete(
            f"the migration of {source_namespace}/{statefulset} to {target_namespace}/{new_statefulset} is "
            "complete (the old StatefulSet is gone): nothing to do"
        )
    if sts is None:
        names = _names_of(list_kind(src, "statefulset", source_namespace))
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
    source_replicas = state.source_replicas or int((sts.get("spec") or {}).get("replicas") or 1)
    wanted = target_replicas if target_replicas is not None else (state.target_replicas or source_replicas)
    if state.target_replicas and state.target_replicas != wanted:
        raise InputError(
            "target_replicas",
            f"{wanted} differs from {state.target_replicas} of the migration in progress",
            f"re-run with target_replicas={state.target_replicas} or roll the migration back first",
        )
    if state.in_progress and state.rename_labels != rename_labels:
        raise InputError(
            "rename_labels",
            f"{rename_labels} differs from {state.rename_labels} of the migration in progress (the new "
            "StatefulSet's selector cannot change)",
            f"re-run with rename_labels={state.rename_labels} or roll the migration back first",
        )
    check_target_count(wanted, allow_even_size)
    if new_statefulset == statefulset and source_namespace == target_namespace and source is target:
        raise InputError("new_statefulset", "equals the source StatefulSet", "choose another name")
    # another etcd in the target namespace? (pods, and StatefulSets that may be scaled to 0)
    ours = f"{source_namespace}.{statefulset}"[:63]
    workloads = [("pod", p) for p in list_pods(tgt, target_namespace)]
    workloads += [("StatefulSet", s) for s in list_kind(tgt, "statefulset", target_namespace)]
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
    # TLS: the members' flags and Secrets; what the flow's etcd_cluster block leaves empty comes from them
    tls, offered = read_source_tls(
        src,
        tgt,
        sts,
        source_namespace=source_namespace,
        new_statefulset=new_statefulset,
        tls_ca_secret=tls_ca_secret,
        tls_issuer=tls_issuer,
    )
    refine_credentials(**offered)
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
        new_replicas = state.target_replicas
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

    def named(sts_name: str) -> dict[str, tuple[str, ...]]:
        own = re.compile(re.escape(sts_name) + r"-\d+")
        return {m.name: m.peer_urls for m in view.members if own.fullmatch(m.name) and m.peer_urls}

    # the source members' form; once they are all gone (a re-run at the end), the new members' (same form)
    if named(statefulset):
        form = derive_name_form(named(statefulset), service, source_namespace)
    elif named(new_statefulset):
        form = derive_name_form(named(new_statefulset), new_service, target_namespace)
    else:
        raise PreconditionFailed(
            f"no member of the etcd is named like the pods of StatefulSet {statefulset} "
            f"({statefulset}-N): check statefulset (the etcd --name must be the pod name)"
        )
    layout = Layout(
        source_namespace=source_namespace,
        target_namespace=target_namespace,
        source_sts=statefulset,
        source_service=service,
        new_sts=new_statefulset,
        new_service=new_service,
        source_replicas=source_replicas,
        target_replicas=wanted,
        scheme=form.scheme,
        peer_port=form.peer_port,
        name_depth=form.name_depth,
        cluster_domain=form.cluster_domain,
        client_port=client_port,
        rename_labels=rename_labels,
        # two StatefulSets side by side whose selectors match the same pods would fight over them
        distinct_selector=source_namespace == target_namespace and _api_server(src) == _api_server(tgt),
    )
    new, old, unknown = classify_members(to_current(view), layout)
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
    image = target_image or etcd_image(sts)
    warnings = check_versions([s.version for s in view.statuses.values()], image)
    ctx = MigrationContext(
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
        tls=tls,
    )
    ctx.endpoints = dict(endpoints)
    return ctx, view


def _check_dns_conflicts(src: Any, tgt: Any, layout: Layout) -> None:
    """Refuse when a Corefile already maps a member name the migration will add (outside its section)."""
    key = dns_key(layout)
    for side, api, names in (
        (
            "source",
            src,
            [
                n
                for p in layout.new_pods()
                for n in dns_names(p, layout.new_service, layout.target_namespace, layout.cluster_domain)
            ],
        ),
        (
            "target",
            tgt,
            [
                n
                for p in layout.old_pods()
                for n in dns_names(p, layout.source_service, layout.source_namespace, layout.cluster_domain)
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
