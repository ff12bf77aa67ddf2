"""RedisServer: connection and credentials of a Redis server (host, port, ACL user, password)."""

from __future__ import annotations

import re
from typing import Any

from prefect.blocks.core import Block
from pydantic import ConfigDict, Field, SecretStr, field_validator

from blocks._validation import check_host, check_port, closed_block_schema
from stateferry.errors import InputError, PermanentError, TransientError

_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,127}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class RedisServer(Block):
    """A Redis server to back up or restore into.

    The password reaches ``redis-cli`` through the ``REDISCLI_AUTH`` environment variable and the
    Python client through its connection arguments, never a command line. ``username`` is the ACL user
    (Redis 6+); leave it empty for the ``default`` user / ``requirepass``.
    """

    _block_type_name = "Stateferry Redis Server"
    _description = "A Redis server (host, port, optional ACL user, password) for backups and restores."
    model_config = ConfigDict(hide_input_in_errors=True, json_schema_extra=closed_block_schema)

    host: str = Field(description="Host name or IP address of the server.")
    port: int = Field(default=6379, description="TCP port (default 6379).")
    username: str | None = Field(default=None, description="ACL user; empty = the default user.")
    password: SecretStr | None = Field(default=None, description="Password (requirepass or the ACL user's).")

    @field_validator("host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        return check_host("host", value)

    @field_validator("port")
    @classmethod
    def _check_port(cls, value: int) -> int:
        return check_port("port", value)

    @field_validator("username")
    @classmethod
    def _check_user(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not _USER.match(value):
            raise InputError(
                "username",
                f"{value[:40]!r} is not an ACL user name this block accepts",
                "use letters, digits and _ . @ - (not starting with - or .), or leave it empty",
            )
        return value

    @field_validator("password")
    @classmethod
    def _check_password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and _CONTROL.search(value.get_secret_value()):
            raise InputError(
                "password",
                "contains a control character (the value is not shown)",
                "set a password without control characters",
            )
        return value

    @property
    def where(self) -> str:
        """``host:port`` (IPv6 in brackets) for messages."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def client(self, db: int = 0, *, timeout: float = 30.0) -> Any:
        """A ``redis.Redis`` client (binary responses) of database ``db``; the caller closes it."""
        import redis

        return redis.Redis(
            host=self.host,
            port=self.port,
            db=db,
            username=self.username,
            password=self.password.get_secret_value() if self.password else None,
            socket_timeout=timeout,
            socket_connect_timeout=min(timeout, 10.0),
        )

    def ping(self) -> dict[str, Any]:
        """Log in and read the version and the keyspace (``INFO server`` / ``INFO keyspace``).

        Raises:
            TransientError: the server is unreachable.
            InputError: the server refused the credentials (field ``password``).
        """
        import redis

        client = self.client(timeout=15)
        try:
            server = client.info("server")
            keyspace = client.info("keyspace")
        except redis.AuthenticationError as exc:  # also WRONGPASS / NOAUTH
            if self.password is None:
                raise InputError(
                    "password", f"{self.where} requires a password and the block has none", "set password"
                ) from None
            raise InputError(
                "password", f"{self.where} refused the login ({_first_line(exc)})", "check username/password"
            ) from None
        except redis.ResponseError as exc:
            if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
                raise InputError(
                    "password", f"{self.where} refused the login ({_first_line(exc)})", "set the password"
                ) from None
            raise PermanentError(f"redis at {self.where}: {_first_line(exc)}") from None
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            raise TransientError(f"cannot reach redis at {self.where}: {_first_line(exc)}") from None
        finally:
            client.close()
        return {"version": str(server.get("redis_version", "unknown")), "keyspace": keyspace_counts(keyspace)}


def keyspace_counts(info: dict[str, Any]) -> dict[str, dict[str, int]]:
    """``INFO keyspace`` -> ``{"keys": {"db0": n}, "expires": {"db0": n}}`` (databases with keys)."""
    keys: dict[str, int] = {}
    expires: dict[str, int] = {}
    for name, value in info.items():
        if isinstance(name, str) and re.fullmatch(r"db[0-9]{1,5}", name) and isinstance(value, dict):
            keys[name] = int(value.get("keys", 0))
            expires[name] = int(value.get("expires", 0))
    return {"keys": keys, "expires": expires}


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:300]
