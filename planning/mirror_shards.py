"""Pure helpers for sharded mirror passes: key ranges, a bounded key sample, merged shard outcomes.

A sharded pass splits the mirrored key space into contiguous ranges ``(after, upto]`` (by byte order
of the relative keys, S3's listing order). Each shard lists only its range on both sides (S3
``start-after``), plans it with the ordinary planner and acts on it; the coordinator merges the
shards' small outcomes into one report. The ranges cover every key exactly once: the first range has
no lower bound, the last no upper bound.

Safety of deletes per shard: every shard applies ``max_delete_ratio`` to its own range. If each
shard deletes at most that fraction of its destination objects, the whole pass deletes at most that
fraction of all destination objects, so the per-shard rule is never looser than the single-process one.

No I/O, no clock, no Prefect.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from stateferry.errors import InputError

#: A Dask scheduler address (``tcp://host:port`` or ``tls://host:port``).
DASK_ADDRESS = re.compile(r"^(tcp|tls)://[A-Za-z0-9.\-]+(:\d{1,5})?$")

__all__ = [
    "DASK_ADDRESS",
    "KeyRange",
    "ShardOutcome",
    "StrideSample",
    "check_sharding",
    "key_ranges",
    "merge_outcomes",
]


@dataclass(frozen=True)
class KeyRange:
    """Keys ``k`` with ``after < k <= upto`` (``None`` = unbounded on that side).

    Attributes:
        after: Exclusive lower bound (relative key) or ``None``.
        upto: Inclusive upper bound (relative key) or ``None``.
    """

    after: str | None = None
    upto: str | None = None

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        if self.after is not None and key <= self.after:
            return False
        return self.upto is None or key <= self.upto

    def beyond(self, key: str) -> bool:
        """True when ``key`` sorts after the range (a sorted listing can stop there)."""
        return self.upto is not None and key > self.upto

    @property
    def label(self) -> str:
        """``(after, upto]`` for reports."""
        return f"({self.after or '-inf'!s}, {self.upto or '+inf'!s}]"


def key_ranges(sample: Sequence[str], shards: int) -> list[KeyRange]:
    """Split the key space into at most ``shards`` ranges of about equal numbers of sampled keys.

    Args:
        sample: Keys sampled evenly from a listing (any order; duplicates ignored).
        shards: Wanted number of ranges (>= 1).

    Returns:
        Contiguous ranges covering every possible key exactly once, in key order. Fewer than
        ``shards`` when the sample has fewer distinct keys.

    Raises:
        ValueError: ``shards`` < 1.
    """
    if shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")
    keys = sorted(set(sample))
    bounds: list[str] = []
    for i in range(1, shards):
        index = (i * len(keys)) // shards
        if index >= 1 and (not bounds or keys[index - 1] > bounds[-1]):
            bounds.append(keys[index - 1])
    ranges: list[KeyRange] = []
    previous: str | None = None
    for bound in bounds:
        ranges.append(KeyRange(previous, bound))
        previous = bound
    ranges.append(KeyRange(previous, None))
    return ranges


class StrideSample:
    """An evenly spaced sample of a stream of keys in bounded memory (at most ``2 * size`` keys).

    Every ``stride``-th key is kept; when the sample is full, every other kept key is dropped and
    the stride doubles. Deterministic (no randomness), one pass.
    """

    def __init__(self, size: int = 4096) -> None:
        self.size = max(2, size)
        self.stride = 1
        self.seen = 0
        self.keys: list[str] = []

    def add(self, key: str) -> None:
        """Offer the next key of the stream."""
        if self.seen % self.stride == 0:
            self.keys.append(key)
            if len(self.keys) >= 2 * self.size:
                self.keys = self.keys[::2]
                self.stride *= 2
        self.seen += 1

    def extend(self, keys: Iterable[str]) -> StrideSample:
        """Offer many keys; return ``self``."""
        for key in keys:
            self.add(key)
        return self


@dataclass
class ShardOutcome:
    """What one shard did (small: counts and the first failures, never the plan).

    Attributes:
        label: The key range, for reports.
        counts: Transfer counts (copied, overwritten, metadata_updated, deleted, vanished, bytes,
            retries, confirmed, unconfirmed).
        planned: Planned objects per action kind in the shard's first pass.
        withheld_deletes: Deletes withheld by the safety verdicts in the shard's last pass.
        failures: Up to 50 ``"action key: error"`` lines of the shard's last pass.
        passes: Passes run by the shard.
        verified: The shard's range was verified identical.
        detail: How it was verified, or what is left.
        seconds: Wall time of the shard.
        source_objects: Source objects in the range (first pass listing).
    """

    label: str
    counts: dict[str, int] = field(default_factory=dict)
    planned: dict[str, int] = field(default_factory=dict)
    withheld_deletes: int = 0
    failures: list[str] = field(default_factory=list)
    passes: int = 0
    verified: bool = False
    detail: str = ""
    seconds: float = 0.0
    source_objects: int = 0


def merge_outcomes(outcomes: Iterable[ShardOutcome]) -> dict[str, object]:
    """Merge shard outcomes into one summary (sums of counts, all failures, verified if all are).

    Returns:
        ``{"shards", "counts", "planned", "withheld_deletes", "failures", "verified",
        "verification", "slowest_shard_seconds", "source_objects"}``.
    """
    items = list(outcomes)
    counts: dict[str, int] = {}
    planned: dict[str, int] = {}
    for out in items:
        for name, n in out.counts.items():
            counts[name] = counts.get(name, 0) + n
        for name, n in out.planned.items():
            planned[name] = planned.get(name, 0) + n
    unverified = [f"shard {o.label}: {o.detail}" for o in items if not o.verified]
    verified = bool(items) and not unverified
    detail = (
        f"identical: all {len(items)} shards verified"
        if verified
        else "; ".join(unverified) or "no shard ran"
    )
    return {
        "shards": len(items),
        "counts": counts,
        "planned": planned,
        "withheld_deletes": sum(o.withheld_deletes for o in items),
        "failures": [f for o in items for f in o.failures],
        "verified": verified,
        "verification": detail,
        "slowest_shard_seconds": max((o.seconds for o in items), default=0.0),
        "source_objects": sum(o.source_objects for o in items),
    }


def check_sharding(shards: int, bucket: str | None, watch: bool, dry_run: bool, use_journal: bool) -> None:
    """Reject parameter combinations a sharded pass does not support.

    Raises:
        InputError: Naming the field and the fix.
    """
    if not 1 <= shards <= 4096:
        raise InputError("shards", f"must be between 1 and 4096, got {shards}", "use 1 (default) or e.g. 8")
    if shards == 1:
        return
    if bucket is None:
        raise InputError("shards", "sharding needs one source bucket", "give bucket=... or use shards=1")
    if watch or dry_run or use_journal:
        raise InputError(
            "shards",
            "sharded passes are one-shot one-way syncs (no watch, dry_run, journal or two-way)",
            "use shards=1 for those modes",
        )
