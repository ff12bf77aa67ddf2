"""Extra backup parts next to the dumps: PostgreSQL globals and MySQL/MariaDB users with grants.

Both hold password hashes (unless opted out): their content is never logged, and every error
message about them goes through :func:`planning.pg_globals.scrub_password_hashes`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from planning.pg_globals import scrub_password_hashes
from stateferry.logs import run_logger
from tasks.dumpers import Sink, find_tool, postgres_env, redactor, run_dump, tool_version

if TYPE_CHECKING:
    from blocks.database import Database


PG_GLOBALS_MARKER = b"PostgreSQL database cluster dump complete"
MYSQL_USERS_MARKER = b"-- stateferry users dump complete"


def pg_roles_and_tablespaces(db: Database) -> tuple[list[str], list[str], bool]:
    """Names of the cluster's roles and tablespaces (built-in ``pg_*`` ones left out), and whether
    the backup user may read the password hashes (``pg_authid``: superusers only)."""
    conn = db.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT rolname FROM pg_roles WHERE rolname !~ '^pg_' ORDER BY 1")
            roles = [str(r[0]) for r in cur.fetchall()]
            cur.execute("SELECT spcname FROM pg_tablespace WHERE spcname !~ '^pg_' ORDER BY 1")
            tablespaces = [str(r[0]) for r in cur.fetchall()]
            cur.execute("SELECT has_table_privilege('pg_catalog.pg_authid', 'SELECT')")
            row = cur.fetchone()
            return roles, tablespaces, bool(row and row[0])
    finally:
        conn.close()


def pg_globals_producer(db: Database, *, passwords: bool) -> Callable[[Sink], dict[str, Any]]:
    """A producer running ``pg_dumpall --globals-only`` (roles, memberships, settings, tablespaces).

    Args:
        db: the server (password via ``PGPASSWORD``).
        passwords: keep the roles' password hashes (otherwise ``--no-role-passwords``); a backup
            user that cannot read ``pg_authid`` gets ``--no-role-passwords`` in any case (recorded
            as ``role_passwords_skipped`` in the part's manifest entry).
    """
    tool = find_tool("pg_dumpall")

    def produce(sink: Sink) -> dict[str, Any]:
        roles, tablespaces, can_read_hashes = pg_roles_and_tablespaces(db)
        # A backup user that is not a superuser (managed PostgreSQL services never give one) cannot
        # read pg_authid: pg_dumpall would fail and with it every nightly backup. The roles are
        # then kept without their password hashes, and the manifest says so.
        keep = passwords and can_read_hashes
        argv = [tool, "--globals-only", *([] if keep else ["--no-role-passwords"])]
        secret = redactor(db.password.get_secret_value())
        info = run_dump(
            argv,
            sink,
            env=postgres_env(db),
            redact=lambda s: scrub_password_hashes(secret(s)),
            complete_marker=PG_GLOBALS_MARKER,
        )
        return {
            **info,
            "tool": tool_version(tool),
            "role_passwords": keep,
            **(
                {"role_passwords_skipped": "the backup user cannot read pg_authid"}
                if passwords and not keep
                else {}
            ),
            "roles": roles,
            "tablespaces": tablespaces,
        }

    return produce


_GRANTEE = re.compile(r"^'((?:[^']|'')*)'@'((?:[^']|'')*)'$")


def _like_escaped(name: str) -> str:
    return name.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%")


def mysql_grantees(db: Database, databases: list[str]) -> list[tuple[str, str]]:
    """Accounts ``(user, host)`` holding a privilege on one of the databases (or its tables,
    columns or routines); grants to a pattern (``shop\\_%``) count when the escaped name matches."""
    names = sorted({*databases, *(_like_escaped(d) for d in databases)})
    marks = ", ".join(["%s"] * len(names))
    conn = db.connect()
    try:
        with conn.cursor() as cur:
            found: set[str] = set()
            for view in ("SCHEMA_PRIVILEGES", "TABLE_PRIVILEGES", "COLUMN_PRIVILEGES"):
                cur.execute(
                    f"SELECT DISTINCT GRANTEE FROM information_schema.{view} WHERE TABLE_SCHEMA IN ({marks})",
                    tuple(names),
                )
                found |= {str(r[0]) for r in cur.fetchall()}
            cur.execute(
                f"SELECT DISTINCT User, Host FROM mysql.procs_priv WHERE Db IN ({marks})", tuple(names)
            )
            procs = {(str(u), str(h)) for u, h in cur.fetchall()}
    finally:
        conn.close()
    accounts = set(procs)
    for grantee in found:
        m = _GRANTEE.match(grantee)
        if m:
            accounts.add((m.group(1).replace("''", "'"), m.group(2).replace("''", "'")))
        else:  # a role (MariaDB) or a form we do not know: named, not guessed
            run_logger().warning("skipping grantee %s (not a user@host account)", grantee[:80])
    return sorted(accounts)


def mysql_users_producer(db: Database, databases: list[str]) -> Callable[[Sink], dict[str, Any]]:
    """A producer writing ``CREATE USER IF NOT EXISTS`` and ``GRANT`` statements (from ``SHOW CREATE
    USER`` / ``SHOW GRANTS``) for every account holding grants on the databases.

    Account names read from the server are passed as bound string literals, never spliced.
    """

    def produce(sink: Sink) -> dict[str, Any]:
        accounts = mysql_grantees(db, databases)
        conn = db.connect()
        total = 0

        def emit(text: str) -> None:
            nonlocal total
            data = text.encode()
            sink.write(data)
            total += len(data)

        try:
            with conn.cursor() as cur:
                emit(f"-- stateferry: users with grants on {len(databases)} database(s)\n")
                for user, host in accounts:
                    cur.execute("SHOW CREATE USER %s@%s", (user, host))
                    create = str(cur.fetchone()[0])
                    if create.startswith("CREATE USER "):
                        create = "CREATE USER IF NOT EXISTS " + create[len("CREATE USER ") :]
                    emit(create + ";\n")
                    cur.execute("SHOW GRANTS FOR %s@%s", (user, host))
                    for (grant,) in cur.fetchall():
                        emit(str(grant) + ";\n")
                emit(MYSQL_USERS_MARKER.decode() + "\n")
        except Exception as exc:
            from tasks.dumpers import DumpFailed

            secret = redactor(db.password.get_secret_value())
            raise DumpFailed(
                scrub_password_hashes(secret(f"listing users and grants failed: {exc}"))
            ) from None
        finally:
            conn.close()
        return {
            "bytes": total,
            "tool": "SHOW CREATE USER / SHOW GRANTS",
            "accounts": [list(a) for a in accounts],
        }

    return produce
