"""Table tests for the pure retention planner (nxs-backup days / weeks / months)."""

from __future__ import annotations

import datetime as dt

import pytest

from planning.retention import BackupEntry, RetentionPolicy, plan_retention

UTC = dt.UTC


def _day(s: str, hour: int = 1) -> dt.datetime:
    return dt.datetime.combine(dt.date.fromisoformat(s), dt.time(hour), tzinfo=UTC)


def _bid(t: dt.datetime) -> str:
    return t.strftime("%Y%m%dT%H%M%SZ")


def _simulate(
    first: str, last: str, policy: RetentionPolicy, failed: frozenset[str] = frozenset()
) -> list[str]:
    """Run a backup every day at 01:00 from first to last, rotating after every good run."""
    stored: list[BackupEntry] = []
    day = dt.date.fromisoformat(first)
    end = dt.date.fromisoformat(last)
    while day <= end:
        t = _day(day.isoformat())
        good = day.isoformat() not in failed
        stored.append(BackupEntry(_bid(t), t, good=good))
        if good:  # rotation runs only after the new backup succeeded
            plan = plan_retention(stored, policy, now=t)
            stored = [b for b in stored if b.backup_id in set(plan.keep)]
        day += dt.timedelta(days=1)
    return sorted(b.created.date().isoformat() for b in stored)


YEAR_CASES = [
    pytest.param(
        "2025-01-01",
        "2025-12-31",
        RetentionPolicy(days=6, weeks=4, months=6),
        frozenset(),
        # daily: Dec 26..31; weekly (Sundays): Dec 7, 14, 21, 28; monthly: Jul 1 .. Dec 1
        [
            "2025-07-01",
            "2025-08-01",
            "2025-09-01",
            "2025-10-01",
            "2025-11-01",
            "2025-12-01",
            "2025-12-07",
            "2025-12-14",
            "2025-12-21",
            "2025-12-26",
            "2025-12-27",
            "2025-12-28",
            "2025-12-29",
            "2025-12-30",
            "2025-12-31",
        ],
        id="seed-6-4-6-year-2025",
    ),
    pytest.param(
        "2025-01-01",
        "2025-06-01",  # a Sunday that is also the 1st
        RetentionPolicy(days=6, weeks=4, months=6),
        frozenset(),
        [
            "2025-01-01",
            "2025-02-01",
            "2025-03-01",
            "2025-04-01",
            "2025-05-01",
            "2025-05-11",
            "2025-05-18",
            "2025-05-25",
            "2025-05-27",
            "2025-05-28",
            "2025-05-29",
            "2025-05-30",
            "2025-05-31",
            "2025-06-01",
        ],
        id="sunday-and-first",
    ),
    pytest.param(
        "2025-01-01",
        "2025-12-31",
        RetentionPolicy(days=3, weeks=2, months=1, weekly_weekday=0),  # Mondays
        frozenset(),
        ["2025-12-01", "2025-12-22", "2025-12-29", "2025-12-30", "2025-12-31"],
        id="monday-weekly-3-2-1",
    ),
    pytest.param(
        "2025-01-01",
        "2025-12-31",
        RetentionPolicy(days=6, weeks=4, months=6),
        # the Sunday Dec 14 run and the Nov 1 run failed: no weekly / monthly copy for them
        frozenset({"2025-12-14", "2025-11-01"}),
        [
            "2025-07-01",
            "2025-08-01",
            "2025-09-01",
            "2025-10-01",
            "2025-12-01",
            "2025-12-07",
            "2025-12-21",
            "2025-12-26",
            "2025-12-27",
            "2025-12-28",
            "2025-12-29",
            "2025-12-30",
            "2025-12-31",
        ],
        id="failed-runs-leave-gaps",
    ),
    pytest.param(
        "2025-01-01",
        "2025-03-10",
        RetentionPolicy(days=0, weeks=0, months=0),
        frozenset(),
        ["2025-03-10"],
        id="zero-keeps-newest-good",
    ),
]


@pytest.mark.parametrize(("first", "last", "policy", "failed", "expected"), YEAR_CASES)
def test_simulated_daily_runs(
    first: str, last: str, policy: RetentionPolicy, failed: frozenset[str], expected: list[str]
) -> None:
    assert _simulate(first, last, policy, failed) == expected


@pytest.mark.parametrize(("first", "last", "policy", "failed", "expected"), YEAR_CASES)
def test_single_plan_equals_cumulative_rotation(
    first: str, last: str, policy: RetentionPolicy, failed: frozenset[str], expected: list[str]
) -> None:
    """Planning once over all runs keeps the same set (good ones) as rotating after every run."""
    start, end = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    entries = [
        BackupEntry(_bid(_day(d.isoformat())), _day(d.isoformat()), good=d.isoformat() not in failed)
        for d in (start + dt.timedelta(days=i) for i in range((end - start).days + 1))
    ]
    plan = plan_retention(entries, policy, now=_day(last))
    kept = sorted(b.created.date().isoformat() for b in entries if b.backup_id in plan.keep)
    assert kept == expected


def test_reasons_are_recorded() -> None:
    t = _day("2025-06-01")
    plan = plan_retention([BackupEntry("a", t)], RetentionPolicy(days=6, weeks=4, months=6), now=t)
    (decision,) = plan.decisions
    assert decision.keep
    assert any(r.startswith("daily copy") for r in decision.reasons)
    assert any(r.startswith("weekly copy (sunday") for r in decision.reasons)
    assert any(r.startswith("monthly copy") for r in decision.reasons)
    assert any("newest good backup" in r for r in decision.reasons)
    assert "| a |" in plan.to_markdown()


