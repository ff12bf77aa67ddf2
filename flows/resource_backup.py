"""Kubernetes resource backup and restore (Velero-like): ``resource_backup`` (here) and
``resource_restore`` (``flows/resource_restore.py``, re-exported here for the deployments'
``flows/resource_backup.py:resource_restore`` entrypoint).

Engine: export (``tasks/kube_export``) -> archive in an ObjectStore bucket (``tasks/archive_store``,
layout in ``planning/archive_layout``) -> transform (``planning/resources``: sanitise, map
namespaces and storage classes, provenance labels) -> apply in restore order with a per-object
report (``tasks/kube_apply``). ``flows/app_migration.py`` reuses the same engine.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from blocks.compat import KubeClusterLike, ObjectStoreLike
from blocks.loading import resolve_kube, resolve_store
from flows.resource_restore import RestoreFailed, resource_restore
from planning.archive_layout import validate_backup_name, validate_prefix, validate_retention
from planning.resources import Selection
from stateferry.errors import PermanentError, PreconditionFailed
from tasks.archive_store import archive_series, prune_archives, upload_archive
from tasks.kube_export import export_resources
from tasks.resource_engine import (
    iso,
    run_id,
    utc_now,
)
from tasks.volume_mover import WORKER_IMAGE, pack_volumes

__all__ = ["RestoreFailed", "resource_backup", "resource_restore"]

DEFAULT_PREFIX = "resource-backups"


@flow(name="resource_backup", log_prints=True)
def resource_backup(
    source: KubeClusterLike | str,
    object_store: ObjectStoreLike | str,
    bucket: str | None = None,
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
        source: the cluster: a KubeCluster, KubernetesClusterConfig or KubernetesCredentials block, a
            saved KubeCluster's name, or ``"<block-type-slug>/<name>"`` of any of them.
        object_store: where archives live: an ObjectStore, AwsCredentials, MinIOCredentials or S3Bucket
            block, a saved ObjectStore's name, or ``"<block-type-slug>/<name>"``.
        bucket: bucket name (created if missing); default: the S3Bucket block's bucket.
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
    kube = resolve_kube(source, "source")
    ref = resolve_store(object_store, "object_store")
    store, bucket = ref.store, ref.require_bucket(bucket, "bucket")
    now = utc_now()
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
            kube, cluster_name, selection, Path(tmp) / "resources.tar.gz", name, iso(now)
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
                run_id(),
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
