"""Table-driven tests of the pure etcd membership planner."""

from __future__ import annotations

from dataclasses import replace

import pytest

from planning.etcd import (
    Action,
    ChangeKind,
    CurrentMember,
    MembershipChange,
    PlannedMember,
    Step,
    check_membership_change,
    initial_cluster,
    initial_cluster_for_join,
    leader_transfer_target,
    next_member_to_add,
    next_member_to_remove,
    plan_stretch_migration,
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


@pytest.mark.parametrize(
    ("current", "target", "expected"),
    [
        ([src(0), src(1), src(2)], [tgt(0), tgt(1), tgt(2)], tgt(0)),
        ([src(0), as_member(tgt(0), member_id=7)], [tgt(0), tgt(1)], tgt(1)),
        ([as_member(tgt(0), member_id=7), as_member(tgt(1), member_id=8)], [tgt(0), tgt(1)], None),
        ([src(0), as_member(tgt(1), member_id=8, started=False)], [tgt(1), tgt(0)], tgt(0)),
    ],
    ids=["first", "skips present", "all present", "unstarted counts as present"],
)
def test_next_member_to_add(
    current: list[CurrentMember], target: list[PlannedMember], expected: PlannedMember | None
) -> None:
    assert next_member_to_add(current, target) == expected


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


# ------------------------------------------------------------------------------------------ removal order

REMOVALS: list[tuple[str, list[CurrentMember], list[PlannedMember], int | None, str | None]] = [
    ("never the leader", [src(0), src(1), as_member(tgt(0), member_id=7)], [tgt(0)], 100, "src-1"),
    ("only the leader left", [src(0), as_member(tgt(0), member_id=7)], [tgt(0)], 100, None),
    ("unstarted first", [src(0), src(1, started=False), src(2)], [], 100, ""),
    ("learner before voter", [src(0), src(1, learner=True), src(2)], [], 100, "src-1"),
    ("unhealthy before healthy", [src(0), src(1), src(2, healthy=False)], [], 100, "src-2"),
    ("nothing to remove", [as_member(tgt(0), member_id=7)], [tgt(0)], 7, None),
    ("no leader known", [src(0), src(1)], [], None, "src-0"),
]


@pytest.mark.parametrize(
    ("current", "keep", "leader", "expected"), [c[1:] for c in REMOVALS], ids=[c[0] for c in REMOVALS]
)
def test_next_member_to_remove(
    current: list[CurrentMember], keep: list[PlannedMember], leader: int | None, expected: str | None
) -> None:
    victim = next_member_to_remove(current, keep, leader)
    assert (victim.name if victim else None) == expected
    if victim is not None and leader is not None:
        assert victim.id != leader


def test_leader_transfer_target_is_a_kept_healthy_voter() -> None:
    current = [src(0), as_member(tgt(0), member_id=7, learner=True), as_member(tgt(1), member_id=8)]
    target = leader_transfer_target(current, [tgt(0), tgt(1)], leader_id=100)
    assert target is not None and target.name == "tgt-1"  # tgt-0 is only a learner
    assert leader_transfer_target(current, [tgt(0), tgt(1)], leader_id=8) is None  # the leader is kept


# ------------------------------------------------------------------------------------------ stretch plans


def apply_step(
    state: list[CurrentMember], step: Step, leader: int, next_id: list[int]
) -> tuple[list[CurrentMember], int]:
    """What a flow does for one step, on a simulated member list (test helper)."""
    if step.action is Action.ADD_LEARNER:
        next_id[0] += 1
        return [
            *state,
            CurrentMember(id=next_id[0], name="", peer_urls=(step.peer_url,), is_learner=True),
        ], leader
    out = []
    for member in state:
        if step.peer_url in member.peer_urls:
            if step.action is Action.START_MEMBER:
                member = replace(member, name=step.member)
            elif step.action is Action.PROMOTE:
                member = replace(member, is_learner=False)
            elif step.action is Action.MOVE_LEADER:
                leader = member.id
            elif step.action is Action.REMOVE:
                continue
        out.append(member)
    return out, leader


def run_plan(current: list[CurrentMember], target: list[PlannedMember], leader: int) -> list[CurrentMember]:
    """Execute a plan step by step, checking the invariants every step must keep."""
    state, next_id = list(current), [1000]
    steps = plan_stretch_migration(state, target, leader_id=leader)
    for step in steps:
        if step.action is Action.REMOVE:
            assert not any(m.id == leader and step.peer_url in m.peer_urls for m in state), (
                "removed the leader"
            )
        state, leader = apply_step(state, step, leader, next_id)
        voters = [m for m in state if m.is_voter]
        assert step.voters_after == len(voters)
        assert step.quorum_after == quorum(len(voters))
        assert sum(m.counts_for_quorum for m in voters) >= step.quorum_after, step
        assert sum(1 for m in voters if not m.started) <= 1
    return state


def test_three_to_three_migration_order() -> None:
    current, target = [src(0), src(1), src(2)], [tgt(0), tgt(1), tgt(2)]
    steps = plan_stretch_migration(current, target, leader_id=100)  # src-0 leads
    assert [(s.action.value, s.member, s.voters_after, s.quorum_after) for s in steps] == [
        ("add_learner", "tgt-0", 3, 2),  # a learner leaves the quorum unchanged
        ("start_member", "tgt-0", 3, 2),
        ("promote", "tgt-0", 4, 3),  # even-sized intermediate: 4 voters, quorum 3, all started
        ("remove", "src-1", 3, 2),  # not the leader
        ("add_learner", "tgt-1", 3, 2),
        ("start_member", "tgt-1", 3, 2),
        ("promote", "tgt-1", 4, 3),
        ("remove", "src-2", 3, 2),
        ("add_learner", "tgt-2", 3, 2),
        ("start_member", "tgt-2", 3, 2),
        ("promote", "tgt-2", 4, 3),
        ("move_leader", "tgt-0", 4, 3),  # hand over before the leader goes
        ("remove", "src-0", 3, 2),
    ]
    assert steps[1].initial_cluster == (
        "src-0=http://src-0:2380,src-1=http://src-1:2380,src-2=http://src-2:2380,tgt-0=http://tgt-0:2380"
    )
    assert steps[5].initial_cluster == (
        "src-0=http://src-0:2380,src-2=http://src-2:2380,tgt-0=http://tgt-0:2380,tgt-1=http://tgt-1:2380"
    )
    assert (
        steps[-1].initial_cluster == "tgt-0=http://tgt-0:2380,tgt-1=http://tgt-1:2380,tgt-2=http://tgt-2:2380"
    )
    assert steps[3].member_id == 101 and steps[-1].member_id == 100


@pytest.mark.parametrize(
    ("n_source", "n_target"), [(1, 1), (1, 3), (3, 1), (3, 3), (3, 5), (5, 3), (5, 5), (2, 4)]
)
def test_plans_keep_quorum_and_end_at_target(n_source: int, n_target: int) -> None:
    current = [src(i) for i in range(n_source)]
    target = [tgt(i) for i in range(n_target)]
    final = run_plan(current, target, leader=100)
    assert sorted(m.name for m in final) == sorted(t.name for t in target)
    assert all(m.is_voter and m.started for m in final)


@pytest.mark.parametrize(("n_source", "n_target"), [(3, 3), (3, 5), (5, 3), (1, 3)])
def test_replanning_from_a_partial_state_continues_where_it_stopped(n_source: int, n_target: int) -> None:
    """Idempotence: after any number of executed steps, a new plan is the rest of the original plan."""
    current, target = [src(i) for i in range(n_source)], [tgt(i) for i in range(n_target)]
    full = plan_stretch_migration(current, target, leader_id=100)
    for done in range(len(full) + 1):
        state, leader, next_id = list(current), 100, [1000]
        for step in full[:done]:
            state, leader = apply_step(state, step, leader, next_id)
        rest = plan_stretch_migration(state, target, leader_id=leader)
        assert [(s.action, s.member) for s in rest] == [(s.action, s.member) for s in full[done:]], done


def test_stale_unstarted_member_is_removed_first() -> None:
    current = [src(0), src(1), src(2), CurrentMember(id=9, name="", peer_urls=("http://stale:2380",))]
    steps = plan_stretch_migration(current, [tgt(0), tgt(1), tgt(2)], leader_id=100)
    assert (steps[0].action, steps[0].peer_url) == (Action.REMOVE, "http://stale:2380")
    assert steps[1].action is Action.ADD_LEARNER


def test_plan_refuses_when_quorum_is_already_lost() -> None:
    current = [src(0), src(1, healthy=False), src(2, healthy=False)]
    with pytest.raises(PreconditionFailed, match="quorum"):
        plan_stretch_migration(current, [tgt(0)], leader_id=100)


@pytest.mark.parametrize(
    ("target", "fragment"),
    [([], "no target member"), ([tgt(0), tgt(0)], "repeats")],
    ids=["empty", "duplicate"],
)
def test_plan_rejects_bad_target(target: list[PlannedMember], fragment: str) -> None:
    with pytest.raises(InputError, match=fragment):
        plan_stretch_migration([src(0)], target)


def test_completed_migration_plans_nothing() -> None:
    current = [as_member(tgt(i), member_id=10 + i) for i in range(3)]
    assert plan_stretch_migration(current, [tgt(0), tgt(1), tgt(2)], leader_id=10) == []
