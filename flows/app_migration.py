"""Application migration between clusters (Kubemotion-like): resources and volume data.

``app_migration`` exports the namespaces' resources from the source (same engine and archive layout
as ``resource_backup``; the archive is kept under ``migrations/<name>/`` for audit), copies every
PVC's files with data-mover Jobs, applies everything except workloads in the target, fills the new
PVCs (checksums compared), then applies the workloads — with ``start_applications=False`` they
arrive with 0 replicas and the original count in ``stateferry.io/migration-replicas``, to be scaled
back by the ``activate`` flow (or the approval step when ``approve_activation=True``).

The status table artifact lists every resource and every volume with ``migrated successfully`` or
the reason, as ``storkctl describe migration`` does.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from blocks.compat import KubeClusterLike, ObjectStoreLike
from blocks.kube import KubeCluster
from blocks.loading import resolve_bucket, resolve_kube
from flows.app_migration_steps import (
    DeltaCopy,
    quiesce_and_sync,
    resumed_bulk,
    save_bulk_checkpoint,
    transformed,
)
from planning.app_migration import parse_quiesce, prepare_for_target
from planning.archive_layout import validate_backup_name
from planning.flow_options import ModelOrMapping, merge_options
from planning.hooks import parse_hooks
from planning.resource_options import DOCS, AppMigrationOptions
from planning.resources import (
    BACKUP_NAME_LABEL,
    FLOW_RUN_LABEL,
    MANAGED_BY_LABEL,
    RESTORE_NAME_LABEL,
    ExistingPolicy,
    Selection,
    parse_mapping,
)
from planning.transforms import parse_transform_spec
from stateferry.errors import InputError, PermanentError
from tasks.app_cutover import (
    activate_cronjobs,
    deactivate_workloads,
    reactivate_workloads,
)
from tasks.archive_store import upload_archive
from tasks.kube_apply import ObjectResult, activate_workloads, summarize_results
from tasks.kube_export import export_resources, read_tarball
from tasks.resource_engine import (
    apply_in_phases,
    iso,
    resolve_transform_kinds,
    transform_objects,
    utc_now,
    volume_table,
)
from tasks.resource_engine import run_id as new_run_id
from tasks.volume_mover import pack_volumes

__all__ = ["MigrationFailed", "activate", "app_migration", "deactivate", "reactivate"]

_RESULT_TEXT = {
    "created": "migrated successfully",
    "updated": "migrated successfully (updated)",
    "unchanged": "migrated successfully (already present)",
    "skipped-existing": "skipped: exists in the target and differs (policy skip)",
    "conflict": "not migrated: fields of it in the target belong to another field manager",
}


class MigrationFailed(PermanentError):
    """Some resources or volumes did not migrate; the status table lists each one."""


def _status_rows(results: list[ObjectResult], parked: set[str]) -> list[dict[str, Any]]:
    rows = []
    for r in results:
        status = _RESULT_TEXT.get(r.result, r.result)
        if r.key in parked and r.result in ("created", "updated"):
            status += " (0 replicas until activation)"
        rows.append(
            {
                "resource": r.kind,
                "namespace": r.namespace,
                "name": r.name,
                "status": status,
                "reason": r.message,
            }
        )
    return rows


@flow(name="app_migration", log_prints=True)
def app_migration(
    source: KubeClusterLike | str,
    target: KubeClusterLike | str,
    object_store: ObjectStoreLike | str,
    options: ModelOrMapping[AppMigrationOptions] | None = None,
    auto_approve: bool = False,
    namespaces: list[str] | None = None,
    bucket: str | None = None,
    migration_name: str | None = None,
    include_resources: bool | None = None,
    include_volumes: bool | None = None,
    start_applications: bool | None = None,
    namespace_mapping: dict[str, str] | str | None = None,
    storage_class_mapping: dict[str, str] | str | None = None,
    label_selector: str | None = None,
    existing_resource_policy: str | None = None,
    approve_activation: bool | None = None,
    mover_endpoint: str | None = None,
    mover_image: str | None = None,
    prefix: str | None = None,
    quiesce: str | None = None,
    mover_security: str | None = None,
    exclude_kinds: list[str] | str | None = None,
    transforms: list[dict[str, Any]] | str | None = None,
    hooks: list[dict[str, Any]] | str | None = None,
) -> dict[str, Any]:
    """Migrate namespaces' resources and volume data from ``source`` to ``target``.

    The parameters after ``auto_approve`` are the fields of ``options`` as flat parameters,
    deprecated: they work for one more release (a field given both ways with different values is
    refused).

    Args:
        source / target: the clusters: KubeCluster, KubernetesClusterConfig or KubernetesCredentials
            blocks, saved KubeClusters' names, or ``"<block-type-slug>/<name>"``.
        object_store: staging area of the archive and the volume tarballs:
            an ObjectStore, AwsCredentials, MinIOCredentials or S3Bucket block, a saved ObjectStore's
            name, or ``"<block-type-slug>/<name>"``; an S3Bucket's bucket is the default of
            ``options.bucket``.
        options: which namespaces, with what, and how the application is stopped (``AppMigrationOptions``,
            planning/resource_options.py: every field is described in the UI form). ``quiesce="scale"``: bulk
            copy while the application runs, then (approval "stop the application") the source's
            Deployments/StatefulSets go to 0 and CronJobs are suspended (counts kept), a delta copies only
            what changed (deletions included) and is verified; the target stays parked until then. A failure
            after the stop puts the source back (``reactivate``). ``quiesce="hooks"``: the same phases, but
            the approval runs the hooks' pre exec commands in the source's pods instead of scaling (post
            commands after the delta is packed; argv lists, never a shell string, see ``planning/hooks.py``).
            A re-run (same ``migration_name``) after the bulk copies were verified in the target resumes with
            the stop and the delta. ``transforms`` (Stork ResourceTransformation / Velero resource modifiers)
            are shown in the ``app-migration-plan`` artifact before anything changes; see
            ``planning/transforms.py``.
        auto_approve: approve without pausing (unattended runs).

    Returns:
        Report with per-resource and per-volume status.

    Raises:
        InputError: bad options (before anything is read or written).
        MigrationFailed: some resource or volume failed (after the status table is published).
    """
    log = get_run_logger()
    opts = merge_options(AppMigrationOptions, options, locals(), docs=DOCS, warn=log.warning)
    t0 = time.monotonic()
    src = resolve_kube(source, "source")
    dst = resolve_kube(target, "target")
    store, bucket = resolve_bucket(object_store, "object_store", opts.bucket)
    namespaces, prefix = opts.namespaces, opts.prefix
    include_volumes, start_applications = opts.include_volumes, opts.start_applications
    mover_endpoint, mover_image = opts.mover_endpoint, opts.mover_image
    now = utc_now()
    name = opts.migration_name or validate_backup_name(
        f"migration-{now.strftime('%Y%m%d-%H%M%S')}", "migration_name"
    )
    policy = ExistingPolicy.parse(opts.existing_resource_policy)
    ns_map = parse_mapping(opts.namespace_mapping, "namespace_mapping")
    sc_map = parse_mapping(opts.storage_class_mapping, "storage_class_mapping")
    quiesce_mode = parse_quiesce(opts.quiesce)
    spec = parse_transform_spec(opts.exclude_kinds, opts.transforms)
    if spec:
        spec = resolve_transform_kinds(src, "source", spec)
        if include_volumes and ("", "PersistentVolumeClaim") in spec.excluded:
            raise InputError(
                "exclude_kinds",
                "excludes PersistentVolumeClaims while include_volumes is True",
                "set include_volumes=False or keep PersistentVolumeClaim",
            )
    two_phase = quiesce_mode in ("scale", "hooks") and include_volumes
    hook_list = parse_hooks(opts.hooks, namespaces) if quiesce_mode == "hooks" else None
    run_id = new_run_id()
    selection = Selection.build(include_namespaces=namespaces, label_selector=opts.label_selector)
    with tempfile.TemporaryDirectory(prefix="stateferry-migration-") as tmp:
        exported = export_resources(src, "source", selection, Path(tmp) / "resources.tar.gz", name, iso(now))
        objects, plan_rows = transformed(list(read_tarball(exported.tarball)), spec, name)
        volumes = resumed_bulk(store, bucket, prefix, name, exported.pvcs) if two_phase else []
        if include_volumes and exported.pvcs and not volumes:
            volumes = pack_volumes(
                src,
                "source",
                store,
                bucket,
                prefix,
                name,
                exported.pvcs,
                run_id,
                mover_endpoint,
                mover_image,
                security=opts.mover_security,
                live=two_phase,
            )
        if volumes:
            exported.manifest.volumes = [v.to_dict() for v in volumes]
        upload_archive(store, bucket, prefix, exported.manifest, exported.tarball)
    if not opts.include_resources:
        objects = [o for o in objects if o.get("kind") in ("Namespace", "PersistentVolumeClaim")]
    labels = {
        BACKUP_NAME_LABEL: name,
        RESTORE_NAME_LABEL: name,
        MANAGED_BY_LABEL: "stateferry",
        FLOW_RUN_LABEL: new_run_id(),
    }
    park = not start_applications or two_phase
    desired = transform_objects(
        prepare_for_target(objects, park),
        namespace_mapping=ns_map,
        storage_class_mapping=sc_map,
        keep_node_ports=True,  # only the user-set ones are left (prepare_for_target)
        labels=labels,
        park_workloads=not start_applications or two_phase,
    )
    parked = {
        f"{o['kind']}.apps {o['metadata']['namespace']}/{o['metadata']['name']}"
        for o in desired
        if (not start_applications or two_phase) and o.get("kind") in ("Deployment", "StatefulSet")
    }
    packed_ok = [v for v in volumes if v.status == "packed"]
    not_packed = [v for v in volumes if v.status != "packed"]  # (fill_volumes updates the others)
    results, vol_results = apply_in_phases(
        dst,
        "target",
        desired,
        policy,
        False,
        labels,
        store,
        bucket,
        packed_ok,
        ns_map,
        mover_endpoint,
        mover_image,
    )
    vol_results += not_packed
    stopped: list[dict[str, Any]] = []
    if two_phase and vol_results and all(v.status == "migrated successfully" for v in vol_results):
        save_bulk_checkpoint(store, bucket, prefix, name, vol_results)  # a re-run resumes from here
        delta = DeltaCopy(
            src, dst, store, bucket, prefix, name, exported.pvcs, vol_results, ns_map, run_id,
            mover_endpoint, mover_image, opts.mover_security,
        )  # fmt: skip
        vol_results, stopped = quiesce_and_sync(delta, namespaces, auto_approve, hook_list)
        if start_applications and all(v.status == "migrated successfully" for v in vol_results):
            targets = sorted({ns_map.get(n, n) for n in namespaces})
            activate_workloads(dst, targets)
            activate_cronjobs(dst, targets)
            parked = set()
    rows = _status_rows(results, parked)
    create_table_artifact(
        key="app-migration-resources", table=rows, description=f"migration {name}: resources"
    )
    if vol_results:
        create_table_artifact(
            key="app-migration-volumes",
            table=volume_table(vol_results),
            description=f"migration {name}: volumes",
        )
    counts = summarize_results(results)
    failed = [r for r in results if r.result in ("failed", "conflict")]
    failed_vols = [v for v in vol_results if v.status != "migrated successfully"]
    activation: list[dict[str, Any]] = []
    if not start_applications and opts.approve_activation and not failed and not failed_vols:
        from tasks.approvals import request_approval

        targets = sorted({ns_map.get(n, n) for n in namespaces})
        request_approval(
            "activate-migration",
            f"# Activate migration `{name}`\n\nScale back {len(parked)} workloads in "
            f"{', '.join(targets)}:\n\n" + "\n".join(f"- {p}" for p in sorted(parked)),
            key=f"activate-{name}",
            auto_approve=auto_approve,
        )
        activation = [r.to_dict() for r in activate_workloads(dst, targets)]
        activate_cronjobs(dst, targets)
    seconds = time.monotonic() - t0
    apps_state = (
        "started"
        if start_applications
        else ("activated" if activation else "parked at 0 replicas; run the activate flow")
    )
    create_markdown_artifact(
        key="app-migration-summary",
        markdown=(
            f"# Migration `{name}`\n\n{', '.join(namespaces)} from source to target"
            f"{' (namespaces ' + str(ns_map) + ')' if ns_map else ''}, {seconds:.1f}s\n\n"
            f"- resources: {len(results)} ({counts})\n- volumes: {len(vol_results)} "
            f"({len(vol_results) - len(failed_vols)} migrated successfully)\n"
            f"- applications: {apps_state}\n"
        ),
        description=f"migration {name}",
    )
    report = {
        "migration_name": name,
        "counts": counts,
        "resources": rows,
        "volumes": [v.to_dict() for v in vol_results],
        "activation": activation,
        "source_stopped": stopped,
        "transforms": plan_rows,
        "seconds": round(seconds, 3),
    }
    if failed or failed_vols:
        parts = [f"{r.key}: {r.message}" for r in failed[:3]] + [
            f"volume {v.namespace}/{v.pvc}: {v.reason}" for v in failed_vols[:3]
        ]
        raise MigrationFailed(
            f"{len(failed)} resource(s) and {len(failed_vols)} volume(s) did not migrate "
            f"({'; '.join(parts)}). "
            "Fix: see the status table artifact; re-running the migration skips what already arrived"
        )
    log.info("migration %s done: %s", name, counts)
    return report


def _switch_workloads(
    cluster: KubeClusterLike | str,
    namespaces: list[str],
    switch: Callable[[KubeCluster, list[str]], list[dict[str, Any]]],
    verb: str,
    noun: str,
) -> dict[str, Any]:
    """Run ``switch`` (deactivate / reactivate) on the namespaces' workloads; a table artifact of it."""
    kube = resolve_kube(cluster, "cluster")
    if not namespaces:
        raise InputError("namespaces", "is empty", f"name the namespaces to {verb}")
    results = switch(kube, namespaces)
    create_table_artifact(key=noun, table=results, description=f"{noun} of {namespaces}")
    return {"results": results}


