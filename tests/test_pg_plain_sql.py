"""Table tests of the plain-SQL guard run before psql (planning/pg_plain_sql.py; pure, no servers)."""

from __future__ import annotations

import pytest

from planning.pg_plain_sql import guard_plain_sql
from stateferry.errors import InputError


def _run(sql: bytes, chunk: int = 7) -> bytes:
    return b"".join(guard_plain_sql(sql[i : i + chunk] for i in range(0, len(sql), chunk)))


@pytest.mark.parametrize(
    ("sql", "out"),
    [
        (b"SELECT 1;\n", b"SELECT 1;\n"),
        # COPY data may hold anything (a row starting with a backslash, a fake meta-command) until \.
        (
            b"COPY public.t (x) FROM stdin;\n\\\\! not a command\n\\! also data\n\\.\nSELECT 2;\n",
            b"COPY public.t (x) FROM stdin;\n\\\\! not a command\n\\! also data\n\\.\nSELECT 2;\n",
        ),
        # what pg_dump writes and psql must not run: --create preamble and \restrict lines are dropped
        (
            b"\\restrict abc123\nDROP DATABASE live;\nCREATE DATABASE live WITH TEMPLATE = template0;\n"
            b"ALTER DATABASE live OWNER TO postgres;\n\\connect live\nCREATE TABLE t (x int);\n"
            b"\\unrestrict abc123\n",
            b"CREATE TABLE t (x int);\n",
        ),
        # backslashes inside strings, identifiers, dollar quotes and comments are data
        (
            b"SELECT '\\\\', E'\\'\\\\', \"a\\b\", $f$ \\! $f$, $$ \\o $$; -- \\! comment\n/* \\! */\n",
            b"SELECT '\\\\', E'\\'\\\\', \"a\\b\", $f$ \\! $f$, $$ \\o $$; -- \\! comment\n/* \\! */\n",
        ),
        (b"CREATE FUNCTION f() RETURNS int AS $body$\nSELECT 1 \\\n$body$;\n", None),
    ],
)
def test_guard_passes_and_drops(sql: bytes, out: bytes | None) -> None:
    assert _run(sql) == (sql if out is None else out)
    assert _run(sql, chunk=1 << 20) == (sql if out is None else out)


@pytest.mark.parametrize(
    ("sql", "what"),
    [
        (b"\\! id\n", "meta-command"),
        (b"SELECT 1; \\! id\n", "meta-command"),
        (b"SELECT 1 \\g\n", "meta-command"),
        (b"SELECT 'a''b' \\o /tmp/x\n", "meta-command"),
        (b"SELECT 1\n\\connect other\n", "meta-command"),  # not at a statement start
        (b"SELECT 'x\\' ' \\! id';\n", "odd run of backslashes"),  # std-strings-off would split it
        (b"SELECT E'\x8f\\' \\! id';\n", "non-ASCII"),  # SJIS would see no backslash
        (b"COPY t FROM stdin; \\! id\n", "after COPY"),
        (b"SELECT 1; DROP DATABASE live;\n", "database-level"),
        (b"COPY (SELECT 'from stdin') TO stdout;\n\\! id\n", "meta-command"),
    ],
)
def test_guard_refuses(sql: bytes, what: str) -> None:
    with pytest.raises(InputError, match=what) as err:
        _run(sql)
    assert err.value.field == "backup"
