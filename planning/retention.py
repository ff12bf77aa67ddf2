"""Backup retention as in nxs-backup: ``days`` / ``weeks`` / ``months`` (pure).

Rules (evaluated against ``now``, which the caller passes in; dates are the backups' own calendar
dates in the timezone of the datetimes given, UTC in stateferry):

* **daily**: every good backup whose date lies within the last ``days`` calendar days
  (``now.date() - date < days``) is kept — a daily copy for every run.
* **weekly**: on each ``weekly_weekday`` (Sunday by default) the newest good backup of that day is a
  weekly copy; weekly copies from the last ``weeks * 7`` days are kept.
* **monthly**: on each ``monthly_day`` (the 1st by default) the newest good backup of that day is a
  monthly copy; monthly copies from the last ``months`` calendar months (the current one included)
  are kept.
* the newest good backup is always kept, whatever the counts (so a retention of 0/0/0 still leaves
  one restorable backup, and a clock jump can never empty a storage);
* backups dated after ``now`` (clock skew) are kept and say so;
* backups whose manifest exists but cannot be read are always kept (they may be good);
* backups that are not good (failed / incomplete, e.g. left by a crashed run) are deleted once they
  are older than ``incomplete_grace`` (6 h): a younger one may belong to a run still in progress.

Two more modes (nxs-backup issues #31 and #45):

* **count** (``count=N``): the N newest good backups are kept, whatever their dates; days / weeks /
  months are not used;
* **rotation off** (``rotation=False``): nothing is deleted at all (not even incomplete backups) —
  for storages that must not or cannot delete (a write-only bucket); the caller does not even list.

The planner records every reason a backup is kept, so the plan can be shown and audited.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

WEEKDAYS: tuple[str, ...] = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True)
class RetentionPolicy:
    """How long copies are kept; counts as in nxs-backup's ``store:`` block.

    Attributes:
        days: calendar days for which every run's backup is kept (daily copies).
        weeks: number of weeks for which the weekday's backup is kept (weekly copies).
        months: number of calendar months for which the monthly day's backup is kept.
        weekly_weekday: 0=Monday .. 6=Sunday; the day whose backup becomes the weekly copy.
        monthly_day: day of month (1..28) whose backup becomes the monthly copy.
        count: keep the ``count`` newest good backups instead of days/weeks/months (>= 1).
        rotation: False = never delete anything on this storage.
    """

    days: int = 6
    weeks: int = 4
    months: int = 6
    weekly_weekday: int = 6
    monthly_day: int = 1
    count: int | None = None
    rotation: bool = True

    def __post_init__(self) -> None:
        if self.count is not None and (
            not isinstance(self.count, int) or isinstance(self.count, bool) or self.count < 1
        ):
            raise ValueError(f"store.count must be an integer >= 1, got {self.count!r}")
        for name in ("days", "weeks", "months"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"store.{name} must be an integer >= 0, got {value!r}")
        if not 0 <= self.weekly_weekday <= 6:
            raise ValueError(
                f"store.weekly_weekday must be 0..6 (Monday..Sunday), got {self.weekly_weekday!r}"
            )
        if not 1 <= self.monthly_day <= 28:
            raise ValueError(f"store.monthly_day must be 1..28, got {self.monthly_day!r}")


@dataclass(frozen=True)
class BackupEntry:
    """One backup as the planner sees it.

    Attributes:
        backup_id: identifier unique within a storage (e.g. ``20260101T000000Z``).
        created: when the backup was taken (timezone-aware).
        good: True when the backup completed and was published as good.
        unreadable: its manifest exists but cannot be read or parsed: it is always kept (it may be
            a good backup; an operator decides).
    """

    backup_id: str
    created: dt.datetime
    good: bool = True
    unreadable: bool = False


@dataclass(frozen=True)
class RetentionDecision:
    """The verdict for one backup: keep (with every reason) or delete (with the reason)."""

    backup_id: str
    created: dt.datetime
    keep: bool
    reasons: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class RetentionPlan:
    """All decisions, newest first."""

    decisions: tuple[RetentionDecision, ...]
    note: str = ""

    @property
    def keep(self) -> list[str]:
        """Ids of backups to keep, newest first."""
        return [d.backup_id for d in self.decisions if d.keep]

    @property
    def delete(self) -> list[str]:
        """Ids of backups to delete, newest first."""
        return [d.backup_id for d in self.decisions if not d.keep]

    def to_markdown(self) -> str:
        """Render the plan as a Markdown table (for a Prefect artifact)."""
        lines = [self.note, ""] if self.note else []
        lines += ["| backup | created | verdict | why |", "|---|---|---|---|"]
        for d in self.decisions:
            verdict = "keep" if d.keep else "delete"
            lines.append(f"| {d.backup_id} | {d.created.isoformat()} | {verdict} | {'; '.join(d.reasons)} |")
        return "\n".join(lines)


def _month_index(day: dt.date) -> int:
    return day.year * 12 + day.month - 1


#: Incomplete backups younger than this may belong to a run still in progress: they are kept.
INCOMPLETE_GRACE = dt.timedelta(hours=6)


def plan_retention(
    backups: Iterable[BackupEntry],
    policy: RetentionPolicy,
    now: dt.datetime,
    *,
    incomplete_grace: dt.timedelta = INCOMPLETE_GRACE,
) -> RetentionPlan:
    """Decide which backups to keep and which to delete.

    Args:
        backups: every backup found in one storage (any order; good or not).
        policy: the storage's retention counts.
        now: the reference time (the caller's clock; never read here).
        incomplete_grace: incomplete backups started less than this before ``now`` (or after it) are
            kept, since another run may still be writing them.

    Returns:
        A plan with one decision per backup, newest first; kept backups list every reason.
    """
    entries: Sequence[BackupEntry] = sorted(backups, key=lambda b: (b.created, b.backup_id), reverse=True)
    ids = [b.backup_id for b in entries]
    if len(set(ids)) != len(ids):
        raise ValueError("backup ids must be unique within a storage")
    today = now.date()
    good = [b for b in entries if b.good]
    newest_good = good[0].backup_id if good else None
    if not policy.rotation:
        off = ("rotation off: nothing is deleted on this storage",)
        return RetentionPlan(tuple(RetentionDecision(b.backup_id, b.created, True, off) for b in entries))
    counted = {b.backup_id: i + 1 for i, b in enumerate(good[: policy.count or 0])}

    # The newest good backup of each calendar day (candidate weekly/monthly copy).
    newest_of_day: dict[dt.date, str] = {}
    for b in good:
        newest_of_day.setdefault(b.created.date(), b.backup_id)

    decisions: list[RetentionDecision] = []
    for b in entries:
        day = b.created.date()
        reasons: list[str] = []
        if b.unreadable:
            why = "manifest cannot be read: kept for an operator to inspect"
            decisions.append(RetentionDecision(b.backup_id, b.created, True, (why,)))
            continue
        if not b.good:
            if b.created >= now - incomplete_grace:
                why = "incomplete but recent: another run may still be writing it"
                decisions.append(RetentionDecision(b.backup_id, b.created, True, (why,)))
            else:
                decisions.append(RetentionDecision(b.backup_id, b.created, False, ("not a good backup",)))
            continue
        if b.created > now:
            reasons.append("dated after now (clock skew): kept")
        if policy.count is not None:
            if b.backup_id in counted:
                reasons.append(f"count copy ({counted[b.backup_id]} of the {policy.count} newest)")
            if b.backup_id == newest_good:
                reasons.append("newest good backup: never deleted")
            verdict = (
                (True, tuple(reasons)) if reasons else (False, (f"older than the {policy.count} newest",))
            )
            decisions.append(RetentionDecision(b.backup_id, b.created, *verdict))
            continue
        age_days = (today - day).days
        if 0 <= age_days < policy.days:
            reasons.append(f"daily copy ({age_days} of {policy.days} days old)")
        is_day_copy = newest_of_day.get(day) == b.backup_id
        if is_day_copy and day.weekday() == policy.weekly_weekday and 0 <= age_days < policy.weeks * 7:
            weekday = WEEKDAYS[policy.weekly_weekday]
            reasons.append(f"weekly copy ({weekday}, {age_days // 7 + 1} of {policy.weeks} weeks)")
        age_months = _month_index(today) - _month_index(day)
        if is_day_copy and day.day == policy.monthly_day and 0 <= age_months < policy.months:
            reasons.append(
                f"monthly copy (day {policy.monthly_day}, {age_months + 1} of {policy.months} months)"
            )
        if b.backup_id == newest_good:
            reasons.append("newest good backup: never deleted")
        if reasons:
            decisions.append(RetentionDecision(b.backup_id, b.created, True, tuple(reasons)))
        else:
            decisions.append(RetentionDecision(b.backup_id, b.created, False, ("outside days/weeks/months",)))
    return RetentionPlan(tuple(decisions))
