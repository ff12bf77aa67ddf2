"""SftpServer: an SSH server that stores backups over SFTP (host, port, user, key or password, host key)."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from prefect.blocks.core import Block
from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from blocks._validation import check_host, check_nonempty, closed_block_schema
from stateferry.errors import InputError

if TYPE_CHECKING:
    import paramiko

#: seconds for the TCP connect, the SSH handshake and authentication
CONNECT_TIMEOUT = 20.0


class SftpServer(Block):
    """An SSH/SFTP server for backups.

    The server's host key is always checked against ``known_hosts`` (one or more lines as written by
    ``ssh-keyscan -p PORT HOST``): an unknown or changed key is refused, never learned. Authentication
    by private key (OpenSSH or PEM format, optionally with a passphrase) and/or password.
    """

    _block_type_name = "Stateferry SFTP Server"
    _description = "An SSH server storing backups over SFTP (host key pinned in known_hosts)."
    model_config = ConfigDict(hide_input_in_errors=True, json_schema_extra=closed_block_schema)

    host: str = Field(description="Host name or address of the SSH server.")
    port: int = Field(default=22, ge=1, le=65535, description="SSH port.")
    username: str = Field(description="SSH user.")
    password: SecretStr | None = Field(default=None, description="Password (or the key's passphrase).")
    private_key: SecretStr | None = Field(default=None, description="Private key (OpenSSH or PEM text).")
    known_hosts: str = Field(
        description="The server's host key line(s), as `ssh-keyscan -p PORT HOST` prints."
    )
    pipelined: bool = Field(default=True, description="Pipelined SFTP writes (faster on high latency).")

    @field_validator("host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        return check_host("host", value.strip())

    @field_validator("username")
    @classmethod
    def _check_username(cls, value: str) -> str:
        return check_nonempty("username", value, "give the SSH user name")

    @field_validator("known_hosts")
    @classmethod
    def _check_known_hosts(cls, value: str) -> str:
        _host_keys(value)  # raises InputError when no line parses
        return value.strip()

    @model_validator(mode="after")
    def _some_credential(self) -> SftpServer:
        if self.password is None and self.private_key is None:
            raise InputError("private_key", "neither a private key nor a password is set", "give one of them")
        return self

    def connect(self) -> tuple[paramiko.SSHClient, paramiko.SFTPClient]:
        """Open an SSH connection (host key checked) and an SFTP session on it.

        Raises:
            InputError: host key unknown/changed (``known_hosts``), authentication refused
                (``private_key``/``password``). Messages never contain a secret.
            TransientError: the server is unreachable.
        """
        import paramiko

        from stateferry.errors import TransientError

        client = paramiko.SSHClient()
        keys = client.get_host_keys()
        for hostname, key in _host_keys(self.known_hosts):
            keys.add(hostname, key.get_name(), key)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        pkey = _private_key(self.private_key, self.password) if self.private_key is not None else None
        # with a key, the password is the key's passphrase; without one, it is the login password
        password = self.password.get_secret_value() if self.password is not None and pkey is None else None
        try:
            client.connect(
                self.host,
                port=self.port,
                username=self.username,
                password=password,
                pkey=pkey,
                timeout=CONNECT_TIMEOUT,
                banner_timeout=CONNECT_TIMEOUT,
                auth_timeout=CONNECT_TIMEOUT,
                allow_agent=False,
                look_for_keys=False,
            )
        except paramiko.BadHostKeyException:
            client.close()
            raise InputError(
                "known_hosts",
                f"{self.host}:{self.port} presented a host key that differs from the block's known_hosts",
                "check the server's identity, then update known_hosts (ssh-keyscan -p PORT HOST)",
            ) from None
        except paramiko.SSHException as exc:
            client.close()
            if "not found in known_hosts" in str(exc):
                raise InputError(
                    "known_hosts",
                    f"{self.host}:{self.port} is not in the block's known_hosts",
                    "add its key line (ssh-keyscan -p PORT HOST) after checking its fingerprint",
                ) from None
            if isinstance(exc, paramiko.AuthenticationException):
                raise InputError(
                    "private_key" if pkey is not None else "password",
                    f"{self.username}@{self.host}:{self.port} refused the credentials",
                    "fix the block's private_key/password or the server's authorized_keys",
                ) from None
            raise TransientError(f"SSH to {self.host}:{self.port} failed: {type(exc).__name__}") from None
        except OSError as exc:
            client.close()
            raise TransientError(
                f"the SFTP server {self.host}:{self.port} is unreachable "
                f"({exc.strerror or type(exc).__name__})"
            ) from None
        return client, client.open_sftp()


def _host_keys(text: str) -> list[tuple[str, Any]]:
    """Parse known_hosts lines; raise InputError when none parses."""
    import paramiko

    out: list[tuple[str, Any]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            entry = paramiko.hostkeys.HostKeyEntry.from_line(line)
        except Exception:
            entry = None
        if entry is None or entry.key is None:
            continue
        out += [(name, entry.key) for name in entry.hostnames]
    if not out:
        raise InputError(
            "known_hosts",
            "holds no parseable host key line",
            "paste the output of `ssh-keyscan -p PORT HOST` (after checking the fingerprint)",
        )
    return out


def _private_key(key: SecretStr, passphrase: SecretStr | None) -> Any:
    import paramiko

    text = key.get_secret_value()
    secret = passphrase.get_secret_value() if passphrase is not None else None
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key(io.StringIO(text), password=secret)
        except paramiko.SSHException:
            continue
    raise InputError(
        "private_key",
        "is not an Ed25519, ECDSA or RSA private key (or the passphrase is wrong)",
        "paste the key text",
    )
