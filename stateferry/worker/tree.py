"""The tree checksum of a volume: content plus the metadata the mover promises to keep.

One line per entry, in sorted path order, hashed with sha256 (the same code runs on both sides):

- ``D <path> <uid> <gid> <mode> <mtime_ns> <xattrs>`` directory (the root is ``.``),
- ``F <path> <uid> <gid> <mode> <mtime_ns> <size> <sha256> <xattrs>`` regular file (holes read as
  zeros, so a sparse file and its copy hash alike),
- ``H <path> <first path>`` another name of a hard-linked file (links inside the tree),
- ``L <path> <uid> <gid> <mtime_ns> <target>`` symlink,
- ``P <path> <uid> <gid> <mode> <mtime_ns>`` FIFO.

``<mode>`` is ``st_mode & 0o7777`` (setuid/setgid/sticky included); ``<xattrs>`` lists ``user.*``
attributes and POSIX ACLs (``system.posix_acl_*``) as ``name=sha256(value)``. Sockets and device
nodes are not copied: they are listed in ``skipped`` and left out of the checksum on both sides.
``lost+found`` at the root is ignored. Paths are written with ``os.fsencode`` and escaped, so any
byte sequence in a name is covered. An unreadable entry raises :class:`TreeError` naming it.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

IGNORED_AT_ROOT = frozenset({"lost+found"})
#: the mover's own directories while it replaces data (:mod:`stateferry.worker.swap`): never archived
#: or counted
TRANSIENT_PREFIXES = (".stateferry-restore-", ".stateferry-old-")
KEPT_XATTR_PREFIXES = ("user.", "system.posix_acl_access", "system.posix_acl_default")
_ZEROS = bytes(1 << 20)


class TreeError(Exception):
    """The tree cannot be read completely (permission denied, vanished entry ...)."""


def _q(rel: str) -> str:
    return os.fsencode(rel).decode("ascii", "backslashreplace").replace(" ", "\\x20").replace("\n", "\\n")


def walk(root: Path) -> list[tuple[str, os.stat_result]]:
    """``(relative path, lstat)`` of every entry under ``root`` (``.`` = the root), sorted.

    Raises:
        TreeError: a directory or entry cannot be read; the message names it and the user.
    """
    out: list[tuple[str, os.stat_result]] = []

    def fail(path: str, exc: OSError) -> TreeError:
        return TreeError(
            f"cannot read {path}: {exc.strerror or exc} (mover runs as uid {os.getuid()} gid {os.getgid()}"
            f" groups {sorted(os.getgroups())}); run the mover as root with DAC_READ_SEARCH (the default) "
            "or as the workload's runAsUser/fsGroup"
        )

    try:
        out.append((".", os.lstat(root)))
    except OSError as exc:
        raise fail(str(root), exc) from exc
    stack = [("", str(root))]
    while stack:
        rel_dir, abs_dir = stack.pop()
        try:
            with os.scandir(abs_dir) as it:
                entries = list(it)
        except OSError as exc:
            raise fail(abs_dir, exc) from exc
        for e in entries:
            if not rel_dir and (e.name in IGNORED_AT_ROOT or e.name.startswith(TRANSIENT_PREFIXES)):
                continue
            rel = f"{rel_dir}/{e.name}" if rel_dir else e.name
            try:
                st = e.stat(follow_symlinks=False)
            except OSError as exc:
                raise fail(e.path, exc) from exc
            out.append((rel, st))
            if stat.S_ISDIR(st.st_mode):
                stack.append((rel, e.path))
    out.sort(key=lambda x: os.fsencode(x[0]))
    return out


def _xattrs(path: str) -> str:
    try:
        names = sorted(
            n for n in os.listxattr(path, follow_symlinks=False) if n.startswith(KEPT_XATTR_PREFIXES)
        )
    except OSError:
        return "-"
    parts = []
    for n in names:
        try:
            parts.append(
                f"{n}={hashlib.sha256(os.getxattr(path, n, follow_symlinks=False)).hexdigest()[:32]}"
            )
        except OSError:
            continue
    return ",".join(parts) or "-"


def file_sha256(path: str) -> str:
    """sha256 of a file's bytes; holes are hashed as zeros without being read from disk."""
    h = hashlib.sha256()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise TreeError(f"cannot read {path}: {exc.strerror} (uid {os.getuid()})") from exc
    try:
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size:
            try:
                data_at = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # no more data: the rest is a hole
                data_at = size
            while pos < data_at:  # hole
                n = min(len(_ZEROS), data_at - pos)
                h.update(_ZEROS[:n])
                pos += n
            if pos >= size:
                break
            try:
                hole_at = os.lseek(fd, pos, os.SEEK_HOLE)
            except OSError:
                hole_at = size
            os.lseek(fd, pos, os.SEEK_SET)
            while pos < hole_at:
                chunk = os.read(fd, min(1 << 20, hole_at - pos))
                if not chunk:
                    break
                h.update(chunk)
                pos += len(chunk)
    finally:
        os.close(fd)
    return h.hexdigest()


