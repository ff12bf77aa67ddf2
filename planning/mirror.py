"""Pure planner for object-store mirroring (``mc mirror`` semantics, safer).

Input: two listings sorted by key (source and destination, keys relative to the mirrored prefix) and
:class:`MirrorOptions`. Output: a :class:`MirrorPlan` of copy / overwrite / delete actions (skips are
only counted) with a reason per action, counts and bytes per kind, and a safety verdict.

The diff is a streaming sorted merge: memory grows with the number of *actions*, not with the size of
the listings, so 100,000-object buckets with a few changes plan in well under a second.

Change detection, per key present on both sides:

1. sizes differ -> overwrite;
2. ETags comparable (both single-part MD5 ETags, or both multipart ETags with the same part count and,
   when known, the same part size) -> differ: overwrite; equal: the content is identical; if the source
   is newer than the destination its metadata may have changed (S3 metadata edits keep the ETag), so
   the metadata is compared when known, otherwise the pair is marked ``inspect`` (the flow fetches the
   metadata with a HEAD and plans the pair again);
3. ETags not comparable -> modification time: source newer -> overwrite; otherwise with
   ``verify="checksum"`` the content checksums are compared (``inspect`` when unknown), else skip.

No I/O, no clock (``now`` is passed in), no Prefect, no client libraries.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from planning.mirror_inputs import parse_duration

__all__ = [
    "Action",
    "ActionKind",
    "MirrorOptions",
    "MirrorPlan",
    "ObjectEntry",
    "UnsortedListing",
    "Verdict",
    "approve_withheld_deletes",
    "etags_comparable",
    "normalize_metadata",
    "plan_mirror",
]

_MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")
_MULTIPART_ETAG = re.compile(r"^[0-9a-f]{32}-(\d+)$")

#: Headers that belong to an object's metadata and are preserved by the mirror.
PRESERVED_HEADERS = (
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "content-type",
)
USER_METADATA_PREFIX = "x-amz-meta-"


@dataclass(frozen=True, slots=True)
class ObjectEntry:
    """One object of a listing.

    Attributes:
        key: Key relative to the mirrored prefix.
        size: Size in bytes.
        etag: ETag without quotes (lower case).
        last_modified: Modification time (timezone-aware).
        metadata: Normalised metadata (see :func:`normalize_metadata`) or ``None`` when not fetched.
        checksum: Content checksum (any algorithm, same on both sides) or ``None`` when not computed.
        part_size: Size of the first part of a multipart object when known, else ``None``.
    """

    key: str
    size: int
    etag: str
    last_modified: datetime
    metadata: tuple[tuple[str, str], ...] | None = None
    checksum: str | None = None
    part_size: int | None = None


class ActionKind(StrEnum):
    """What the mirror does with one key."""

    COPY = "copy"
    OVERWRITE = "overwrite"
    DELETE = "delete"
    SKIP = "skip"
    INSPECT = "inspect"


class Verdict(StrEnum):
    """Safety verdict of a plan."""

    OK = "ok"
    NEEDS_APPROVAL = "needs_approval"  # deletes exceed max_delete_ratio: withheld until approved
    DELETES_BLOCKED = "deletes_blocked"  # source empty: deletes withheld (allow_empty_source=False)


@dataclass(frozen=True, slots=True)
class Action:
    """One planned action.

    Attributes:
        kind: copy / overwrite / delete / inspect.
        key: Relative key.
        size: Bytes moved (source size for copy/overwrite, destination size for delete).
        reason: Why, in words (e.g. ``"etag differs"``).
        metadata_only: Overwrite whose content is identical (only metadata changed).
        source: The source entry, if any.
        destination: The destination entry, if any.
    """

    kind: ActionKind
    key: str
    size: int
    reason: str
    metadata_only: bool = False
    source: ObjectEntry | None = None
    destination: ObjectEntry | None = None


@dataclass(frozen=True)
class MirrorOptions:
    """Options of one mirror pass (``mc mirror`` flag names where they exist).

    Attributes:
        overwrite: Replace objects that differ (else they are skipped with reason "differs").
        remove: Delete destination objects that are not on the source.
        exclude: Glob patterns (``fnmatch``) matched against the relative key; a pattern without ``/``
            also matches the base name. Excluded keys are neither copied nor deleted.
        newer_than: Duration (e.g. ``"7d"``, ``"1h30m"``): only mirror source objects younger than it.
        older_than: Duration: only mirror source objects older than it.
        verify: ``"etag"`` or ``"checksum"`` (compare content checksums when ETags are not comparable).
        max_delete_ratio: Largest fraction of destination objects deleted in one pass without approval.
        deletes_approved: Deletes beyond ``max_delete_ratio`` were approved.
        allow_empty_source: Allow deleting when the source listing is empty.
    """

    overwrite: bool = True
    remove: bool = False
    exclude: tuple[str, ...] = ()
    newer_than: str | None = None
    older_than: str | None = None
    verify: str = "etag"
    max_delete_ratio: float = 0.5
    deletes_approved: bool = False
    allow_empty_source: bool = False

    def __post_init__(self) -> None:
        if self.verify not in ("etag", "checksum"):
            raise ValueError(f"verify must be 'etag' or 'checksum', got {self.verify!r}")
        if not 0.0 <= self.max_delete_ratio <= 1.0:
            raise ValueError(f"max_delete_ratio must be between 0 and 1, got {self.max_delete_ratio!r}")
        for name in ("newer_than", "older_than"):
            value = getattr(self, name)
            if value is not None:
                parse_duration(value, field_name=name)


@dataclass
class MirrorPlan:
    """Result of :func:`plan_mirror`.

    Attributes:
        actions: copy / overwrite / delete / inspect actions, in key order (deletes only if allowed).
        withheld_deletes: Deletes not planned because of the safety verdict.
        verdict: Safety verdict.
        counts: Objects per action kind (``skip`` included; ``delete`` counts planned deletes only).
        bytes: Bytes per action kind.
        skip_reasons: Number of skipped keys per reason.
        source_objects / destination_objects: Listing sizes (after exclusion).
        notes: Human-readable notes (why deletes were withheld, ...).
    """

    actions: list[Action] = field(default_factory=list)
    withheld_deletes: list[Action] = field(default_factory=list)
    verdict: Verdict = Verdict.OK
    counts: dict[str, int] = field(default_factory=lambda: {k.value: 0 for k in ActionKind})
    bytes: dict[str, int] = field(default_factory=lambda: {k.value: 0 for k in ActionKind})
    skip_reasons: dict[str, int] = field(default_factory=dict)
    source_objects: int = 0
    destination_objects: int = 0
    notes: list[str] = field(default_factory=list)

    def of_kind(self, kind: ActionKind) -> list[Action]:
        """Return the planned actions of one kind."""
        return [a for a in self.actions if a.kind is kind]

    @property
    def changes(self) -> int:
        """Number of copy + overwrite + delete actions."""
        return self.counts["copy"] + self.counts["overwrite"] + self.counts["delete"]

    def summary(self) -> dict[str, object]:
        """Plain-dict summary (counts, bytes, verdict) for logs and comparisons."""
        return {
            "counts": dict(self.counts),
            "bytes": dict(self.bytes),
            "verdict": self.verdict.value,
            "withheld_deletes": len(self.withheld_deletes),
        }


def normalize_metadata(headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """Return the preserved part of an object's headers, normalised for comparison.

    Keeps the ``PRESERVED_HEADERS`` and ``x-amz-meta-*`` headers, lower-cases names, strips values,
    and sorts. ``content-type`` defaults to ``binary/octet-stream`` equivalents being treated as-is.

    Args:
        headers: Response headers of a HEAD/GET (any case).

    Returns:
        Sorted tuple of (name, value).
    """
    out: dict[str, str] = {}
    for name, value in headers.items():
        low = name.lower()
        if low in PRESERVED_HEADERS or low.startswith(USER_METADATA_PREFIX):
            out[low] = str(value).strip()
    return tuple(sorted(out.items()))


def etags_comparable(a: ObjectEntry, b: ObjectEntry) -> bool:
    """Whether two objects' ETags identify their content comparably.

    Single-part MD5 ETags always are; multipart ETags are when their part counts are equal and their
    part sizes, when both known, are equal. Anything else (SSE-C/KMS ETags, mixed kinds) is not.
    """
    ea, eb = a.etag, b.etag
    if _MD5_ETAG.match(ea) and _MD5_ETAG.match(eb):
        return True
    ma, mb = _MULTIPART_ETAG.match(ea), _MULTIPART_ETAG.match(eb)
    if ma and mb and ma.group(1) == mb.group(1):
        if a.part_size is not None and b.part_size is not None:
            return a.part_size == b.part_size
        return True
    return False


class KeyFilter:
    """Which listed keys a pass considers: ``exclude`` patterns and the newer_than/older_than window."""

    def __init__(self, options: MirrorOptions, now: datetime | None) -> None:
        self._patterns = tuple(options.exclude)
        self._newest: datetime | None = None
        self._oldest: datetime | None = None
        if options.newer_than or options.older_than:
            if now is None:
                raise ValueError("newer_than/older_than need `now` (pass the current time to plan_mirror)")
            if options.newer_than:
                self._oldest = now - parse_duration(options.newer_than, field_name="newer_than")
            if options.older_than:
                self._newest = now - parse_duration(options.older_than, field_name="older_than")

    def excluded(self, key: str) -> bool:
        if not self._patterns:
            return False
        base = key.rsplit("/", 1)[-1]
        for pattern in self._patterns:
            if fnmatch.fnmatchcase(key, pattern):
                return True
            if "/" not in pattern and fnmatch.fnmatchcase(base, pattern):
                return True
        return False

    def out_of_age(self, entry: ObjectEntry) -> str | None:
        if self._oldest is not None and entry.last_modified < self._oldest:
            return "older than newer_than"
        if self._newest is not None and entry.last_modified > self._newest:
            return "newer than older_than"
        return None


class UnsortedListing(ValueError):
    """A listing is not in byte order of keys (S3 sorts; some S3-compatible stores do not)."""


def _sorted(entries: Iterable[ObjectEntry], side: str) -> Iterator[ObjectEntry]:
    previous: str | None = None
    for entry in entries:
        if previous is not None and entry.key <= previous:
            raise UnsortedListing(
                f"{side} listing is not sorted by key ({previous!r} before {entry.key!r}); "
                "S3 listings are sorted, sort synthetic listings with sorted(..., key=lambda e: e.key)"
            )
        previous = entry.key
        yield entry


def _compare(src: ObjectEntry, dst: ObjectEntry, options: MirrorOptions) -> tuple[ActionKind, str, bool]:
    """Decide one key present on both sides: (kind, reason, metadata_only)."""
    if src.size != dst.size:
        kind = ActionKind.OVERWRITE
        return kind, f"size differs ({dst.size} -> {src.size})", False
    if etags_comparable(src, dst):
        if src.etag != dst.etag:
            return ActionKind.OVERWRITE, "etag differs", False
        if src.last_modified <= dst.last_modified:
            return ActionKind.SKIP, "identical (etag)", False
        # Same content, source changed after the copy: its metadata may have been edited.
        if src.metadata is None or dst.metadata is None:
            return ActionKind.INSPECT, "source newer with same etag: compare metadata", False
        if src.metadata != dst.metadata:
            return ActionKind.OVERWRITE, "metadata differs", True
        return ActionKind.SKIP, "identical (etag, metadata)", False
    if src.last_modified > dst.last_modified:
        return ActionKind.OVERWRITE, "source newer (etags not comparable)", False
    if options.verify == "checksum":
        if src.checksum is None or dst.checksum is None:
            return ActionKind.INSPECT, "etags not comparable: compare checksums", False
        if src.checksum != dst.checksum:
            return ActionKind.OVERWRITE, "checksum differs", False
        return ActionKind.SKIP, "identical (checksum)", False
    return ActionKind.SKIP, "same size, destination not older", False


def plan_mirror(
    source: Iterable[ObjectEntry],
    destination: Iterable[ObjectEntry],
    options: MirrorOptions | None = None,
    *,
    now: datetime | None = None,
) -> MirrorPlan:
    """Plan one mirror pass by a streaming sorted merge of two listings.

    Args:
        source: Source listing, sorted by key (relative keys). May be a generator; an exception raised
            by it propagates, so a failed listing never yields a plan (and never deletes).
        destination: Destination listing, sorted by key.
        options: Mirror options (defaults: overwrite, no remove).
        now: Current time; required when ``newer_than`` / ``older_than`` are set.

    Returns:
        The plan. Deletes beyond ``max_delete_ratio`` (unless approved) or with an empty source
        (unless allowed) are moved to ``withheld_deletes`` and the verdict says why.

    Raises:
        ValueError: A listing is not sorted, or ``now`` is missing for age filters.
    """
    opts = options or MirrorOptions()
    flt = KeyFilter(opts, now)
    plan = MirrorPlan()
    deletes: list[Action] = []
    skip_reasons = plan.skip_reasons

    def skip(reason: str) -> None:
        plan.counts["skip"] += 1
        skip_reasons[reason] = skip_reasons.get(reason, 0) + 1

    def add(action: Action) -> None:
        plan.actions.append(action)
        plan.counts[action.kind.value] += 1
        plan.bytes[action.kind.value] += action.size

    src_it = _sorted(source, "source")
    dst_it = _sorted(destination, "destination")
    src = next(src_it, None)
    dst = next(dst_it, None)
    while src is not None or dst is not None:
        if dst is None or (src is not None and src.key < dst.key):
            assert src is not None
            if not flt.excluded(src.key):
                plan.source_objects += 1
                age = flt.out_of_age(src)
                if age:
                    skip(age)
                else:
                    add(Action(ActionKind.COPY, src.key, src.size, "missing on destination", source=src))
            src = next(src_it, None)
        elif src is None or dst.key < src.key:
            if not flt.excluded(dst.key):
                plan.destination_objects += 1
                if opts.remove:
                    deletes.append(
                        Action(ActionKind.DELETE, dst.key, dst.size, "not on source", destination=dst)
                    )
                else:
                    skip("extra on destination (remove=False)")
            dst = next(dst_it, None)
        else:
            if not flt.excluded(src.key):
                plan.source_objects += 1
                plan.destination_objects += 1
                age = flt.out_of_age(src)
                if age:
                    skip(age)
                else:
                    kind, reason, meta_only = _compare(src, dst, opts)
                    if kind is ActionKind.SKIP:
                        skip(reason)
                    elif kind is ActionKind.OVERWRITE and not opts.overwrite:
                        skip(f"differs, overwrite=False ({reason})")
                    else:
                        add(Action(kind, src.key, src.size, reason, meta_only, src, dst))
            src = next(src_it, None)
            dst = next(dst_it, None)

    if deletes:
        limit = opts.max_delete_ratio * plan.destination_objects
        if plan.source_objects == 0 and not opts.allow_empty_source:
            plan.verdict = Verdict.DELETES_BLOCKED
            plan.withheld_deletes = deletes
            plan.notes.append(
                f"source listing is empty: {len(deletes)} destination deletes withheld "
                "(set allow_empty_source=True if the source is really meant to be empty)"
            )
        elif len(deletes) > limit and not opts.deletes_approved:
            plan.verdict = Verdict.NEEDS_APPROVAL
            plan.withheld_deletes = deletes
            plan.notes.append(
                f"{len(deletes)} deletes of {plan.destination_objects} destination objects exceed "
                f"max_delete_ratio={opts.max_delete_ratio}: withheld until approved"
            )
        else:
            for action in deletes:
                add(action)
            plan.actions.sort(key=lambda a: a.key)
    return plan


def approve_withheld_deletes(plan: MirrorPlan) -> MirrorPlan:
    """Return a copy of ``plan`` whose withheld deletes are planned (after an approval).

    The approved plan is exactly the one shown to the approver: nothing is re-listed.

    Args:
        plan: A plan with verdict ``needs_approval``.

    Returns:
        A new plan with verdict ``ok`` and the deletes in ``actions``.

    Raises:
        ValueError: When the verdict is ``deletes_blocked`` (an empty source is never approved here;
            use ``allow_empty_source``).
    """
    if plan.verdict is Verdict.DELETES_BLOCKED:
        raise ValueError(
            "deletes withheld because the source is empty cannot be approved: set allow_empty_source"
        )
    approved = MirrorPlan(
        actions=sorted([*plan.actions, *plan.withheld_deletes], key=lambda a: a.key),
        verdict=Verdict.OK,
        counts=dict(plan.counts),
        bytes=dict(plan.bytes),
        skip_reasons=dict(plan.skip_reasons),
        source_objects=plan.source_objects,
        destination_objects=plan.destination_objects,
        notes=[*plan.notes, f"{len(plan.withheld_deletes)} deletes approved"],
    )
    approved.counts["delete"] += len(plan.withheld_deletes)
    approved.bytes["delete"] += sum(a.size for a in plan.withheld_deletes)
    return approved
