"""Pure rule: does a crashed ``bucket_mirror`` run get a successor that resumes from its journal?

A watch lasts as long as the DNS window (days). Its worker may be restarted, its pod evicted, its
process killed: Prefect's runner then marks the run *Crashed* and calls the flow's ``on_crashed``
hooks. A journal-mode run (watch or two-way) of a deployment is safe to run again with the same
parameters: it resumes from the journal, takes the crashed run's lease at once (Prefect reports that
run finished) and does not ask again for an approval already recorded. A one-shot one-way sync is
not restarted (nothing waits on it; the operator re-runs it). Restarts are counted in a tag so a run
that crashes at once every time stops after :data:`MAX_RESTARTS`.

No I/O, no clock, no Prefect.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_RESTARTS", "RESTART_TAG", "RestartDecision", "decide_restart"]

#: Consecutive automatic restarts of one watch before a human has to look.
MAX_RESTARTS = 5
#: Tag prefix counting the restarts: ``stateferry-restart:<n>``.
RESTART_TAG = "stateferry-restart:"


@dataclass(frozen=True, slots=True)
class RestartDecision:
    """Whether to start a successor run, why, and its tags."""

    restart: bool
    reason: str
    tags: tuple[str, ...] = ()
    number: int = 0


def _restarts(tags: Iterable[str]) -> int:
    counts = [t[len(RESTART_TAG) :] for t in tags if t.startswith(RESTART_TAG)]
    return max((int(c) for c in counts if c.isdigit()), default=0)


def decide_restart(
    parameters: Mapping[str, Any], tags: Iterable[str], deployment: bool, max_restarts: int = MAX_RESTARTS
) -> RestartDecision:
    """Decide for one crashed ``bucket_mirror`` run.

    Args:
        parameters: The crashed run's parameters (``options`` fields or the flat names).
        tags: The crashed run's tags.
        deployment: The run belongs to a deployment (a successor is created from it).
        max_restarts: Consecutive restarts allowed.

    Returns:
        The decision; ``tags`` are the successor's (the crashed run's, restart count + 1).
    """
    tags = list(tags)
    nested = parameters.get("options")
    if isinstance(nested, Mapping):  # the options model (flat names are the deprecated spelling)
        parameters = {**parameters, **{k: v for k, v in nested.items() if v is not None}}
    journal = parameters.get("journal")
    journal_mode = bool(parameters.get("watch")) or parameters.get("direction") == "two-way"
    if journal is not None:
        journal_mode = bool(journal)
    if parameters.get("dry_run"):
        return RestartDecision(False, "a dry run is not restarted")
    if not journal_mode:
        return RestartDecision(False, "a one-shot one-way sync is not restarted: run it again when needed")
    if not deployment:
        return RestartDecision(False, "not a deployment run: nothing to start a successor from")
    done = _restarts(tags)
    if done >= max_restarts:
        return RestartDecision(
            False, f"crashed after {done} automatic restarts: left for an operator (re-run the deployment)"
        )
    kept = tuple(t for t in tags if not t.startswith(RESTART_TAG))
    return RestartDecision(
        True,
        f"journal mode: restart {done + 1} of {max_restarts}",
        (*kept, f"{RESTART_TAG}{done + 1}"),
        done + 1,
    )
