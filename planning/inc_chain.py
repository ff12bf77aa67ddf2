"""Incremental file backups (``type: inc_files``): chains of a full and its incrementals (pure).

A chain starts with a **full** backup (level 0) and goes on with **incrementals** (level n + 1 holds
what changed since level n, GNU tar ``--listed-incremental``). Each backup's manifest names its
chain: ``{"full": <id of the full>, "parent": <id of the previous link> | None, "level": n}``.

* :func:`next_backup`: a full at the start of each period (``full_every``: ``month`` (default),
  ``week`` or ``N days``), when there is no usable chain, or when the chain's newest link is broken;
  otherwise an incremental on top of the newest good link.
* :func:`chain_to`: the links to apply, full first, to restore one point; every link must be there,
  good and consistent (levels, full ids, order in time), else :class:`InputError` names the gap.
* :func:`chain_protection`: what retention must keep so that no kept point loses a link.

Manifests are read back from storage, so the chain fields are untrusted: ids must be backup ids of
the layout, levels small non-negative integers, and cycles are impossible by construction (a parent
must be strictly older and one level lower).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from planning.backup_layout import is_backup_id
from planning.retention import RetentionPlan
from stateferry.errors import InputError

#: a chain longer than this is refused (a hostile manifest cannot make a restore loop for long)
MAX_LEVEL = 10_000
_EVERY_RE = re.compile(r"^(?:(month|week)|([1-9][0-9]{0,3}) ?days?)$")


@dataclass(frozen=True)
class FullEvery:
    """When a new full starts: each calendar ``month`` / ISO ``week``, or after ``days`` days."""

    kind: str  # "month" | "week" | "days"
    days: int = 0


def parse_full_every(value: object, field: str = "sources[0].full_every") -> FullEvery:
    """``month`` | ``week`` | ``N days`` (1..9999).

    Raises:
        InputError: naming ``field``.
    """
    m = _EVERY_RE.match(str(value).strip().lower()) if isinstance(value, (str, int)) else None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return FullEvery("days", value)
    if not m:
        raise InputError(field, f"{str(value)[:30]!r} is not a period", "use month, week or e.g. '7 days'")
    return FullEvery(m.group(1)) if m.group(1) else FullEvery("days", int(m.group(2)))


def check_incremental(inc_type: bool, worker_files: bool, full_every: bool) -> None:
    """A job's ``inc_files`` settings fit together (``worker_files``: the source is files on the worker).

    Raises:
        InputError: naming ``type`` or ``sources[0].full_every``.
    """
    if inc_type and not worker_files:
        raise InputError("type", "inc_files of a PVC is not built", "use type: files with a pvc source")
    if full_every and not inc_type:
        raise InputError("sources[0].full_every", "applies to type: inc_files only", "remove full_every")


@dataclass(frozen=True)
class Link:
    """One backup of an incremental job, as its manifest describes it."""

    backup_id: str
    created: dt.datetime
    good: bool
    full: str | None
    parent: str | None
    level: int | None


def link_of(backup_id: str, created: dt.datetime, good: bool, chain: Any) -> Link:
    """A :class:`Link` from a manifest's untrusted ``chain`` field (malformed -> no chain)."""
    ok = (
        isinstance(chain, dict)
        and is_backup_id(chain.get("full"))
        and (chain.get("parent") is None or is_backup_id(chain.get("parent")))
        and isinstance(chain.get("level"), int)
        and not isinstance(chain.get("level"), bool)
        and 0 <= chain["level"] <= MAX_LEVEL
        and (chain["level"] == 0) == (chain.get("parent") is None)
        and (chain["level"] != 0 or chain["full"] == backup_id)
    )
    if not ok:
        return Link(backup_id, created, good, None, None, None)
    return Link(backup_id, created, good, chain["full"], chain.get("parent"), chain["level"])


@dataclass(frozen=True)
class NextBackup:
    """What the next run writes."""

    full: bool
    parent: str | None
    full_id: str | None  # None for a new full (it is its own id)
    level: int
    reason: str

    def chain(self, backup_id: str) -> dict[str, Any]:
        """The manifest's ``chain`` field for the new backup ``backup_id``."""
        return {"full": backup_id if self.full else self.full_id, "parent": self.parent, "level": self.level}


