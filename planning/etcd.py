"""Pure etcd membership planning: ``--initial-cluster`` strings, quorum checks, stretch migrations.

A stretch migration moves an etcd cluster from one set of members (e.g. in the source Kubernetes
cluster) to another (the target cluster) one member at a time, never losing quorum:

1. add the next target member as a *learner* (learners do not vote, so quorum is unchanged);
2. start it with ``--initial-cluster-state existing`` and the ``--initial-cluster`` of every started
   member plus itself;
3. promote it to a voter once it has caught up (the cluster grows to n+1, every voter started);
4. remove one source member that is not the leader (back to n); before the last source member that
   leads is removed, leadership is moved to a target member.

Adding first and removing second keeps every intermediate cluster at n or n+1 voters with all of them
started, so the fault tolerance never drops below the original one. The planner works from the
*observed* member list, so re-planning after a crash continues where the previous run stopped.

No I/O, no clock, no Prefect, no client libraries. Member identity is the peer URL (names may repeat
across Kubernetes clusters; peer URLs cannot).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from stateferry.errors import InputError, PreconditionFailed

__all__ = [
    "Action",
    "ChangeKind",
    "CurrentMember",
    "MembershipChange",
    "PlannedMember",
    "Step",
    "check_membership_change",
    "initial_cluster",
    "initial_cluster_for_join",
    "leader_transfer_target",
    "next_member_to_add",
    "next_member_to_remove",
    "plan_stretch_migration",
    "quorum",
    "split_members",
]


@dataclass(frozen=True)
class PlannedMember:
    """A member the plan wants in the cluster.

    Attributes:
        name: etcd member name (``--name``), e.g. ``etcd-0``.
        peer_url: Its advertised peer URL, e.g. ``http://etcd-0.etcd.ns.svc:2380``.
        client_url: Its advertised client URL, e.g. ``http://etcd-0.etcd.ns.svc:2379``.
    """

    name: str
    peer_url: str
    client_url: str


@dataclass(frozen=True)
class CurrentMember:
    """A member as observed in the member list (plus health, observed separately).

    Attributes:
        id: Member id (0 when not known yet, e.g. in a simulated plan).
        name: Member name; empty while the member was added but has not started.
        peer_urls: Advertised peer URLs.
        is_learner: True for a non-voting learner.
        healthy: False when the member is started but does not answer (down / partitioned).
    """

    id: int
    name: str
    peer_urls: tuple[str, ...]
    is_learner: bool = False
    healthy: bool = True

    @property
    def started(self) -> bool:
        """True once the member has started (etcd then knows its name)."""
        return bool(self.name)

    @property
    def is_voter(self) -> bool:
        """True for a voting member (started or not)."""
        return not self.is_learner

    @property
    def counts_for_quorum(self) -> bool:
        """True for a started, healthy voter: the members that can form a quorum."""
        return self.is_voter and self.started and self.healthy


class ChangeKind(StrEnum):
    """Kinds of membership change."""

    ADD_VOTER = "add_voter"
    ADD_LEARNER = "add_learner"
    PROMOTE = "promote"
    REMOVE = "remove"


@dataclass(frozen=True)
class MembershipChange:
    """A proposed membership change.

    Attributes:
        kind: What to do.
        peer_url: Peer URL of the member being added, promoted or removed.
        name: Member name (for messages).
        is_leader: For a removal: the member currently leads.
    """

    kind: ChangeKind
    peer_url: str
    name: str = ""
    is_leader: bool = False


class Action(StrEnum):
    """Actions of a stretch migration plan."""

    ADD_LEARNER = "add_learner"
    START_MEMBER = "start_member"
    PROMOTE = "promote"
    MOVE_LEADER = "move_leader"
    REMOVE = "remove"


@dataclass(frozen=True)
class Step:
    """One step of a migration plan.

    Attributes:
        action: What to do.
        member: Name of the member acted on (for ``move_leader``: the new leader).
        peer_url: Its peer URL.
        initial_cluster: ``--initial-cluster`` describing the cluster after the step (every started
            member, plus the joining member for ``add_learner`` / ``start_member``). For
            ``start_member`` it is exactly the flag the joining member must be started with.
        voters_after: Voting members after the step.
        quorum_after: Quorum after the step (learners do not count).
        member_id: Member id when already known (existing members), else 0.
        reason: Why this step comes now.
    """

    action: Action
    member: str
    peer_url: str
    initial_cluster: str
    voters_after: int
    quorum_after: int
    member_id: int = 0
    reason: str = ""

    def describe(self) -> str:
        """One line for a Markdown plan."""
        return (
            f"{self.action.value} {self.member} ({self.peer_url}) -> {self.voters_after} voters, "
            f"quorum {self.quorum_after}: {self.reason}"
        )


# ------------------------------------------------------------------------------------------------ basics


def quorum(n: int) -> int:
    """Votes needed for a decision among ``n`` voters: ``n // 2 + 1``.

    Raises:
        InputError: When ``n`` < 1.
    """
    if n < 1:
        raise InputError("members", f"a cluster needs at least one voting member, got {n}", "keep one voter")
    return n // 2 + 1


def _entries(members: Iterable[PlannedMember | CurrentMember]) -> list[tuple[str, str]]:
    entries: list[tuple[str, str]] = []
    for member in members:
        if isinstance(member, PlannedMember):
            urls: tuple[str, ...] = (member.peer_url,)
        else:
            urls = member.peer_urls
        if not member.name:
            raise PreconditionFailed(
                f"member with peer URL(s) {', '.join(urls)} has not started (no name), so it cannot appear "
                "in --initial-cluster: start it first or leave it out"
            )
        entries.extend((member.name, url) for url in urls)
    return entries


def initial_cluster(members: Iterable[PlannedMember | CurrentMember]) -> str:
    """The ``--initial-cluster`` value ``name=peer_url,...`` for ``members``, sorted by name then URL.

    Raises:
        PreconditionFailed: A member has not started (has no name yet).
        InputError: Two members share a name with different URLs listed twice, or a URL repeats.
    """
    entries = sorted(set(_entries(members)))
    urls = [url for _, url in entries]
    if len(set(urls)) != len(urls):
        raise InputError(
            "members", "a peer URL is listed under two names", "give every member its own peer URL"
        )
    return ",".join(f"{name}={url}" for name, url in entries)


def _peer_urls(member: PlannedMember | CurrentMember) -> tuple[str, ...]:
    return (member.peer_url,) if isinstance(member, PlannedMember) else member.peer_urls


def _find(current: Sequence[CurrentMember], planned: PlannedMember) -> CurrentMember | None:
    for member in current:
        if planned.peer_url in member.peer_urls:
            return member
    return None


def split_members(
    members: Sequence[CurrentMember],
) -> tuple[list[CurrentMember], list[CurrentMember], list[CurrentMember]]:
    """Split a member list into (started voters, unstarted voters, learners)."""
    started = [m for m in members if m.is_voter and m.started]
    unstarted = [m for m in members if m.is_voter and not m.started]
    learners = [m for m in members if m.is_learner]
    return started, unstarted, learners


def next_member_to_add(
    current: Sequence[CurrentMember], target: Sequence[PlannedMember]
) -> PlannedMember | None:
    """The first member of ``target`` (in its order) that is not in ``current`` yet, or None."""
    for planned in target:
        if _find(current, planned) is None:
            return planned
    return None


def initial_cluster_for_join(current: Sequence[CurrentMember], joining: PlannedMember) -> str:
    """``--initial-cluster`` for ``joining``: every started member plus the joining one.

    Members that were added but have not started (other than ``joining``) are left out: they have no
    name yet, and etcd checks the flag against the started members only.
    """
    others = [m for m in current if m.started and joining.peer_url not in m.peer_urls]
    return initial_cluster([*others, joining])


# ------------------------------------------------------------------------------------------ safety rules


def check_membership_change(
    current_voters: Sequence[CurrentMember],
    unstarted_voters: Sequence[CurrentMember],
    change: MembershipChange,
    *,
    learners: Sequence[CurrentMember] = (),
) -> None:
    """Refuse a membership change that would put quorum at risk.

    Args:
        current_voters: Started voting members (their ``healthy`` flag counts).
        unstarted_voters: Voting members added but not started yet.
        change: The proposed change.
        learners: Current learners (they never count toward quorum).

    Raises:
        PreconditionFailed: With what was expected, what was found and what to do, when:
            a voter is added while another added voter has not started (two unstarted voters);
            after the change the healthy started voters would be fewer than the quorum;
            a second learner is added (etcd allows one); a non-learner or unstarted learner is
            promoted; the leader or the last voter is removed.
    """
    voters = [*current_voters, *unstarted_voters]
    healthy = sum(1 for m in current_voters if m.healthy and m.started)
    label = change.name or change.peer_url
    known = {url for m in [*voters, *learners] for url in m.peer_urls}

    if change.kind is ChangeKind.ADD_VOTER:
        if change.peer_url in known:
            raise PreconditionFailed(
                f"{label} is already a member: re-read the member list instead of adding it"
            )
        if unstarted_voters:
            pending = ", ".join(u for m in unstarted_voters for u in m.peer_urls)
            raise PreconditionFailed(
                f"adding voter {label} while voter {pending} was added but has not started would leave two "
                "unstarted voters: start (or remove) that member first"
            )
        total, counting = len(voters) + 1, healthy
        if not (len(voters) == 1 and counting == 1) and counting < quorum(total):
            _quorum_lost(f"adding voter {label}", total, counting)
        return

    if change.kind is ChangeKind.ADD_LEARNER:
        if change.peer_url in known:
            raise PreconditionFailed(
                f"{label} is already a member: re-read the member list instead of adding it"
            )
        if learners:
            raise PreconditionFailed(
                f"adding learner {label}: learner {learners[0].name or learners[0].peer_urls[0]} exists and "
                "etcd allows one learner at a time: promote or remove it first"
            )
        if healthy < quorum(len(voters)):
            _quorum_lost(f"adding learner {label} (the cluster has no quorum now)", len(voters), healthy)
        return

    if change.kind is ChangeKind.PROMOTE:
        learner = next((m for m in learners if change.peer_url in m.peer_urls), None)
        if learner is None:
            raise PreconditionFailed(
                f"promoting {label}: it is not a learner of this cluster; nothing to promote"
            )
        if not learner.started or not learner.healthy:
            raise PreconditionFailed(
                f"promoting {label}: the learner has not started or is not healthy; start it and wait until "
                "it has caught up"
            )
        total, counting = len(voters) + 1, healthy + 1
        if counting < quorum(total):
            _quorum_lost(f"promoting {label}", total, counting)
        return

    # REMOVE
    target = next((m for m in [*voters, *learners] if change.peer_url in m.peer_urls), None)
    if target is None:
        raise PreconditionFailed(f"removing {label}: it is not a member (already removed?); nothing to do")
    if change.is_leader:
        raise PreconditionFailed(
            f"removing {label}: it is the leader; move leadership to another member first"
        )
    if target.is_learner:
        return
    if len(voters) == 1:
        raise PreconditionFailed(f"removing {label}: it is the last voting member; add another member first")
    total = len(voters) - 1
    counting = healthy - (1 if target.counts_for_quorum else 0)
    if counting < quorum(total):
        _quorum_lost(f"removing {label}", total, counting)


def _quorum_lost(what: str, total: int, counting: int) -> None:
    raise PreconditionFailed(
        f"{what} would leave {total} voters needing a quorum of {quorum(total)}, but only {counting} healthy "
        f"started voter(s) would remain: restore the unhealthy/unstarted members first"
    )


# ------------------------------------------------------------------------------------------ removal order


def next_member_to_remove(
    current: Sequence[CurrentMember], keep: Sequence[PlannedMember], leader_id: int | None
) -> CurrentMember | None:
    """The next member to remove: not in ``keep`` and never the leader.

    Preference: unstarted members, then learners, then unhealthy voters, then healthy voters (by name),
    i.e. the ones whose removal costs the least first. Returns None when nothing is left to remove or
    only the leader is; then move leadership first (see :func:`leader_transfer_target`).
    """
    keep_urls = {k.peer_url for k in keep}
    candidates = [
        m
        for m in current
        if not keep_urls.intersection(m.peer_urls)
        and (leader_id is None or leader_id == 0 or m.id != leader_id)
    ]
    if not candidates:
        return None
    return min(candidates, key=lambda m: (m.started, not m.is_learner, m.healthy, m.name, m.peer_urls))


def leader_transfer_target(
    current: Sequence[CurrentMember], keep: Sequence[PlannedMember], leader_id: int | None
) -> CurrentMember | None:
    """A kept, started, healthy voter to move leadership to when the leader must be removed, else None."""
    keep_urls = {k.peer_url for k in keep}
    leader = next((m for m in current if leader_id and m.id == leader_id), None)
    if leader is None or keep_urls.intersection(leader.peer_urls):
        return None
    options = [m for m in current if m.counts_for_quorum and keep_urls.intersection(m.peer_urls)]
    order = {k.peer_url: i for i, k in enumerate(keep)}
    return min(options, key=lambda m: min(order.get(u, 10**6) for u in m.peer_urls), default=None)


# ------------------------------------------------------------------------------------------ stretch plan


def _step(
    state: list[CurrentMember],
    action: Action,
    member: CurrentMember,
    reason: str,
    joining: CurrentMember | None = None,
) -> Step:
    voters = sum(1 for m in state if m.is_voter)
    started = [m for m in state if m.started]
    if joining is not None:
        started = [m for m in started if not set(m.peer_urls) & set(joining.peer_urls)] + [joining]
    return Step(
        action=action,
        member=member.name,
        peer_url=member.peer_urls[0],
        initial_cluster=initial_cluster(started),
        voters_after=voters,
        quorum_after=quorum(voters),
        member_id=max(member.id, 0),
        reason=reason,
    )


def plan_stretch_migration(
    current: Sequence[CurrentMember],
    target: Sequence[PlannedMember],
    *,
    leader_id: int | None = None,
) -> list[Step]:
    """Plan the steps that turn the ``current`` membership into exactly ``target``, keeping quorum.

    Works from the observed state, so it is idempotent: members of ``target`` already added continue
    from where they stopped (start, then promote), members already removed are not removed again, and
    an empty list means the migration is complete.

    Args:
        current: The observed member list (with health).
        target: The wanted members, in the order to add them.
        leader_id: Id of the current leader (to avoid removing it; leadership is moved first).

    Returns:
        The ordered steps. Every step was checked with :func:`check_membership_change`.

    Raises:
        InputError: ``target`` is empty or repeats a name or peer URL.
        PreconditionFailed: The current state cannot be changed safely (e.g. quorum already lost, two
            unstarted voters, an unstarted member that is not a target).
    """
    if not target:
        raise InputError("target", "no target member given", "list the members the cluster should end with")
    if len({t.name for t in target}) != len(target) or len({t.peer_url for t in target}) != len(target):
        raise InputError(
            "target", "repeats a member name or peer URL", "give every target member its own name and URL"
        )

    state = list(current)
    steps: list[Step] = []
    leader = leader_id or 0
    names = {t.peer_url: t.name for t in target}

    def apply(change: MembershipChange, updated: list[CurrentMember]) -> None:
        started, unstarted, learners = split_members(state)
        check_membership_change(started, unstarted, change, learners=learners)
        state[:] = updated

    def finish_target(planned: PlannedMember) -> None:
        """Bring an added target member to a started voter (start, promote)."""
        member = _find(state, planned)
        assert member is not None
        if not member.started:
            joined = replace(member, name=planned.name, healthy=True)
            steps.append(
                _step(
                    state, Action.START_MEMBER, joined, "join with --initial-cluster-state existing", joined
                )
            )
            state[state.index(member)] = joined
            member = joined
        if member.is_learner:
            promoted = replace(member, is_learner=False)
            updated = [promoted if m is member else m for m in state]
            apply(MembershipChange(ChangeKind.PROMOTE, planned.peer_url, planned.name), updated)
            steps.append(_step(state, Action.PROMOTE, promoted, "the learner has caught up; make it a voter"))

    def remove_one() -> bool:
        nonlocal leader
        victim = next_member_to_remove(state, target, leader)
        if victim is None:
            new_leader = leader_transfer_target(state, target, leader)
            if new_leader is None:
                return False
            steps.append(
                _step(state, Action.MOVE_LEADER, new_leader, "the leader is next to go; hand over first")
            )
            leader = new_leader.id or -1  # simulated id for members added by the plan
            victim = next_member_to_remove(state, target, leader)
            if victim is None:
                return False
        apply(
            MembershipChange(ChangeKind.REMOVE, victim.peer_urls[0], victim.name),
            [m for m in state if m is not victim],
        )
        steps.append(_step(state, Action.REMOVE, victim, "not in the target set"))
        return True

    # 1. stale members that are not started and not wanted go first (they only cost quorum)
    for stale in [m for m in state if not m.started and not any(u in names for u in m.peer_urls)]:
        apply(
            MembershipChange(ChangeKind.REMOVE, stale.peer_urls[0], stale.name),
            [m for m in state if m is not stale],
        )
        steps.append(_step(state, Action.REMOVE, stale, "added but never started and not in the target set"))

    def rebalance() -> None:
        """Remove old members while more of them remain than target members are still to come."""
        while True:
            target_urls = set(names)
            old = sum(1 for m in state if not target_urls.intersection(m.peer_urls))
            pending = sum(1 for t in target if _find(state, t) is None)
            if old <= pending or not remove_one():
                return

    # 2. target members already added: finish them (continue where a previous run stopped)
    for planned in target:
        if _find(state, planned) is not None:
            finish_target(planned)
    rebalance()

    # 3. one target member at a time (learner -> start -> promote), then remove an old member
    simulated_id = -1
    for planned in target:
        if _find(state, planned) is not None:
            continue
        learner = CurrentMember(id=0, name="", peer_urls=(planned.peer_url,), is_learner=True)
        apply(MembershipChange(ChangeKind.ADD_LEARNER, planned.peer_url, planned.name), [*state, learner])
        named = replace(learner, name=planned.name)
        steps.append(
            _step(state, Action.ADD_LEARNER, named, "next target member (a learner does not vote)", named)
        )
        finish_target(planned)
        # give the simulated member an id so a later leader move can name it
        member = _find(state, planned)
        assert member is not None
        if member.id == 0:
            state[state.index(member)] = replace(member, id=simulated_id)
            simulated_id -= 1
        rebalance()

    # 4. remove whatever old members remain
    while remove_one():
        pass
    return steps
