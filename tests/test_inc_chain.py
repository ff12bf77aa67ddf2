"""Table tests of the incremental chain planner (planning/inc_chain.py, pure)."""

from __future__ import annotations

import datetime as dt

import pytest

from planning.inc_chain import (
    FullEvery,
    Link,
    chain_protection,
    chain_to,
    link_of,
    next_backup,
    parse_full_every,
    protect_chains,
)
from stateferry.errors import InputError

UTC = dt.UTC


def _id(day: int, month: int = 3) -> str:
    return f"2026{month:02d}{day:02d}T010000Z-0000{day:02d}"


def _t(day: int, month: int = 3) -> dt.datetime:
    return dt.datetime(2026, month, day, 1, tzinfo=UTC)


def _chain(days: list[int], month: int = 3, good: bool = True) -> list[Link]:
    """A full on days[0] and daily incrementals on the following days."""
    out: list[Link] = []
    for i, d in enumerate(days):
        parent = out[-1].backup_id if out else None
        out.append(Link(_id(d, month), _t(d, month), good, _id(days[0], month), parent, i))
    return out


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("month", FullEvery("month")),
        ("Week", FullEvery("week")),
        ("7 days", FullEvery("days", 7)),
        ("1day", FullEvery("days", 1)),
        (14, FullEvery("days", 14)),
    ],
)
def test_inc_files_full_every_parses(text: object, want: FullEvery) -> None:
    assert parse_full_every(text) == want


@pytest.mark.parametrize("text", ["year", "0 days", "-3 days", "7", True, None, "month; rm -rf"])
def test_inc_files_full_every_refuses(text: object) -> None:
    with pytest.raises(InputError) as err:
        parse_full_every(text)
    assert err.value.field == "sources[0].full_every"


@pytest.mark.parametrize(
    ("links", "now", "every", "full", "parent", "level"),
    [
        ([], _t(5), FullEvery("month"), True, None, 0),
        (_chain([1, 2, 3]), _t(4), FullEvery("month"), False, _id(3), 3),
        (_chain([1, 2, 3]), _t(1, 4), FullEvery("month"), True, None, 0),  # April 1st: new chain
        (_chain([27, 28, 29, 30], 3), _t(31), FullEvery("month"), False, _id(30), 4),
        (_chain([2, 3]), _t(9), FullEvery("week"), True, None, 0),  # 2026-03-09 is a Monday
        (_chain([2, 3]), _t(8), FullEvery("week"), False, _id(3), 2),
        (_chain([1, 2, 3]), _t(4), FullEvery("days", 3), True, None, 0),
        (_chain([1, 2, 3]), _t(3, 3) + dt.timedelta(hours=5), FullEvery("days", 3), False, _id(3), 3),
        (_chain([1, 2, 3])[::2], _t(4), FullEvery("month"), True, None, 0),  # level 1 missing: broken
        (_chain([1, 2], good=False), _t(4), FullEvery("month"), True, None, 0),  # nothing good
    ],
)
def test_inc_files_next_backup(
    links: list[Link], now: dt.datetime, every: FullEvery, full: bool, parent: str | None, level: int
) -> None:
    nxt = next_backup(links, now, every)
    assert (nxt.full, nxt.parent, nxt.level) == (full, parent, level), nxt.reason
    chain = nxt.chain("20260401T000000Z-abcdef")
    assert chain["level"] == level and (chain["full"] == "20260401T000000Z-abcdef") == full


def test_inc_files_chain_to_applies_full_first_and_names_gaps() -> None:
    links = {x.backup_id: x for x in _chain([1, 2, 3, 4])}
    assert [x.backup_id for x in chain_to(links, _id(3))] == [_id(1), _id(2), _id(3)]
    assert [x.backup_id for x in chain_to(links, _id(1))] == [_id(1)]
    gap = {k: v for k, v in links.items() if k != _id(2)}
    with pytest.raises(InputError, match=f"needs {_id(2)}, which is missing"):
        chain_to(gap, _id(4))
    bad = dict(links)
    bad[_id(2)] = Link(_id(2), _t(2), False, _id(1), _id(1), 1)
    with pytest.raises(InputError, match="not good"):
        chain_to(bad, _id(3))


@pytest.mark.parametrize(
    "tamper",
    [
        lambda x: Link(x.backup_id, x.created, True, x.full, x.parent, 5),  # wrong level
        lambda x: Link(x.backup_id, x.created, True, _id(9), x.parent, x.level),  # other full
        lambda x: Link(x.backup_id, _t(20), True, x.full, x.parent, x.level),  # parent newer
    ],
)
def test_inc_files_altered_chain_is_refused(tamper: object) -> None:
    links = {x.backup_id: x for x in _chain([1, 2, 3])}
    links[_id(2)] = tamper(links[_id(2)])  # type: ignore[operator]
    with pytest.raises(InputError) as err:
        chain_to(links, _id(3))
    assert err.value.field == "backup"


