"""Table tests for planning/db_args.py: arguments for the database tools from untrusted text."""

from __future__ import annotations

import pytest

from planning.backup_config import DEFAULT_MYSQLDUMP_KEYS
from planning.db_args import (
    check_database_name,
    check_extra_keys,
    is_safe_database_name,
    mysql_database_args,
    pg_conninfo,
    pg_dbname_arg,
)
from stateferry.errors import InputError


@pytest.mark.parametrize(
    ("tool", "text", "expected"),
    [
        ("mysqldump", DEFAULT_MYSQLDUMP_KEYS, DEFAULT_MYSQLDUMP_KEYS.split()),
        ("mysqldump", "--opt --ignore-table=app.sessions", ["--opt", "--ignore-table=app.sessions"]),
        ("mysqldump", "", []),
        ("pg_dump", "--no-owner --clean --if-exists", ["--no-owner", "--clean", "--if-exists"]),
        ("pg_dump", "--exclude-table='audit log'", ["--exclude-table=audit log"]),
        ("pg_dump", "--compress=9\n--no-acl", ["--compress=9", "--no-acl"]),
        ("pg_dump", "--rows-per-insert=100", ["--rows-per-insert=100"]),
    ],
)
def test_allowed_extra_keys(tool: str, text: str, expected: list[str]) -> None:
    assert check_extra_keys(tool, text) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("tool", "text", "words"),
    [
        ("pg_dump", "--ho=evil --po=5432", "'--ho'"),  # getopt abbreviation of --host
        ("pg_dump", "--dbname=host=evil", "'--dbname'"),
        ("pg_dump", "-h evil", "'-h'"),
        ("pg_dump", "-Z9", "'-Z'"),
        ("pg_dump", "--format=p", "'--format'"),
        ("pg_dump", "--file=/etc/x", "'--file'"),
        ("pg_dump", "--schema public", "same argument"),
        ("pg_dump", "--schema=-x", "unusable value"),
        ("pg_dump", "--rows-per-insert", "same argument"),  # bare: it would take the next option
        ("pg_dump", "--no-owner=yes", "'--no-owner'"),
        ("mysqldump", "--opt -psecret", "'-p'"),
        ("mysqldump", "--opt hunter2", "'h...'"),
        ("mysqldump", "--pass=x", "'--pass'"),
        ("mysqldump", "--defaults-file=/tmp/x.cnf", "'--defaults-file'"),
        ("mysqldump", "--ignore-table=a\x00b", "control character"),
        ("mysqldump", "--opt 'unclosed", "quoting"),
        ("mysqldump", "--no-create-db --plugin-dir=/tmp", "'--plugin-dir'"),
    ],
)
def test_refused_extra_keys_name_the_field(tool: str, text: str, words: str) -> None:
    with pytest.raises(InputError) as err:
        check_extra_keys(tool, text, "sources[0].extra_keys")  # type: ignore[arg-type]
    assert err.value.field == "sources[0].extra_keys"
    assert words in str(err.value)
    assert "secret" not in str(err.value) and "hunter2" not in str(err.value)


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("app", True),
        ("host=evil port=1", True),  # safe: only ever a quoted conninfo value / an argument after --
        ("it's", True),
        ("Ünïcode db", True),
        ("", False),
        ("-x", False),
        ("--databases", False),
        (".hidden", False),
        ("a/b", False),
        ("..\\x", False),
        ("a\nb", False),
        ("a\x1bb", False),
        ("x" * 129, False),
        (None, False),
    ],
)
def test_database_names(name: object, ok: bool) -> None:
    assert is_safe_database_name(name) is ok
    if ok:
        assert check_database_name(name) == name
    else:
        with pytest.raises(InputError) as err:
            check_database_name(name, "sources[0].target")
        assert err.value.field == "sources[0].target"


@pytest.mark.parametrize(
    ("name", "conninfo"),
    [
        ("app", "dbname='app'"),
        ("host=evil port=1", "dbname='host=evil port=1'"),
        ("it's", "dbname='it\\'s'"),
        ("a' host=evil", "dbname='a\\' host=evil'"),
    ],
)
def test_pg_conninfo_quotes_the_name(name: str, conninfo: str) -> None:
    assert pg_conninfo(name) == conninfo
    assert pg_dbname_arg(name) == f"--dbname={conninfo}"


def test_pg_conninfo_refuses_unsafe_names() -> None:
    with pytest.raises(InputError):
        pg_conninfo("-h")


def test_mysql_database_args_after_double_dash() -> None:
    assert mysql_database_args(["a", "b c"]) == ["--databases", "--", "a", "b c"]
    assert mysql_database_args(["a"], many=False) == ["--", "a"]
    with pytest.raises(InputError):
        mysql_database_args(["a", "b"], many=False)
    with pytest.raises(InputError):
        mysql_database_args(["--host=evil"])
