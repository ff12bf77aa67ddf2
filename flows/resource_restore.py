"""``resource_restore``: restore a resource backup into a cluster (DR), see docs/resource_backup.md.

The archive is untrusted: read with caps (``tasks/kube_export.read_archive``), checked against its
manifest and narrowed to what the restore selects (``planning/restore_scope``), shown as a plan and
approved before an update or a cluster-scoped/RBAC/admission apply, then applied in restore order
with a per-object report in which no Secret value appears (``planning/kube_redaction``).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from blocks.compat import KubeClusterLike, ObjectStoreLike
from blocks.loading import resolve_bucket, resolve_kube
from planning.archive_layout import ArchiveError, validate_backup_name, validate_prefix
from planning.flow_options import ModelOrMapping, merge_options
from planning.resource_options import DOCS, ResourceRestoreOptions
from planning.resources import (
    BACKUP_NAME_LABEL,
    FLOW_RUN_LABEL,
    MANAGED_BY_LABEL,
    RESTORE_NAME_LABEL,
    ExistingPolicy,
    parse_mapping,
)
from planning.restore_scope import ScopePlan, check_archive, check_auto_approve, plan_scope
from stateferry.errors import PermanentError
from tasks.approvals import request_approval
from tasks.archive_store import download_archive
from tasks.kube_apply import ObjectResult, apply_resources, served_scopes, summarize_results
from tasks.kube_export import read_archive
from tasks.resource_engine import (
    apply_in_phases,
    results_table,
    run_id,
    transform_objects,
    utc_now,
    volume_table,
)
from tasks.volume_mover import VolumeResult

__all__ = ["RestoreFailed", "resource_restore", "restore_plan_markdown"]


class RestoreFailed(PermanentError):
    """Some objects could not be restored; the report lists each one."""


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
        if r.result in ("would-create", "would-update", "conflict", "failed"):
            diff = "<br>".join(r.diff[:8]).replace("|", "\\|") + (" …" if len(r.diff) > 8 else "")
            lines.append(f"| {r.key} | {r.result} {r.message} | {diff} |")
    return "\n".join(lines)


@flow(name="resource_restore", log_prints=True)
def resource_restore(
    target: KubeClusterLike | str,
    object_store: ObjectStoreLike | str,
    options: ModelOrMapping[ResourceRestoreOptions] | None = None,
    auto_approve: bool = False,
    bucket: str | None = None,
    backup_name: str | None = None,
    restore_name: str | None = None,
    namespace_mapping: dict[str, str] | str | None = None,
    storage_class_mapping: dict[str, str] | str | None = None,
    existing_resource_policy: str | None = None,
    include_namespaces: list[str] | None = None,
    include_kinds: list[str] | None = None,
    exclude_kinds: list[str] | None = None,
    include_cluster_kinds: list[str] | None = None,
    allow_rbac_and_admission: bool | None = None,
    keep_node_ports: bool | None = None,
    dry_run: bool | None = None,
    fail_on_error: bool | None = None,
    restore_volumes: bool | None = None,
    mover_endpoint: str | None = None,
    mover_image: str | None = None,
    prefix: str | None = None,
    cluster_name: str | None = None,
) -> dict[str, Any]:
    """Restore a backup into a cluster: sanitise, map, apply in restore order, report per object.

    The archive is untrusted: it is read with size caps, checked against its manifest's selection,
    and only what this restore selects is applied. Secret values never appear in the report,
    artifacts, logs or errors (diffs name the changed keys).

    The parameters after ``auto_approve`` are the fields of ``options`` as flat parameters,
    deprecated: they work for one more release (a field given both ways with different values is
    refused).

    Args:
        target: the cluster to restore into: a KubeCluster, KubernetesClusterConfig or
            KubernetesCredentials block, a saved KubeCluster's name, or ``"<block-type-slug>/<name>"``.
        object_store: where the backup lives:
            an ObjectStore, AwsCredentials, MinIOCredentials or S3Bucket block, a saved ObjectStore's
            name, or ``"<block-type-slug>/<name>"``; an S3Bucket's bucket is the default of
            ``options.bucket``.
        options: which backup, what of it and how (``ResourceRestoreOptions``, planning/resource_options.py:
            every field is described in the UI form). The Namespaces of the restored namespaces come without
            being named; cluster-scoped kinds, RBAC/admission objects and
            ``existing_resource_policy="update"`` ask for approval.
        auto_approve: apply without pausing where the restore would ask (``update``, cluster-scoped
            kinds); the plan is still recorded as an artifact. Refused when RBAC/admission objects
            would be applied: those always wait for a person's approval.

    Returns:
        Report: restore name, counts per outcome, per-object results, left-out counts, seconds.

    Raises:
        InputError: bad options, an unknown backup, RBAC/admission objects without
            ``allow_rbac_and_admission``, or an archive refused (``ArchiveRefused``: a member that is
            not a regular file of the layout, over the size caps, or an object outside its
            manifest's selection). Nothing is changed in the target.
        ArchiveError: a corrupt archive or an unknown layout version.
        ApprovalRejected: the operator did not approve the plan.
        RestoreFailed: some objects failed and ``fail_on_error`` is True.
    """
    log = get_run_logger()
    opts = merge_options(ResourceRestoreOptions, options, locals(), docs=DOCS, warn=log.warning)
    t0 = time.monotonic()
    kube = resolve_kube(target, "target")
    store, bucket = resolve_bucket(object_store, "object_store", opts.bucket)
    backup_name, cluster_name, dry_run = opts.backup_name, opts.cluster_name, opts.dry_run
    prefix = validate_prefix(opts.prefix)
    policy = ExistingPolicy.parse(opts.existing_resource_policy)
    ns_map = parse_mapping(opts.namespace_mapping, "namespace_mapping")
    sc_map = parse_mapping(opts.storage_class_mapping, "storage_class_mapping")
    now = utc_now()
    rname = opts.restore_name or validate_backup_name(
        f"{backup_name[:40]}-restore-{now.strftime('%Y%m%d%H%M%S')}", "restore_name"
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
        include_namespaces=opts.include_namespaces,
        include_kinds=opts.include_kinds,
        exclude_kinds=opts.exclude_kinds,
        include_cluster_kinds=opts.include_cluster_kinds,
        allow_rbac_and_admission=opts.allow_rbac_and_admission,
    )
    if not dry_run:
        check_auto_approve(plan, auto_approve)
    labels = {
        BACKUP_NAME_LABEL: backup_name,
        RESTORE_NAME_LABEL: rname,
        MANAGED_BY_LABEL: "stateferry",
        FLOW_RUN_LABEL: run_id(),
    }
    desired = transform_objects(
        [dict(o) for o in plan.selected],
        namespace_mapping=ns_map,
        storage_class_mapping=sc_map,
        keep_node_ports=opts.keep_node_ports,
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
            extra={"skipped": VolumeResult.skipped_from(v.get("skipped"))},
        )
        for v in manifest.volumes
        if opts.restore_volumes and (str(v["namespace"]), str(v["pvc"])) in pvcs
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
        opts.mover_endpoint,
        opts.mover_image,
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
    failed = [r for r in results if r.result in ("failed", "conflict")] + [
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
    if failed and opts.fail_on_error:
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