@flow(name="deactivate", log_prints=True)
def deactivate(cluster: KubeClusterLike | str, namespaces: list[str]) -> dict[str, Any]:
    """Stork's deactivate: Deployments/StatefulSets to 0 and CronJobs suspended, counts recorded in
    ``stateferry.io/source-replicas`` / ``source-suspend`` (run on the old side after activation).

    Args:
        cluster: the cluster whose applications stop (a cluster block or its saved name, as in
            ``app_migration``).
        namespaces: namespaces to deactivate.

    Returns:
        ``{"results": [...]}``: a row per Deployment, StatefulSet and CronJob (kind, namespace, name,
        result ``updated`` / ``unchanged`` / ``failed``, message).
    """
    return _switch_workloads(cluster, namespaces, deactivate_workloads, "deactivate", "deactivation")


@flow(name="reactivate", log_prints=True)
def reactivate(cluster: KubeClusterLike | str, namespaces: list[str]) -> dict[str, Any]:
    """Failback / rollback: restore what :func:`deactivate` (or a quiesce) recorded.

    Args:
        cluster: the cluster whose applications start again (a cluster block or its saved name).
        namespaces: namespaces to reactivate.

    Returns:
        ``{"results": [...]}``, rows as :func:`deactivate`'s.
    """
    return _switch_workloads(cluster, namespaces, reactivate_workloads, "reactivate", "reactivation")


