"""Make a ``pg_dumpall --globals-only`` script idempotent for the server it is restored into (pure).

The script creates every role and tablespace (``CREATE ROLE x;`` then ``ALTER ROLE x WITH ...``).
Restored into a server that already has some of them, the ``CREATE`` would fail; restored by the
role that runs the restore, ``ALTER ROLE <self>`` would replace that role's own password and
attributes with the source's. So, line by line (pg_dumpall writes each of these statements on one
line):

* ``CREATE ROLE x;`` of a role that exists is left out (its ``ALTER ROLE x WITH ...`` still sets the
  attributes and password of the backup);
* every ``ALTER ROLE`` of the restoring role itself is left out;
* ``CREATE TABLESPACE x ...`` of a tablespace that exists is left out.

Everything else (memberships, settings, grants) passes unchanged; the caller has already run the
script through :func:`planning.pg_plain_sql.guard_plain_sql` (no psql meta-commands).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_IDENT = r'(?P<ident>"(?:[^"]|"")+"|[a-z_][a-z0-9_$]*)'
_CREATE_ROLE = re.compile(rf"^CREATE ROLE {_IDENT};$")
_ALTER_ROLE = re.compile(rf"^ALTER ROLE {_IDENT} ")
_CREATE_TABLESPACE = re.compile(rf"^CREATE TABLESPACE {_IDENT} ")


def unquote(ident: str) -> str:
    """The name an identifier as pg_dumpall writes it (quoted with doubled quotes, or bare) stands for."""
    if ident.startswith('"'):
        return ident[1:-1].replace('""', '"')
    return ident


def _exists(
    create: re.Pattern[str], line: str, names: set[str], existing: list[str], created: list[str]
) -> bool:
    """Whether ``line`` creates an object of ``names`` (one that exists: the line is left out).

    A ``create`` line's object is listed in ``existing`` or in ``created``.
    """
    m = create.match(line)
    if not m:
        return False
    name = unquote(m.group("ident"))
    (existing if name in names else created).append(name)
    return name in names


@dataclass
class GlobalsPlan:
    """The script to run and what it will do."""

    sql: str
    create_roles: list[str] = field(default_factory=list)
    existing_roles: list[str] = field(default_factory=list)
    create_tablespaces: list[str] = field(default_factory=list)
    existing_tablespaces: list[str] = field(default_factory=list)
    own_role_kept: bool = False


def plan_globals(sql: str, roles: set[str], tablespaces: set[str], current_user: str) -> GlobalsPlan:
    """Rewrite a globals script for a server holding ``roles`` and ``tablespaces``.

    Args:
        sql: the (guarded) ``pg_dumpall --globals-only`` script.
        roles: role names on the target server.
        tablespaces: tablespace names on the target server.
        current_user: the role running the restore (its own attributes are never changed).
    """
    plan = GlobalsPlan("")
    out: list[str] = []
    for line in sql.split("\n"):
        if _exists(_CREATE_ROLE, line, roles, plan.existing_roles, plan.create_roles):
            continue
        m = _ALTER_ROLE.match(line)
        if m and unquote(m.group("ident")) == current_user:
            plan.own_role_kept = True
            continue
        if _exists(_CREATE_TABLESPACE, line, tablespaces, plan.existing_tablespaces, plan.create_tablespaces):
            continue
        out.append(line)
    plan.sql = "\n".join(out)
    return plan


_SECRET = [
    re.compile(r"PASSWORD\s+'(?:[^']|'')*'", re.IGNORECASE),
    re.compile(r"SCRAM-SHA-256\$[^\s']+"),
    re.compile(r"md5[0-9a-f]{32}"),
    re.compile(r"USING\s+'(?:[^']|'')*'", re.IGNORECASE),  # MariaDB: IDENTIFIED VIA plugin USING '<hash>'
    re.compile(r"\*[0-9A-Fa-f]{40}"),  # mysql_native_password
]


def scrub_password_hashes(text: str) -> str:
    """Replace password hashes (and ``PASSWORD '...'`` / ``USING '...'`` clauses) in a message with ``***``.

    For PostgreSQL roles and MySQL/MariaDB users alike: tool errors may quote the statement.
    """
    for pattern in _SECRET:
        text = pattern.sub("***", text)
    return text
