"""Check a plain-format ``pg_dump`` stream before ``psql`` runs it (pure: no I/O).

psql executes a backslash meta-command wherever one appears outside a quoted string, a comment or
COPY data: ``\\!`` runs a shell command, ``\\o``/``\\w`` write files, ``\\connect`` switches to another
database. A dump never needs them, so :func:`guard_plain_sql` passes the SQL through line by line and

* drops the lines pg_dump itself writes: ``\\restrict`` / ``\\unrestrict`` (pg_dump 15.14+) and the
  ``--create`` preamble (``DROP/CREATE/ALTER/COMMENT ON DATABASE`` and ``\\connect``), which would
  otherwise re-target the restore at the live database of that name;
* refuses (``InputError``) any other backslash outside strings, comments and COPY data, anything
  that could make psql's idea of where a string ends differ from ours (a quote after an odd run of
  backslashes, a backslash after a non-ASCII byte), and data after ``COPY ... FROM stdin;``.

COPY data blocks start after a ``COPY <table> [(<columns>)] FROM stdin ...;`` statement and end at a
line ``\\.``; they are passed through untouched.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from stateferry.errors import InputError

__all__ = ["guard_plain_sql"]

_FIX = "restore a custom-format backup, or one written by pg_dump unchanged"
_DROPPED_META = re.compile(rb"^\\(connect|c|restrict|unrestrict)(\s.*)?$")
_DB_LEVEL = re.compile(
    r"^(drop\s+database|create\s+database|alter\s+database|comment\s+on\s+database"
    r"|security\s+label\s+(for\s+\S+\s+)?on\s+database|(grant|revoke)\s[^;]*\son\s+database)\b"
)
_COPY_IN = re.compile(r"^copy\s+(?:\"x\"|\w+)(?:\.(?:\"x\"|\w+))*\s*(?:\([^()]*\))?\s*from\s+stdin\b[^()]*$")
_NORMAL, _SQ, _EQ, _DQ, _DOLLAR, _BLOCK = range(6)
_DOLLAR_TAG = re.compile(rb"\$([A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*)?\$")


def _refuse(line_no: int, what: str) -> InputError:
    return InputError(
        "backup",
        f"the plain SQL archive holds {what} at line {line_no}; a pg_dump never does, so it was not run",
        _FIX,
    )


class _Lexer:
    """Tracks psql's lexical state across lines (standard_conforming_strings = on, as pg_dump sets)."""

    def __init__(self) -> None:
        self.state = _NORMAL
        self.depth = 0
        self.tag = b""
        self.skel: list[str] = []  # the current statement with literals blanked, lower case
        self.copy = False
        self.line_no = 0

    def _skeleton(self) -> str:
        return " ".join("".join(self.skel).split())

    def feed(self, line: bytes) -> bool:
        """Check one line (without its newline); return False when the line is to be dropped."""
        self.line_no += 1
        if self.copy:
            if line.rstrip(b"\r") == b"\\.":
                self.copy = False
            return True
        start_empty = self.state == _NORMAL and not self._skeleton()
        drop = False
        i, n = 0, len(line)
        while i < n:
            c = line[i : i + 1]
            if self.state == _NORMAL:
                if c == b"\\":
                    if (
                        start_empty
                        and not self._skeleton()
                        and not line[:i].strip()
                        and _DROPPED_META.match(line[i:].rstrip())
                    ):
                        return False
                    raise _refuse(self.line_no, "a psql meta-command (backslash)")
                if line.startswith(b"--", i):
                    break
                if line.startswith(b"/*", i):
                    self.state, self.depth = _BLOCK, 1
                    self.skel.append(" ")
                    i += 2
                    continue
                if c == b"'":
                    prev = line[i - 1 : i].lower()
                    escaped = prev == b"e" and (i < 2 or not re.match(rb"[\w$]", line[i - 2 : i - 1]))
                    self.state = _EQ if escaped else _SQ
                    self.skel.append("'s'")
                    i += 1
                    continue
                if c == b'"':
                    self.state = _DQ
                    self.skel.append('"x"')
                    i += 1
                    continue
                if c == b"$" and not (i and re.match(rb"[\w$\x80-\xff]", line[i - 1 : i])):
                    m = _DOLLAR_TAG.match(line, i)
                    if m:
                        self.state, self.tag = _DOLLAR, m.group(0)
                        self.skel.append("$s$")
                        i = m.end()
                        continue
                if c == b";":
                    drop = self._end_statement(line, i, start_empty) or drop
                    start_empty = False
                    i += 1
                    continue
                self.skel.append(chr(c[0]).lower() if c[0] < 0x80 else "x")
                i += 1
            elif self.state in (_SQ, _EQ) and c == b"\\":
                if i and line[i - 1] >= 0x80:
                    raise _refuse(self.line_no, "a backslash after a non-ASCII byte in a string")
                if self.state == _EQ:
                    i += 2
                    continue
                j = i + 1
                while j < n and line[j : j + 1] == b"\\":
                    j += 1
                run = j - i
                if j < n and line[j : j + 1] == b"'" and run % 2:
                    raise _refuse(self.line_no, "a quote after an odd run of backslashes")
                i = j
            elif self.state in (_SQ, _EQ, _DQ):
                i = self._in_quotes(line, i, b'"' if self.state == _DQ else b"'")
            elif self.state == _DOLLAR:
                end = line.find(self.tag, i)
                if end < 0:
                    break
                self.state = _NORMAL
                i = end + len(self.tag)
            else:  # block comment (nested)
                if line.startswith(b"/*", i):
                    self.depth += 1
                    i += 2
                elif line.startswith(b"*/", i):
                    self.depth -= 1
                    i += 2
                    if not self.depth:
                        self.state = _NORMAL
                else:
                    i += 1
        if self.state == _NORMAL or self.state == _BLOCK:
            self.skel.append(" ")
        return not drop

    def _in_quotes(self, line: bytes, i: int, quote: bytes) -> int:
        """Step over byte ``i`` inside a string or quoted identifier: a doubled ``quote`` stays inside."""
        if line[i : i + 1] != quote:
            return i + 1
        if line[i + 1 : i + 2] == quote:
            return i + 2
        self.state = _NORMAL
        return i + 1

    def _end_statement(self, line: bytes, i: int, start_empty: bool) -> bool:
        stmt = self._skeleton()
        self.skel = []
        rest_blank = not line[i + 1 :].strip()
        if _COPY_IN.match(stmt):
            if not rest_blank:
                raise _refuse(self.line_no, "text after COPY ... FROM stdin;")
            self.copy = True
            return False
        if _DB_LEVEL.match(stmt):
            if not (start_empty and rest_blank):
                raise _refuse(self.line_no, "a database-level statement mixed with other SQL")
            return True
        return False


def guard_plain_sql(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Pass a plain SQL dump through, checked line by line (see the module docstring).

    Raises:
        InputError: field ``backup``: the archive holds what a pg_dump never writes.
    """
    lexer = _Lexer()
    buf = b""
    for chunk in chunks:
        buf += chunk
        if b"\n" not in chunk:
            continue
        *lines, buf = buf.split(b"\n")
        out = [line for line in lines if lexer.feed(line)]
        if out:
            yield b"\n".join(out) + b"\n"
    if buf and lexer.feed(buf):
        yield buf