def _due(full_created: dt.datetime, now: dt.datetime, every: FullEvery) -> str | None:
    if every.kind == "month" and (full_created.year, full_created.month) != (now.year, now.month):
        return f"a new month ({now:%Y-%m}) starts a new chain"
    if every.kind == "week" and full_created.isocalendar()[:2] != now.isocalendar()[:2]:
        return f"a new week ({now.isocalendar()[0]}-W{now.isocalendar()[1]:02d}) starts a new chain"
    if every.kind == "days" and now - full_created >= dt.timedelta(days=every.days):
        return f"the full is {every.days} day(s) old or older"
    return None


def next_backup(links: Iterable[Link], now: dt.datetime, every: FullEvery) -> NextBackup:
    """Full or incremental, and on top of which link (``now`` in the job's timezone)."""
    by_id = {link.backup_id: link for link in links}
    good = sorted((x for x in by_id.values() if x.good and x.created <= now), key=lambda x: x.created)
    if not good:
        return NextBackup(True, None, None, 0, "no earlier backup: a full starts the chain")
    newest = good[-1]
    try:
        chain = chain_to(by_id, newest.backup_id)
    except InputError as exc:
        return NextBackup(True, None, None, 0, f"the newest backup's chain is unusable ({exc.problem})")
    reason = _due(chain[0].created, now, every)
    if reason:
        return NextBackup(True, None, None, 0, reason)
    level = len(chain)
    return NextBackup(False, newest.backup_id, chain[0].backup_id, level, f"incremental level {level}")


def chain_to(links: Mapping[str, Link], target: str) -> list[Link]:
    """The links to apply, full first, to restore ``target``.

    Raises:
        InputError: field ``backup``: a link is missing, not good or inconsistent.
    """
    out: list[Link] = []
    current: str | None = target
    while current is not None:
        link = links.get(current)
        if link is None or not link.good:
            state = "missing" if link is None else "not good"
            raise InputError(
                "backup",
                f"the chain of {target} needs {current}, which is {state}",
                "restore another point (an older full or a later chain), or from another storage",
            )
        if link.level is None:
            raise InputError(
                "backup", f"{current} does not describe its place in a chain", "restore another point"
            )
        if out:
            child = out[-1]
            if (
                link.level != (child.level or 0) - 1
                or link.full != child.full
                or link.created >= child.created
            ):
                raise InputError(
                    "backup",
                    f"{child.backup_id} names {current} as its parent, which does not fit (level, full"
                    " or time)",
                    "restore another point; the manifests of this chain were altered",
                )
        out.append(link)
        current = link.parent
        if len(out) > MAX_LEVEL + 1:
            raise InputError(
                "backup", "the chain is longer than any stateferry writes", "restore another point"
            )
    out.reverse()
    if out[0].full != out[0].backup_id:
        raise InputError(
            "backup", f"the chain of {target} does not start at its full", "restore another point"
        )
    return out


def chain_protection(links: Iterable[Link], kept: Iterable[str]) -> dict[str, str]:
    """Backups that retention must keep because a kept point needs them: id -> reason.

    Every good ancestor (parent, its parent, ... up to the full) of every kept backup is protected,
    whatever the days/weeks/months/count plan says; a broken link protects nothing beyond it.
    """
    by_id = {link.backup_id: link for link in links}
    out: dict[str, str] = {}
    for kid in sorted(set(kept)):
        link = by_id.get(kid)
        seen = 0
        while link is not None and link.parent is not None and seen <= MAX_LEVEL:
            parent = by_id.get(link.parent)
            if parent is None or not parent.good:
                break
            out.setdefault(parent.backup_id, f"needed by the chain of {kid} (level {parent.level})")
            link, seen = parent, seen + 1
    return out


def protect_chains(plan: RetentionPlan, links: Iterable[Link]) -> RetentionPlan:
    """``plan`` with every link a kept backup needs turned into a keep (reason added)."""
    protected = chain_protection(links, plan.keep)
    return RetentionPlan(
        tuple(
            replace(d, keep=True, reasons=(*d.reasons, protected[d.backup_id]))
            if not d.keep and d.backup_id in protected
            else d
            for d in plan.decisions
        ),
        note=plan.note,
    )


__all__ = [
    "FullEvery",
    "Link",
    "NextBackup",
    "chain_protection",
    "chain_to",
    "check_incremental",
    "link_of",
    "next_backup",
    "parse_full_every",
    "protect_chains",
]
