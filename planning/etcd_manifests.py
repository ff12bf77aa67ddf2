"""Manifests of the etcd stretch migration: per-member LoadBalancers, the new headless Service and
StatefulSet (the source one with names and ``--initial-cluster`` rewritten). Pure."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from planning.etcd_layout import (
    MANAGED_BY,
    MEMBER_OF_LABEL,
    MIGRATION_LABEL,
    POD_NAME_LABEL,
    RUN_ID_LABEL,
    Layout,
)
from stateferry.errors import PreconditionFailed

# ------------------------------------------------------------------------------------------- manifests


def _labels(run_id: str, layout: Layout, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    labels = dict(extra or {})
    labels.update(MANAGED_BY)
    labels[MIGRATION_LABEL] = layout.migration_id
    if run_id:
        labels[RUN_ID_LABEL] = run_id
    return labels


def lb_service_manifest(
    pod: str,
    namespace: str,
    layout: Layout,
    *,
    run_id: str,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The LoadBalancer Service that exposes one member's peer and client ports (seed step 2).

    ``publishNotReadyAddresses`` is set: a joining learner is not Ready (its health check needs a
    linearizable read) yet the leader must reach its peer port to replicate to it.
    """
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": pod,
            "namespace": namespace,
            "labels": _labels(run_id, layout),
            "annotations": dict(annotations or {}),
        },
        "spec": {
            "type": "LoadBalancer",
            "publishNotReadyAddresses": True,
            "ports": [
                {"name": "etcd-server", "port": layout.peer_port, "targetPort": layout.peer_port},
                {"name": "etcd-client", "port": layout.client_port, "targetPort": layout.client_port},
            ],
            "selector": {POD_NAME_LABEL: pod},
        },
    }


_KEEP_META = ("labels", "annotations")
_STRIP_SPEC = ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy", "internalTrafficPolicy")


def _rename_values(mapping: Mapping[str, Any] | None, old: str, new: str) -> dict[str, Any]:
    return {k: (new if v == old else v) for k, v in (mapping or {}).items()}


def _pod_labels(labels: Mapping[str, Any] | None, layout: Layout) -> dict[str, Any]:
    """Source pod labels (or a selector) for the new side: kept, renamed, or made distinct per the layout."""
    out = dict(labels or {})
    if layout.rename_labels:
        out = _rename_values(out, layout.source_sts, layout.new_sts)
    if layout.distinct_selector:
        out[MEMBER_OF_LABEL] = layout.new_sts
    return out


def new_headless_service_manifest(
    source_service: Mapping[str, Any], layout: Layout, *, run_id: str
) -> dict[str, Any]:
    """The headless Service of the new StatefulSet: the source one renamed, with not-ready pods published."""
    spec = copy.deepcopy(dict(source_service.get("spec") or {}))
    for key in _STRIP_SPEC:
        spec.pop(key, None)
    spec["clusterIP"] = "None"
    spec["publishNotReadyAddresses"] = True
    spec["selector"] = _pod_labels(spec.get("selector"), layout)
    meta = source_service.get("metadata") or {}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": layout.new_service,
            "namespace": layout.target_namespace,
            "labels": _labels(
                run_id, layout, _rename_values(meta.get("labels"), layout.source_sts, layout.new_sts)
            ),
        },
        "spec": spec,
    }


_IC_RE = re.compile(r"--initial-cluster(?=[ =])([ =]+)(\S+)")
_ICS_RE = re.compile(r"--initial-cluster-state(?=[ =])[ =]+\S+")


_VAR_REF = r"(?:\$\{?[A-Za-z_][A-Za-z0-9_]*\}?|\$\([A-Za-z_][A-Za-z0-9_]*\))"


def _host_ref_re(layout: Layout) -> re.Pattern[str]:
    """``$HOSTNAME.<svc>[.<ns>]``, ``${HOSTNAME}.…``, ``$(POD_NAME).…``: a pod's own name in a template."""
    return re.compile(
        "("
        + _VAR_REF
        + r"\.)"
        + re.escape(layout.source_service)
        + r"(\."
        + re.escape(layout.source_namespace)
        + r")?(?![\w-])"
    )


def rewrite_host_refs(text: str, layout: Layout) -> str:
    """Point the pod's own name references (any variable, any depth) at the new Service and namespace.

    ``$(POD_NAMESPACE)``-style references to the namespace are left alone: they resolve in the target.
    """

    def repl(m: re.Match[str]) -> str:
        return m.group(1) + layout.new_service + (f".{layout.target_namespace}" if m.group(2) else "")

    return _host_ref_re(layout).sub(repl, text)