@pytest.mark.parametrize(
    ("entries", "now", "keep", "delete"),
    [
        pytest.param(
            # several runs on a Sunday: all are daily copies; only the newest of the day is weekly
            [
                BackupEntry("s1", _day("2025-06-08", 1)),
                BackupEntry("s2", _day("2025-06-08", 13)),
                BackupEntry("later", _day("2025-06-14")),
            ],
            _day("2025-06-14"),
            ["s2", "later"],
            ["s1"],
            id="newest-of-sunday-is-weekly",
        ),
        pytest.param(
            # the newest good backup survives even when far outside every window
            [BackupEntry("old", _day("2020-01-02")), BackupEntry("bad", _day("2025-06-08"), good=False)],
            _day("2025-06-20"),
            ["old"],
            ["bad"],
            id="newest-good-never-deleted-bad-deleted",
        ),
        pytest.param(
            [BackupEntry("future", _day("2025-07-01")), BackupEntry("now", _day("2025-06-20"))],
            _day("2025-06-20"),
            ["future", "now"],
            [],
            id="clock-skew-future-kept",
        ),
        pytest.param([], _day("2025-06-20"), [], [], id="empty"),
        pytest.param(
            # an incomplete backup of a run that may still be writing is left alone; an old one is not
            [
                BackupEntry("good", _day("2025-06-20", 0)),
                BackupEntry("running", _day("2025-06-20", 3), good=False),
                BackupEntry("crashed", _day("2025-06-19", 1), good=False),
            ],
            _day("2025-06-20", 4),
            ["good", "running"],
            ["crashed"],
            id="incomplete-grace",
        ),
    ],
)
def test_edge_cases(entries: list[BackupEntry], now: dt.datetime, keep: list[str], delete: list[str]) -> None:
    plan = plan_retention(entries, RetentionPolicy(days=6, weeks=1, months=1), now=now)
    assert sorted(plan.keep) == sorted(keep)
    assert sorted(plan.delete) == sorted(delete)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"days": -1}, "store.days"),
        ({"weeks": -2}, "store.weeks"),
        ({"months": -1}, "store.months"),
        ({"weekly_weekday": 7}, "store.weekly_weekday"),
        ({"monthly_day": 31}, "store.monthly_day"),
    ],
)
def test_bad_policy(kwargs: dict[str, int], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        RetentionPolicy(**kwargs)


def _entries(*days: str, bad: tuple[str, ...] = ()) -> list[BackupEntry]:
    return [BackupEntry(_bid(_day(d)), _day(d), good=d not in bad) for d in days]


@pytest.mark.parametrize(
    ("policy", "days", "bad", "kept"),
    [
        # count mode: the N newest good backups, dates do not matter
        (
            RetentionPolicy(count=2),
            ("2025-01-01", "2025-03-01", "2025-06-01"),
            (),
            ["2025-06-01", "2025-03-01"],
        ),
        (RetentionPolicy(count=5), ("2025-01-01", "2025-03-01"), (), ["2025-03-01", "2025-01-01"]),
        # failed backups do not count and are deleted; the newest good one stays with count=1
        (
            RetentionPolicy(count=1),
            ("2025-01-01", "2025-01-02", "2025-01-03"),
            ("2025-01-03",),
            ["2025-01-02"],
        ),
        # rotation off: nothing deleted, not even an old incomplete backup or one a year old
        (
            RetentionPolicy(days=1, weeks=0, months=0, rotation=False),
            ("2024-01-01", "2025-01-01", "2025-01-02"),
            ("2024-01-01",),
            ["2025-01-02", "2025-01-01", "2024-01-01"],
        ),
        (
            RetentionPolicy(count=1, rotation=False),
            ("2025-01-01", "2025-01-02"),
            (),
            ["2025-01-02", "2025-01-01"],
        ),
    ],
)
def test_count_retention_and_rotation_off(
    policy: RetentionPolicy, days: tuple[str, ...], bad: tuple[str, ...], kept: list[str]
) -> None:
    plan = plan_retention(_entries(*days, bad=bad), policy, now=_day("2025-07-01", 12))
    assert plan.keep == [_bid(_day(d)) for d in kept]
    reasons = {d.backup_id: d.reasons for d in plan.decisions}
    if not policy.rotation:
        assert all("rotation off" in r[0] for r in reasons.values())
    elif policy.count:
        assert reasons[plan.keep[0]][0].startswith("count copy (1 of the")
        assert all(
            reasons[b] in (("not a good backup",), (f"older than the {policy.count} newest",))
            for b in plan.delete
        )


def test_count_retention_simulated_year() -> None:
    """Daily runs over a year with count=7 leave exactly the last 7 days."""
    left = _simulate("2025-01-01", "2025-12-31", RetentionPolicy(count=7))
    assert left == [f"2025-12-{d}" for d in range(25, 32)]


@pytest.mark.parametrize(
    ("store", "field"),
    [({"count": 0}, "count"), ({"count": 3, "days": 2}, "days"), ({"count": 3, "month": 2}, "months")],
)
def test_count_retention_config_refusals(store: dict[str, int], field: str) -> None:
    from planning.backup_config import parse_job
    from stateferry.errors import InputError

    job = {"job": "x", "type": "files", "sources": [{"target": ["/tmp"]}]}
    with pytest.raises(InputError) as err:
        parse_job({**job, "storages": [{"storage": "local", "backup_dir": "/b", "store": store}]})
    assert err.value.field.endswith(f"store.{field}")
    ok = parse_job(
        {
            **job,
            "storages": [{"storage": "local", "backup_dir": "/b", "store": {"count": 3, "rotation": False}}],
        }
    )
    policy = ok.enabled_storages[0].store.policy()
    assert policy.count == 3 and policy.rotation is False