def in_paths(rel: str, only: list[str] | None) -> bool:
    """True when ``rel`` is one of ``only`` or under one of them (always when ``only`` is None)."""
    return only is None or any(rel == p or rel.startswith(p + "/") for p in only)


def tree_checksum(
    root: Path, cache: dict[str, list[Any]] | None = None, only: list[str] | None = None
) -> dict[str, Any]:
    """Checksum, counts and skipped special files of the tree under ``root``.

    Args:
        cache: ``sums`` of an earlier call: a file whose inode, size, mtime and ctime are unchanged
            is not read again (ctime cannot be set back from user space, so any write, chmod,
            chown or xattr change invalidates the entry).
        only: relative paths (``uploads``, ``a/b``): the checksum covers these and what is under
            them, not their parent directories (what ``pack --only`` archives).

    Returns:
        ``{"sha256_tree", "files", "bytes", "allocated", "skipped": [[path, kind], ...],
        "sums": {path: [ino, size, mtime_ns, ctime_ns, sha256]}}``.
    """
    cache = cache or {}
    sums: dict[str, list[Any]] = {}
    h = hashlib.sha256()
    files = size = allocated = 0
    skipped: list[list[str]] = []
    first_name: dict[tuple[int, int], str] = {}
    for rel, st in walk(root):
        if not in_paths(rel, only):
            continue
        path = str(root) if rel == "." else os.path.join(root, rel)
        m = st.st_mode
        owner = f"{st.st_uid} {st.st_gid}"
        if stat.S_ISLNK(m):
            h.update(f"L {_q(rel)} {owner} {st.st_mtime_ns} {_q(os.readlink(path))}\n".encode())
        elif stat.S_ISDIR(m):
            h.update(f"D {_q(rel)} {owner} {m & 0o7777:o} {st.st_mtime_ns} {_xattrs(path)}\n".encode())
        elif stat.S_ISREG(m):
            ino = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and ino in first_name:
                h.update(f"H {_q(rel)} {_q(first_name[ino])}\n".encode())
                continue
            if st.st_nlink > 1:
                first_name[ino] = rel
            key = [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
            hit = cache.get(rel)
            sha = hit[4] if hit and list(hit[:4]) == key else file_sha256(path)
            sums[rel] = [*key, sha]
            meta = f"{owner} {m & 0o7777:o} {st.st_mtime_ns} {st.st_size}"
            h.update(f"F {_q(rel)} {meta} {sha} {_xattrs(path)}\n".encode())
            files += 1
            size += st.st_size
            allocated += st.st_blocks * 512
        elif stat.S_ISFIFO(m):
            h.update(f"P {_q(rel)} {owner} {m & 0o7777:o} {st.st_mtime_ns}\n".encode())
        else:
            kind = (
                "socket" if stat.S_ISSOCK(m) else "device" if stat.S_ISCHR(m) or stat.S_ISBLK(m) else "other"
            )
            skipped.append([rel, kind])
    return {
        "sha256_tree": h.hexdigest(),
        "files": files,
        "bytes": size,
        "allocated": allocated,
        "skipped": skipped,
        "sums": sums,
    }
