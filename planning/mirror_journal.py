"""Pure journal-aware mirror planner: per key, what to copy / delete / keep during the DNS window.

Inputs per key: the source listing entry ``S``, the destination listing entry ``D`` and the journal
entry ``J`` (what the mirror last saw on each side after its last pass). Output per key: at most one
action towards the destination (``forward``), at most one towards the source (``backward``, two-way
only), a "kept" note, a conflict record, and the journal entry to store when the actions succeed.

Rules (see docs/bucket_mirror.md, "Journal"):

* A side *changed* when its (size, ETag) differs from the journal (appearing and disappearing count).
* Only the source changed -> propagate it (copy / overwrite / delete on the destination; a delete
  one-way only with ``remove``) unless the destination content is a kept client write, which makes
  it a conflict.
* Only the destination changed -> two-way: propagate it to the source; one-way: keep it (a client
  wrote or deleted there; the mirror never rolls it back).
* Both changed to different contents -> conflict, resolved by ``conflict``: ``source``,
  ``destination`` or ``newest`` (later modification time; a write always beats a delete; a tie goes
  to the source).
* Unknown to the journal: on the source only -> copy; on the destination only -> two-way: copy back;
  one-way: delete only with ``remove`` and only in the first pass of a session (the object existed
  before the session), else keep; on both and different -> conflict.

No I/O, no clock, no Prefect.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from planning.mirror import Action, ActionKind, ObjectEntry

__all__ = [
    "JOURNAL_PREFIX",
    "Conflict",
    "Decision",
    "Direction",
    "JournalEntry",
    "JournalOptions",
    "JournalPlan",
    "Winner",
    "decide",
    "plan_with_journal",
]

#: Reserved key prefix (at the bucket root) of the journal objects; never mirrored, verified or removed.
JOURNAL_PREFIX = ".stateferry-mirror/"

Sig = tuple[int, str]


class Direction(StrEnum):
    """Which way changes flow."""

    ONE_WAY = "one-way"
    TWO_WAY = "two-way"


class Winner(StrEnum):
    """Conflict rule (``conflict=`` flow parameter)."""

    SOURCE = "source"
    DESTINATION = "destination"
    NEWEST = "newest"


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """What the mirror last saw of one key.

    Attributes:
        key: Relative key.
        source: (size, ETag) on the source, ``None`` = absent.
        destination: (size, ETag) on the destination, ``None`` = absent.
        origin: ``"source"`` (the destination holds what the mirror copied or found identical) or
            ``"destination"`` (the destination holds a client write the mirror kept).
        time: ISO time of the pass that recorded it (given by the caller).
    """

    key: str
    source: Sig | None
    destination: Sig | None
    origin: str = "source"
    time: str = ""


@dataclass(frozen=True, slots=True)
class JournalOptions:
    """Options of a journal-aware pass.

    Attributes:
        direction: one-way or two-way.
        conflict: Conflict rule.
        remove: One-way: propagate source deletes (and delete pre-session extras in the first pass).
        overwrite: One-way: replace changed destination objects (else kept).
        first_pass: No journal existed: destination-only objects predate the session.
        time: ISO time stamped on new journal entries.
    """

    direction: Direction = Direction.ONE_WAY
    conflict: Winner = Winner.NEWEST
    remove: bool = False
    overwrite: bool = True
    first_pass: bool = False
    time: str = ""


@dataclass(frozen=True, slots=True)
class Conflict:
    """Both sides changed one key differently since the last pass."""

    key: str
    source: str
    destination: str
    winner: str
    rule: str


@dataclass(frozen=True, slots=True)
class Decision:
    """The decision for one key."""

    forward: Action | None = None
    backward: Action | None = None
    kept: str | None = None
    conflict: Conflict | None = None
    journal: JournalEntry | None = None


@dataclass
class JournalPlan:
    """Decisions of one pass over one bucket pair."""

    forward: list[Action] = field(default_factory=list)
    backward: list[Action] = field(default_factory=list)
    kept: list[tuple[str, str]] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    journal: list[JournalEntry] = field(default_factory=list)
    previous: dict[str, JournalEntry | None] = field(default_factory=dict)
    withheld: list[Action] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    source_objects: int = 0
    destination_objects: int = 0

    @property
    def changes(self) -> int:
        """Actions planned in both directions."""
        return len(self.forward) + len(self.backward)


def _sig(entry: ObjectEntry | None) -> Sig | None:
    return None if entry is None else (entry.size, entry.etag)


def _describe(entry: ObjectEntry | None) -> str:
    if entry is None:
        return "deleted"
    return f"{entry.size} B etag {entry.etag[:8]} at {entry.last_modified.isoformat()}"


def _towards(
    origin: ObjectEntry | None, target: ObjectEntry | None, key: str, reason: str, *, remove: bool
) -> Action | None:
    """The action making ``target`` equal to ``origin`` (None when already equal or not allowed)."""
    if origin is None:
        if target is None or not remove:
            return None
        return Action(ActionKind.DELETE, key, target.size, reason, destination=target)
    if target is None:
        return Action(ActionKind.COPY, key, origin.size, reason, source=origin)
    if _sig(origin) == _sig(target):
        return None
    return Action(ActionKind.OVERWRITE, key, origin.size, reason, source=origin, destination=target)


def _winner(src: ObjectEntry | None, dst: ObjectEntry | None, rule: Winner) -> str:
    if rule is Winner.SOURCE:
        return "source"
    if rule is Winner.DESTINATION:
        return "destination"
    if src is None:  # a write always beats a delete
        return "destination"
    if dst is None:
        return "source"
    return "destination" if dst.last_modified > src.last_modified else "source"


def _synced(key: str, sig: Sig | None, origin: str, opts: JournalOptions) -> JournalEntry | None:
    return None if sig is None else JournalEntry(key, sig, sig, origin, opts.time)


def _resolve(
    key: str, src: ObjectEntry | None, dst: ObjectEntry | None, opts: JournalOptions, why: str
) -> Decision:
    winner = _winner(src, dst, opts.conflict)
    conflict = Conflict(key, _describe(src), _describe(dst), winner, f"{opts.conflict.value} ({why})")
    two_way = opts.direction is Direction.TWO_WAY
    if winner == "source":
        action = _towards(src, dst, key, f"conflict: source wins ({opts.conflict.value})", remove=True)
        return Decision(forward=action, conflict=conflict, journal=_synced(key, _sig(src), "source", opts))
    if two_way:
        action = _towards(dst, src, key, f"conflict: destination wins ({opts.conflict.value})", remove=True)
        return Decision(
            backward=action, conflict=conflict, journal=_synced(key, _sig(dst), "destination", opts)
        )
    entry = JournalEntry(key, _sig(src), _sig(dst), "destination", opts.time)
    return Decision(kept="conflict: destination kept", conflict=conflict, journal=entry)


def decide(
    src: ObjectEntry | None, dst: ObjectEntry | None, journal: JournalEntry | None, opts: JournalOptions
) -> Decision:
    """Decide one key from its source entry, destination entry and journal entry.

    Args:
        src: Source listing entry (``None`` = absent).
        dst: Destination listing entry (``None`` = absent).
        journal: Journal entry (``None`` = unknown to the mirror).
        opts: Options.

    Returns:
        The decision; ``journal`` is the entry to store once its actions succeeded.
    """
    key = (src or dst or journal).key  # type: ignore[union-attr]
    s, d = _sig(src), _sig(dst)
    two_way = opts.direction is Direction.TWO_WAY
    if journal is None:
        if src is not None and dst is not None:
            if s == d:
                return Decision(journal=_synced(key, s, "source", opts))
            return _resolve(key, src, dst, opts, "different on both sides, unknown to the journal")
        if src is not None:
            return Decision(
                forward=_towards(src, None, key, "missing on destination", remove=False),
                journal=_synced(key, s, "source", opts),
            )
        assert dst is not None
        if two_way:
            return Decision(
                backward=_towards(dst, None, key, "new on destination", remove=False),
                journal=_synced(key, d, "destination", opts),
            )
        if opts.remove and opts.first_pass:
            return Decision(
                forward=_towards(None, dst, key, "not on source (before the session)", remove=True)
            )
        return Decision(
            kept="destination only (client write)",
            journal=JournalEntry(key, None, d, "destination", opts.time),
        )
    s_changed, d_changed = s != journal.source, d != journal.destination
    if not s_changed and not d_changed:
        return Decision(journal=journal)
    if s_changed and d_changed:
        if s == d:
            return Decision(journal=_synced(key, s, "source", opts))
        return _resolve(key, src, dst, opts, "both sides changed since the last pass")
    if s_changed:
        if journal.origin == "destination" and not two_way and s != d:
            return _resolve(key, src, dst, opts, "source changed over a kept destination write")
        if src is not None and dst is not None and not opts.overwrite and not two_way:
            return Decision(
                kept="differs, overwrite=False", journal=JournalEntry(key, s, d, "destination", opts.time)
            )
        if src is None and not (opts.remove or two_way):
            return Decision(
                kept="deleted on source, remove=False",
                journal=JournalEntry(key, None, d, "destination", opts.time),
            )
        reason = "deleted on source" if src is None else "changed on source"
        return Decision(
            forward=_towards(src, dst, key, reason, remove=True), journal=_synced(key, s, "source", opts)
        )
    # Only the destination changed.
    if two_way:
        reason = "deleted on destination" if dst is None else "changed on destination"
        return Decision(
            backward=_towards(dst, src, key, reason, remove=True),
            journal=_synced(key, d, "destination", opts),
        )
    kept = "deleted on destination (client)" if dst is None else "written on destination (client)"
    return Decision(kept=kept, journal=JournalEntry(key, s, d, "destination", opts.time))


def _merge(
    source: Iterable[ObjectEntry], destination: Iterable[ObjectEntry], journal: Iterable[JournalEntry]
) -> Iterator[tuple[ObjectEntry | None, ObjectEntry | None, JournalEntry | None]]:
    """Three-way sorted merge by key (all inputs sorted by key)."""
    src_it, dst_it, jrn_it = iter(source), iter(destination), iter(journal)
    s, d, j = next(src_it, None), next(dst_it, None), next(jrn_it, None)
    while s is not None or d is not None or j is not None:
        key = min(x.key for x in (s, d, j) if x is not None)
        out_s = s if s is not None and s.key == key else None
        out_d = d if d is not None and d.key == key else None
        out_j = j if j is not None and j.key == key else None
        if out_s is not None:
            s = next(src_it, None)
        if out_d is not None:
            d = next(dst_it, None)
        if out_j is not None:
            j = next(jrn_it, None)
        yield out_s, out_d, out_j


def plan_with_journal(
    source: Iterable[ObjectEntry],
    destination: Iterable[ObjectEntry],
    journal: Iterable[JournalEntry],
    opts: JournalOptions,
    *,
    max_delete_ratio: float = 0.5,
    deletes_approved: bool = False,
    allow_empty_source: bool = False,
) -> JournalPlan:
    """Plan one journal-aware pass (all three inputs sorted by key, excluded keys already filtered).

    Deletes over ``max_delete_ratio`` of a side's objects (unless approved), and deletes on the
    destination while the source listing is empty (and the reverse, two-way; unless
    ``allow_empty_source``), are withheld: their keys keep their old journal entries, so a later pass
    plans them again.

    Returns:
        The plan; ``journal`` is the complete new journal, sorted, assuming every action succeeds
        (``previous`` holds the old entry of every key with an action, to restore on failure).
    """
    plan = JournalPlan()
    for src, dst, old in _merge(source, destination, journal):
        plan.source_objects += src is not None
        plan.destination_objects += dst is not None
        decision = decide(src, dst, old, opts)
        key = (src or dst or old).key  # type: ignore[union-attr]
        if decision.forward or decision.backward:
            plan.previous[key] = old
        if decision.forward:
            plan.forward.append(decision.forward)
        if decision.backward:
            plan.backward.append(decision.backward)
        if decision.kept:
            plan.kept.append((key, decision.kept))
        if decision.conflict:
            plan.conflicts.append(decision.conflict)
        if decision.journal is not None:
            plan.journal.append(decision.journal)
    for side, actions, present, other in (
        ("destination", plan.forward, plan.destination_objects, plan.source_objects),
        ("source", plan.backward, plan.source_objects, plan.destination_objects),
    ):
        deletes = [a for a in actions if a.kind is ActionKind.DELETE]
        if not deletes:
            continue
        why = ""
        if other == 0 and not allow_empty_source:
            why = f"the other side lists no object: {len(deletes)} deletes on the {side} withheld"
        elif len(deletes) > max_delete_ratio * present and not deletes_approved:
            why = (
                f"{len(deletes)} deletes of {present} {side} objects exceed "
                f"max_delete_ratio={max_delete_ratio}: withheld until approved"
            )
        if why:
            plan.notes.append(why)
            plan.withheld.extend(deletes)
            actions[:] = [a for a in actions if a.kind is not ActionKind.DELETE]
    if plan.withheld:
        restore = {a.key for a in plan.withheld}
        plan.journal = [
            e
            for e in (plan.previous[e.key] if e.key in restore else e for e in plan.journal)
            if e is not None
        ]
        kept_keys = {e.key for e in plan.journal}
        for key in sorted(restore - kept_keys):
            old = plan.previous.get(key)
            if old is not None:
                plan.journal.append(old)
        plan.journal.sort(key=lambda e: e.key)
    return plan


def with_written(
    entries: list[JournalEntry], forward: Mapping[str, str], backward: Mapping[str, str]
) -> list[JournalEntry]:
    """Journal entries with the ETags the writes returned: ``forward`` (relative key -> ETag the
    destination returned) replaces the destination's signature, ``backward`` the source's.

    A copy does not always keep the source's ETag (a multipart object written with one PUT gets a
    plain MD5); remembering the source's would make the next pass see a "client write" on the side
    the mirror wrote itself, and a later source delete or update would lose to it.
    """
    out = []
    for e in entries:
        if e.key in forward and e.destination is not None:
            e = replace(e, destination=(e.destination[0], forward[e.key]))
        if e.key in backward and e.source is not None:
            e = replace(e, source=(e.source[0], backward[e.key]))
        out.append(e)
    return out
