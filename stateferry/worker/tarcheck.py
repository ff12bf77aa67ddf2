"""Check a tar stream member by member before GNU tar extracts it.

The archive comes from the object store, so it is untrusted (anyone who can write the bucket can
replace it). GNU tar does the extraction (owners, modes, xattrs, ACLs, sparse files, hard links,
incremental deletions), but every byte it receives has passed :class:`TarGate` first. A member
header is forwarded only after it was checked; data blocks are forwarded as they arrive.

Refused (``UnsafeArchive``): absolute names, ``..`` components, names or hard-link targets that
pass through a symlink (one created earlier in the archive, or present in the target before),
global pax headers that set names, old GNU sparse/multivolume/other unknown member types, and
oversized extended headers. Device nodes are dropped and reported (never created); sockets cannot
be archived. Symlinks themselves may point anywhere: they are created, never followed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

BLOCK = 512
MAX_EXT = 1 << 20
REGULAR = (b"0", b"\0", b"7")
ALLOWED = frozenset([b"0", b"\0", b"1", b"2", b"5", b"6", b"7"])
DEVICES = frozenset([b"3", b"4"])


class UnsafeArchive(Exception):
    """The archive holds a member that would write outside the target or is not allowed."""


def _num(field: bytes) -> int:
    if field and field[0] & 0x80:  # base-256
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    text = field.split(b"\0", 1)[0].strip(b" \0")
    return int(text, 8) if text else 0


def _str(field: bytes) -> str:
    return os.fsdecode(field.split(b"\0", 1)[0])


def _pax(data: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        sp = data.index(b" ", pos)
        length = int(data[pos:sp])
        if length <= 0:
            raise UnsafeArchive("malformed pax header")
        rec = data[sp + 1 : pos + length - 1]
        k, _, v = rec.partition(b"=")
        out[k.decode("utf-8", "surrogateescape")] = v.decode("utf-8", "surrogateescape")
        pos += length
    return out


def clean_name(name: str, what: str) -> str:
    """Normalised relative member name (``.`` for the root).

    Raises:
        UnsafeArchive: absolute, ``..`` component, NUL, or empty.
    """
    if "\0" in name:
        raise UnsafeArchive(f"{what} {name!r} contains NUL")
    if name.startswith("/"):
        raise UnsafeArchive(f"{what} {name!r} is absolute")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f"{what} {name!r} contains '..'")
    return "/".join(parts) or "."


class TarGate:
    """Incremental checker; ``feed(chunk)`` returns the bytes that may be passed on to GNU tar.

    Args:
        root: the extraction directory (its existing symlinks are not traversed either).
        on_skip: called with ``(name, kind)`` for each dropped member (device nodes).
    """

    def __init__(self, root: Path, on_skip: Callable[[str, str], None] = lambda n, k: None) -> None:
        self.on_skip = on_skip
        self.symlinks: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(root):
            for n in dirnames + filenames:
                p = os.path.join(dirpath, n)
                if os.path.islink(p):
                    self.symlinks.add(os.path.relpath(p, root))
        self.buf = b""
        self.data_left = 0  # data bytes (padded) of the current member still to forward
        self.ext_left = 0  # bytes of an extended header still to collect
        self.ext_kind = b""
        self.ext_data = b""
        self.pending = b""  # extended headers waiting for their main header
        self.pax: dict[str, str] = {}
        self.longname: str | None = None
        self.longlink: str | None = None
        self.members = 0
        self.ended = False

    def _check_path(self, name: str, what: str) -> str:
        rel = clean_name(name, what)
        parts = rel.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in self.symlinks:
                raise UnsafeArchive(f"{what} {name!r} passes through the symlink {'/'.join(parts[:i])!r}")
        return rel

    def _header(self, hdr: bytes) -> bytes:
        if hdr == bytes(BLOCK):  # end of archive: whatever follows is never forwarded
            self.ended = True
            return self.pending + hdr + hdr
        chk = _num(hdr[148:156])
        if chk != sum(hdr[:148]) + 256 + sum(hdr[156:]):
            raise UnsafeArchive("bad header checksum (not a tar archive, or corrupted)")
        typ = hdr[156:157]
        size = _num(hdr[124:136])
        if typ in (b"x", b"g", b"L", b"K"):
            if size > MAX_EXT:
                raise UnsafeArchive(f"extended header of {size} bytes")
            self.ext_kind, self.ext_left, self.ext_data = typ, size, b""
            self.pending += hdr
            return b""
        name = _str(hdr[0:100])
        if hdr[257:262] == b"ustar" and hdr[345:500].strip(b"\0"):
            name = _str(hdr[345:500]) + "/" + name
        link = _str(hdr[157:257])
        pax, self.pax = self.pax, {}
        name = self.longname or pax.get("path", name)
        link = self.longlink or pax.get("linkpath", link)
        self.longname = self.longlink = None
        size = int(pax["size"]) if "size" in pax else size
        if typ not in ALLOWED and typ not in DEVICES:
            raise UnsafeArchive(f"member {name!r} has a type that is not allowed ({typ!r})")
        rel = self._check_path(pax.get("GNU.sparse.name", name), "member")
        if "GNU.sparse.name" in pax:
            self._check_path(name, "member")
        for entry in filter(None, pax.get("GNU.dumpdir", "").split("\0")):
            if entry[:1] in ("R", "T", "X"):
                self._check_path(entry[1:], "renamed directory")
            elif "/" in entry[1:] or entry[1:] in ("..", "."):
                raise UnsafeArchive(f"directory {rel!r} lists the bad entry {entry[1:]!r}")
        self.data_left = -(-size // BLOCK) * BLOCK
        self.members += 1
        if typ in DEVICES:
            if size:
                raise UnsafeArchive(f"device {rel!r} carries data")
            self.on_skip(rel, "device")
            self.pending = b""
            return b""
        if typ == b"1":
            self._check_path(link, "hard link target")
        if typ == b"2":
            self.symlinks.add(rel)
        else:
            self.symlinks.discard(rel)
        if typ in (*REGULAR, b"5"):
            # a directory or file replaces whatever was at that name, and everything below it
            prefix = rel + "/"
            self.symlinks = {s for s in self.symlinks if not s.startswith(prefix)}
        out, self.pending = self.pending + hdr, b""
        return out

    def feed(self, chunk: bytes) -> bytes:
        """Consume ``chunk``; return what may be forwarded. Raises :class:`UnsafeArchive`."""
        out = bytearray()
        self.buf += chunk
        while self.buf:
            if self.ended:
                self.buf = b""
                break
            if self.data_left:
                n = min(self.data_left, len(self.buf))
                out += self.buf[:n]
                self.buf = self.buf[n:]
                self.data_left -= n
                continue
            if self.ext_left or self.ext_kind:
                need = -(-self.ext_left // BLOCK) * BLOCK
                if len(self.buf) < need:
                    break
                raw = self.buf[:need]
                self.buf = self.buf[need:]
                self.pending += raw
                data = raw[: self.ext_left]
                if self.ext_kind == b"x":
                    self.pax.update(_pax(data))
                elif self.ext_kind == b"g":
                    g = _pax(data)
                    if {"path", "linkpath", "GNU.sparse.name", "size"} & g.keys():
                        raise UnsafeArchive("global pax header sets names or sizes")
                elif self.ext_kind == b"L":
                    self.longname = _str(data)
                else:
                    self.longlink = _str(data)
                self.ext_left, self.ext_kind = 0, b""
                continue
            if len(self.buf) < BLOCK:
                break
            hdr, self.buf = self.buf[:BLOCK], self.buf[BLOCK:]
            out += self._header(hdr)
        return bytes(out)
