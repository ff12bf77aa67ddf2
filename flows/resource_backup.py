"""Kubernetes resource backup and restore (Velero-like): ``resource_backup`` and ``resource_restore``.

Engine: export (``tasks/kube_export``) -> archive in an ObjectStore bucket (``tasks/archive_store``,
layout in ``planning/archive_layout``) -> transform (``planning/resources``: sanitise, map
namespaces and storage classes, provenance labels) -> apply in restore order with a per-object
report (``tasks/kube_apply``). ``flows/app_migration.py`` reuses the same engine.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from pathlib import Path
from typing import Any, TypeVar

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from blocks.kube import KubeCluster
from blocks.object_store import ObjectStore
from planning.archive_layout import (
    ArchiveError,
    validate_backup_name,
    validate_prefix,
    validate_retention,
)
from planning.resources import (
    BACKUP_NAME_LABEL,
    FLOW_RUN_LABEL,
    MANAGED_BY_LABEL,
    RESTORE_NAME_LABEL,
    ExistingPolicy,
    ResourceType,
    SanitizeOptions,
    Selection,
    parse_mapping,
    sanitize,
    sort_for_restore,
    zero_replicas,
)
from planning.restore_scope import ScopePlan, check_archive, plan_scope
from stateferry.errors import InputError, PermanentError, PreconditionFailed
from tasks.approvals import request_approval
from tasks.archive_store import archive_series, download_archive, prune_archives, upload_archive
from tasks.kube_apply import ObjectResult, apply_resources, served_scopes, summarize_results
from tasks.kube_export import export_resources, read_archive
from tasks.volume_mover import WORKER_IMAGE, VolumeResult, fill_volumes, pack_volumes

__all__ = ["RestoreFailed", "resource_backup", "resource_restore", "transform_objects"]

DEFAULT_PREFIX = "resource-backups"
B = TypeVar("B", KubeCluster, ObjectStore)


class RestoreFailed(PermanentError):
    """Some objects could not be restored; the report lists each one."""


def load_block(cls: type[B], value: B | str, field_name: str) -> B:
    """Accept a block instance or the name of a saved block document."""
    if isinstance(value, cls):
        return value
    if isinstance(value, str) and value:
        try:
            return cls.load(value)  # type: ignore[return-value]
        except ValueError as exc:
            raise InputError(
                field_name,
                f"no saved {cls.__name__} block named {value!r} ({exc})",
                "save the block first (stateferry blocks register) or pass its name correctly",
            ) from None
    raise InputError(
        field_name,
        f"expected a {cls.__name__} block or its name, got {type(value).__name__}",
        f"pass a {cls.__name__}",
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _run_id() -> str:
    return str(flow_run.id or "local")


@flow(name="resource_backup", log_prints=True)
def resource_backup(
    source: KubeCluster | str,
    object_store: ObjectStore | str,
    bucket: str,
    backup_name: str | None = None,
    include_namespaces: list[str] | None = None,
    exclude_namespaces: list[str] | None = None,
    label_selector: str = "",
    include_kinds: list[str] | None = None,
    exclude_kinds: list[str] | None = None,
    include_cluster_resources: bool | None = None,
    prefix: str = DEFAULT_PREFIX,
    keep_last: int | None = None,
    ttl_days: float | None = None,
    allow_empty: bool = False,
    include_volumes: bool = False,
    mover_endpoint: str | None = None,
    mover_image: str = WORKER_IMAGE,
    cluster_name: str = "source",
) -> dict[str, Any]:
    """Back up Kubernetes objects to one archive in an object-store bucket.

    Args:
        source: the cluster (block or saved block name).
        object_store: where archives live (block or saved block name).
        bucket: bucket name (created if missing).
        backup_name: archive name; default ``backup-<UTC timestamp>``.
        include_namespaces / exclude_namespaces: namespaces (empty include = all but kube-system,
            kube-public, kube-node-lease).
        label_selector: e.g. ``app=wordpress``.
        include_kinds / exclude_kinds: kinds or plurals (``deployments.apps``).
        include_cluster_resources: True = all cluster-scoped types; None = those the namespaces need.
        prefix: key prefix of archives in the bucket.
        keep_last / ttl_days: retention applied after a successful backup, to this schedule's
            archives only (same prefix, source server and selection); the newest and the one just
            written are always kept; ``keep_last >= 1``, ``ttl_days >= 1``.
        allow_empty: accept a backup that selects no object (otherwise that is an error).
        include_volumes: also copy the files of every selected PVC with data-mover Jobs
            (``stateferry/worker``) into the archive (``volumes/<ns>/<pvc>.tar.gz``).
        mover_endpoint: object-store URL as the cluster's pods reach it (default: the block's URL).
        mover_image: image of the data-mover Jobs.
        cluster_name: how the source is named in the manifest and messages.

    Returns:
        Summary: backup name, archive prefix, counts, total, skipped, deleted (retention), seconds.

    Raises:
        InputError: bad selection or retention parameters, a bad prefix or an unknown namespace.
        PreconditionFailed: the selection matched no object and ``allow_empty`` is False.
    """
    log = get_run_logger()
    t0 = time.monotonic()
    kube = load_block(KubeCluster, source, "source")
    store = load_block(ObjectStore, object_store, "object_store")
    now = _now()
    name = validate_backup_name(backup_name or f"backup-{now.strftime('%Y%m%d-%H%M%S')}")
    selection = Selection.build(
        include_namespaces=include_namespaces,
        exclude_namespaces=exclude_namespaces,
        label_selector=label_selector,
        include_kinds=include_kinds,
        exclude_kinds=exclude_kinds,
        include_cluster_resources=include_cluster_resources,
    )
    validate_retention(keep_last, ttl_days)
    prefix = validate_prefix(prefix)
    with tempfile.TemporaryDirectory(prefix="stateferry-backup-") as tmp:
        result = export_resources(
            kube, cluster_name, selection, Path(tmp) / "resources.tar.gz", name, _iso(now)
        )
        manifest = result.manifest
        if manifest.total_objects - manifest.counts.get("Namespace", 0) == 0:
            msg = (
                f"the selection matched no object in {cluster_name} (namespaces "
                f"{', '.join(manifest.namespaces) or 'none'}, "
                f"label selector {selection.label_selector or '-'}, "
                f"kinds {', '.join(selection.include_kinds) or 'all'})"
            )
            log.warning(msg)
            if not allow_empty:
                raise PreconditionFailed(
                    f"{msg}; no archive was written. Fix: check label_selector / include_kinds, or pass "
                    "allow_empty=True to record an empty backup on purpose"
                )
            manifest.warnings.append(msg)
        if include_volumes and result.pvcs:
            vols = pack_volumes(
                kube,
                cluster_name,
                store,
                bucket,
                prefix,
                name,
                result.pvcs,
                _run_id(),
                mover_endpoint,
                mover_image,
            )
            failed = [v for v in vols if v.status != "packed"]
            if failed:
                raise PermanentError(
                    "volume data could not be copied: "
                    + "; ".join(f"{v.namespace}/{v.pvc}: {v.reason}" for v in failed)
                    + ". Fix the cause (see the data-mover Job) and re-run the backup"
                )
            manifest.volumes = [v.to_dict() for v in vols]
        key = upload_archive(store, bucket, prefix, manifest, result.tarball)
    deleted = prune_archives(
        store,
        bucket,
        prefix,
        keep_last=keep_last,
        ttl_seconds=ttl_days * 86400 if ttl_days else None,
        now=now,
        protect=[name],
        series=archive_series(str(manifest.source.get("server", "")), manifest.selection),
    )
    seconds = time.monotonic() - t0
    rows = "\n".join(f"| {k} | {v} |" for k, v in manifest.counts.items())
    skipped = "\n".join(f"| {k} | {v} |" for k, v in manifest.skipped.items()) or "| - | 0 |"
    create_markdown_artifact(
        key="resource-backup-summary",
        markdown=(
            f"# Resource backup `{name}`\n\nsource `{cluster_name}`, archive `s3://{bucket}/{key}`, "
            f"{manifest.total_objects} objects, {manifest.tarball['size']} bytes, {seconds:.1f}s"
            + (f"\n\n**Warning:** {manifest.warnings[0]}" if manifest.warnings else "")
            + f"\n\n| kind | count |\n|---|---|\n{rows}\n\n"
            + f"### Left out\n\n| reason | count |\n|---|---|\n{skipped}\n"
            + (f"\nRetention deleted: {', '.join(deleted)}\n" if deleted else "")
        ),
        description=f"resource backup {name}",
    )
    return {
        "backup_name": name,
        "archive": f"s3://{bucket}/{key}",
        "counts": manifest.counts,
        "total_objects": manifest.total_objects,
        "skipped": manifest.skipped,
        "warnings": manifest.warnings,
        "namespaces": manifest.namespaces,
        "volumes": manifest.volumes,
        "deleted": deleted,
        "seconds": round(seconds, 3),
    }


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
        kube, cluster_name, store, bucket, volumes, namespace_mapping, _run_id(), mover_endpoint, mover_image
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
        }
        for v in volumes
    ]


def _scope_map(
    served: dict[tuple[str, str], bool], members: list[tuple[Any, dict[str, Any]]]
) -> dict[tuple[str, str], bool]:
    """Target discovery, plus the scope of custom kinds whose CRD the archive brings."""
    out = dict(served)
    for _path, o in members:
        if o.get("kind") == "CustomResourceDefinition":
            spec: dict[str, Any] = o["spec"] if isinstance(o.get("spec"), dict) else {}
            names: dict[str, Any] = spec["names"] if isinstance(spec.get("names"), dict) else {}
            key = (str(spec.get("group", "")), str(names.get("kind", "")))
            out.setdefault(key, spec.get("scope") != "Cluster")
    return out


def restore_plan_markdown(
    rname: str,
    backup_name: str,
    cluster_name: str,
    policy: ExistingPolicy,
    plan: ScopePlan,
    results: list[ObjectResult],
) -> str:
    """The plan shown before a restore is approved: what will be created / updated (with key-level
    diffs, no Secret value), the cluster-scoped and RBAC/admission objects, what is left out."""
    counts = summarize_results(results)
    lines = [
        f"Restore `{rname}` of backup `{backup_name}` into `{cluster_name}`, policy `{policy.value}`.",
        "",
        "Would do: " + ", ".join(f"{k} {v}" for k, v in counts.items()),
        "",
    ]
    if plan.cluster_scoped:
        lines += ["**Cluster-scoped objects:** " + ", ".join(f"`{k}`" for k in plan.cluster_scoped[:50]), ""]
    if plan.privileged:
        lines += ["**RBAC / admission objects:**", *[f"- {p}" for p in plan.privileged[:50]], ""]
    if plan.left_out:
        lines += ["Left out: " + ", ".join(f"{k}: {v}" for k, v in plan.left_out.items()), ""]
    lines += ["| object | action | diff |", "|---|---|---|"]
    for r in results:
        if r.result in ("would-create", "would-update", "failed"):
            diff = "<br>".join(r.diff[:8]).replace("|", "\\|") + (" …" if len(r.diff) > 8 else "")
            lines.append(f"| {r.key} | {r.result} {r.message} | {diff} |")
    return "\n".join(lines)


@flow(name="resource_restore", log_prints=True)
def resource_restore(
    target: KubeCluster | str,
    object_store: ObjectStore | str,
    bucket: str,
    backup_name: str,
    restore_name: str | None = None,
    namespace_mapping: dict[str, str] | str | None = None,
    storage_class_mapping: dict[str, str] | str | None = None,
    existing_resource_policy: str = "skip",
    include_namespaces: list[str] | None = None,
    include_kinds: list[str] | None = None,
    exclude_kinds: list[str] | None = None,
    include_cluster_kinds: list[str] | None = None,
    allow_rbac_and_admission: bool = False,
    keep_node_ports: bool = False,
    dry_run: bool = False,
    auto_approve: bool = False,
    fail_on_error: bool = True,
    restore_volumes: bool = True,
    mover_endpoint: str | None = None,
    mover_image: str = WORKER_IMAGE,
    prefix: str = DEFAULT_PREFIX,
    cluster_name: str = "target",
) -> dict[str, Any]:
    """Restore a backup into a cluster: sanitise, map, apply in restore order, report per object.

    The archive is untrusted: it is read with size caps, checked against its manifest's selection,
    and only what this restore selects is applied. Secret values never appear in the report,
    artifacts, logs or errors (diffs name the changed keys).

    Args:
        target: the cluster to restore into.
        object_store / bucket / prefix: where the backup lives.
        backup_name: which backup.
        restore_name: name recorded in the ``stateferry.io/restore-name`` label (default
            ``<backup>-restore-<timestamp>``).
        namespace_mapping: ``{"cms": "cms-dr"}`` or ``"cms:cms-dr"``.
        storage_class_mapping: ``{"fast": "standard"}``.
        existing_resource_policy: ``skip`` (leave existing objects alone, report their diff) or
            ``update`` (replace them with the backup's version; asks for approval).
        include_namespaces / include_kinds: restore only these namespaces / namespaced kinds.
        exclude_kinds: never restore these kinds.
        include_cluster_kinds: cluster-scoped kinds to restore (``CustomResourceDefinition``,
            ``StorageClass``, ...); none by default. The Namespaces of the restored namespaces come
            without being named. Restoring any of them asks for approval.
        allow_rbac_and_admission: also restore ClusterRoles/ClusterRoleBindings, RoleBindings that
            grant subjects outside their namespace, admission webhooks and policies, CRDs with a
            conversion webhook and hostPath PVs (refused otherwise); asks for approval.
        keep_node_ports: keep Service nodePorts (default: the target allocates new ones).
        dry_run: only report, object by object, what would be created/updated and the diff.
        auto_approve: apply without pausing where the restore would ask (``update``, cluster-scoped
            or RBAC/admission objects); the plan is still recorded as an artifact.
        fail_on_error: end the flow failed (after the report) if any object failed.
        restore_volumes: fill restored PVCs with the backup's volume data (if it has any) before
            the workloads are created.
        mover_endpoint: object-store URL as the target's pods reach it (default: the block's URL).
        mover_image: image of the data-mover Jobs.

    Returns:
        Report: restore name, counts per outcome, per-object results, left-out counts, seconds.

    Raises:
        InputError: bad parameters, an unknown backup, RBAC/admission objects without
            ``allow_rbac_and_admission``, or an archive refused (``ArchiveRefused``: a member that is
            not a regular file of the layout, over the size caps, or an object outside its
            manifest's selection). Nothing is changed in the target.
        ArchiveError: a corrupt archive or an unknown layout version.
        ApprovalRejected: the operator did not approve the plan.
        RestoreFailed: some objects failed and ``fail_on_error`` is True.
    """
    log = get_run_logger()
    t0 = time.monotonic()
    kube = load_block(KubeCluster, target, "target")
    store = load_block(ObjectStore, object_store, "object_store")
    validate_backup_name(backup_name)
    prefix = validate_prefix(prefix)
    policy = ExistingPolicy.parse(existing_resource_policy)
    ns_map = parse_mapping(namespace_mapping, "namespace_mapping")
    sc_map = parse_mapping(storage_class_mapping, "storage_class_mapping")
    now = _now()
    rname = validate_backup_name(
        restore_name or f"{backup_name[:40]}-restore-{now.strftime('%Y%m%d%H%M%S')}", "restore_name"
    )
    with tempfile.TemporaryDirectory(prefix="stateferry-restore-") as tmp:
        path = Path(tmp) / "resources.tar.gz"
        manifest = download_archive(store, bucket, prefix, backup_name, path)
        members = list(read_archive(path, max_members=manifest.total_objects))
    if len(members) != manifest.total_objects:
        raise ArchiveError(
            f"backup {backup_name}: the tarball holds {len(members)} objects but the manifest records "
            f"{manifest.total_objects}; the archive is corrupt"
        )
    check_archive(manifest, members, prefix=prefix)
    plan = plan_scope(
        members,
        namespaced=_scope_map(served_scopes(kube, cluster_name), members),
        include_namespaces=include_namespaces,
        include_kinds=include_kinds,
        exclude_kinds=exclude_kinds,
        include_cluster_kinds=include_cluster_kinds,
        allow_rbac_and_admission=allow_rbac_and_admission,
    )
    labels = {
        BACKUP_NAME_LABEL: backup_name,
        RESTORE_NAME_LABEL: rname,
        MANAGED_BY_LABEL: "stateferry",
        FLOW_RUN_LABEL: _run_id(),
    }
    desired = transform_objects(
        [dict(o) for o in plan.selected],
        namespace_mapping=ns_map,
        storage_class_mapping=sc_map,
        keep_node_ports=keep_node_ports,
        labels=labels,
    )
    pvcs = {
        (str(o["metadata"].get("namespace")), str(o["metadata"].get("name")))
        for o in plan.selected
        if o.get("kind") == "PersistentVolumeClaim"
    }
    volumes = [
        VolumeResult(
            str(v["namespace"]),
            str(v["pvc"]),
            str(v["key"]),
            status="packed",
            source_sha256=str(v.get("sha256_tree", "")),
            files=int(v.get("files", 0)),
            bytes=int(v.get("bytes", 0)),
        )
        for v in manifest.volumes
        if restore_volumes and (str(v["namespace"]), str(v["pvc"])) in pvcs
    ]
    allowed = plan.cluster_kinds
    if not dry_run and (policy is ExistingPolicy.UPDATE or plan.needs_approval):
        preview = apply_resources(
            kube, cluster_name, desired, policy, True, labels, allowed_cluster_kinds=allowed
        )
        request_approval(
            f"Apply restore {rname}",
            restore_plan_markdown(rname, backup_name, cluster_name, policy, plan, preview),
            key=f"resource-restore-{rname}",
            auto_approve=auto_approve,
        )
    results, vol_results = apply_in_phases(
        kube,
        cluster_name,
        desired,
        policy,
        dry_run,
        labels,
        store,
        bucket,
        volumes,
        ns_map,
        mover_endpoint,
        mover_image,
        allowed_cluster_kinds=allowed,
    )
    counts = summarize_results(results)
    seconds = time.monotonic() - t0
    create_table_artifact(
        key="resource-restore-objects",
        table=results_table(results),
        description=f"restore {rname} of {backup_name} into {cluster_name}"
        + (" (dry run)" if dry_run else ""),
    )
    diffs = "\n".join(
        f"### {r.key} — {r.result}\n```diff\n" + "\n".join(r.diff) + "\n```" for r in results if r.diff
    )
    left = ", ".join(f"{k}: {v}" for k, v in plan.left_out.items())
    create_markdown_artifact(
        key="resource-restore-summary",
        markdown=(
            f"# Restore `{rname}`{' (dry run)' if dry_run else ''}\n\nbackup `{backup_name}` "
            f"({manifest.total_objects} objects, created {manifest.created_at}) into `{cluster_name}`, "
            f"policy `{policy.value}`, namespaces {ns_map or 'unchanged'}, {seconds:.1f}s\n\n"
            + "\n".join(f"- {k}: {v}" for k, v in counts.items())
            + (f"\n\nLeft out of the backup: {left}\n" if left else "")
            + (f"\n\n## Differences\n\n{diffs}\n" if diffs else "")
        ),
        description=f"restore {rname}",
    )
    report = {
        "restore_name": rname,
        "backup_name": backup_name,
        "dry_run": dry_run,
        "policy": policy.value,
        "counts": counts,
        "left_out": plan.left_out,
        "results": [r.to_dict() for r in results],
        "volumes": [v.to_dict() for v in vol_results],
        "seconds": round(seconds, 3),
    }
    if vol_results:
        create_table_artifact(
            key="resource-restore-volumes", table=volume_table(vol_results), description=f"volumes of {rname}"
        )
    failed = [r for r in results if r.result == "failed"] + [
        ObjectResult(
            f"volume {v.namespace}/{v.pvc}",
            "PersistentVolumeClaim",
            v.target_namespace,
            v.pvc,
            "failed",
            v.reason,
        )
        for v in vol_results
        if v.status == "failed"
    ]
    if failed and fail_on_error:
        lines = "; ".join(f"{r.key}: {r.message}" for r in failed[:5])
        raise RestoreFailed(
            f"{len(failed)} of {len(results)} objects failed to restore "
            f"({lines}{' …' if len(failed) > 5 else ''}). "
            "Fix: see the restore report artifact, correct the cause and re-run "
            "(existing objects are skipped)"
        )
    if failed:
        log.warning("%d of %d objects failed; see the report", len(failed), len(results))
    return report
