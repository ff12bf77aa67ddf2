"""Restore the extra parts, only when asked: PostgreSQL globals and MySQL/MariaDB users.

Both are idempotent: existing roles / tablespaces / users are kept (their ``CREATE`` is skipped),
the backup's attributes, passwords, memberships and grants are applied again. The parts hold
password hashes: their content is never logged, and tool errors are scrubbed of hashes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from planning.db_args import pg_conninfo
from planning.pg_globals import plan_globals, scrub_password_hashes
from planning.pg_plain_sql import guard_plain_sql
from stateferry.errors import InputError, StateferryError
from tasks.dumpers import postgres_env, redactor
from tasks.restore_checks import RestoreIncomplete
from tasks.restore_ops import RestoreFailed, decompress_chunks, feed_tool, psql_script_argv, restore_mysql

if TYPE_CHECKING:
    from blocks.database import Database

#: a globals script is small (roles and tablespaces); a bigger "globals" part is not one.
MAX_GLOBALS_BYTES = 64 << 20


def _names(part: dict[str, Any], key: str) -> list[str]:
    value = part.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError(
            "backup", f"manifest globals part field {key!r} is not a list of names", "restore another backup"
        )
    return value


def restore_pg_globals(db: Database, path: Path, part: dict[str, Any]) -> dict[str, Any]:
    """Apply a ``pg_dumpall --globals-only`` part to the server, idempotently.

    The script is checked like a plain dump (no psql meta-commands), then existing roles and
    tablespaces are not created again and the restoring role's own ``ALTER ROLE`` lines are left out
    (:func:`planning.pg_globals.plan_globals`). Afterwards every role and tablespace the manifest
    lists must exist.

    Raises:
        InputError: the part is not a globals script (too big, meta-commands).
        RestoreFailed: psql failed (message scrubbed of password hashes).
        RestoreIncomplete: a listed role or tablespace is missing afterwards.
    """
    raw = bytearray()
    with open(path, "rb") as fh:
        for chunk in guard_plain_sql(decompress_chunks(fh)):
            raw += chunk
            if len(raw) > MAX_GLOBALS_BYTES:
                raise InputError(
                    "backup", "the globals part is larger than any globals script", "restore another backup"
                )
    roles, tablespaces, me = _pg_globals_state(db)
    plan = plan_globals(bytes(raw).decode("utf-8", "surrogateescape"), roles, tablespaces, me)
    secret = redactor(db.password.get_secret_value())
    argv = psql_script_argv(pg_conninfo("postgres"))
    feed_tool(
        argv,
        iter([plan.sql.encode("utf-8", "surrogateescape")]),
        env=postgres_env(db),
        redact=lambda s: scrub_password_hashes(secret(s)),
    )
    roles_after, tablespaces_after, _ = _pg_globals_state(db)
    want = {"roles": _names(part, "roles"), "tablespaces": _names(part, "tablespaces")}
    got = {"roles": sorted(roles_after), "tablespaces": sorted(tablespaces_after)}
    problems = [
        f"globals: {kind[:-1]} {name} missing after the restore"
        for kind, names in want.items()
        for name in names
        if name not in got[kind]
    ]
    if problems:
        raise RestoreIncomplete(
            "restore of the globals is incomplete: " + "; ".join(problems),
            {"globals": want},
            {"globals": got},
        )
    return {
        "created_roles": plan.create_roles,
        "existing_roles": plan.existing_roles,
        "created_tablespaces": plan.create_tablespaces,
        "existing_tablespaces": plan.existing_tablespaces,
        "own_role_kept": plan.own_role_kept,
        "expected": want,
    }


def _pg_globals_state(db: Database) -> tuple[set[str], set[str], str]:
    conn = db.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT rolname FROM pg_roles")
            roles = {str(r[0]) for r in cur.fetchall()}
            cur.execute("SELECT spcname FROM pg_tablespace")
            tablespaces = {str(r[0]) for r in cur.fetchall()}
            cur.execute("SELECT current_user")
            return roles, tablespaces, str(cur.fetchone()[0])
    finally:
        conn.close()


def restore_mysql_users(db: Database, path: Path, part: dict[str, Any]) -> dict[str, Any]:
    """Apply a users part (``CREATE USER IF NOT EXISTS`` + ``GRANT``) through the ``mysql`` client
    (``--binary-mode``, ``--sandbox`` where available), then check every listed account exists.

    Raises:
        RestoreFailed: the client failed (message scrubbed of password hashes).
        RestoreIncomplete: a listed account is missing afterwards.
    """
    accounts = part.get("accounts") or []
    if not isinstance(accounts, list) or not all(
        isinstance(a, list) and len(a) == 2 and all(isinstance(x, str) for x in a) for a in accounts
    ):
        raise InputError(
            "backup",
            "manifest users part field 'accounts' is not a list of [user, host]",
            "restore another backup",
        )
    try:
        with open(path, "rb") as fh:
            restore_mysql(db, fh)
    except StateferryError as exc:
        raise RestoreFailed(scrub_password_hashes(str(exc))) from None
    conn = db.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT User, Host FROM mysql.user")
            present = {(str(u), str(h)) for u, h in cur.fetchall()}
    finally:
        conn.close()
    missing = [f"{u}@{h}" for u, h in accounts if (u, h) not in present]
    if missing:
        raise RestoreIncomplete(
            "restore of the users is incomplete: "
            + "; ".join(f"user {m} missing after the restore" for m in missing),
            {"users": {"accounts": [f"{u}@{h}" for u, h in accounts]}},
            {"users": {"accounts": sorted(f"{u}@{h}" for u, h in present)}},
        )
    return {"accounts": [f"{u}@{h}" for u, h in accounts]}
