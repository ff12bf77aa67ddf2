"""Checks for a MariaDB physical backup read back from storage (pure: no I/O, no clock, no clients).

``mariadb-backup --backup --stream=xbstream`` writes a stream of chunks; ``mbstream -x`` opens every
chunk's path relative to its directory *without any check* (``../x`` or ``/etc/x`` are written where
they say), and ``mariadb-backup --prepare`` reads ``backup-my.cnf`` from the backup as its own option
file (``innodb_data_home_dir=/var/lib/mysql`` would point it at a live server's files). A stream from
storage is untrusted, so:

- :class:`XbstreamGate` parses the stream as it passes to ``mbstream`` and stops it at the first chunk
  whose path is not a plain relative name, whose type is unknown, or whose offset does not continue
  its file (the format, from MariaDB's ``extra/mariabackup/xbstream_read.cc``: ``XBSTCK01`` magic,
  flags byte, type ``P`` payload / ``E`` end of file, little-endian u32 path length, the path, and for
  ``P`` u64 length, u64 offset, u32 CRC-32, the payload; ``mbstream`` checks the CRC itself);
- :func:`prepare_options` reads ``backup-my.cnf`` and accepts only the InnoDB layout keys
  ``mariadb-backup`` writes there, with values that are numbers or file names without a directory.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

MAGIC = b"XBSTCK01"
_HEADER = 14  # magic 8, flags 1, type 1, path length 4
_PAYLOAD_HEADER = 20  # length 8, offset 8, checksum 4
#: MariaDB's FN_REFLEN: ``mbstream`` refuses longer paths too
MAX_PATH = 512
#: one component: what MariaDB writes for database and table files (``@XXXX`` encodes the rest)
_COMPONENT = re.compile(r"^[A-Za-z0-9_@$#+=.,][A-Za-z0-9_@$#+=.,-]{0,199}$")
#: ``.isl``: InnoDB link files hold an absolute path to a tablespace outside the data directory
_REFUSED_SUFFIXES = (".isl",)
_MAX_DEPTH = 3


class XbstreamError(ValueError):
    """The stream is not a backup this restore may unpack (the message says which chunk and why)."""


def check_member_path(raw: bytes) -> str:
    """The path of one chunk as a relative name inside the backup directory.

    Raises:
        XbstreamError: not UTF-8, absolute, with ``.``/``..``/empty components, a character MariaDB
            never writes in a file name, deeper than ``db/table`` files, or a link file (``.isl``).
    """
    try:
        path = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise XbstreamError(f"member name {raw[:60]!r} is not UTF-8") from None
    parts = path.split("/")
    if not path or path.startswith("/"):
        raise XbstreamError(f"member name {path[:80]!r} is not a relative name inside the backup")
    for part in parts:
        if part in (".", "..") or not _COMPONENT.match(part):
            raise XbstreamError(f"member name {path[:80]!r} has a component {part[:40]!r} outside the layout")
    if len(parts) > _MAX_DEPTH:
        raise XbstreamError(f"member name {path[:80]!r} is deeper than the data directory's layout")
    if path.endswith(_REFUSED_SUFFIXES):
        raise XbstreamError(
            f"member {path[:80]!r} links a tablespace outside the data directory (DATA DIRECTORY tables)"
        )
    return path


@dataclass
class XbstreamGate:
    """Parses an xbstream fed in pieces of any size and raises at the first chunk that may not pass.

    Feed every piece *before* handing it on: a refused chunk's header is never written.
    """

    #: path -> payload bytes of the files seen (closed or not)
    files: dict[str, int] = field(default_factory=dict)
    closed: set[str] = field(default_factory=set)
    chunks: int = 0
    _buf: bytearray = field(default_factory=bytearray)
    _skip: int = 0  # payload bytes still to pass
    _at: int = 0  # stream offset (for messages)

    def feed(self, data: bytes) -> None:
        """Check ``data``, the next bytes of the stream.

        Raises:
            XbstreamError: naming the offset and the problem.
        """
        view = memoryview(data)
        while view:
            if self._skip:
                n = min(self._skip, len(view))
                self._skip -= n
                self._at += n
                view = view[n:]
                continue
            need = self._needed()
            take = min(need - len(self._buf), len(view))
            self._buf += view[:take]
            view = view[take:]
            if len(self._buf) == need:
                self._chunk_header_done()

    def _needed(self) -> int:
        if len(self._buf) < _HEADER:
            return _HEADER
        plen = struct.unpack_from("<I", self._buf, 10)[0]
        base = _HEADER + plen
        return base if self._buf[9:10] == b"E" else base + _PAYLOAD_HEADER

    def _chunk_header_done(self) -> None:
        buf = self._buf
        if len(buf) == _HEADER:  # fixed part: check it before reading the path
            if bytes(buf[:8]) != MAGIC:
                raise XbstreamError(f"no chunk magic at offset {self._at}: not an xbstream")
            if buf[9:10] not in (b"P", b"E"):
                raise XbstreamError(f"chunk type {bytes(buf[9:10])!r} at offset {self._at} is not P or E")
            if buf[8] != 0:
                raise XbstreamError(f"chunk flags {buf[8]:#x} at offset {self._at} are not 0")
            plen = struct.unpack_from("<I", buf, 10)[0]
            if not 0 < plen < MAX_PATH:
                raise XbstreamError(f"path length {plen} at offset {self._at} is outside 1..{MAX_PATH - 1}")
            return
        plen = struct.unpack_from("<I", buf, 10)[0]
        path = check_member_path(bytes(buf[_HEADER : _HEADER + plen]))
        if path in self.closed:
            raise XbstreamError(f"member {path!r} appears again after its end-of-file chunk")
        if buf[9:10] == b"E":
            self.closed.add(path)
            self.files.setdefault(path, 0)
        else:
            length, offset = struct.unpack_from("<QQ", buf, _HEADER + plen)
            if offset != self.files.get(path, 0):
                raise XbstreamError(
                    f"member {path!r}: chunk at offset {offset} does not continue the file"
                    f" ({self.files.get(path, 0)} bytes so far)"
                )
            self.files[path] = offset + length
            self._skip = length
        self.chunks += 1
        self._at += len(buf)
        self._buf = bytearray()

    def finish(self) -> None:
        """The stream ended: it must end between chunks with every file closed.

        Raises:
            XbstreamError: truncated, or a file without its end-of-file chunk.
        """
        if self._buf or self._skip:
            raise XbstreamError(f"the stream is truncated at offset {self._at} (inside a chunk)")
        open_files = sorted(set(self.files) - self.closed)
        if open_files:
            raise XbstreamError(f"the stream is truncated: {open_files[0]!r} has no end-of-file chunk")
        if "xtrabackup_checkpoints" not in self.files:
            raise XbstreamError("the stream has no xtrabackup_checkpoints: not a mariadb-backup backup")

    @property
    def total_bytes(self) -> int:
        """Payload bytes of every file."""
        return sum(self.files.values())

    def databases(self) -> list[str]:
        """Directories holding table files (user and system schemas alike)."""
        return sorted({p.split("/", 1)[0] for p in self.files if "/" in p})


#: ``backup-my.cnf`` keys ``mariadb-backup`` writes, with the values each may take
_CNF_VALUES: dict[str, re.Pattern[str]] = {
    "innodb_checksum_algorithm": re.compile(r"^(strict_)?(crc32|full_crc32|innodb|none)$"),
    "innodb_data_file_path": re.compile(
        r"^[A-Za-z0-9_.]+:[0-9]+[KMGkmg]?(:autoextend(:max:[0-9]+[KMGkmg]?)?)?$"
    ),
    "innodb_log_file_size": re.compile(r"^[0-9]{1,15}$"),
    "innodb_log_files_in_group": re.compile(r"^[0-9]{1,3}$"),
    "innodb_page_size": re.compile(r"^[0-9]{1,6}$"),
    "innodb_undo_directory": re.compile(r"^\./?$"),
    "innodb_undo_tablespaces": re.compile(r"^[0-9]{1,3}$"),
    "innodb_compression_level": re.compile(r"^[0-9]$"),
    "innodb_log_checksums": re.compile(r"^(0|1|ON|OFF|on|off)$"),
    "innodb_fast_checksum": re.compile(r"^(0|1|ON|OFF|on|off)$"),
    "innodb_log_block_size": re.compile(r"^[0-9]{1,6}$"),
    "innodb_encrypt_log": re.compile(r"^(0|1|ON|OFF|on|off)$"),
}


def prepare_options(text: str) -> list[str]:
    """Check the backup's ``backup-my.cnf`` and return its settings as ``--key=value`` options.

    ``mariadb-backup --prepare`` reads the file itself, and a server started on the prepared
    directory needs the same InnoDB layout: only the keys above, with their value patterns, in a
    ``[mysqld]`` section, pass.

    Raises:
        XbstreamError: naming the first line that is not one of them.
    """
    out: list[str] = []
    section = None
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            if section != "[mysqld]":
                raise XbstreamError(f"backup-my.cnf line {n}: section {line[:40]!r} is not [mysqld]")
            continue
        key, sep, value = (s.strip() for s in line.partition("="))
        key = key.replace("-", "_")
        pattern = _CNF_VALUES.get(key)
        if section is None or not sep or pattern is None or not pattern.match(value):
            raise XbstreamError(
                f"backup-my.cnf line {n}: {line[:60]!r} is not an InnoDB layout setting mariadb-backup writes"
            )
        out.append(f"--{key}={value}")
    return out
