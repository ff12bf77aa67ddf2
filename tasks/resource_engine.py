"""The resource engine's shared steps (used by ``resource_backup``, ``resource_restore`` and
``app_migration``): the transform (sanitise, map, order), the phased apply (objects,
then volume data, then workloads) and the report tables."""

from __future__ import annotations

import datetime as dt
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from blocks.kube import KubeCluster
from blocks.object_store import ObjectStore
from planning.resources import (
    ExistingPolicy,
    ResourceType,
    SanitizeOptions,
    Selection,
    sanitize,
    sort_for_restore,
    zero_replicas,
)
from planning.transforms import TransformSpec, resolve_kinds
from tasks.kube_apply import ObjectResult, apply_resources
from tasks.kube_dynamic import dynamic_client, served_types
from tasks.retry import TRANSIENT_RETRY
from tasks.volume_mover import WORKER_IMAGE, VolumeResult, fill_volumes

__all__ = [
    "WORKLOAD_KINDS",
    "apply_in_phases",
    "iso",
    "resolve_transform_kinds",
    "results_table",
    "run_id",
    "transform_objects",
    "utc_now",
    "volume_table",
]


def utc_now() -> dt.datetime:
    """Now, UTC, whole seconds."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def iso(t: dt.datetime) -> str:
    """``2026-11-22T01:00:00Z``."""
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def run_id() -> str:
    """The current flow run's id (``local`` outside a run)."""
    return str(flow_run.id or "local")


def transform_objects(
    objects: list[dict[str, Any]],
    *,
    namespace_mapping: dict[str, str],
    storage_class_mapping: dict[str, str],
    keep_node_ports: bool,
    labels: dict[str, str],
    park_workloads: bool = False,
    include_namespaces: list[str] | None = None,
    include_kinds: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Sanitise, map and order objects for the target (the engine's pure transform step)."""
    sub = Selection.build(include_namespaces=include_namespaces or ["*"], include_kinds=include_kinds)
    opts = SanitizeOptions(
        namespace_mapping=namespace_mapping,
        storage_class_mapping=storage_class_mapping,
        keep_node_ports=keep_node_ports,
        labels=labels,
    )
    out = []
    for o in objects:
        meta = o.get("metadata") or {}
        ns = meta.get("namespace") or (meta.get("name") if o.get("kind") == "Namespace" else None)
        if ns and include_namespaces and not sub.namespace_selected(ns):
            continue
        if include_kinds and o.get("kind") != "Namespace":
            api = str(o.get("apiVersion", "v1"))
            group = api.split("/")[0] if "/" in api else ""
            if not sub.kind_selected(ResourceType(group, api.split("/")[-1], str(o.get("kind")), "", True)):
                continue
        s = sanitize(o, opts)
        out.append(zero_replicas(s) if park_workloads else s)
    return [dict(o) for o in sort_for_restore(out)]


@task(**TRANSIENT_RETRY, cache_policy=NO_CACHE)
def resolve_transform_kinds(cluster: KubeCluster, cluster_name: str, spec: TransformSpec) -> TransformSpec:
    """Check ``exclude_kinds``/``transforms`` kinds against the cluster's discovery (read only).

    Raises:
        InputError: a kind the cluster does not serve, named with its parameter.
    """
    return resolve_kinds(spec, served_types(dynamic_client(cluster.api_client())))


def results_table(results: list[ObjectResult]) -> list[dict[str, Any]]:
    """Rows of the per-object report artifact."""
    return [
        {
            "object": r.key,
            "result": r.result,
            "message": r.message,
            "diff": "; ".join(r.diff[:8]) + (" …" if len(r.diff) > 8 else ""),
        }
        for r in results
    ]


WORKLOAD_KINDS = frozenset(
    {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Job", "CronJob", "Pod"}
)


def apply_in_phases(
    kube: KubeCluster,
    cluster_name: str,
    desired: list[dict[str, Any]],
    policy: ExistingPolicy,
    dry_run: bool,
    labels: dict[str, str],
    store: ObjectStore,
    bucket: str,
    volumes: list[VolumeResult],
    namespace_mapping: dict[str, str],
    mover_endpoint: str | None,
    mover_image: str = WORKER_IMAGE,
    allowed_cluster_kinds: frozenset[str] | None = None,
) -> tuple[list[ObjectResult], list[VolumeResult]]:
    """Apply everything but workloads, fill the volumes, then apply the workloads (so pods start
    on filled volumes). Without volumes (or in a dry run) it is one ordered apply.
    ``allowed_cluster_kinds``: see :func:`tasks.kube_apply.apply_objects`."""
    guard = {"allowed_cluster_kinds": allowed_cluster_kinds}
    if not volumes or dry_run:
        return apply_resources(kube, cluster_name, desired, policy, dry_run, labels, **guard), []
    first = [o for o in desired if o.get("kind") not in WORKLOAD_KINDS]
    later = [o for o in desired if o.get("kind") in WORKLOAD_KINDS]
    results = apply_resources(kube, cluster_name, first, policy, dry_run, labels, **guard)
    pvc_failed = {
        (r.namespace, r.name) for r in results if r.kind == "PersistentVolumeClaim" and r.result == "failed"
    }
    for v in volumes:
        if (namespace_mapping.get(v.namespace, v.namespace), v.pvc) in pvc_failed:
            v.status, v.reason = "failed", "its PVC could not be created"
    vols = fill_volumes(
        kube, cluster_name, store, bucket, volumes, namespace_mapping, run_id(), mover_endpoint, mover_image
    )
    results += apply_resources(kube, cluster_name, later, policy, dry_run, labels, **guard)
    return results, vols


def volume_table(volumes: list[VolumeResult]) -> list[dict[str, Any]]:
    """Rows of the per-volume status artifact."""
    return [
        {
            "volume": f"{v.namespace}/{v.pvc}",
            "target": f"{v.target_namespace}/{v.target_pvc}",
            "status": v.status,
            "reason": v.reason,
            "files": v.files,
            "bytes": v.bytes,
            "sha256": v.source_sha256[:16],
            "seconds": v.seconds,
            "not copied": v.not_copied(),
        }
        for v in volumes
    ]
