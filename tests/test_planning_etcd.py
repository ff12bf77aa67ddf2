"""Table-driven tests of the pure etcd membership planner."""

from __future__ import annotations

import pytest

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
from stateferry.errors import InputError, PreconditionFailed


def src(i: int, *, healthy: bool = True, started: bool = True, learner: bool = False) -> CurrentMember:
    return CurrentMember(
        id=100 + i,
        name=f"src-{i}" if started else "",
        peer_urls=(f"http://src-{i}:2380",),
        is_learner=learner,
        healthy=healthy,
    )


def tgt(i: int) -> PlannedMember:
    return PlannedMember(name=f"tgt-{i}", peer_url=f"http://tgt-{i}:2380", client_url=f"http://tgt-{i}:2379")


def as_member(
    p: PlannedMember, *, member_id: int, started: bool = True, learner: bool = False
) -> CurrentMember:
    return CurrentMember(
        id=member_id, name=p.name if started else "", peer_urls=(p.peer_url,), is_learner=learner
    )


# ------------------------------------------------------------------------------------------------ basics


@pytest.mark.parametrize(("n", "expected"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4)])
def test_quorum(n: int, expected: int) -> None:
    assert quorum(n) == expected


def test_quorum_of_nothing_is_an_input_error() -> None:
    with pytest.raises(InputError, match="at least one voting member"):
        quorum(0)


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        ([tgt(2), tgt(0), tgt(1)], "tgt-0=http://tgt-0:2380,tgt-1=http://tgt-1:2380,tgt-2=http://tgt-2:2380"),
        ([src(1), tgt(0)], "src-1=http://src-1:2380,tgt-0=http://tgt-0:2380"),
        (
            [CurrentMember(id=1, name="a", peer_urls=("http://a:2380", "http://a2:2380"))],
            "a=http://a2:2380,a=http://a:2380",
        ),
    ],
    ids=["sorted by name", "current and planned mixed", "several peer urls"],
)
def test_initial_cluster_is_stable(members: list[PlannedMember | CurrentMember], expected: str) -> None:
    assert initial_cluster(members) == expected
    assert initial_cluster(list(reversed(members))) == expected


def test_initial_cluster_refuses_unstarted_member() -> None:
    with pytest.raises(PreconditionFailed, match="has not started"):
        initial_cluster([src(0), src(1, started=False)])


@pytest.mark.parametrize(
    ("current", "joining", "expected"),
    [
        (
            [src(0), src(1), src(2)],
            tgt(0),
            "src-0=http://src-0:2380,src-1=http://src-1:2380,src-2=http://src-2:2380,tgt-0=http://tgt-0:2380",
        ),
        # the joining member is already in the list (added, not started): it appears once, by its name
        (
            [src(0), as_member(tgt(0), member_id=7, started=False, learner=True)],
            tgt(0),
            "src-0=http://src-0:2380,tgt-0=http://tgt-0:2380",
        ),
        # another unstarted member is left out
        (
            [src(0), src(1), src(2, started=False)],
            tgt(0),
            "src-0=http://src-0:2380,src-1=http://src-1:2380,tgt-0=http://tgt-0:2380",
        ),
    ],
    ids=["plain join", "joining already added", "other unstarted left out"],
)
def test_initial_cluster_for_join(
    current: list[CurrentMember], joining: PlannedMember, expected: str
) -> None:
    assert initial_cluster_for_join(current, joining) == expected


# ------------------------------------------------------------------------------------------ safety rules

ADD_VOTER = MembershipChange(ChangeKind.ADD_VOTER, "http://new:2380", "new")
ADD_LEARNER = MembershipChange(ChangeKind.ADD_LEARNER, "http://new:2380", "new")

