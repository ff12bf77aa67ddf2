"""EtcdCluster: endpoints and credentials of an etcd v3 cluster."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from blocks._validation import check_nonempty, check_pem, closed_block_schema, parse_endpoint
from blocks.etcd_client import EtcdClient
from stateferry.errors import InputError


class EtcdCluster(Block):
    """An etcd v3 cluster: client endpoints, optional TLS PEMs and user/password (as secrets).

    The block only builds an :class:`~blocks.etcd_client.EtcdClient` (:meth:`client`); it does no work.
    """

    _block_type_name = "Stateferry Etcd Cluster"
    _description = "An etcd v3 cluster (client endpoints, optional TLS PEMs, optional user/password)."
    model_config = ConfigDict(hide_input_in_errors=True, json_schema_extra=closed_block_schema)

    endpoints: list[str] = Field(description='Client endpoints, "host:port" or "http(s)://host:port".')
    ca_cert: SecretStr | None = Field(default=None, description="PEM CA certificate; required for https.")
    client_cert: SecretStr | None = Field(default=None, description="PEM client certificate (mutual TLS).")
    client_key: SecretStr | None = Field(default=None, description="PEM client private key (mutual TLS).")
    username: str | None = Field(default=None, description="etcd user (auth-enabled clusters).")
    password: SecretStr | None = Field(default=None, description="Password of the etcd user.")
    timeout_seconds: float = Field(default=5.0, description="Seconds allowed per etcd operation.")

    @field_validator("endpoints")
    @classmethod
    def _check_endpoints(cls, value: list[str]) -> list[str]:
        if not value:
            raise InputError("endpoints", "no endpoint given", 'list at least one, e.g. ["127.0.0.1:2379"]')
        cleaned = []
        for endpoint in value:
            parsed = parse_endpoint(
                "endpoints", endpoint, example="127.0.0.1:2379 or https://etcd-0.etcd:2379"
            )
            if ":" in parsed.host:
                raise InputError(
                    "endpoints", f"{endpoint!r} is an IPv6 address", "use an IPv4 address or a host name"
                )
            if parsed.port is None:
                raise InputError("endpoints", f"{endpoint!r} has no port", "add the client port, e.g. :2379")
            cleaned.append(endpoint.strip().rstrip("/"))
        if len(set(cleaned)) != len(cleaned):
            raise InputError("endpoints", "an endpoint is listed twice", "list each endpoint once")
        return cleaned

    @field_validator("ca_cert", "client_cert")
    @classmethod
    def _check_cert(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_pem("ca_cert/client_cert", value.get_secret_value(), kinds=("CERTIFICATE",))
        return value

    @field_validator("client_key")
    @classmethod
    def _check_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_pem("client_key", value.get_secret_value(), kinds=("PRIVATE KEY",))
        return value

    @field_validator("username")
    @classmethod
    def _check_username(cls, value: str | None) -> str | None:
        return (
            None
            if value is None
            else check_nonempty("username", value, "give the etcd user name or leave it unset")
        )

    @field_validator("timeout_seconds")
    @classmethod
    def _check_timeout(cls, value: float) -> float:
        if not 0 < value <= 600:
            raise InputError(
                "timeout_seconds", f"{value} is out of range", "use a value between 0 and 600 seconds"
            )
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> EtcdCluster:
        schemes = {parse_endpoint("endpoints", e, example="127.0.0.1:2379").scheme for e in self.endpoints}
        if {"http", "https"} <= schemes:
            raise InputError("endpoints", "mixes http:// and https://", "use one scheme for every endpoint")
        if "https" in schemes and self.ca_cert is None:
            raise InputError(
                "ca_cert", "https endpoints need the CA certificate", "set ca_cert to the etcd CA (PEM)"
            )
        if "http" in schemes and self.ca_cert is not None:
            raise InputError("ca_cert", "a CA is set but the endpoints are http://", "use https:// endpoints")
        if (self.client_cert is None) != (self.client_key is None):
            raise InputError(
                "client_key", "client_cert and client_key must be given together", "set both or neither"
            )
        if self.client_cert is not None and self.ca_cert is None:
            raise InputError("ca_cert", "mutual TLS needs the CA certificate too", "set ca_cert")
        if (self.username is None) != (self.password is None):
            missing = "password" if self.password is None else "username"
            raise InputError(missing, f"{missing} is missing", "set both username and password, or neither")
        return self

    def client(self) -> EtcdClient:
        """Build an (unconnected) :class:`~blocks.etcd_client.EtcdClient`; use it with ``async with``."""
        return EtcdClient(
            self.endpoints,
            ca_cert=self.ca_cert.get_secret_value() if self.ca_cert else None,
            cert_chain=self.client_cert.get_secret_value() if self.client_cert else None,
            cert_key=self.client_key.get_secret_value() if self.client_key else None,
            user=self.username,
            password=self.password.get_secret_value() if self.password else None,
            timeout=self.timeout_seconds,
        )
