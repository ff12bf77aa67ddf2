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
from blocks.loading import resolve_bucket, resolve_kube
from flows.resource_restore import RestoreFailed, resource_restore
from planning.archive_layout import validate_backup_name, validate_prefix
from planning.flow_options import ModelOrMapping, merge_options
from planning.resource_options import DOCS, ResourceBackupOptions
from stateferry.errors import PermanentError, PreconditionFailed
from tasks.archive_store import archive_series, prune_archives, upload_archive
from tasks.kube_export import export_resources
from tasks.resource_engine import (
    iso,
    run_id,
    utc_now,
)
from tasks.volume_mover import pack_volumes

__all__ = ["RestoreFailed", "resource_backup", "resource_restore"]


@flow(name="resource_backup", log_prints=True)
def resource_backup(
    source: KubeClusterLike | str,
    object_store: ObjectStoreLike | str,
    options: ModelOrMapping[ResourceBackupOptions] | None = None,
    bucket: str | None = None,
    backup_name: str | None = None,
    include_namespaces: list[str] | None = None,
    exclude_namespaces: list[str] | None = None,
    label_selector: str | None = None,
    include_kinds: list[str] | None = None,
    exclude_kinds: list[str] | None = None,
    include_cluster_resources: bool | None = None,
    prefix: str | None = None,
    keep_last: int | None = None,
    ttl_days: float | None = None,
    allow_empty: bool | None = None,
    include_volumes: bool | None = None,
    mover_endpoint: str | None = None,
    mover_image: str | None = None,
    cluster_name: str | None = None,
) -> dict[str, Any]:
    """Back up Kubernetes objects to one archive in an object-store bucket.

    The parameters after ``options`` are its fields as flat parameters, deprecated: they work for one
    more release (a field given both ways with different values is refused).

    Args:
        source: the cluster: a KubeCluster, KubernetesClusterConfig or KubernetesCredentials block, a
            saved KubeCluster's name, or ``"<block-type-slug>/<name>"`` of any of them.
        object_store: where archives live:
            an ObjectStore, AwsCredentials, MinIOCredentials or S3Bucket block, a saved ObjectStore's
            name, or ``"<block-type-slug>/<name>"``; an S3Bucket's bucket is the default of
            ``options.bucket``.
        options: the bucket, the selection and the retention (``ResourceBackupOptions``,
            planning/resource_options.py: every field is described in the UI form). Retention (``keep_last`` /
            ``ttl_days``) applies after a successful backup, to this schedule's archives only (same prefix,
            source server and selection); the newest and the one just written are always kept.

    Returns:
        Summary: backup name, archive prefix, counts, total, skipped, deleted (retention), seconds.

    Raises:
        InputError: bad selection or retention options, a bad prefix or an unknown namespace.
        PreconditionFailed: the selection matched no object and ``allow_empty`` is False.
    """
    log = get_run_logger()
    opts = merge_options(ResourceBackupOptions, options, locals(), docs=DOCS, warn=log.warning)
    t0 = time.monotonic()
    kube = resolve_kube(source, "source")
    store, bucket = resolve_bucket(object_store, "object_store", opts.bucket)
    now = utc_now()
    name = validate_backup_name(opts.backup_name or f"backup-{now.strftime('%Y%m%d-%H%M%S')}")
    selection = opts.selection()
    cluster_name = opts.cluster_name
    prefix = validate_prefix(opts.prefix)
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
            if not opts.allow_empty:
                raise PreconditionFailed(
                    f"{msg}; no archive was written. Fix: check label_selector / include_kinds, or pass "
                    "allow_empty=True to record an empty backup on purpose"
                )
            manifest.warnings.append(msg)
        if opts.include_volumes and result.pvcs:
            vols = pack_volumes(
                kube,
                cluster_name,
                store,
                bucket,
                prefix,
                name,
                result.pvcs,
                run_id(),
                opts.mover_endpoint,
                opts.mover_image,
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
        keep_last=opts.keep_last,
        ttl_seconds=opts.ttl_days * 86400 if opts.ttl_days else None,
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
