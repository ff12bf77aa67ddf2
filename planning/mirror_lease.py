"""Pure rules of the mirror lease: one run at a time acts on a bucket pair.

A watch can outlive its worker: a re-run (by hand, or by the crash hook) must resume, but the old
process may still be alive (a network partition, a worker that Prefect marked crashed while its pod
kept running). Two runs acting on one pair would each overwrite the other's journal. The lease is a
small object next to the journal, ``{"owner", "name", "token", "seq"}``, rewritten by its holder
every few seconds with ``seq + 1``.

Expiry is judged by what the contender *observes*, never by comparing clocks of two machines: a
lease whose ``(token, seq)`` has not moved for ``ttl`` seconds of the contender's own clock is dead.
A lease seen to move belongs to a live run: the contender refuses at once (it never waits for a run
that will go on for days). A lease whose owner run Prefect reports finished (crashed, cancelled,
failed, completed) is taken at once.

No I/O, no clock, no Prefect: the caller passes what it read and how long it has watched.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["LeaseRecord", "LeaseVerdict", "decide_lease", "parse_lease"]


class LeaseVerdict(StrEnum):
    """What a contender does next."""

    TAKE = "take"  # free, ours, or dead: write our lease
    WAIT = "wait"  # unchanged so far: read again later
    REFUSE = "refuse"  # a live run holds it


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """One read of the lease object.

    Attributes:
        owner: Flow run id of the holder (or a process id outside Prefect).
        name: Flow run name of the holder (for messages).
        token: Random per acquisition: a new holder always writes a new token.
        seq: Renewal counter of that token.
    """

    owner: str
    name: str
    token: str
    seq: int

    def to_json(self) -> dict[str, Any]:
        """The object's JSON body."""
        return {"owner": self.owner, "name": self.name, "token": self.token, "seq": self.seq}


def parse_lease(doc: Any) -> LeaseRecord | None:
    """A lease from its JSON body; ``None`` when it is not one (then it is treated as absent:
    whatever wrote it is not a stateferry run holding the pair)."""
    if not isinstance(doc, dict):
        return None
    owner, name, token, seq = (doc.get(k) for k in ("owner", "name", "token", "seq"))
    if not (isinstance(owner, str) and isinstance(name, str) and isinstance(token, str)):
        return None
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        return None
    return LeaseRecord(owner[:200], name[:200], token[:200], seq)


def decide_lease(
    first: LeaseRecord | None,
    latest: LeaseRecord | None,
    me: str,
    *,
    watched_seconds: float,
    ttl_seconds: float,
    owner_finished: bool,
) -> LeaseVerdict:
    """Decide from the first and the latest read of the lease.

    Args:
        first: The lease as first read by this contender (``None``: no lease).
        latest: The lease as read now.
        me: This run's owner id.
        watched_seconds: Seconds (own clock) between the first and the latest read.
        ttl_seconds: A lease unchanged this long is dead.
        owner_finished: Prefect reports the holder's flow run in a final state.

    Returns:
        The verdict.
    """
    if latest is None or latest.owner == me or owner_finished:
        return LeaseVerdict.TAKE
    if first is None or (first.token, first.seq) != (latest.token, latest.seq):
        return LeaseVerdict.REFUSE if first is not None else LeaseVerdict.WAIT
    return LeaseVerdict.TAKE if watched_seconds >= ttl_seconds else LeaseVerdict.WAIT
