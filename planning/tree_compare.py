"""Compare a restored tree with the live source it was backed up from (pure).

Used by the verification of ``inc_files`` chains: the whole chain up to the new backup is restored
into a scratch directory and every entry is compared with the source as it is *now*. The source may
have changed while or after it was read, so a difference is:

* **drift** (reported, not a failure) when the source entry changed at or after the dump started
  (``changed``: the later of its mtime and ctime), or when a restored entry is gone from the source
  and its source directory changed since;
* a **problem** otherwise: the chain restores something other than what the source held when it was
  read (a lost, stale or extra file: a broken link, a missed deletion, a corrupt archive).

Entries excluded from the backup are left out of the source listing by the caller.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["TreeEntry", "excluded", "tree_differences"]

#: how many problems / drift lines a report lists (the counts are always given)
MAX_LISTED = 20


@dataclass(frozen=True)
class TreeEntry:
    """One entry of a tree: ``kind`` f/l/d, ``digest`` (file sha256, link target, "" for a dir)."""

    kind: str
    digest: str
    changed: float = 0.0


def excluded(rel: str, patterns: Iterable[str]) -> bool:
    """Whether GNU tar's ``--exclude`` (unanchored wildcards) leaves ``rel`` out of the archive.

    An unanchored pattern matches the whole name or any trailing part of it that starts after a
    ``/`` (``*.tmp`` matches ``a/b/x.tmp``; ``cache`` matches ``a/cache``).
    """
    parts = rel.split("/")
    tails = ["/".join(parts[i:]) for i in range(len(parts))]
    return any(fnmatch.fnmatchcase(tail, pat) for pat in patterns for tail in tails)


def _parent(rel: str) -> str:
    return rel.rsplit("/", 1)[0] if "/" in rel else ""


def tree_differences(
    source: Mapping[str, TreeEntry], restored: Mapping[str, TreeEntry], *, started: float
) -> tuple[list[str], list[str]]:
    """``(problems, drift)`` between the live source and the restored tree (same relative names).

    Args:
        source: The source now, by relative name (excluded entries already left out).
        restored: The restored tree, by relative name.
        started: When the dump started (seconds since the epoch, the source's clock).
    """
    problems: list[str] = []
    drift: list[str] = []
    for rel in sorted(set(source) | set(restored)):
        src, got = source.get(rel), restored.get(rel)
        if src is not None and got is not None:
            if (src.kind, src.digest if src.kind != "d" else "") == (
                got.kind,
                got.digest if got.kind != "d" else "",
            ):
                continue
            (drift if src.changed >= started else problems).append(f"{rel}: differs from the source")
        elif src is not None:
            (drift if src.changed >= started else problems).append(f"{rel}: missing from the restored chain")
        else:
            parent = source.get(_parent(rel))
            gone_since = parent is None or parent.changed >= started
            (drift if gone_since else problems).append(f"{rel}: restored, but not in the source")
    return problems, drift


def summarize(lines: list[str], what: str) -> str:
    """``"<n> <what>: a; b; ... (and k more)"``."""
    shown = "; ".join(lines[:MAX_LISTED])
    more = f" (and {len(lines) - MAX_LISTED} more)" if len(lines) > MAX_LISTED else ""
    return f"{len(lines)} {what}: {shown}{more}"
