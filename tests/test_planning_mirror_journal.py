"""Table tests of planning/mirror_journal.py: every per-key decision of the journal-aware mirror."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from planning.mirror import ActionKind, ObjectEntry
from planning.mirror_journal import (
    Direction,
    JournalEntry,
    JournalOptions,
    Winner,
    decide,
    plan_with_journal,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)
V1, V2, V3 = (10, "a" * 32), (20, "b" * 32), (30, "c" * 32)


def e(sig: tuple[int, str] | None, t: datetime = T0) -> ObjectEntry | None:
    return None if sig is None else ObjectEntry("k", sig[0], sig[1], t)


def j(s: tuple[int, str] | None, d: tuple[int, str] | None, origin: str = "source") -> JournalEntry:
    return JournalEntry("k", s, d, origin)


ONE = JournalOptions()
ONE_RM = JournalOptions(remove=True)
TWO = JournalOptions(direction=Direction.TWO_WAY)

# (case, src, dst, journal, options, forward, backward, kept?, conflict winner, journal after (s, d, origin))
CASES = [
    ("unchanged", e(V1), e(V1), j(V1, V1), ONE, None, None, False, None, (V1, V1, "source")),
    ("new on source", e(V1), None, None, ONE, "copy", None, False, None, (V1, V1, "source")),
    ("changed on source", e(V2), e(V1), j(V1, V1), ONE, "overwrite", None, False, None, (V2, V2, "source")),
    ("deleted on source, remove", None, e(V1), j(V1, V1), ONE_RM, "delete", None, False, None, None),
    (
        "deleted on source, no remove",
        None,
        e(V1),
        j(V1, V1),
        ONE,
        None,
        None,
        True,
        None,
        (None, V1, "destination"),
    ),
    (
        "client wrote new key on destination",
        None,
        e(V1),
        j(None, None),
        ONE_RM,
        None,
        None,
        True,
        None,
        (None, V1, "destination"),
    ),
    (
        "unknown dst-only, later pass, remove",
        None,
        e(V1),
        None,
        ONE_RM,
        None,
        None,
        True,
        None,
        (None, V1, "destination"),
    ),
    (
        "unknown dst-only, first pass, remove",
        None,
        e(V1),
        None,
        JournalOptions(remove=True, first_pass=True),
        "delete",
        None,
        False,
        None,
        None,
    ),
    (
        "client overwrote on destination",
        e(V1),
        e(V2),
        j(V1, V1),
        ONE_RM,
        None,
        None,
        True,
        None,
        (V1, V2, "destination"),
    ),
    (
        "client deleted on destination",
        e(V1),
        None,
        j(V1, V1),
        ONE_RM,
        None,
        None,
        True,
        None,
        (V1, None, "destination"),
    ),
    (
        "kept client write, source unchanged",
        e(V1),
        e(V2),
        j(V1, V2, "destination"),
        ONE,
        None,
        None,
        False,
        None,
        (V1, V2, "destination"),
    ),
    (
        "source changes over kept client write, newest=source",
        e(V3, T1),
        e(V2, T0),
        j(V1, V2, "destination"),
        ONE,
        "overwrite",
        None,
        False,
        "source",
        (V3, V3, "source"),
    ),
    (
        "source deleted over kept client write: write wins",
        None,
        e(V2),
        j(V1, V2, "destination"),
        ONE_RM,
        None,
        None,
        True,
        "destination",
        (None, V2, "destination"),
    ),
    ("both changed the same way", e(V2), e(V2), j(V1, V1), ONE, None, None, False, None, (V2, V2, "source")),
    ("both deleted", None, None, j(V1, V1), TWO, None, None, False, None, None),
    (
        "two-way: new on destination",
        None,
        e(V1),
        None,
        TWO,
        None,
        "copy",
        False,
        None,
        (V1, V1, "destination"),
    ),
    (
        "two-way: changed on destination",
        e(V1),
        e(V2),
        j(V1, V1),
        TWO,
        None,
        "overwrite",
        False,
        None,
        (V2, V2, "destination"),
    ),
    ("two-way: deleted on destination", e(V1), None, j(V1, V1), TWO, None, "delete", False, None, None),
    ("two-way: deleted on source", None, e(V1), j(V1, V1), TWO, "delete", None, False, None, None),
    (
        "two-way: known only on dst never deletes on source",
        e(V1),
        None,
        j(None, V1),
        TWO,
        "copy",
        None,
        False,
        "source",
        (V1, V1, "source"),
    ),
]


@pytest.mark.parametrize(
    ("src", "dst", "journal", "opts", "forward", "backward", "kept", "winner", "after"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_decide(
    src: ObjectEntry | None,
    dst: ObjectEntry | None,
    journal: JournalEntry | None,
    opts: JournalOptions,
    forward: str | None,
    backward: str | None,
    kept: bool,
    winner: str | None,
    after: tuple[object, object, str] | None,
) -> None:
    d = decide(src, dst, journal, opts)
    assert (d.forward.kind.value if d.forward else None) == forward
    assert (d.backward.kind.value if d.backward else None) == backward
    assert bool(d.kept) == kept
    assert (d.conflict.winner if d.conflict else None) == winner
    got = None if d.journal is None else (d.journal.source, d.journal.destination, d.journal.origin)
    assert got == after


@pytest.mark.parametrize(
    ("rule", "src_time", "dst_time", "direction", "forward", "backward", "winner"),
    [
        (Winner.NEWEST, T1, T0, Direction.ONE_WAY, "overwrite", None, "source"),
        (Winner.NEWEST, T0, T1, Direction.ONE_WAY, None, None, "destination"),
        (Winner.NEWEST, T0, T1, Direction.TWO_WAY, None, "overwrite", "destination"),
        (Winner.NEWEST, T0, T0, Direction.TWO_WAY, "overwrite", None, "source"),  # tie: source
        (Winner.SOURCE, T0, T1, Direction.TWO_WAY, "overwrite", None, "source"),
        (Winner.DESTINATION, T1, T0, Direction.TWO_WAY, None, "overwrite", "destination"),
        (Winner.DESTINATION, T1, T0, Direction.ONE_WAY, None, None, "destination"),
    ],
)
def test_conflict_rules(
    rule: Winner,
    src_time: datetime,
    dst_time: datetime,
    direction: Direction,
    forward: str | None,
    backward: str | None,
    winner: str,
) -> None:
    d = decide(e(V2, src_time), e(V3, dst_time), j(V1, V1), JournalOptions(direction, rule))
    assert d.conflict is not None and d.conflict.winner == winner
    assert (d.forward.kind.value if d.forward else None) == forward
    assert (d.backward.kind.value if d.backward else None) == backward


def _entries(keys: list[str], sig: tuple[int, str] = V1) -> list[ObjectEntry]:
    return [ObjectEntry(k, sig[0], sig[1], T0) for k in keys]


def test_plan_merges_three_listings_and_restores_withheld_deletes() -> None:
    keys = [f"k{i:03d}" for i in range(10)]
    journal = [JournalEntry(k, V1, V1) for k in keys]
    # Source lost 8 of 10 keys: over max_delete_ratio, so no delete is planned and their journal stays.
    plan = plan_with_journal(_entries(keys[:2]), _entries(keys), journal, ONE_RM)
    assert plan.forward == [] and len(plan.withheld) == 8 and plan.notes
    assert [x.key for x in plan.journal] == keys
    approved = plan_with_journal(_entries(keys[:2]), _entries(keys), journal, ONE_RM, deletes_approved=True)
    assert [a.kind for a in approved.forward] == [ActionKind.DELETE] * 8
    assert [x.key for x in approved.journal] == keys[:2]
    # An empty source never deletes (unless allowed).
    empty = plan_with_journal([], _entries(keys), journal, ONE_RM, max_delete_ratio=1.0)
    assert empty.forward == [] and "no object" in empty.notes[0]


def test_unchanged_pass_over_20000_keys_plans_nothing() -> None:
    keys = [f"obj/{i:06d}" for i in range(20000)]
    journal = [JournalEntry(k, V1, V1) for k in keys]
    plan = plan_with_journal(_entries(keys), _entries(keys), journal, TWO)
    assert plan.changes == 0 and plan.conflicts == [] and len(plan.journal) == 20000


def test_with_written_remembers_the_etag_each_write_returned() -> None:
    """Forward writes replace the destination's signature, backward ones the source's; absent sides
    and untouched keys stay as planned."""
    from planning.mirror_journal import JournalEntry, with_written

    entries = [
        JournalEntry("big", (9, "abc-2"), (9, "abc-2")),
        JournalEntry("back", (3, "old"), (3, "old"), "destination"),
        JournalEntry("gone", None, None),
        JournalEntry("same", (1, "s"), (1, "s")),
    ]
    out = with_written(entries, {"big": "md5plain", "gone": "x"}, {"back": "srcmd5"})
    assert [(e.key, e.source, e.destination) for e in out] == [
        ("big", (9, "abc-2"), (9, "md5plain")),
        ("back", (3, "srcmd5"), (3, "old")),
        ("gone", None, None),
        ("same", (1, "s"), (1, "s")),
    ]