CHANGES: list[tuple[str, list[CurrentMember], MembershipChange, str | None]] = [
    # (case, current members, change, refusal fragment or None when allowed)
    ("add voter to healthy 3", [src(0), src(1), src(2)], ADD_VOTER, None),
    ("add voter to single member", [src(0)], ADD_VOTER, None),
    (
        "two unstarted voters",
        [src(0), src(1), src(2), src(3, started=False)],
        ADD_VOTER,
        "two unstarted voters",
    ),
    ("add voter with one member down", [src(0), src(1), src(2, healthy=False)], ADD_VOTER, "quorum of 3"),
    ("add voter to 2 (even)", [src(0), src(1)], ADD_VOTER, None),
    (
        "add existing member",
        [src(0), src(1)],
        MembershipChange(ChangeKind.ADD_VOTER, "http://src-1:2380"),
        "already",
    ),
    ("add learner with one down", [src(0), src(1), src(2, healthy=False)], ADD_LEARNER, None),
    ("second learner", [src(0), src(1), src(2), src(3, learner=True)], ADD_LEARNER, "one learner at a time"),
    (
        "learner when quorum lost",
        [src(0), src(1, healthy=False), src(2, healthy=False)],
        ADD_LEARNER,
        "no quorum",
    ),
    (
        "promote started learner",
        [src(0), src(1), src(2), src(3, learner=True)],
        MembershipChange(ChangeKind.PROMOTE, "http://src-3:2380"),
        None,
    ),
    (
        "promote unstarted learner",
        [src(0), src(1), src(2), src(3, learner=True, started=False)],
        MembershipChange(ChangeKind.PROMOTE, "http://src-3:2380"),
        "has not started",
    ),
    (
        "promote a voter",
        [src(0), src(1)],
        MembershipChange(ChangeKind.PROMOTE, "http://src-1:2380"),
        "not a learner",
    ),
    (
        "promote when 2 of 4 would be healthy",
        [src(0), src(1, healthy=False), src(2, healthy=False), src(3, learner=True)],
        MembershipChange(ChangeKind.PROMOTE, "http://src-3:2380"),
        "quorum",
    ),
    (
        "remove from healthy 3",
        [src(0), src(1), src(2)],
        MembershipChange(ChangeKind.REMOVE, "http://src-2:2380"),
        None,
    ),
    (
        "remove the leader",
        [src(0), src(1), src(2)],
        MembershipChange(ChangeKind.REMOVE, "http://src-0:2380", "src-0", is_leader=True),
        "move leadership",
    ),
    (
        "remove healthy while another is down",
        [src(0), src(1), src(2, healthy=False)],
        MembershipChange(ChangeKind.REMOVE, "http://src-1:2380"),
        "only 1 healthy",
    ),
    (
        "remove the member that is down",
        [src(0), src(1), src(2, healthy=False)],
        MembershipChange(ChangeKind.REMOVE, "http://src-2:2380"),
        None,
    ),
    (
        "remove from even 4",
        [src(0), src(1), src(2), src(3)],
        MembershipChange(ChangeKind.REMOVE, "http://src-3:2380"),
        None,
    ),
    (
        "remove last voter (learners do not count)",
        [src(0), src(1, learner=True)],
        MembershipChange(ChangeKind.REMOVE, "http://src-0:2380"),
        "last voting member",
    ),
    (
        "remove a learner",
        [src(0), src(1, learner=True)],
        MembershipChange(ChangeKind.REMOVE, "http://src-1:2380"),
        None,
    ),
    (
        "remove unstarted voter",
        [src(0), src(1), src(2, started=False)],
        MembershipChange(ChangeKind.REMOVE, "http://src-2:2380"),
        None,
    ),
    (
        "remove unknown",
        [src(0), src(1)],
        MembershipChange(ChangeKind.REMOVE, "http://gone:2380"),
        "not a member",
    ),
]


@pytest.mark.parametrize(
    ("members", "change", "refusal"), [c[1:] for c in CHANGES], ids=[c[0] for c in CHANGES]
)
def test_check_membership_change(
    members: list[CurrentMember], change: MembershipChange, refusal: str | None
) -> None:
    started, unstarted, learners = split_members(members)
    if refusal is None:
        check_membership_change(started, unstarted, change, learners=learners)
    else:
        with pytest.raises(PreconditionFailed, match=refusal):
            check_membership_change(started, unstarted, change, learners=learners)


def test_learners_do_not_count_toward_quorum() -> None:
    """1 voter + 2 learners: the learners cannot save quorum when the voter is unhealthy."""
    members = [src(0, healthy=False), src(1, learner=True)]
    started, unstarted, learners = split_members(members)
    assert learners == [src(1, learner=True)]
    with pytest.raises(PreconditionFailed, match="no quorum"):
        check_membership_change(started, unstarted, ADD_LEARNER, learners=[])
