"""The steps of the etcd stretch migration, one function per step of the seed's runbook.

Each step reads state first and does only what is missing. The membership steps (join, move leader,
remove) ask :func:`planning.etcd_stretch.next_step` what to do next from the observed member list and
StatefulSets, and keep doing it while the answer is theirs: a re-run after a crash continues where the
previous run stopped. The I/O lives in :mod:`tasks.etcd_migration_io` and :mod:`tasks.etcd_ops`.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from prefect import get_run_logger

from planning.etcd import CurrentMember, PlannedMember, initial_cluster
from planning.etcd_stretch import NextStep, StepKind, classify_members, next_step, plan_markdown
from stateferry.errors import PreconditionFailed
from tasks import fault_points
from tasks.etcd_dns_check import dns_mismatches, resolve_in_cluster
from tasks.etcd_migration_io import (
    claim_name,
    delete_ours,
    dns_entries,
    ensure_lb_services,
    live_endpoints,
    observe_objects,
    render_sts,
    set_dns,
    wait_gone,
    wait_lb_reachable,
    wait_pod_revision,
)
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
from tasks.etcd_preflight import MigrationContext, save_state, state_name, to_current
from tasks.etcd_tls_setup import ensure_member_secrets
from tasks.kube_objects import apply_object, delete_object, scale_statefulset, wait_pods_ready

JOIN_STEP = "join new members"
CUTOVER_STEP = "clients switched"
DELETE_STEP = "delete old resources"


class JoinFailed(PreconditionFailed):
    """A joining member did not run, start or catch up in time (rolled back before the cutover)."""


class DnsCheckFailed(JoinFailed):
    """A member name does not resolve to its LoadBalancer address in a cluster (found before any join)."""


def check_dns(ctx: MigrationContext, journal: Journal, image: str) -> str:
    """Resolve, with a short Job in each cluster, every member name a joining member will use.

    The source must resolve the new members' names to their target LoadBalancer addresses, the target
    the old members' names to their source LoadBalancer addresses (the new members resolve each
    other through their own headless Service).

    Returns:
        The answers as a Markdown section (for the join approval).

    Raises:
        DnsCheckFailed: Naming every wrong or missing name; nothing has been added yet.
    """
    layout = ctx.layout
    lines = [
        "",
        "## DNS check (resolved inside each cluster)",
        "",
        "| cluster | name | answer | expected |",
        "|---|---|---|---|",
    ]
    wrong: list[str] = []
    with journal.step("dns check") as note:
        for side, api, ns, pods, new in (
            ("source", ctx.src, layout.source_namespace, layout.new_pods(), True),
            ("target", ctx.tgt, layout.target_namespace, layout.old_pods(), False),
        ):
            expected = {layout.host(p, new=new): ctx.lb_ips[p] for p in pods}
            answers = resolve_in_cluster(
                api, ns, sorted(expected), image=image, migration_id=layout.migration_id
            )
            for name, ip in sorted(expected.items()):
                got = ", ".join(answers.get(name) or []) or "(none)"
                lines.append(f"| {side} | `{name}` | {got} | {ip} |")
            wrong += [f"{side}: {w}" for w in dns_mismatches(answers, expected)]
        note["detail"] = f"{len(wrong)} wrong" if wrong else "every name resolves to its LoadBalancer"
    if wrong:
        raise DnsCheckFailed(
            "DNS check before adding a member: "
            + "; ".join(wrong)
            + f" -- fix the hosts entries ({ctx.dns_provider}) or the LoadBalancers"
        )
    return "\n".join(lines) + "\n"


@dataclass
class Journal:
    """Steps done in this run, with durations (for the summary artifact)."""

    rows: list[tuple[str, str, float]] = field(default_factory=list)

    @contextmanager
    def step(self, name: str, detail: str = "") -> Iterator[dict[str, str]]:
        """Time the block and record it with the detail the block leaves in the yielded note."""
        started = time.monotonic()
        note = {"detail": detail}
        yield note
        self.rows.append((name, note["detail"], time.monotonic() - started))


def _approve(ctx: MigrationContext, step: str, text: str, auto_approve: bool, flag: str) -> None:
    from tasks.approvals import request_approval

    if getattr(ctx.state, flag):
        return
    request_approval(step, text, auto_approve=auto_approve)
    save_state(ctx, **{flag: True})


def _pending(
    ctx: MigrationContext, kinds: set[StepKind]
) -> Iterator[tuple[NextStep, dict[str, str], ClusterView]]:
    """Observe, plan, and yield the next step while it is one of ``kinds`` (the reconciler loop)."""
    layout = ctx.layout
    for _ in range(8 * (layout.source_replicas + layout.target_replicas) + 16):
        endpoints = live_endpoints(ctx)
        view = observe_now(endpoints)
        step = next_step(observe_objects(ctx, view), layout)
        if step.kind not in kinds:
            return
        get_run_logger().info("next step: %s %s (%s)", step.kind.value, step.member, step.reason)
        yield step, endpoints, view
    raise PreconditionFailed(
        "the migration did not converge: re-run the flow to continue from the observed state"
    )


# ------------------------------------------------------------------------------------- seed steps 1-3


def shrink_database(ctx: MigrationContext, journal: Journal, keep_revisions: int) -> dict[str, Any]:
    """Step 1: compact to the last ``keep_revisions`` revisions and defragment every member (leader last)."""
    if ctx.state.in_progress and ctx.state.phase != "prepare":
        return {}
    save_state(
        ctx,
        phase="prepare",
        source_replicas=ctx.layout.source_replicas,
        target_replicas=ctx.layout.target_replicas,
        rename_labels=ctx.layout.rename_labels,
    )
    with journal.step("compact+defrag") as note:
        if not ctx.endpoints:
            return {}
        result = compact_and_defrag(dict(ctx.endpoints), keep_revisions)
        before, after = sum(result["db_size_before"].values()), sum(result["db_size_after"].values())
        note["detail"] = f"compacted to {result['compacted_to']}; db size {before} -> {after} bytes"
        return dict(result)


def expose_members(ctx: MigrationContext, journal: Journal) -> None:
    """Step 2: one LoadBalancer Service per member on both sides, reachable before going on."""
    with journal.step("loadbalancer services") as note:
        ips = ensure_lb_services(ctx)
        note["detail"] = ", ".join(f"{k}={v}" for k, v in sorted(ips.items()))
        wait_lb_reachable(ctx)
    fault_points.reached("lb_services")


def issue_member_certificates(ctx: MigrationContext, journal: Journal) -> None:
    """Step 2b (TLS etcds): the new members' certificate from the CA Secret, in Secrets like the source's.

    One certificate for the new StatefulSet's pods (one pod template): every name form of every new
    member, their LoadBalancer addresses and the source certificate's names. Kept when a Secret
    already holds one that covers them.
    """
    if ctx.tls is None:
        return
    with journal.step("member certificates") as note:
        outcome = ensure_member_secrets(
            ctx.src, ctx.tgt, ctx.layout, ctx.tls, ctx.lb_ips, now=datetime.datetime.now(datetime.UTC)
        )
        note["detail"] = ", ".join(f"Secret {k} {v}" for k, v in sorted(outcome.items()))


def publish_dns(ctx: MigrationContext, journal: Journal) -> None:
    """Step 3: the other side's member names as static hosts in each cluster's DNS."""
    with journal.step("dns hosts") as note:
        if fault_points.skipped("dns"):
            get_run_logger().warning("DNS hosts NOT written (test fault injection)")
            note["detail"] = "skipped (fault injection)"
        else:
            a = set_dns(ctx, ctx.src, dns_entries(ctx, for_side="source"))
            b = set_dns(ctx, ctx.tgt, dns_entries(ctx, for_side="target"))
            note["detail"] = f"source {a}, target {b} ({ctx.dns_provider})"
    fault_points.reached("dns")


# ------------------------------------------------------------------------------------- seed step 4


def join_new_members(
    ctx: MigrationContext,
    journal: Journal,
    *,
    use_learners: bool,
    auto_approve: bool,
    catch_up_timeout: float,
    dns_check_image: str,
) -> None:
    """Step 4: add the new members one at a time (member add, deploy, catch up, promote).

    Before each member is added, :func:`check_dns` proves every name resolves in both clusters.
    """
    layout = ctx.layout
    for step, endpoints, view in _pending(ctx, {StepKind.ADD_MEMBER, StepKind.DEPLOY_MEMBER}):
        if step.kind is StepKind.ADD_MEMBER:
            # before each member: a name that changed since (a DNS edit, a new LB address) stops it
            dns_section = (
                "" if fault_points.skipped("dns_check") else check_dns(ctx, journal, dns_check_image)
            )
            plan = plan_markdown(layout, to_current(view), view.leader_id, target_lb=ctx.lb_ips) + dns_section
            _approve(ctx, JOIN_STEP, plan, auto_approve, "join_approved")
            save_state(ctx, phase="join")
        with journal.step(f"join {step.member}") as note:
            member_id, ic_value = step.member_id, step.initial_cluster
            if step.kind is StepKind.ADD_MEMBER:
                member_id = add_member(endpoints, step.peer_url, as_learner=use_learners).id
                fault_points.reached("member_add", step.member)
                joining = PlannedMember(step.member, step.peer_url, layout.new_client_url(step.member))
                others = [
                    CurrentMember(m.id, m.name, m.peer_urls, m.is_learner)
                    for m in observe_now(endpoints).members
                    if m.name and step.peer_url not in m.peer_urls
                ]
                ic_value = initial_cluster([*others, joining])
            outcome = apply_object(ctx.tgt, render_sts(ctx, step.replicas, ic_value, step.replicas - 1))
            fault_points.reached("member_deployed", step.member)
            try:
                wait_pods_ready(
                    ctx.tgt,
                    layout.target_namespace,
                    [step.member],
                    running_only=True,
                    timeout=catch_up_timeout,
                )
                took = promote_when_caught_up(
                    {**endpoints, step.member: f"{ctx.lb_ips[step.member]}:{layout.client_port}"},
                    member_id,
                    step.member,
                    timeout=catch_up_timeout,
                )
            except PreconditionFailed as exc:
                raise JoinFailed(str(exc)) from exc
            fault_points.reached("member_promoted", step.member)
            note["detail"] = (
                f"{'learner' if use_learners else 'voter'} {member_id:x}; StatefulSet {outcome}; "
                f"caught up + promoted in {took:.1f}s; --initial-cluster {ic_value}"
            )


def move_leader_to_new(ctx: MigrationContext, journal: Journal) -> None:
    """End of step 4: hand leadership to a new member (``etcdctl move-leader``)."""
    for step, endpoints, _ in _pending(ctx, {StepKind.MOVE_LEADER}):
        with journal.step("move leader", step.member):
            move_leader(endpoints, step.member_id)
        fault_points.reached("move_leader")


# ------------------------------------------------------------------------------------- seed steps 5-7


def switch_clients(ctx: MigrationContext, auto_approve: bool) -> None:
    """Step 5: the operator switches the clients to the new endpoints and approves the cutover."""
    if ctx.state.cutover_approved:
        return
    layout, port = ctx.layout, ctx.layout.client_port
    new_clients = ", ".join(f"{ctx.lb_ips[p]}:{port}" for p in layout.new_pods())
    dns_clients = ", ".join(layout.new_client_url(p) for p in layout.new_pods())
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
    save_state(ctx, phase="remove")


def remove_old_members(ctx: MigrationContext, journal: Journal) -> None:
    """Step 6: remove the old members one at a time: ``member remove`` first, then the pod stops.

    The removal commits while every voter is alive, so quorum holds for any member count (see
    :data:`planning.etcd_stretch.REMOVAL_ORDER`). Leadership that drifts back to an old member is moved
    again.
    """
    layout = ctx.layout
    kinds = {StepKind.MOVE_LEADER, StepKind.STOP_OLD, StepKind.REMOVE_OLD}
    for step, endpoints, _ in _pending(ctx, kinds):
        if step.kind is StepKind.MOVE_LEADER:
            with journal.step("move leader", step.member):
                move_leader(endpoints, step.member_id)
        elif step.kind is StepKind.STOP_OLD:
            with journal.step(f"stop {step.member}", "its member was removed"):
                scale_statefulset(ctx.src, layout.source_namespace, layout.source_sts, step.replicas)
                gone = [f"{layout.source_sts}-{i}" for i in range(step.replicas, layout.source_replicas)]
                wait_gone(ctx.src, layout.source_namespace, gone)
        else:
            with journal.step(f"remove {step.member}"):
                remaining = {p: e for p, e in endpoints.items() if p != step.member}
                remove_member(remaining, step.member_id)
                fault_points.reached("member_removed", step.member)
                scale_statefulset(ctx.src, layout.source_namespace, layout.source_sts, step.replicas)
                wait_gone(ctx.src, layout.source_namespace, [step.member])
                wait_healthy(remaining, expect_members=sorted(remaining))
            fault_points.reached("remove_old", step.member)


def finalize_initial_cluster(ctx: MigrationContext, journal: Journal) -> None:
    """End of step 6: the new StatefulSet's ``--initial-cluster`` lists the new members only.

    Rolled out one pod at a time (highest ordinal first), never restarting the leader.
    """
    layout, port = ctx.layout, ctx.layout.client_port
    n = layout.target_replicas
    for step, _, _ in _pending(ctx, {StepKind.FINALIZE_STS}):
        with journal.step("finalize --initial-cluster", step.initial_cluster):
            for ordinal in reversed(range(n)):
                pod = f"{layout.new_sts}-{ordinal}"
                endpoints = {p: f"{ctx.lb_ips[p]}:{port}" for p in layout.new_pods()}
                view = observe_now(endpoints)
                if view.leader_name == pod and n > 1:
                    other = next(m for m in view.members if m.name != pod and not m.is_learner)
                    move_leader(endpoints, other.id)
                apply_object(ctx.tgt, render_sts(ctx, n, step.initial_cluster, partition=ordinal))
                wait_pod_revision(ctx, pod)
                wait_healthy(endpoints, expect_members=layout.new_pods())
        fault_points.reached("finalize")


def delete_old_resources(
    ctx: MigrationContext, journal: Journal, *, auto_approve: bool, delete_pvcs: bool, keep_source_dns: bool
) -> None:
    """Step 7: after approval, delete the old StatefulSet, Services, (PVCs) and the DNS entries."""
    layout = ctx.layout
    for _ in _pending(ctx, {StepKind.CLEANUP}):
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
            ns = layout.source_namespace
            save_state(ctx, phase="cleanup")
            for pod in layout.old_pods():
                delete_ours(ctx, ctx.src, "service", ns, pod)
                if delete_pvcs:
                    delete_object(ctx.src, "pvc", ns, f"{claim_name(ctx)}-{pod}")
            set_dns(ctx, ctx.tgt, [])  # the old members' names are stale in the target
            if not keep_source_dns:  # the stretch is over: the source needs no names of the new members
                set_dns(ctx, ctx.src, [])
            delete_object(ctx.src, "service", ns, layout.source_service)
            # last: while the StatefulSet exists a re-run finds the migration in progress and repeats this
            delete_object(ctx.src, "statefulset", ns, layout.source_sts)
            note["detail"] = f"PVCs {'deleted' if delete_pvcs else 'kept'}"
        save_state(ctx, phase="done")


def check_done(ctx: MigrationContext) -> None:
    """Refuse to report success unless the planner sees nothing left to do."""
    for step, _, _ in _pending(ctx, set(StepKind) - {StepKind.DONE}):
        raise PreconditionFailed(
            f"the migration stopped before {step.kind.value} {step.member}: re-run the flow to continue"
        )


# ------------------------------------------------------------------------------------------- rollback


def rollback(ctx: MigrationContext, journal: Journal, reason: str) -> None:
    """Remove the new members (one at a time) and everything the flow created; the source stays as it was."""
    layout = ctx.layout
    if ctx.state.cutover_approved:
        raise PreconditionFailed(
            "the client cutover was approved (old members may be gone): a rollback is no longer safe; "
            "continue the migration instead"
        )
    get_run_logger().warning("rolling back: %s", reason)
    with journal.step("rollback", reason) as note:
        if ctx.lb_ips:
            endpoints = live_endpoints(ctx)
            view = observe_cluster(endpoints)
            new, old, _ = classify_members(to_current(view), layout)
            if view.leader_id in {m.id for m in new.values()} and old:
                target_old = next(m for m in old.values() if m.started)
                move_leader(endpoints, target_old.id)
            for pod in sorted(new, key=layout.ordinal, reverse=True):
                remove_member(endpoints, new[pod].id)
            wait_healthy({p: e for p, e in endpoints.items() if p in layout.old_pods()})
        ns = layout.target_namespace
        delete_ours(ctx, ctx.tgt, "statefulset", ns, layout.new_sts, propagation="Foreground")
        wait_gone(ctx.tgt, ns, layout.new_pods())
        delete_ours(ctx, ctx.tgt, "service", ns, layout.new_service)
        for pod in layout.new_pods():
            delete_ours(ctx, ctx.tgt, "service", ns, pod)
            delete_object(ctx.tgt, "pvc", ns, f"{claim_name(ctx)}-{pod}")
        for pod in layout.old_pods():
            delete_ours(ctx, ctx.src, "service", layout.source_namespace, pod)
        set_dns(ctx, ctx.src, [])
        set_dns(ctx, ctx.tgt, [])
        if ctx.tls is not None:
            for secret in ctx.tls.renames.values():
                delete_ours(ctx, ctx.tgt, "secret", ns, secret)
        delete_ours(ctx, ctx.tgt, "configmap", ns, state_name(layout.new_sts))
        note["detail"] = f"{reason}; new members removed, target objects and DNS entries deleted"
