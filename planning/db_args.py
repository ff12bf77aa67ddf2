"""Command-line arguments for the database tools, built from untrusted names (pure: no I/O).

The ONE place that turns a database name or a job's ``extra_keys`` into arguments for mysqldump,
mysql, pg_dump, pg_restore and psql (backup and restore both call it):

* a PostgreSQL database name is passed as a quoted ``dbname='...'`` conninfo value
  (:func:`pg_dbname_arg`), so libpq never reads ``host=`` / ``port=`` out of a name;
* MySQL/MariaDB database names come after ``--`` (:func:`mysql_database_args`), never as options;
* ``extra_keys`` are checked against a per-tool allow-list of exact long option names
  (:func:`check_extra_keys`): no getopt abbreviations, no short options, values only as
  ``--opt=value`` in one argument;
* names with control characters, a leading ``-`` or ``.``, or a path separator are refused
  (:func:`check_database_name`) or, when read from a server, skipped (:func:`is_safe_database_name`).
"""

from __future__ import annotations

import re
import shlex
from typing import Literal

from stateferry.errors import InputError

__all__ = [
    "MYSQLDUMP_FLAGS",
    "MYSQLDUMP_VALUED",
    "PG_DUMP_FLAGS",
    "PG_DUMP_VALUED",
    "check_database_name",
    "check_extra_keys",
    "is_safe_database_name",
    "mysql_database_args",
    "pg_conninfo",
    "pg_dbname_arg",
]

Tool = Literal["mysqldump", "pg_dump"]

#: mysqldump options without a value that nxs-backup users pass (the seed's defaults and friends).
MYSQLDUMP_FLAGS = frozenset(
    {
        "--opt",
        "--skip-opt",
        "--add-drop-database",
        "--add-drop-table",
        "--skip-add-drop-table",
        "--add-drop-trigger",
        "--add-locks",
        "--skip-add-locks",
        "--routines",
        "--skip-routines",
        "--triggers",
        "--skip-triggers",
        "--events",
        "--skip-events",
        "--comments",
        "--skip-comments",
        "--compact",
        "--create-options",
        "--skip-create-options",
        "--quote-names",
        "--skip-quote-names",
        "--order-by-primary",
        "--hex-blob",
        "--single-transaction",
        "--quick",
        "--skip-quick",
        "--lock-tables",
        "--skip-lock-tables",
        "--lock-all-tables",
        "--no-data",
        "--no-create-info",
        "--no-create-db",
        "--complete-insert",
        "--extended-insert",
        "--skip-extended-insert",
        "--disable-keys",
        "--skip-disable-keys",
        "--tz-utc",
        "--skip-tz-utc",
        "--allow-keywords",
        "--insert-ignore",
        "--replace",
        "--dump-date",
        "--skip-dump-date",
        "--no-tablespaces",
        "--set-charset",
        "--skip-set-charset",
        "--flush-privileges",
        "--no-autocommit",
    }
)
#: mysqldump options that take a value (given as ``--opt=value``).
MYSQLDUMP_VALUED = frozenset(
    {"--default-character-set", "--max-allowed-packet", "--net-buffer-length", "--ignore-table"}
)
#: pg_dump options without a value.
PG_DUMP_FLAGS = frozenset(
    {
        "--no-owner",
        "--no-privileges",
        "--no-acl",
        "--clean",
        "--if-exists",
        "--create",
        "--no-comments",
        "--no-publications",
        "--no-subscriptions",
        "--no-tablespaces",
        "--no-security-labels",
        "--no-unlogged-table-data",
        "--schema-only",
        "--data-only",
        "--blobs",
        "--no-blobs",
        "--large-objects",
        "--no-large-objects",
        "--quote-all-identifiers",
        "--inserts",
        "--column-inserts",
        "--disable-triggers",
        "--disable-dollar-quoting",
        "--serializable-deferrable",
        "--no-sync",
        "--verbose",
        "--no-toast-compression",
        "--enable-row-security",
        "--load-via-partition-root",
    }
)
#: pg_dump options that take a value (given as ``--opt=value``).
PG_DUMP_VALUED = frozenset(
    {
        "--compress",
        "--schema",
        "--exclude-schema",
        "--table",
        "--exclude-table",
        "--exclude-table-data",
        "--lock-wait-timeout",
        "--encoding",
        "--extra-float-digits",
        "--section",
        "--rows-per-insert",  # needs its value: a bare one would swallow the next option
    }
)
_ALLOWED: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "mysqldump": (MYSQLDUMP_FLAGS, MYSQLDUMP_VALUED),
    "pg_dump": (PG_DUMP_FLAGS, PG_DUMP_VALUED),
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_extra_keys(tool: Tool, text: str, field: str = "extra_keys") -> list[str]:
    """Split ``extra_keys`` and check every argument against the tool's allow-list.

    Args:
        tool: ``"mysqldump"`` or ``"pg_dump"``.
        text: the keys as written in the job (shell quoting allowed).
        field: the field name for errors.

    Returns:
        The arguments, each an exact allowed ``--name`` or ``--name=value``.

    Raises:
        InputError: an unknown/abbreviated/short option, a value given as a separate argument, a
            value starting with ``-`` or containing a control character.
    """
    if _CONTROL.search(text.replace("\n", " ").replace("\t", " ")):
        raise InputError(field, "contains a control character", "write plain options separated by spaces")
    try:
        parts = shlex.split(text)
    except ValueError as exc:
        raise InputError(field, f"cannot be split into arguments ({exc})", "fix the quoting") from None
    flags, valued = _ALLOWED[tool]
    allowed = ", ".join(sorted(flags | {f"{v}=..." for v in valued}))
    for part in parts:
        name, eq, value = part.partition("=")
        if name in flags and not eq:
            continue
        if name in valued and eq:
            if not value or value.startswith("-") or _CONTROL.search(value):
                raise InputError(
                    field,
                    f"{name} has an unusable value {value!r}",
                    f"give {name}=<value> (not starting with -)",
                )
            continue
        if name in valued:
            raise InputError(field, f"{name} needs a value in the same argument", f"write {name}=<value>")
        raise InputError(
            field,
            f"{_shown(part)!r} is not an option stateferry passes to {tool} (connection, credentials,"
            " output and format are managed by stateferry: they come from the Database block;"
            " abbreviations and short options are not accepted)",
            f"remove it or use the full name of one of: {allowed}",
        )
    return parts


