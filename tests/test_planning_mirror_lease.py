"""The mirror lease rules (planning/mirror_lease.py), table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from planning.mirror_lease import LeaseRecord, LeaseVerdict, decide_lease, parse_lease

OTHER = LeaseRecord("run-b", "watch-b", "tok-b", 4)
RENEWED = LeaseRecord("run-b", "watch-b", "tok-b", 5)
NEW_HOLDER = LeaseRecord("run-c", "watch-c", "tok-c", 0)
MINE = LeaseRecord("run-a", "watch-a (earlier attempt)", "tok-old", 9)


@pytest.mark.parametrize(
    ("first", "latest", "watched", "finished", "verdict"),
    [
        (None, None, 0.0, False, LeaseVerdict.TAKE),  # free
        (MINE, MINE, 0.0, False, LeaseVerdict.TAKE),  # this run's own (a retry of the same flow run)
        (OTHER, OTHER, 0.0, True, LeaseVerdict.TAKE),  # the holder's run finished (crashed, cancelled)
        (OTHER, OTHER, 3.0, False, LeaseVerdict.WAIT),  # unchanged, not yet for the ttl
        (OTHER, OTHER, 15.0, False, LeaseVerdict.TAKE),  # unchanged for the ttl: dead
        (OTHER, RENEWED, 3.0, False, LeaseVerdict.REFUSE),  # renewed while watched: alive
        (OTHER, NEW_HOLDER, 3.0, False, LeaseVerdict.REFUSE),  # another contender took it
        (None, OTHER, 0.0, False, LeaseVerdict.WAIT),  # appeared since the first read: watch it
        (OTHER, None, 1.0, False, LeaseVerdict.TAKE),  # released meanwhile
    ],
)
def test_decide_lease(
    first: LeaseRecord | None,
    latest: LeaseRecord | None,
    watched: float,
    finished: bool,
    verdict: LeaseVerdict,
) -> None:
    got = decide_lease(
        first, latest, "run-a", watched_seconds=watched, ttl_seconds=15.0, owner_finished=finished
    )
    assert got is verdict


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"owner": "r", "name": "n", "token": "t", "seq": 3}, LeaseRecord("r", "n", "t", 3)),
        ({"owner": "r", "name": "n", "token": "t", "seq": -1}, None),
        ({"owner": "r", "name": "n", "token": "t", "seq": True}, None),
        ({"owner": 1, "name": "n", "token": "t", "seq": 0}, None),
        (["owner"], None),
        ("x", None),
        ({"owner": "r" * 5000, "name": "n", "token": "t", "seq": 0}, LeaseRecord("r" * 200, "n", "t", 0)),
    ],
)
def test_parse_lease_is_hostile_by_default(doc: Any, expected: LeaseRecord | None) -> None:
    assert parse_lease(doc) == expected
