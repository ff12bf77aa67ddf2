"""Comparing Redis key counts (pure): a backup's inventory against a restored copy."""

from __future__ import annotations

from typing import Any


def _db_order(name: str) -> tuple[int, str]:
    return (len(name), name)


def keyspace_problems(section: str, want: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """Every database whose keys differ between the backup's inventory and a restored copy.

    Both are ``{"keys": {"db0": n}, "expires": {"db0": n}}`` (``INFO keyspace``). Keys without a TTL
    must all be there; keys with a TTL may have expired since the snapshot, so fewer of them is not a
    failure, more is.

    Returns:
        One message per difference, e.g. ``"redis db3: 4 keys without a TTL restored, 5 in the backup"``.
    """
    problems: list[str] = []
    wk, we = dict(want.get("keys") or {}), dict(want.get("expires") or {})
    gk, ge = dict(got.get("keys") or {}), dict(got.get("expires") or {})
    for db in sorted(set(wk) | set(gk), key=_db_order):
        w_persist = int(wk.get(db, 0)) - int(we.get(db, 0))
        g_persist = int(gk.get(db, 0)) - int(ge.get(db, 0))
        if g_persist != w_persist:
            problems.append(
                f"{section} {db}: {g_persist} keys without a TTL restored, {w_persist} in the backup"
            )
        if int(ge.get(db, 0)) > int(we.get(db, 0)):
            problems.append(
                f"{section} {db}: {ge.get(db)} keys with a TTL restored,"
                f" at most {we.get(db, 0)} in the backup"
            )
    return problems
