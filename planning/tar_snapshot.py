"""A GNU tar ``--listed-incremental`` snapshot file read back from storage, checked (pure).

The next incremental hands the previous backup's snapshot to GNU tar, and the snapshot came from a
storage: untrusted. It is accepted only when it is the format GNU tar writes (format 2: a
``GNU tar-<version>-2`` line, then NUL-separated fields: the snapshot time, then per directory
nfs flag, mtime (s, ns), device, inode, name, and its entries ``Y``/``N``/``D`` + name, ending in an
empty field) and every directory lies under one of the job's archived names (relative, no ``..``),
with entries being single names. Anything else: not used (the run takes a full instead).
"""

from __future__ import annotations

import re

#: a snapshot larger than this is not one stateferry wrote for a files job
MAX_SNAPSHOT_BYTES = 256 << 20
_HEADER_RE = re.compile(rb"^GNU tar-[0-9][0-9.]{0,15}-2\n")
_NUM_RE = re.compile(rb"^-?[0-9]{1,20}$")


class BadSnapshot(ValueError):
    """The snapshot is not a GNU tar format-2 snapshot of the job's directories."""


def _name_ok(name: bytes, roots: set[bytes]) -> bool:
    parts = name.split(b"/")
    return bool(name) and not name.startswith(b"/") and b".." not in parts and parts[0] in roots


def check_snapshot(data: bytes, roots: list[str]) -> int:
    """Check a snapshot; returns the number of directories it lists.

    Args:
        data: the snapshot's bytes.
        roots: the archived top-level names (the targets' base names).

    Raises:
        BadSnapshot: naming what is wrong.
    """
    if len(data) > MAX_SNAPSHOT_BYTES:
        raise BadSnapshot(f"{len(data)} bytes is larger than any snapshot of a files job")
    m = _HEADER_RE.match(data)
    if not m:
        raise BadSnapshot("not a GNU tar format-2 snapshot (header)")
    fields = data[m.end() :].split(b"\0")
    allowed = {r.encode() for r in roots}
    if len(fields) < 2 or not all(_NUM_RE.match(f) for f in fields[:2]):
        raise BadSnapshot("bad snapshot time")
    pos, dirs = 2, 0
    while pos < len(fields) - 1:
        head = fields[pos : pos + 6]
        if len(head) < 6 or not all(_NUM_RE.match(f) for f in head[:5]):
            raise BadSnapshot(f"directory record {dirs + 1} is malformed")
        if not _name_ok(head[5], allowed):
            raise BadSnapshot(f"directory {head[5][:80]!r} is not under the archived names")
        pos += 6
        while pos < len(fields) and fields[pos] != b"":
            entry = fields[pos]
            if entry[:1] not in (b"Y", b"N", b"D") or b"/" in entry[1:] or entry[1:] in (b"", b".", b".."):
                raise BadSnapshot(f"directory {head[5][:80]!r} lists a bad entry {entry[:80]!r}")
            pos += 1
        if fields[pos + 1 : pos + 2] != [b""]:  # an empty field ends the entries, one more the record
            raise BadSnapshot(f"directory record {dirs + 1} is not terminated")
        pos += 2
        dirs += 1
    if pos != len(fields) - 1 or fields[-1] != b"":
        raise BadSnapshot("the snapshot does not end with a complete record")
    return dirs


__all__ = ["MAX_SNAPSHOT_BYTES", "BadSnapshot", "check_snapshot"]