@pytest.mark.parametrize(
    ("backup_id", "chain", "ok"),
    [
        (_id(1), {"full": _id(1), "parent": None, "level": 0}, True),
        (_id(2), {"full": _id(1), "parent": _id(1), "level": 1}, True),
        (_id(2), {"full": _id(1), "parent": None, "level": 1}, False),  # level 1 without parent
        (_id(1), {"full": _id(2), "parent": None, "level": 0}, False),  # a full naming another full
        (_id(1), {"full": "../x", "parent": None, "level": 0}, False),
        (_id(2), {"full": _id(1), "parent": _id(1), "level": True}, False),
        (_id(2), {"full": _id(1), "parent": _id(1), "level": 10**9}, False),
        (_id(2), {"full": _id(1), "parent": "x/../y", "level": 1}, False),
        (_id(2), "full", False),
    ],
)
def test_inc_files_manifest_chain_fields_are_untrusted(backup_id: str, chain: object, ok: bool) -> None:
    assert (link_of(backup_id, _t(2), True, chain).level is not None) == ok


def test_inc_files_retention_keeps_every_link_a_kept_point_needs() -> None:
    march = _chain([1, 2, 3, 4, 5])
    april = _chain([1, 2], month=4)
    links = march + april
    # keep only march 5 and april 2 (e.g. a count: 2 plan): their whole chains are protected
    protected = chain_protection(links, {_id(5), _id(2, 4)})
    assert set(protected) == {_id(1), _id(2), _id(3), _id(4), _id(1, 4)}
    assert "needed by the chain of" in protected[_id(1)]
    # a kept full protects nothing; a broken link stops the walk
    assert chain_protection(links, {_id(1)}) == {}
    broken = [x for x in march if x.backup_id != _id(3)]
    assert set(chain_protection(broken, {_id(5)})) == {_id(4)}


def test_inc_files_protect_chains_turns_needed_deletions_into_keeps() -> None:
    from planning.retention import BackupEntry, RetentionPolicy, plan_retention

    links = _chain([1, 2, 3, 4, 5])
    entries = [BackupEntry(x.backup_id, x.created) for x in links]
    plan = plan_retention(entries, RetentionPolicy(count=1), _t(6))
    assert plan.keep == [_id(5)]  # count: 1 alone would break the chain of the kept point
    safe = protect_chains(plan, links)
    assert safe.delete == [] and set(safe.keep) == {_id(d) for d in (1, 2, 3, 4, 5)}
    assert any("needed by the chain of" in r for d in safe.decisions for r in d.reasons)


_SNAR = (
    b"GNU tar-1.34-2\n1796423935\x00450581200\x00"
    b"0\x001796423935\x00441731994\x0065024\x002148484\x00www\x00Dd\x00Yindex.html\x00\x00\x00"
    b"0\x001796423935\x00441731994\x0065024\x002148499\x00www/d\x00Ya\x00\x00\x00"
)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (_SNAR, None),
        (b"GNU tar-1.34-2\n1\x002\x00", None),  # no directory at all
        (_SNAR.replace(b"GNU tar-1.34-2", b"GNU tar-1.34-1"), "header"),
        (_SNAR.replace(b"www/d\x00", b"etc/d\x00"), "not under the archived names"),
        (_SNAR.replace(b"www/d\x00", b"/www/d\x00"), "not under the archived names"),
        (_SNAR.replace(b"www/d\x00", b"www/../../d\x00"), "not under the archived names"),
        (_SNAR.replace(b"Ya\x00", b"Ya/../../x\x00"), "bad entry"),
        (_SNAR.replace(b"Ya\x00", b"Qa\x00"), "bad entry"),
        (_SNAR.replace(b"65024\x002148499", b"6502x\x002148499"), "malformed"),
        (_SNAR[:-1], "complete record"),
        (_SNAR[:-20], "terminated|complete|malformed"),
    ],
)
def test_inc_files_snapshot_read_back_is_checked(data: bytes, problem: str | None) -> None:
    from planning.tar_snapshot import BadSnapshot, check_snapshot

    if problem is None:
        assert check_snapshot(data, ["www"]) >= 0
        return
    with pytest.raises(BadSnapshot, match=problem):
        check_snapshot(data, ["www"])
