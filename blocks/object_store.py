"""ObjectStore: connection and credentials of an S3-compatible object store (MinIO, SeaweedFS, AWS)."""

from __future__ import annotations

import hashlib
import os
import ssl
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect.blocks.core import Block
from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from blocks._validation import check_nonempty, check_pem, closed_block_schema, parse_endpoint
from stateferry.errors import InputError

if TYPE_CHECKING:
    import minio


class ObjectStore(Block):
    """An S3-compatible object store: endpoint, region, access key, secret key, TLS settings.

    The block only builds clients (:meth:`minio_client`, :meth:`boto3_client`); it does no work.
    ``endpoint`` is ``host:port`` or ``http(s)://host[:port]``; when it carries a scheme, ``secure``
    follows it (and must agree with it if both are given).
    """

    _block_type_name = "Stateferry Object Store"
    _description = "An S3-compatible object store (endpoint, region, access key, secret key, TLS)."
    model_config = ConfigDict(hide_input_in_errors=True, json_schema_extra=closed_block_schema)

    endpoint: str = Field(description='"host:port" or "http(s)://host[:port]", e.g. "127.0.0.1:8333".')
    region: str = Field(default="us-east-1", description="S3 region used for request signing.")
    access_key: str = Field(description="Access key id.")
    secret_key: SecretStr = Field(description="Secret access key.")
    secure: bool = Field(default=False, description="Use TLS (https).")
    ca_bundle: SecretStr | None = Field(default=None, description="PEM CA certificates to trust (TLS only).")

    @model_validator(mode="before")
    @classmethod
    def _secure_follows_scheme(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("endpoint"), str) and "secure" not in data:
            scheme = (
                data["endpoint"].strip().lower().split("://", 1)[0] if "://" in data["endpoint"] else None
            )
            if scheme in ("http", "https"):
                data = {**data, "secure": scheme == "https"}
        return data

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, value: str) -> str:
        parse_endpoint("endpoint", value, example="127.0.0.1:8333")
        return value.strip().rstrip("/")

    @field_validator("region")
    @classmethod
    def _check_region(cls, value: str) -> str:
        return check_nonempty("region", value, 'give the region the server signs with, e.g. "us-east-1"')

    @field_validator("access_key")
    @classmethod
    def _check_access_key(cls, value: str) -> str:
        return check_nonempty("access_key", value, "give the access key id of the S3 user")

    @field_validator("secret_key")
    @classmethod
    def _check_secret_key(cls, value: SecretStr) -> SecretStr:
        check_nonempty("secret_key", value.get_secret_value(), "give the secret access key of the S3 user")
        return value

    @field_validator("ca_bundle")
    @classmethod
    def _check_ca_bundle(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_pem("ca_bundle", value.get_secret_value(), kinds=("CERTIFICATE",))
        return value

    @model_validator(mode="after")
    def _check_tls(self) -> ObjectStore:
        parsed = parse_endpoint("endpoint", self.endpoint, example="127.0.0.1:8333")
        if parsed.scheme is not None and (parsed.scheme == "https") != self.secure:
            raise InputError(
                "secure",
                f"secure={self.secure} disagrees with the {parsed.scheme}:// scheme of endpoint",
                "drop the scheme from endpoint or set secure to match it",
            )
        if self.ca_bundle is not None and not self.secure:
            raise InputError(
                "ca_bundle", "a CA bundle is set but secure is False", "set secure=True or drop ca_bundle"
            )
        return self

    @property
    def host_port(self) -> str:
        """``host:port`` of the endpoint (port defaulted to 443/80 by ``secure``)."""
        parsed = parse_endpoint("endpoint", self.endpoint, example="127.0.0.1:8333")
        port = parsed.port if parsed.port is not None else (443 if self.secure else 80)
        host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
        return f"{host}:{port}"

    @property
    def url(self) -> str:
        """The endpoint as a URL, e.g. ``"http://127.0.0.1:8333"``."""
        return f"{'https' if self.secure else 'http'}://{self.host_port}"

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.secure:
            return None
        cadata = self.ca_bundle.get_secret_value() if self.ca_bundle is not None else None
        return ssl.create_default_context(cadata=cadata)

    def _ca_bundle_file(self) -> str | None:
        """Write the CA bundle to a private file (boto3 wants a path); reused across calls."""
        if self.ca_bundle is None:
            return None
        pem = self.ca_bundle.get_secret_value()
        directory = Path(tempfile.gettempdir()) / f"stateferry-ca-{os.getuid()}"
        directory.mkdir(mode=0o700, exist_ok=True)
        path = directory / f"{hashlib.sha256(pem.encode()).hexdigest()[:16]}.pem"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(pem)
        return str(path)

    def minio_client(self) -> minio.Minio:
        """Build a ``minio.Minio`` client for this store (no request is made).

        Returns:
            A client with connect/read timeouts and urllib3 retries of 5xx answers.
        """
        import minio
        import urllib3

        http_client = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=10.0, read=300.0),
            maxsize=16,
            retries=urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
            ssl_context=self._ssl_context(),
        )
        return minio.Minio(
            self.host_port,
            access_key=self.access_key,
            secret_key=self.secret_key.get_secret_value(),
            secure=self.secure,
            region=self.region,
            http_client=http_client,
        )

    def boto3_client(self) -> Any:
        """Build a boto3 S3 client (path-style addressing, SigV4) for features minio-py lacks.

        Returns:
            A ``botocore.client.S3`` client; no request is made.
        """
        import boto3
        from botocore.config import Config

        verify: bool | str = self._ca_bundle_file() or True
        session = boto3.session.Session()
        return session.client(
            "s3",
            endpoint_url=self.url,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key.get_secret_value(),
            verify=verify,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=10,
                read_timeout=300,
            ),
        )
