"""Pure etcd membership primitives: ``--initial-cluster`` strings, quorum and membership-change checks.

The stretch migration's planner (the order of joins and removals, re-planned from the observed
member list) is :func:`planning.etcd_stretch.next_step`; it uses these primitives.

No I/O, no clock, no Prefect, no client libraries. Member identity is the peer URL (names may repeat
across Kubernetes clusters; peer URLs cannot).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from stateferry.errors import InputError, PreconditionFailed

__all__ = [
    "ChangeKind",
    "CurrentMember",
    "MembershipChange",
    "PlannedMember",
    "check_membership_change",
    "initial_cluster",
    "initial_cluster_for_join",
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


def split_members(
    members: Sequence[CurrentMember],
) -> tuple[list[CurrentMember], list[CurrentMember], list[CurrentMember]]:
    """Split a member list into (started voters, unstarted voters, learners)."""
    started = [m for m in members if m.is_voter and m.started]
    unstarted = [m for m in members if m.is_voter and not m.started]
    learners = [m for m in members if m.is_learner]
    return started, unstarted, learners


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
