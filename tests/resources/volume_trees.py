"""Volume trees with every kind of entry a faithful copy must keep, and their comparable metadata
(shared by the mover-binary tests and the sandbox CMS migration)."""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path
from typing import Any

SPARSE_SIZE = 1 << 30  # the 1 GiB sparse file (holes are neither read nor stored)


def posix_acl(entries: list[tuple[int, int, int]]) -> bytes:
    """A POSIX ACL in its xattr form (``system.posix_acl_access``): ``(tag, perm, id)`` entries."""
    return struct.pack("<I", 2) + b"".join(
        struct.pack("<HHI", tag, perm, ident) for tag, perm, ident in entries
    )


NOID = 0xFFFFFFFF
ACL = posix_acl([(1, 6, NOID), (2, 4, 1234), (4, 4, NOID), (0x10, 4, NOID), (0x20, 4, NOID)])
DEFAULT_ACL = posix_acl([(1, 7, NOID), (4, 5, NOID), (8, 5, 4321), (0x10, 5, NOID), (0x20, 0, NOID)])


def build_mysql_like(db: Path) -> None:
    """A MySQL-like data directory: owner 999, 0700 directories, a 3 MiB random file."""
    db.mkdir(parents=True)
    (db / "ibdata1").write_bytes(os.urandom(3 << 20))
    (db / "shop").mkdir()
    (db / "shop" / "t.ibd").write_bytes(b"rows" * 1000)
    for p in (db, db / "shop", db / "ibdata1", db / "shop" / "t.ibd"):
        os.chown(p, 999, 999)
    os.chmod(db, 0o700)
    os.chmod(db / "shop", 0o700)
    os.chmod(db / "ibdata1", 0o660)


def build_wordpress_volume(wp: Path) -> None:
    """A WordPress-like volume: hard link, symlinks (relative, absolute, dangling), a FIFO, a setgid
    directory of another owner, ``user.*`` xattrs, POSIX access and default ACLs, an empty
    directory, a 1 GiB sparse file, an odd file name, a socket and a device node (the last two are
    skipped by the copy, and reported), fixed mtimes."""
    (wp / "uploads" / "empty").mkdir(parents=True, exist_ok=True)
    (wp / "index.php").write_bytes(b"<?php echo 1;")
    os.chmod(wp / "index.php", 0o664)  # filter="data" turned this into 0644
    os.link(wp / "index.php", wp / "uploads" / "hardlink.php")
    (wp / "rel-link").symlink_to("index.php")
    (wp / "abs-link").symlink_to("/etc/hostname")  # kept as a link, never followed
    (wp / "dangling").symlink_to("nowhere/at/all")
    os.mkfifo(wp / "pipe")
    os.chmod(wp / "uploads", 0o2775)
    os.chown(wp / "uploads", 33, 33)
    os.setxattr(wp / "index.php", "user.mime_type", b"text/x-php")
    os.setxattr(wp / "index.php", "system.posix_acl_access", ACL)
    os.setxattr(wp / "uploads", "system.posix_acl_default", DEFAULT_ACL)
    with open(wp / "sparse.img", "wb") as fh:
        fh.truncate(SPARSE_SIZE)
        fh.seek(SPARSE_SIZE // 2)
        fh.write(b"middle")
    (wp / b"odd \xff name\n".decode(errors="surrogateescape")).write_bytes(b"x")
    os.mknod(wp / "php.sock", stat.S_IFSOCK | 0o755)  # what bind() leaves (any path length)
    os.mknod(wp / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.utime(wp / "index.php", ns=(1, 1_000_000_123_456_789))
    os.utime(wp / "rel-link", ns=(1, 1_100_000_000_000_000), follow_symlinks=False)


def build_cms_volume(root: Path) -> None:
    """A volume with every kind of entry the mover must keep (``mysql/`` and ``wp/``)."""
    build_mysql_like(root / "mysql")
    build_wordpress_volume(root / "wp")


def tree_metadata(root: Path) -> dict[str, tuple[Any, ...]]:
    """Per path (``.`` = the root): mode, owner, group, link count, size, mtime, link target and
    xattrs (ACLs included); sockets and device nodes are left out (the copy skips them)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in [".", *dirnames, *filenames]:
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            if stat.S_ISSOCK(st.st_mode) or stat.S_ISCHR(st.st_mode):
                continue
            link = os.readlink(p) if stat.S_ISLNK(st.st_mode) else None
            xattrs = {} if link is not None else {k: os.getxattr(p, k) for k in os.listxattr(p)}
            out[rel] = (
                st.st_mode,
                st.st_uid,
                st.st_gid,
                st.st_nlink,
                st.st_size,
                st.st_mtime_ns,
                link,
                xattrs,
            )
    return out
