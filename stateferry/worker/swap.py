"""Replacing data in a volume only after the replacement is proven (``unpack --replace``).

The archive is extracted into ``<volume>/.stateferry-restore-<token>/`` and its tree checksum must
equal the backup's before anything that was there is touched. Then each path (or, for the whole
volume, each top-level entry) is moved aside into ``<volume>/.stateferry-old-<token>/`` and the
restored one renamed into its place (renames inside one file system: no data is copied); the moved
entries get their own times back (a rename may update a directory's). The old data is removed only
after the volume's checksum equals the backup's; otherwise it stays in ``.stateferry-old-<token>``
and the error says so. Both directory names are left out of archives and checksums
(:data:`stateferry.worker.tree.TRANSIENT_PREFIXES`).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stateferry.worker.tree import IGNORED_AT_ROOT, TRANSIENT_PREFIXES, tree_checksum


class SwapError(Exception):
    """The replacement could not be proven or put in place (the message says where the data is)."""


def _move(src: Path, dst: Path) -> None:
    st = src.lstat()
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.rename(src, dst)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _top_level(root: Path) -> list[str]:
    return sorted(
        n for n in os.listdir(root) if n not in IGNORED_AT_ROOT and not n.startswith(TRANSIENT_PREFIXES)
    )


def replace_tree(
    root: Path, expect: str, only: list[str] | None, extract: Callable[[Path], Any]
) -> tuple[dict[str, Any], Any]:
    """Extract into a staging directory, prove it, swap it in; returns ``(checksum, extract's result)``.

    Raises:
        SwapError: the staged copy is not the backup (nothing was touched: staging removed), or the
            volume differs after the swap (the previous data is kept, named in the message).
    """
    token = secrets.token_hex(4)
    staging = root / f"{TRANSIENT_PREFIXES[0]}{token}"
    old = root / f"{TRANSIENT_PREFIXES[1]}{token}"
    staging.mkdir(mode=0o700)
    try:
        extracted = extract(staging)
        staged = tree_checksum(staging, only=only)
        if staged["sha256_tree"] != expect:
            raise SwapError(
                f"the archive gives checksum {staged['sha256_tree'][:12]}, the backup {expect[:12]}; "
                "the volume was not touched"
            )
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    root_st = staging.lstat()
    names = only if only else sorted(set(_top_level(root)) | set(_top_level(staging)))
    for rel in names:
        if os.path.lexists(root / rel):
            _move(root / rel, old / rel)
        if os.path.lexists(staging / rel):
            _move(staging / rel, root / rel)
    if not only:  # the volume's root carries the archive's owner, mode and times
        os.chown(root, root_st.st_uid, root_st.st_gid)
        os.chmod(root, root_st.st_mode & 0o7777)
    shutil.rmtree(staging, ignore_errors=True)
    if not only:
        os.utime(root, ns=(root_st.st_atime_ns, root_st.st_mtime_ns))
    after = tree_checksum(root, only=only)
    if after["sha256_tree"] != expect:
        raise SwapError(
            f"after the swap the volume's checksum is {after['sha256_tree'][:12]}, the backup's"
            f" {expect[:12]}; the previous data is kept in {old.name}"
        )
    shutil.rmtree(old, ignore_errors=True)
    if not only:  # removing the old directory touched the root again
        os.utime(root, ns=(root_st.st_atime_ns, root_st.st_mtime_ns))
    return after, extracted
