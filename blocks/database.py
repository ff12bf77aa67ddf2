"""Database: connection and credentials of a MySQL/MariaDB or PostgreSQL server."""

from __future__ import annotations

import re
from typing import Any, Literal

from prefect.blocks.core import Block
from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from blocks._validation import check_host, check_nonempty, check_port, closed_block_schema
from stateferry.errors import InputError, translate

DEFAULT_PORTS: dict[str, int] = {"mysql": 3306, "postgres": 5432}
_ENGINE_ALIASES: dict[str, str] = {
    "mysql": "mysql",
    "mariadb": "mysql",
    "postgres": "postgres",
    "postgresql": "postgres",
    "pg": "postgres",
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DB_NAME = re.compile(r"^[A-Za-z0-9_$][A-Za-z0-9_$-]{0,62}$")


class Database(Block):
    """A MySQL/MariaDB or PostgreSQL server: engine, host, port, user, password, databases.

    The block only builds connections (:meth:`connect`) and client environments
    (:meth:`client_env`); it does no work. ``databases`` empty means every user database.
    """

    _block_type_name = "Stateferry Database"
    _description = "A MySQL/MariaDB or PostgreSQL server (engine, host, port, user, password, databases)."
    model_config = ConfigDict(hide_input_in_errors=True, json_schema_extra=closed_block_schema)

    engine: Literal["mysql", "postgres"] = Field(description='"mysql" (also "mariadb") or "postgres".')
    host: str = Field(description="Host name or IP address of the server.")
    port: int | None = Field(default=None, description="TCP port; default 3306 (mysql) or 5432 (postgres).")
    user: str = Field(description="User name.")
    password: SecretStr = Field(description="Password of the user.")
    databases: list[str] = Field(default_factory=list, description="Databases to handle; empty = all.")

    @field_validator("engine", mode="before")
    @classmethod
    def _check_engine(cls, value: Any) -> str:
        canonical = _ENGINE_ALIASES.get(str(value).strip().lower()) if isinstance(value, str) else None
        if canonical is None:
            raise InputError(
                "engine",
                f"unknown engine {value!r}",
                'use "mysql" (or "mariadb") or "postgres" (or "postgresql")',
            )
        return canonical

    @field_validator("host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        return check_host("host", value)

    @field_validator("port")
    @classmethod
    def _check_port(cls, value: int | None) -> int | None:
        return None if value is None else check_port("port", value)

    @field_validator("user")
    @classmethod
    def _check_user(cls, value: str) -> str:
        check_nonempty("user", value, "give the database user name, e.g. root or postgres")
        if _CONTROL.search(value):
            raise InputError("user", "contains a control character (e.g. a newline)", "remove it")
        return value

    @field_validator("password")
    @classmethod
    def _check_password(cls, value: SecretStr) -> SecretStr:
        check_nonempty("password", value.get_secret_value(), "give the password of the database user")
        if _CONTROL.search(value.get_secret_value()):
            raise InputError(
                "password",
                "contains a control character (e.g. a newline; the value is not shown)",
                "set a password without control characters",
            )
        return value

    @field_validator("databases")
    @classmethod
    def _check_databases(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _DB_NAME.match(name):
                raise InputError(
                    "databases",
                    f"{name!r} is not a valid database name",
                    "use letters, digits, _ $ - (at most 63 characters)",
                )
        if len(set(value)) != len(value):
            raise InputError("databases", "a database is listed twice", "list each database once")
        return value

    @model_validator(mode="after")
    def _default_port(self) -> Database:
        if self.port is None:
            self.port = DEFAULT_PORTS[self.engine]
        return self

    @property
    def effective_port(self) -> int:
        """The port, defaulted by engine."""
        return self.port if self.port is not None else DEFAULT_PORTS[self.engine]

    def connect(self, database: str | None = None, *, connect_timeout: int = 10) -> Any:
        """Open a connection (pymysql for mysql, psycopg 3 for postgres), autocommit on.

        Args:
            database: Database to connect to; None = none for mysql, ``postgres`` for postgres.
            connect_timeout: Seconds to wait for the TCP connection and login.

        Returns:
            A DB-API connection. The caller closes it.

        Raises:
            TransientError: The server is unreachable.
            PermanentError: Authentication failed or the database does not exist.
        """
        password = self.password.get_secret_value()
        context = f"connecting to {self.engine} at {self.host}:{self.effective_port} as {self.user}"
        try:
            if self.engine == "mysql":
                import pymysql

                return pymysql.connect(
                    host=self.host,
                    port=self.effective_port,
                    user=self.user,
                    password=password,
                    database=database,
                    connect_timeout=connect_timeout,
                    autocommit=True,
                    charset="utf8mb4",
                )
            import psycopg

            return psycopg.connect(
                host=self.host,
                port=self.effective_port,
                user=self.user,
                password=password,
                dbname=database or "postgres",
                connect_timeout=connect_timeout,
                autocommit=True,
            )
        except Exception as exc:
            raise translate(exc, context=context) from exc

    def client_env(self) -> dict[str, str]:
        """Environment for the command-line clients (mysqldump/mysql, pg_dump/psql).

        Carries host, port, user and the password (``MYSQL_PWD`` / ``PGPASSWORD``) so the password
        never appears on a command line. Merge it into a copy of ``os.environ``.
        """
        port = str(self.effective_port)
        password = self.password.get_secret_value()
        if self.engine == "mysql":
            return {"MYSQL_HOST": self.host, "MYSQL_TCP_PORT": port, "MYSQL_PWD": password, "USER": self.user}
        return {"PGHOST": self.host, "PGPORT": port, "PGUSER": self.user, "PGPASSWORD": password}
