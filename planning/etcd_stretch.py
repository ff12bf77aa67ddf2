"""Pure decisions of the etcd stretch migration: preflight verdicts, the reconciler, the plan text.

The reconcile decision "what is the next step, given the observed member list and objects"
(:func:`next_step`), the quorum-safe removal order, the version checks and the plan shown for
approval. The names of both sides are in :mod:`planning.etcd_layout`, the manifests in
:mod:`planning.etcd_manifests`, the DNS hosts in :mod:`planning.etcd_dns_hosts`.

No I/O, no clock, no Prefect, no client libraries. Membership primitives (quorum, the
``--initial-cluster`` string, safety checks) come from :mod:`planning.etcd`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from planning.etcd import (
    ChangeKind,
    CurrentMember,
    MembershipChange,
    PlannedMember,
    check_membership_change,
    initial_cluster,
    initial_cluster_for_join,
    quorum,
    split_members,
)
from planning.etcd_layout import Layout
from stateferry.errors import InputError, PreconditionFailed

# ------------------------------------------------------------------------------------------- preflight

_VERSION_RE = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")


def image_version(image: str) -> tuple[int, int, int] | None:
    """The etcd version in an image tag (``quay.io/coreos/etcd:v3.4.18`` -> (3, 4, 18)), or None."""
    tag = image.rsplit("/", 1)[-1].partition(":")[2].partition("@")[0]
    match = _VERSION_RE.search(tag)
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def check_versions(running: Sequence[str], target_image: str, *, auth_enabled: bool = False) -> list[str]:
    """Check the running members' versions against the target image; returns warnings.

    Raises:
        PreconditionFailed: Running members differ in minor version, or the target image's minor
            differs from theirs.
    """
    warnings: list[str] = []
    parsed = {v: _VERSION_RE.search(v) for v in running}
    minors = {(int(m[1]), int(m[2])) for m in parsed.values() if m}
    if len(minors) > 1:
        raise PreconditionFailed(
            f"the source members run different minor versions {sorted(running)}: finish that upgrade first"
        )
    target = image_version(target_image)
    if target is None:
        warnings.append(f"the target image {target_image!r} carries no version tag; cannot compare versions")
    elif minors and (target[0], target[1]) not in minors:
        have = ".".join(map(str, next(iter(minors))))
        raise PreconditionFailed(
            f"the target image {target_image!r} is etcd {target[0]}.{target[1]} but the source runs {have}: "
            f"a stretch cluster needs the same minor version on both sides; use a {have}.x image"
        )
    for version in [*running, *([".".join(map(str, target))] if target else [])]:
        m = _VERSION_RE.search(version)
        if not m:
            continue
        v = (int(m[1]), int(m[2]), int(m[3]))
        if v[:2] == (3, 4) and v[2] in (20, 21):
            warnings.append(
                f"etcd {version}: 3.4.20-3.4.21 have known member-add bugs (learner promotion / "
                "data inconsistency); upgrade to 3.4.22+ first if you can"
            )
        if v == (3, 5, 5) and auth_enabled:
            warnings.append(
                f"etcd {version} with auth enabled: a new member may fail to apply auth changes; "
                "upgrade to 3.5.6+ first"
            )
    return sorted(set(warnings))


# ------------------------------------------------------------------------------------------ reconcile


class StepKind(StrEnum):
    """The next action of the migration."""

    ADD_MEMBER = "add_member"  # member add (learner), then deploy + catch up + promote
    DEPLOY_MEMBER = "deploy_member"  # the member is registered: deploy/finish it and promote
    MOVE_LEADER = "move_leader"
    REMOVE_OLD = "remove_old"  # member remove, then scale the old StatefulSet down by one
    STOP_OLD = "stop_old"  # scale the old StatefulSet down to the old members still in the cluster
    FINALIZE_STS = "finalize_sts"  # --initial-cluster of the new members only
    CLEANUP = "cleanup"  # delete old resources
    DONE = "done"


@dataclass(frozen=True)
class Observed:
    """What the flow observed, the input of :func:`next_step`.

    Attributes:
        members: The member list.
        leader_id: Current leader (0 when unknown).
        new_sts_replicas: ``spec.replicas`` of the new StatefulSet, None when absent.
        new_sts_initial_cluster: ``--initial-cluster`` in the new StatefulSet's template, "" when absent.
        new_sts_partition: Its rolling-update partition.
        new_sts_rolled_out: Every pod of the new StatefulSet runs the current template and is ready.
        old_sts_exists: The source StatefulSet still exists.
        old_sts_replicas: ``spec.replicas`` of the source StatefulSet (None when unknown or absent).
    """

    members: tuple[CurrentMember, ...]
    leader_id: int = 0
    new_sts_replicas: int | None = None
    new_sts_initial_cluster: str = ""
    new_sts_partition: int = 0
    new_sts_rolled_out: bool = True
    old_sts_exists: bool = True
    old_sts_replicas: int | None = None


@dataclass(frozen=True)
class NextStep:
    """The next step and what it needs.

    Attributes:
        kind: The action.
        member: Pod/member name concerned ("" when none).
        member_id: Member id when it exists (0 otherwise).
        peer_url: The member's peer URL.
        initial_cluster: For add/deploy: the ``--initial-cluster`` the joining member starts with; for
            finalize: the final one.
        replicas: For add/deploy/finalize: the new StatefulSet's replicas; for remove: the old one's.
        quorum_after: Quorum after the step.
        reason: Why.
    """

    kind: StepKind
    member: str = ""
    member_id: int = 0
    peer_url: str = ""
    initial_cluster: str = ""
    replicas: int = 0
    quorum_after: int = 0
    reason: str = ""


def _classify(members: Sequence[CurrentMember], layout: Layout) -> tuple[dict[str, CurrentMember], ...]:
    new_by_url = {layout.new_peer_url(p): p for p in layout.new_pods()}
    old_urls = {
        layout.old_peer_url(f"{layout.source_sts}-{i}"): f"{layout.source_sts}-{i}"
        for i in range(max(layout.source_replicas, 64))
    }
    new: dict[str, CurrentMember] = {}
    old: dict[str, CurrentMember] = {}
    unknown: dict[str, CurrentMember] = {}
    for m in members:
        url = next((u for u in m.peer_urls if u in new_by_url), None)
        if url is not None:
            new[new_by_url[url]] = m
            continue
        url = next((u for u in m.peer_urls if u in old_urls), None)
        if url is not None:
            old[old_urls[url]] = m
        else:
            unknown[m.name or m.peer_urls[0]] = m
    return new, old, unknown


def classify_members(
    members: Sequence[CurrentMember], layout: Layout
) -> tuple[dict[str, CurrentMember], dict[str, CurrentMember], dict[str, CurrentMember]]:
    """Split a member list into (new members by pod, old members by pod, unknown members by name)."""
    new, old, unknown = _classify(members, layout)
    return new, old, unknown


def _voters(members: Iterable[CurrentMember]) -> int:
    return sum(1 for m in members if not m.is_learner)


class RemovalAction(StrEnum):
    """One action of removing an old member."""

    MEMBER_REMOVE = "member_remove"  # etcdctl member remove (a raft configuration change)
    STOP_POD = "stop_pod"  # scale the old StatefulSet down by one


#: Remove the member first, then stop its pod: the configuration change commits while every voter is
#: alive, so it holds for any member count (the seed's "scale down, then member remove" needs
#: ``voters - 1 >= quorum(voters)`` and leaves 1 of 2 voters for the last removal of an N -> 1 migration).
#: A removed member stops itself (its peers answer it with "member removed"); the pod goes afterwards.
REMOVAL_ORDER: tuple[RemovalAction, ...] = (RemovalAction.MEMBER_REMOVE, RemovalAction.STOP_POD)


def removal_trace(
    voters: int, order: Sequence[RemovalAction] = REMOVAL_ORDER
) -> list[tuple[RemovalAction, int, int]]:
    """Simulate removing one healthy voter from ``voters`` healthy voters with the actions in ``order``.

    Returns:
        One row per action: (action, voters alive in the configuration afterwards, quorum needed by
        that configuration). A ``member_remove`` row also requires the quorum *before* it (to commit);
        see :func:`check_removal_order`.
    """
    total, alive, member, running = voters, voters, True, True
    rows: list[tuple[RemovalAction, int, int]] = []
    for action in order:
        if action is RemovalAction.STOP_POD and running:
            running = False
            if member:
                alive -= 1
        elif action is RemovalAction.MEMBER_REMOVE and member:
            member = False
            total -= 1
            if running:
                alive -= 1
        rows.append((action, alive, quorum(total) if total else 0))
    return rows


def check_removal_order(voters: int, order: Sequence[RemovalAction] = REMOVAL_ORDER) -> None:
    """Refuse an order of removal actions that loses quorum at any point for ``voters`` healthy voters.

    Raises:
        PreconditionFailed: The configuration change cannot commit, or the cluster is left without
            quorum between the actions, or ``voters`` < 2 (the last voter is never removed).
    """
    if voters < 2:
        raise PreconditionFailed(f"removing a member of {voters} voter(s) would leave no voter")
    if set(order) != set(RemovalAction) or len(order) != len(RemovalAction):
        raise PreconditionFailed(f"a removal needs each of {[a.value for a in RemovalAction]} once")
    total, alive = voters, voters
    for action, alive_after, needed in removal_trace(voters, order):
        if action is RemovalAction.MEMBER_REMOVE and alive < quorum(total):
            raise PreconditionFailed(
                f"member remove with {alive} of {total} voters alive cannot commit (quorum {quorum(total)})"
            )
        if action is RemovalAction.MEMBER_REMOVE:
            total -= 1
        alive = alive_after
        if alive < needed:
            raise PreconditionFailed(
                f"after {action.value} only {alive} of {total} voters are alive (quorum {needed})"
            )


def next_step(observed: Observed, layout: Layout) -> NextStep:
    """Decide the next step of the migration from the observed state (idempotent re-planning).

    Order: join the new members one at a time (an added member is finished -- deployed, caught up,
    promoted -- before the next is added), move the leader to a new member, remove the old members
    one at a time (highest ordinal first, never the leader; ``member remove`` before the pod stops, see
    :data:`REMOVAL_ORDER`), rewrite the new StatefulSet's
    ``--initial-cluster`` to the new members only, then clean up.

    Raises:
        PreconditionFailed: Members that belong to neither side, or a state the plan cannot continue
            from safely.
    """
    members = list(observed.members)
    new, old, unknown = classify_members(members, layout)
    if unknown:
        raise PreconditionFailed(
            f"the cluster has members that are neither {layout.source_sts}-N nor {layout.new_sts}-N: "
            f"{sorted(unknown)}; remove them (etcdctl member remove) or migrate them separately first"
        )
    started, unstarted, learners = split_members(members)
    new_pods = layout.new_pods()
    # 1. a registered new member not finished yet (learner, not started, or not deployed)
    for i, pod in enumerate(new_pods):
        m = new.get(pod)
        if m is None:
            continue
        deployed = (observed.new_sts_replicas or 0) > i
        if m.is_learner or not m.started or not deployed:
            joining = PlannedMember(pod, layout.new_peer_url(pod), layout.new_client_url(pod))
            return NextStep(
                StepKind.DEPLOY_MEMBER,
                member=pod,
                member_id=m.id,
                peer_url=joining.peer_url,
                initial_cluster=initial_cluster_for_join(members, joining),
                replicas=max(i + 1, observed.new_sts_replicas or 0),
                quorum_after=quorum(_voters(members) + (1 if m.is_learner else 0)),
                reason="registered but not yet running, caught up and voting",
            )
    # 2. add the next new member (only while every old member is still there: never re-add after cutover)
    for i, pod in enumerate(new_pods):
        if pod in new:
            continue
        joining = PlannedMember(pod, layout.new_peer_url(pod), layout.new_client_url(pod))
        check_membership_change(
            started,
            unstarted,
            MembershipChange(ChangeKind.ADD_LEARNER, joining.peer_url, pod),
            learners=learners,
        )
        return NextStep(
            StepKind.ADD_MEMBER,
            member=pod,
            peer_url=joining.peer_url,
            initial_cluster=initial_cluster_for_join(members, joining),
            replicas=i + 1,
            quorum_after=quorum(_voters(members) + 1),
            reason="next new member: a learner until caught up (quorum shown after its promotion)",
        )
    # 3. the leader must be a new member before old ones go
    if old and observed.leader_id and observed.leader_id not in {m.id for m in new.values()}:
        target = new[new_pods[0]]
        return NextStep(
            StepKind.MOVE_LEADER,
            member=new_pods[0],
            member_id=target.id,
            peer_url=layout.new_peer_url(new_pods[0]),
            quorum_after=quorum(_voters(members)),
            reason="hand leadership to the new side before the old members go",
        )
    # 4. stop old pods whose members are gone (a run that stopped between member remove and scale-down)
    kept_old = max((layout.ordinal(p) + 1 for p in old), default=0)
    if observed.old_sts_replicas is not None and observed.old_sts_replicas > kept_old:
        return NextStep(
            StepKind.STOP_OLD,
            member=f"{layout.source_sts}-{observed.old_sts_replicas - 1}",
            replicas=kept_old,
            quorum_after=quorum(max(_voters(members), 1)),
            reason="its member was removed: stop the pod",
        )
    # 5. remove old members, highest ordinal first, never the leader: member remove, then stop the pod
    if old:
        pod = max(old, key=layout.ordinal)
        m = old[pod]
        if m.id == observed.leader_id:
            raise PreconditionFailed(
                f"{pod} is the leader and would be removed next: move leadership to a new member first"
            )
        check_membership_change(
            started, unstarted, MembershipChange(ChangeKind.REMOVE, m.peer_urls[0], pod), learners=learners
        )
        check_removal_order(_voters(members))
        return NextStep(
            StepKind.REMOVE_OLD,
            member=pod,
            member_id=m.id,
            peer_url=m.peer_urls[0],
            replicas=layout.ordinal(pod),
            quorum_after=quorum(max(_voters(members) - 1, 1)),
            reason="old member (member remove, then its pod stops); the new side holds the leader",
        )
    # 6. final --initial-cluster of the new members only, rolled out one pod at a time
    final = initial_cluster(
        [PlannedMember(p, layout.new_peer_url(p), layout.new_client_url(p)) for p in new_pods]
    )
    if (
        observed.new_sts_initial_cluster != final
        or observed.new_sts_partition != 0
        or not observed.new_sts_rolled_out
    ):
        return NextStep(
            StepKind.FINALIZE_STS,
            initial_cluster=final,
            replicas=len(new_pods),
            quorum_after=quorum(len(new_pods)),
            reason="the StatefulSet must describe the new members only",
        )
    if observed.old_sts_exists:
        return NextStep(StepKind.CLEANUP, reason="delete the old StatefulSet, Services and DNS entries")
    return NextStep(StepKind.DONE, reason="every member is on the new side")


# ------------------------------------------------------------------------------------------ plan text


@dataclass
class PlanRow:
    """One row of the rendered plan."""

    step: str
    initial_cluster: str
    voters: int
    quorum: int


@dataclass
class PlanDoc:
    """The full plan (for the Markdown artifact)."""

    rows: list[PlanRow] = field(default_factory=list)


def simulate_plan(layout: Layout, members: Sequence[CurrentMember], leader_id: int) -> list[NextStep]:
    """Simulate :func:`next_step` from ``members`` to the end (for the plan artifact)."""
    state = list(members)
    leader = leader_id
    replicas = 0
    ic = ""
    steps: list[NextStep] = []
    fake_id = -1
    old_replicas = layout.source_replicas
    for _ in range(4 * (layout.source_replicas + layout.target_replicas) + 8):
        step = next_step(
            Observed(tuple(state), leader, replicas or None, ic, 0 if ic else 1, True, True, old_replicas),
            layout,
        )
        if step.kind in (StepKind.CLEANUP, StepKind.DONE):
            steps.append(step)
            break
        steps.append(step)
        if step.kind is StepKind.ADD_MEMBER:
            state.append(CurrentMember(fake_id, step.member, (step.peer_url,), is_learner=False))
            fake_id -= 1
            replicas = step.replicas
        elif step.kind is StepKind.DEPLOY_MEMBER:
            state = [
                CurrentMember(m.id, step.member, m.peer_urls, False) if m.id == step.member_id else m
                for m in state
            ]
            replicas = step.replicas
        elif step.kind is StepKind.MOVE_LEADER:
            leader = step.member_id
        elif step.kind is StepKind.REMOVE_OLD:
            state = [m for m in state if m.id != step.member_id]
            old_replicas = step.replicas
        elif step.kind is StepKind.STOP_OLD:
            old_replicas = step.replicas
        elif step.kind is StepKind.FINALIZE_STS:
            ic = step.initial_cluster
    return steps


def plan_markdown(
    layout: Layout,
    members: Sequence[CurrentMember],
    leader_id: int,
    *,
    source_lb: Mapping[str, str] | None = None,
    target_lb: Mapping[str, str] | None = None,
    warnings: Sequence[str] = (),
) -> str:
    """The migration plan as Markdown: every member add/remove with its ``--initial-cluster`` and quorum."""
    steps = simulate_plan(layout, members, leader_id)
    lines = [
        f"# etcd stretch migration: {layout.source_namespace}/{layout.source_sts} -> "
        f"{layout.target_namespace}/{layout.new_sts}",
        "",
        f"- source members: {', '.join(sorted(m.name or m.peer_urls[0] for m in members))}",
        f"- target members: {', '.join(layout.new_pods())} (headless Service `{layout.new_service}`)",
    ]
    if source_lb:
        lines.append(
            f"- source LoadBalancer IPs: {', '.join(f'{k}={v}' for k, v in sorted(source_lb.items()))}"
        )
    if target_lb:
        lines.append(
            f"- target LoadBalancer IPs: {', '.join(f'{k}={v}' for k, v in sorted(target_lb.items()))}"
        )
    for w in warnings:
        lines.append(f"- WARNING: {w}")
    lines += ["", "| # | step | member | --initial-cluster | quorum after |", "|---|---|---|---|---|"]
    for i, s in enumerate(steps, 1):
        ic = f"`{s.initial_cluster}`" if s.initial_cluster else ""
        q = str(s.quorum_after) if s.quorum_after else ""
        lines.append(f"| {i} | {s.kind.value} | {s.member} | {ic} | {q} |")
    return "\n".join(lines) + "\n"


def check_target_count(target_replicas: int, allow_even_size: bool) -> None:
    """Refuse 0 or an even target size without explicit consent.

    Raises:
        InputError: Naming ``target_replicas`` / ``allow_even_size``.
    """
    if target_replicas < 1:
        raise InputError("target_replicas", f"is {target_replicas}", "give at least 1 (3 or 5 are usual)")
    if target_replicas % 2 == 0 and not allow_even_size:
        raise InputError(
            "target_replicas",
            f"{target_replicas} is even: it tolerates no more failures than {target_replicas - 1} members",
            f"use {target_replicas - 1} or {target_replicas + 1}, or set allow_even_size=True",
        )
