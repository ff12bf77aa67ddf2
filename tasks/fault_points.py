"""Test-only seam: named points where a test makes a flow fail, as if its run had crashed there.

Production code only calls :func:`reached` and :func:`skipped`; both do nothing unless a test has
entered :func:`crash_after` or :func:`skipping` in the same process (there is no environment variable
or parameter a user could set). The etcd migration's points are ``lb_services``, ``dns``,
``member_add:<pod>``, ``member_deployed:<pod>``, ``member_promoted:<pod>``, ``move_leader``,
``member_removed:<pod>``, ``remove_old:<pod>`` and ``finalize``; its skippable step is ``dns`` (the
DNS hosts are not written: a "wrong DNS" misconfiguration). The mirror journal's point is
``journal_session_saved`` (a first pass killed after its session was saved, before any transfer)
and ``mirror_deletes_approved`` (killed after withheld deletes were approved and recorded, before
the pass that makes them).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["InjectedFault", "crash_after", "reached", "skipped", "skipping"]

_crash_point: str | None = None
_skipped: set[str] = set()


class InjectedFault(RuntimeError):
    """Raised at the point a test named with :func:`crash_after` (a simulated crash)."""


def reached(point: str, detail: str = "") -> None:
    """Mark that the flow has just done ``point`` (for ``detail``); raise when a test asked to crash there.

    Raises:
        InjectedFault: Only inside :func:`crash_after` for this point (``point`` or ``point:detail``).
    """
    if _crash_point and _crash_point in (point, f"{point}:{detail}"):
        raise InjectedFault(f"injected fault after {point}{':' + detail if detail else ''}")


def skipped(step: str) -> bool:
    """True when a test asked the flow to leave out ``step`` (see :func:`skipping`)."""
    return step in _skipped


@contextmanager
def crash_after(point: str) -> Iterator[None]:
    """Within the block, the flow raises :class:`InjectedFault` right after ``point``."""
    global _crash_point
    previous, _crash_point = _crash_point, point
    try:
        yield
    finally:
        _crash_point = previous


@contextmanager
def skipping(step: str) -> Iterator[None]:
    """Within the block, the flow leaves out ``step`` (a misconfiguration a test wants to provoke)."""
    _skipped.add(step)
    try:
        yield
    finally:
        _skipped.discard(step)