@flow(name="activate", log_prints=True)
def activate(target: KubeClusterLike | str, namespaces: list[str]) -> dict[str, Any]:
    """Scale the Deployments/StatefulSets a migration parked at 0 replicas back to their recorded
    counts (``stateferry.io/migration-replicas``) and resume its parked CronJobs
    (``stateferry.io/migration-suspend``), removing the annotations.

    Args:
        target: the cluster the migration went to (a cluster block or its saved name).
        namespaces: target namespaces to activate.

    Returns:
        ``{"results": [...], "counts": {...}, "cronjobs": [...]}`` per workload and CronJob.
    """
    dst = resolve_kube(target, "target")
    if not namespaces:
        raise InputError("namespaces", "is empty", "name the target namespaces to activate")
    results = activate_workloads(dst, namespaces)
    cronjobs = activate_cronjobs(dst, namespaces)
    create_table_artifact(
        key="activation",
        table=[{"workload": r.key, "result": r.result, "message": r.message} for r in results],
        description=f"activation of {', '.join(namespaces)}",
    )
    failed = [r for r in results if r.result == "failed"]
    if failed:
        raise MigrationFailed("; ".join(f"{r.key}: {r.message}" for r in failed))
    failed_cj = [r for r in cronjobs if r["result"] == "failed"]
    if failed_cj:
        raise MigrationFailed(
            "; ".join(f"CronJob {r['namespace']}/{r['name']}: {r['message']}" for r in failed_cj)
        )
    return {
        "results": [r.to_dict() for r in results],
        "counts": summarize_results(results),
        "cronjobs": cronjobs,
    }
