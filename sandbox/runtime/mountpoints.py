"""Host mount points of sandbox pods: created when missing, removed only when no namespace uses them.

A pod's volumes are bind mounts inside its private mount namespace, but the mount point itself
(``/etc/etcd/tls``, say) is a directory of the host's file system, shared by every pod on the machine:
the pods of both clusters of a sandbox, and those of other sandboxes running beside it. Linux detaches
the mounts of *every* namespace whose mount point is removed (since 3.18, ``rmdir``/``unlink`` of a
mount point in another namespace unmounts it there), so removing a mount point that a pod of another
cluster still mounts makes its volume vanish under a running process (an etcd then fails every TLS
handshake with ``open /etc/etcd/tls/tls.crt: no such file or directory``). A mount point is therefore
removed only when no process on the machine has anything mounted at it or below it.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable
from pathlib import Path

__all__ = ["ensure", "mounted_anywhere", "remove_unused"]

_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def mounted_anywhere(proc: Path = Path("/proc")) -> set[str]:
    """Every mount point of every mount namespace on the machine (read from ``/proc/*/mountinfo``)."""
    seen_ns: set[str] = set()
    points: set[str] = set()
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            ns = os.readlink(f"{entry.path}/ns/mnt")
            if ns in seen_ns:
                continue
            text = Path(entry.path, "mountinfo").read_text()
        except OSError:
            continue  # gone, or not ours to read
        seen_ns.add(ns)
        for line in text.splitlines():
            fields = line.split(" ")
            if len(fields) > 4:
                points.add(_unescape(fields[4]))
    return points


def ensure(target: Path, *, directory: bool) -> list[Path]:
    """Create a missing mount point (and its missing parents); return what was created, deepest first."""
    if target.exists():
        return []
    missing: list[Path] = []
    cur = target
    while not cur.exists():
        missing.append(cur)
        cur = cur.parent
    for d in reversed(missing[1:]):
        d.mkdir(exist_ok=True)
    if directory:
        target.mkdir(exist_ok=True)
    else:
        target.touch()
    return missing


def remove_unused(created: Iterable[Path], still_used: set[str]) -> list[Path]:
    """Remove created mount points (deepest first) that nothing mounts at or below; return the removed.

    Args:
        created: Paths this pod created, deepest first.
        still_used: Mount targets the caller knows to be in use (its own pods' plans).
    """
    created = list(created)
    if not created:
        return []
    mounted = mounted_anywhere()
    removed: list[Path] = []
    for path in created:
        text = str(path)
        if text in still_used or any(m == text or m.startswith(text.rstrip("/") + "/") for m in mounted):
            continue
        with contextlib.suppress(OSError):
            if path.is_dir():
                path.rmdir()
            else:
                path.unlink()
            removed.append(path)
    return removed
