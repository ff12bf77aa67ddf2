"""Classify the database drivers' errors (pymysql, psycopg 3)."""

from __future__ import annotations

from stateferry.errors.matching import context_prefix, is_instance
from stateferry.errors.taxonomy import PermanentError, StateferryError, TransientError

_MYSQL_TRANSIENT_CODES = frozenset({1040, 1205, 1213, 2002, 2003, 2006, 2013, 2055})
_MYSQL_FIXES = {
    1044: "the user lacks access to this database: grant it or use another user",
    1045: "MySQL rejected the user or password: check Database.user and Database.password",
    1049: "the database does not exist: create it or fix the name in Database.databases",
    1698: "MySQL rejected the login: check Database.user and Database.password",
}
_PG_TRANSIENT_SQLSTATES = frozenset(
    {"57P01", "57P02", "57P03", "53300", "40001", "40P01", "08000", "08001", "08006"}
)
_PG_TRANSIENT_TEXT = (
    "connection refused",
    "could not connect",
    "timeout expired",
    "server closed the connection",
    "the database system is starting up",
    "the database system is shutting down",
    "connection timed out",
)
_PG_PERMANENT_TEXT = {
    "password authentication failed": "PostgreSQL rejected the user or password: check Database.user and "
    "Database.password",
    "no pg_hba.conf entry": "the server refuses this client: add a pg_hba.conf rule or use another user",
    "does not exist": "the role or database does not exist: fix Database.user / Database.databases",
}


def from_databases(exc: BaseException, context: str) -> StateferryError | None:
    """Classify pymysql and psycopg errors by error code / SQLSTATE and message."""
    p = context_prefix(context)
    if is_instance(exc, "pymysql.err", "MySQLError"):
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
        message = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
        base = f"{p}MySQL answered {code}: {message}"
        if code in _MYSQL_TRANSIENT_CODES:
            return TransientError(f"{base} (transient: a retry may succeed)")
        return PermanentError(f"{base}. {_MYSQL_FIXES.get(code, 'fix the request before retrying')}")
    if is_instance(exc, "psycopg", "Error"):
        sqlstate = getattr(exc, "sqlstate", None) or ""
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        base = f"{p}PostgreSQL answered {sqlstate or type(exc).__name__}: {message}"
        lowered = str(exc).lower()
        for needle, fix in _PG_PERMANENT_TEXT.items():
            if needle in lowered:
                return PermanentError(f"{base}. {fix}")
        if sqlstate in _PG_TRANSIENT_SQLSTATES or any(needle in lowered for needle in _PG_TRANSIENT_TEXT):
            return TransientError(f"{base} (transient: a retry may succeed)")
        return PermanentError(f"{base}. Fix the request before retrying")
    return None
