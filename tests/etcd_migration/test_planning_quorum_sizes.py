"""Quorum at every single action of a whole migration, for every source/target size 1..5 (issue 11, 8).

A small model of the cluster (configuration voters, learners, which pods run, the leader) is driven
by :func:`planning.etcd_stretch.next_step` alone; each step is applied action by action as the flow
does it (``member add`` as a learner, pod start, ``member promote``; ``member remove`` and the pod
stop in :data:`~planning.etcd_stretch.REMOVAL_ORDER`), and after each action the running voters must
still form a quorum of the configuration; a configuration change must also have a quorum to commit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from planning.etcd import CurrentMember, quorum
from planning.etcd_layout import Layout
from planning.etcd_stretch import REMOVAL_ORDER, Observed, RemovalAction, StepKind, next_step


def _layout(src: int, dst: int) -> Layout:
    return Layout(
        source_namespace="prod",
        target_namespace="prod",
        source_sts="etcd",
        source_service="etcd",
        new_sts="etcd-main",
        new_service="etcd-main",
        source_replicas=src,
        target_replicas=dst,
    )


@dataclass
class Cluster:
    """The modelled cluster and the objects ``next_step`` observes."""

    layout: Layout
    members: list[CurrentMember]
    running: set[str]
    leader: int
    new_replicas: int | None = None
    ic: str = ""
    partition: int = 1
    old_sts_exists: bool = True
    old_replicas: int = 0
    trace: list[tuple[str, int, int]] = field(default_factory=list)  # (action, voters alive, voters)

    def voters(self) -> list[CurrentMember]:
        return [m for m in self.members if not m.is_learner]

    def alive(self) -> int:
        return sum(1 for m in self.voters() if m.name in self.running)

    def check(self, action: str) -> None:
        total, alive = len(self.voters()), self.alive()
        self.trace.append((action, alive, total))
        assert total >= 1 and alive >= quorum(total), f"{action}: {alive} of {total} voters alive"

    def commit(self, change: str) -> None:
        """A raft configuration change needs a quorum of the configuration before it."""
        total = len(self.voters())
        assert self.alive() >= quorum(total), f"{change} cannot commit: {self.alive()} of {total} alive"

    def observed(self) -> Observed:
        return Observed(
            tuple(self.members),
            self.leader,
            self.new_replicas,
            self.ic,
            0 if self.ic else self.partition,
            True,
            self.old_sts_exists,
            self.old_replicas if self.old_sts_exists else None,
        )


def _migrate(src: int, dst: int) -> tuple[list[tuple[StepKind, str, int, int]], Cluster]:
    """Run the whole plan on the model; return (kind, member, voters, quorum) after each step."""
    layout = _layout(src, dst)
    old = [CurrentMember(i + 1, f"etcd-{i}", (layout.old_peer_url(f"etcd-{i}"),)) for i in range(src)]
    c = Cluster(layout, list(old), {m.name for m in old}, leader=1, old_replicas=src)
    c.check("start")
    table: list[tuple[StepKind, str, int, int]] = []
    next_id = 100
    for _ in range(4 * (src + dst) + 8):
        step = next_step(c.observed(), layout)
        if step.kind is StepKind.DONE:
            return table, c
        if step.kind is StepKind.ADD_MEMBER:
            c.commit(f"member add {step.member}")
            learner = CurrentMember(next_id, "", (step.peer_url,), is_learner=True)
            next_id += 1
            c.members.append(learner)
            c.check(f"member add {step.member} (learner)")
            c.new_replicas = step.replicas
            c.members[-1] = CurrentMember(learner.id, step.member, learner.peer_urls, is_learner=True)
            c.running.add(step.member)
            c.check(f"start {step.member}")
            c.commit(f"member promote {step.member}")
            c.members[-1] = CurrentMember(learner.id, step.member, learner.peer_urls)
            c.check(f"promote {step.member}")
        elif step.kind is StepKind.MOVE_LEADER:
            target = next(m for m in c.members if m.id == step.member_id)
            assert not target.is_learner and target.name in c.running
            c.leader = step.member_id
            c.check(f"leader -> {step.member}")
        elif step.kind is StepKind.REMOVE_OLD:
            assert step.member_id != c.leader, "the leader is never removed"
            for action in REMOVAL_ORDER:
                if action is RemovalAction.MEMBER_REMOVE:
                    c.commit(f"member remove {step.member}")
                    c.members = [m for m in c.members if m.id != step.member_id]
                else:
                    c.running.discard(step.member)
                    c.old_replicas = step.replicas
                c.check(f"{action.value} {step.member}")
        elif step.kind is StepKind.FINALIZE_STS:
            c.ic = step.initial_cluster
            c.check("finalize --initial-cluster")
        elif step.kind is StepKind.CLEANUP:
            assert not (c.running & set(layout.old_pods())), "old pods still run at cleanup"
            c.old_sts_exists = False
            c.check("cleanup")
        else:
            pytest.fail(f"unexpected step {step.kind} on an uninterrupted run")
        table.append((step.kind, step.member, len(c.voters()), quorum(len(c.voters()))))
    pytest.fail("the plan did not finish")


SIZES = [(s, d) for s in range(1, 6) for d in range(1, 6)]


@pytest.mark.parametrize(("src", "dst"), SIZES, ids=[f"{s}to{d}" for s, d in SIZES])
def test_quorum_holds_after_every_action_of_every_size(src: int, dst: int) -> None:
    table, c = _migrate(src, dst)
    layout = c.layout
    # the end state: exactly the new members, all voters, all running, one of them leads
    assert sorted(m.name for m in c.members) == layout.new_pods()
    assert all(not m.is_learner for m in c.members)
    assert c.running == set(layout.new_pods())
    assert c.leader in {m.id for m in c.members}
    # every action was checked: start + 3 per join + leader + 2 per removal + finalize + cleanup
    assert len(c.trace) == 1 + 3 * dst + 1 + 2 * src + 2
    assert all(alive >= quorum(total) for _, alive, total in c.trace)
    # the lowest point of the whole run is the configuration the flow ends with
    assert min(alive - quorum(total) for _, alive, total in c.trace) >= 0
    assert [k for k, *_ in table].count(StepKind.REMOVE_OLD) == src


def _row(kind: StepKind, member: str, voters: int) -> tuple[StepKind, str, int, int]:
    return (kind, member, voters, quorum(voters))


A, M, R = StepKind.ADD_MEMBER, StepKind.MOVE_LEADER, StepKind.REMOVE_OLD
F, C = StepKind.FINALIZE_STS, StepKind.CLEANUP

TABLES = {
    (3, 1): [
        _row(A, "etcd-main-0", 4),
        _row(M, "etcd-main-0", 4),
        _row(R, "etcd-2", 3),
        _row(R, "etcd-1", 2),
        _row(R, "etcd-0", 1),  # the last removal: member remove commits with both voters alive
        _row(F, "", 1),
        _row(C, "", 1),
    ],
    (1, 3): [
        _row(A, "etcd-main-0", 2),
        _row(A, "etcd-main-1", 3),
        _row(A, "etcd-main-2", 4),
        _row(M, "etcd-main-0", 4),
        _row(R, "etcd-0", 3),
        _row(F, "", 3),
        _row(C, "", 3),
    ],
    (3, 5): [
        *[_row(A, f"etcd-main-{i}", 4 + i) for i in range(5)],
        _row(M, "etcd-main-0", 8),
        _row(R, "etcd-2", 7),
        _row(R, "etcd-1", 6),
        _row(R, "etcd-0", 5),
        _row(F, "", 5),
        _row(C, "", 5),
    ],
    (5, 3): [
        *[_row(A, f"etcd-main-{i}", 6 + i) for i in range(3)],
        _row(M, "etcd-main-0", 8),
        _row(R, "etcd-4", 7),
        _row(R, "etcd-3", 6),
        _row(R, "etcd-2", 5),
        _row(R, "etcd-1", 4),
        _row(R, "etcd-0", 3),
        _row(F, "", 3),
        _row(C, "", 3),
    ],
}


@pytest.mark.parametrize(("src", "dst"), list(TABLES), ids=[f"{s}to{d}" for s, d in TABLES])
def test_plan_table(src: int, dst: int) -> None:
    table, _ = _migrate(src, dst)
    assert table == TABLES[(src, dst)]


def test_3_to_1_last_removal_in_detail() -> None:
    """The finding: 2 voters left (etcd-0, etcd-main-0); the seed's order stopped etcd-0 first."""
    _, c = _migrate(3, 1)
    last = [row for row in c.trace if row[0].endswith("etcd-0")]
    assert last == [("member_remove etcd-0", 1, 1), ("stop_pod etcd-0", 1, 1)]
