"""Flow ``etcd_stretch_migration``: move an etcd cluster between two Kubernetes clusters, zero downtime.

The procedure of the seed ``etcd-stretch-migration.ru.txt`` automated: the etcd cluster is stretched
over both Kubernetes clusters (per-member LoadBalancer Services plus static DNS hosts on both sides),
the new members join one at a time (as learners, promoted once caught up), leadership moves to the
new side, clients switch, the old members leave one at a time and the old resources are deleted. The
flow body is that list of steps (:mod:`flows.etcd_migration_steps`, one function each).

Every step reads state first; a re-run after a crash reconciles from the observed member list and
objects (:func:`planning.etcd_stretch.next_step`). Until the client cutover is approved, a rejection,
``rollback=True`` or a member that never catches up removes the new members and everything the flow
created, leaving the source as it was. Tests simulate crashes through :mod:`tasks.fault_points`.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from blocks.compat import KubeClusterLike
from blocks.etcd import EtcdCluster
from blocks.loading import resolve_kube
from flows.etcd_migration_steps import (
    CUTOVER_STEP,
    JOIN_STEP,
    JoinFailed,
    Journal,
    check_done,
    delete_old_resources,
    expose_members,
    finalize_initial_cluster,
    issue_member_certificates,
    join_new_members,
    move_leader_to_new,
    publish_dns,
    remove_old_members,
    shrink_database,
    switch_clients,
)
from flows.etcd_migration_steps import (
    rollback as roll_back,
)
from planning.etcd_options import DOCS, EtcdMigrationOptions
from planning.etcd_stretch import plan_markdown
from planning.flow_options import ModelOrMapping, merge_options
from stateferry.errors import PreconditionFailed
from tasks.etcd_credentials import EtcdCredentials, use_credentials
from tasks.etcd_migration_io import lb_ips_from_cluster, live_endpoints
from tasks.etcd_ops import ClusterView, observe_cluster
from tasks.etcd_preflight import (
    MigrationComplete,
    MigrationContext,
    etcd_image,
    preflight,
    save_complete,
    to_current,
)

__all__ = ["MigrationComplete", "etcd_stretch_migration"]


@flow(name="etcd_stretch_migration", log_prints=True)
def etcd_stretch_migration(
    source: KubeClusterLike | str,
    target: KubeClusterLike | str,
    options: ModelOrMapping[EtcdMigrationOptions] | None = None,
    auto_approve: bool = False,
    source_namespace: str | None = None,
    target_namespace: str | None = None,
    statefulset: str | None = None,
    service: str | None = None,
    new_statefulset: str | None = None,
    new_service: str | None = None,
    target_replicas: int | None = None,
    dns_provider: Literal["coredns", "deckhouse"] | None = None,
    keep_revisions: int | None = None,
    use_learners: bool | None = None,
    dry_run: bool | None = None,
    allow_even_size: bool | None = None,
    rollback: bool | None = None,
    delete_pvcs: bool | None = None,
    keep_source_dns: bool | None = None,
    source_endpoints: list[str] | None = None,
    target_image: str | None = None,
    catch_up_timeout_seconds: float | None = None,
    source_lb_annotations: dict[str, str] | None = None,
    target_lb_annotations: dict[str, str] | None = None,
    rename_labels: bool | None = None,
    dns_check_image: str | None = None,
    etcd_cluster: EtcdCluster | None = None,
    tls_ca_secret: str | None = None,
    tls_issuer: str | None = None,
) -> dict[str, Any]:
    """Migrate an etcd StatefulSet from the source to the target Kubernetes cluster without downtime.

    The parameters after ``auto_approve`` but ``etcd_cluster`` are the fields of ``options`` as flat
    parameters, deprecated: they work for one more release (a field given both ways with different
    values is refused).

    Args:
        source: The cluster running etcd now: a KubeCluster, KubernetesClusterConfig or
            KubernetesCredentials block, a saved KubeCluster's name, or ``"<block-type-slug>/<name>"``.
        target: The cluster that will run it (the same kinds as ``source``).
        options: Which StatefulSet moves where, and how (``EtcdMigrationOptions``, planning/etcd_options.py:
            every field is described in the UI form).
        auto_approve: Approve every step (unattended runs).
        etcd_cluster: Client TLS (CA, client certificate and key) and the root user/password of the
            source etcd (an ``EtcdCluster`` block; its endpoints are not used). Every etcd call of the
            flow (compact, defrag, member add/promote/remove, move-leader, health, status) uses them.
            What it leaves empty comes from the Secrets the source members mount (their CA, and their
            certificate as the client certificate); the TLS server name is one their certificate covers.

    Returns:
        Summary: ``outcome`` (``migrated`` / ``planned`` / ``rolled_back`` / ``done``), ``steps``,
        ``members``, ``client_endpoints``, ``db_size``.
    """
    opts = merge_options(EtcdMigrationOptions, options, locals(), docs=DOCS, warn=get_run_logger().warning)
    source, target = resolve_kube(source, "source"), resolve_kube(target, "target")
    creds = EtcdCredentials.from_block(etcd_cluster) if etcd_cluster is not None else EtcdCredentials()
    with use_credentials(creds):
        logger = get_run_logger()
        journal = Journal()
        started = time.monotonic()

        with journal.step("preflight") as note:
            try:
                ctx, view = preflight(
                    source,
                    target,
                    source_namespace=opts.source_namespace,
                    target_namespace=opts.target_ns,
                    statefulset=opts.statefulset,
                    service=opts.service,
                    new_statefulset=opts.new_sts,
                    new_service=opts.new_svc,
                    target_replicas=opts.target_replicas,
                    allow_even_size=opts.allow_even_size,
                    source_endpoints=opts.source_endpoints,
                    target_image=opts.target_image,
                    dns_provider=opts.dns_provider,
                    source_lb_annotations=dict(opts.source_lb_annotations or {}),
                    target_lb_annotations=dict(opts.target_lb_annotations or {}),
                    rename_labels=opts.rename_labels,
                    tls_ca_secret=opts.tls_ca_secret,
                    tls_issuer=opts.tls_issuer,
                )
            except MigrationComplete as done:
                save_complete(target, opts.target_ns, opts.new_sts)
                logger.info("%s", done)
                return {"outcome": "done", "detail": str(done), "steps": [], "members": []}
            for w in ctx.warnings:
                logger.warning(w)
            plan = plan_markdown(ctx.layout, to_current(view), view.leader_id, warnings=ctx.warnings)
            create_markdown_artifact(
                key="etcd-migration-plan", markdown=plan, description="etcd stretch migration plan"
            )
            note["detail"] = f"{len(view.members)} members, leader {view.leader_name}"
        summary: dict[str, Any] = {"plan": plan}
        if opts.dry_run:
            summary["outcome"] = "planned"
            return _finish(summary, journal, started, view, ctx)
        if opts.rollback:
            if ctx.state.in_progress:
                lb_ips_from_cluster(ctx)
            roll_back(ctx, journal, "rollback=True")
            summary["outcome"] = "rolled_back"
            return _finish(summary, journal, started, None, ctx)

        try:
            summary["db_size"] = shrink_database(ctx, journal, opts.keep_revisions)
            expose_members(ctx, journal)
            issue_member_certificates(ctx, journal)
            publish_dns(ctx, journal)
            join_new_members(
                ctx,
                journal,
                use_learners=opts.use_learners,
                auto_approve=auto_approve,
                catch_up_timeout=opts.catch_up_timeout_seconds,
                dns_check_image=opts.dns_check_image or etcd_image(ctx.source_sts),
            )
            move_leader_to_new(ctx, journal)
            switch_clients(ctx, auto_approve)
            remove_old_members(ctx, journal)
            finalize_initial_cluster(ctx, journal)
            delete_old_resources(
                ctx,
                journal,
                auto_approve=auto_approve,
                delete_pvcs=opts.delete_pvcs,
                keep_source_dns=opts.keep_source_dns,
            )
            check_done(ctx)
        except JoinFailed as exc:
            if not ctx.state.cutover_approved:
                roll_back(ctx, journal, str(exc))
                raise PreconditionFailed(
                    f"{exc} -- the new members were rolled back; the source is as it was"
                ) from exc
            raise
        except Exception as exc:
            from tasks.approvals import ApprovalRejected

            if isinstance(exc, ApprovalRejected) and exc.step in (JOIN_STEP, CUTOVER_STEP):
                roll_back(ctx, journal, f"step '{exc.step}' rejected")
                summary["outcome"] = "rolled_back"
                _finish(summary, journal, started, None, ctx)
            raise
        summary["outcome"] = "migrated"
        port = ctx.layout.client_port
        summary["client_endpoints"] = [f"{ctx.lb_ips[p]}:{port}" for p in ctx.layout.new_pods()]
        return _finish(summary, journal, started, observe_cluster(live_endpoints(ctx)), ctx)


def _finish(
    summary: dict[str, Any], journal: Journal, started: float, view: ClusterView | None, ctx: MigrationContext
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