def _shown(part: str) -> str:
    """What an error may show of a refused argument: never a value (``-psecret`` -> ``-p``)."""
    if part.startswith("--"):
        return part.split("=", 1)[0][:40]
    if part.startswith("-"):
        return part[:2]
    return part[:1] + "..."


def is_safe_database_name(name: object) -> bool:
    """True for a name that can be a database argument and part of a backup's file name."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= 128
        and not _CONTROL.search(name)
        and not name.startswith(("-", "."))
        and "/" not in name
        and "\\" not in name
    )


def check_database_name(name: object, field: str = "target") -> str:
    """Return ``name`` if :func:`is_safe_database_name`, else raise.

    Raises:
        InputError: naming ``field`` and the fix.
    """
    if not is_safe_database_name(name):
        raise InputError(
            field,
            f"{name!r} is not a usable database name (empty, too long, a control character, a leading"
            " '-' or '.', or a '/' or '\\')",
            "rename the database or leave it out of the list",
        )
    assert isinstance(name, str)
    return name


def pg_conninfo(database: str) -> str:
    """``dbname='<name>'`` with ``\\`` and ``'`` escaped: a conninfo that can only name a database."""
    check_database_name(database, "database")
    escaped = database.replace("\\", "\\\\").replace("'", "\\'")
    return f"dbname='{escaped}'"


def pg_dbname_arg(database: str) -> str:
    """The single ``--dbname=dbname='<name>'`` argument for pg_dump / pg_restore / psql.

    Host, port and user still come from ``PGHOST``/``PGPORT``/``PGUSER`` (a conninfo without them
    leaves the environment in charge).

    Raises:
        InputError: for a name :func:`is_safe_database_name` refuses.
    """
    return f"--dbname={pg_conninfo(database)}"


def mysql_database_args(databases: list[str], *, many: bool = True) -> list[str]:
    """Trailing arguments naming databases for mysqldump (``--databases -- a b``) or mysql (``-- a``).

    Args:
        databases: the names (each checked).
        many: ``True`` for mysqldump's ``--databases`` form, ``False`` for one database (mysql client).

    Raises:
        InputError: for a refused name, or ``many=False`` with not exactly one name.
    """
    names = [check_database_name(d, "database") for d in databases]
    if many:
        return ["--databases", "--", *names]
    if len(names) != 1:
        raise InputError("database", f"expected one database, got {len(names)}", "name exactly one")
    return ["--", *names]