def rewrite_etcd_command(text: str, layout: Layout, initial_cluster_value: str) -> str:
    """Rewrite one command/args string of the source etcd container for the new StatefulSet.

    ``$HOSTNAME.<source-service>`` becomes ``$HOSTNAME.<new-service>``, ``--initial-cluster`` gets
    ``initial_cluster_value`` and ``--initial-cluster-state`` becomes ``existing`` (added after
    ``--initial-cluster`` when missing). Strings without these flags are returned unchanged.
    """
    text = rewrite_host_refs(text, layout)
    if not _IC_RE.search(text):
        return text
    text = _IC_RE.sub(lambda m: f"--initial-cluster{m.group(1)}{initial_cluster_value}", text, count=1)
    if _ICS_RE.search(text):
        return _ICS_RE.sub("--initial-cluster-state=existing", text)
    return _IC_RE.sub(lambda m: f"{m.group(0)} --initial-cluster-state=existing", text, count=1)


def etcd_container(pod_spec: Mapping[str, Any]) -> dict[str, Any] | None:
    """The etcd container of a pod spec: the first whose image names etcd, else the first one."""
    for container in pod_spec.get("containers") or []:
        if "etcd" in str(container.get("image", "")):
            return container
    containers = pod_spec.get("containers") or []
    return containers[0] if containers else None


def command_initial_cluster(source_sts: Mapping[str, Any]) -> str | None:
    """The ``--initial-cluster`` value of the source StatefulSet's etcd container, or None."""
    container = etcd_container(((source_sts.get("spec") or {}).get("template") or {}).get("spec") or {})
    if container is None:
        return None
    for text in [*(container.get("command") or []), *(container.get("args") or [])]:
        match = _IC_RE.search(str(text))
        if match:
            return match.group(2)
    for env in container.get("env") or []:
        if env.get("name") == "ETCD_INITIAL_CLUSTER":
            return str(env.get("value", ""))
    return None


def _rewrite_affinity(node: Any, old: str, new: str) -> Any:
    if isinstance(node, dict):
        return {k: _rewrite_affinity(v, old, new) for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite_affinity(v, old, new) for v in node]
    return new if node == old else node


def new_statefulset_manifest(
    source_sts: Mapping[str, Any],
    layout: Layout,
    *,
    replicas: int,
    initial_cluster_value: str,
    partition: int,
    run_id: str,
) -> dict[str, Any]:
    """The new StatefulSet: the source one renamed, ``replicas`` pods, and the given ``--initial-cluster``.

    ``partition`` keeps pods below that ordinal on their revision, so growing the set does not restart
    members that already joined; the final rewrite sets it to 0 for a one-pod-at-a-time rollout.

    Raises:
        PreconditionFailed: The source etcd container carries no ``--initial-cluster`` to rewrite.
    """
    src_spec = copy.deepcopy(dict(source_sts.get("spec") or {}))
    template = src_spec.get("template") or {}
    pod_spec = template.get("spec") or {}
    container = etcd_container(pod_spec)
    if container is None or command_initial_cluster(source_sts) is None:
        raise PreconditionFailed(
            f"StatefulSet {layout.source_sts}: no etcd container with --initial-cluster (in command, args or "
            "ETCD_INITIAL_CLUSTER) was found, so the joining members' flags cannot be derived: give the etcd "
            "container an explicit --initial-cluster"
        )
    for key in ("command", "args"):
        if container.get(key):
            container[key] = [
                rewrite_etcd_command(str(t), layout, initial_cluster_value) for t in container[key]
            ]
    for env in container.get("env") or []:
        if env.get("name") == "ETCD_INITIAL_CLUSTER":
            env["value"] = initial_cluster_value
        elif env.get("name") == "ETCD_INITIAL_CLUSTER_STATE":
            env["value"] = "existing"
        elif isinstance(env.get("value"), str):
            env["value"] = rewrite_host_refs(env["value"], layout)
    old, new = layout.source_sts, layout.new_sts
    tmeta = template.setdefault("metadata", {})
    # the source pods' labels (a managed-by of theirs wins over ours), plus the migration's own
    tmeta["labels"] = {**MANAGED_BY, **_pod_labels(tmeta.get("labels"), layout)}
    tmeta["labels"][MIGRATION_LABEL] = layout.migration_id
    if "affinity" in pod_spec and layout.rename_labels:
        pod_spec["affinity"] = _rewrite_affinity(pod_spec["affinity"], old, new)
    selector = src_spec.get("selector") or {}
    selector["matchLabels"] = _pod_labels(selector.get("matchLabels"), layout)
    claims = []
    for claim in src_spec.get("volumeClaimTemplates") or []:
        claim = {k: v for k, v in claim.items() if k != "status"}
        claim["metadata"] = {
            k: v for k, v in (claim.get("metadata") or {}).items() if k in ("name", "labels")
        }
        claims.append(claim)
    spec: dict[str, Any] = {
        **{k: v for k, v in src_spec.items() if k not in ("volumeClaimTemplates", "updateStrategy")},
        "replicas": replicas,
        "serviceName": layout.new_service,
        "selector": selector,
        "template": template,
        "podManagementPolicy": "OrderedReady",
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": partition}},
    }
    if claims:
        spec["volumeClaimTemplates"] = claims
    meta = source_sts.get("metadata") or {}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "name": new,
            "namespace": layout.target_namespace,
            "labels": _labels(run_id, layout, _rename_values(meta.get("labels"), old, new)),
        },
        "spec": spec,
    }
