"""Where a backup job stores its backups (pure: the storage models and their validation).

``local`` (a directory), ``s3`` (a bucket + prefix through a saved ``ObjectStore`` block, or a saved
prefect-aws ``AwsCredentials`` / ``MinIOCredentials`` / ``S3Bucket`` named ``<block-type-slug>/<name>``)
and ``sftp``
(a directory on an SSH server through a saved ``SftpServer`` block); each with its own retention
(``store:``, planning/store_config.py).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from planning.config_model import ConfigModel as _Model
from planning.config_model import with_aliases
from planning.mirror_inputs import check_bucket_name
from planning.store_config import StoreConfig
from stateferry.errors import InputError


class LocalStorageConfig(_Model):
    """A directory on the machine (or PV) running the flow."""

    storage: Literal["local"]
    enable: bool = True
    name: str | None = None
    backup_dir: str
    store: StoreConfig = Field(default_factory=StoreConfig)

    @field_validator("backup_dir")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/"):
            raise InputError(
                "backup_dir", f"{v!r} is not an absolute path", "give an absolute directory path"
            )
        return v.rstrip("/") or "/"

    @property
    def label(self) -> str:
        """Human name used in reports (``local:/path`` unless named)."""
        return self.name or f"local:{self.backup_dir}"


class S3StorageConfig(_Model):
    """A bucket + key prefix on an S3 server described by a saved block.

    ``object_store`` is a saved ``ObjectStore``'s name, or ``<block-type-slug>/<name>`` of a saved
    ``ObjectStore`` / ``AwsCredentials`` / ``MinIOCredentials`` / ``S3Bucket`` (``blocks/loading.py``);
    ``bucket_name`` may be left out for an ``s3-bucket/<name>``, whose bucket is then used.
    """

    storage: Literal["s3"]
    enable: bool = True
    name: str | None = None
    object_store: str = Field(
        description="name of a saved ObjectStore block, or <block-type-slug>/<name> (e.g. s3-bucket/backups)"
    )
    bucket_name: str | None = Field(default=None, alias="bucket_name")
    backup_dir: str = ""
    store: StoreConfig = Field(default_factory=StoreConfig)

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        return with_aliases(data, {"bucket": "bucket_name", "prefix": "backup_dir"})

    @field_validator("bucket_name")
    @classmethod
    def _bucket(cls, v: str | None) -> str | None:
        return None if v is None else check_bucket_name(v, field_name="bucket_name")

    @field_validator("backup_dir")
    @classmethod
    def _prefix(cls, v: str) -> str:
        return v.strip("/")

    @model_validator(mode="after")
    def _bucket_known(self) -> S3StorageConfig:
        if self.bucket_name is None and not self.object_store.startswith("s3-bucket/"):
            raise InputError(
                "bucket_name",
                f"is missing and {self.object_store!r} is not an S3 Bucket block",
                "give bucket_name, or reference a saved S3Bucket as object_store: s3-bucket/<name>",
            )
        return self

    @property
    def label(self) -> str:
        """Human name used in reports (``s3:block/bucket/prefix`` unless named)."""
        bucket = f"/{self.bucket_name}" if self.bucket_name else ""
        return self.name or f"s3:{self.object_store}{bucket}/{self.backup_dir}".rstrip("/")


class SftpStorageConfig(_Model):
    """A directory on an SSH server, reached over SFTP with a saved ``SftpServer`` block."""

    storage: Literal["sftp"]
    enable: bool = True
    name: str | None = None
    sftp_server: str = Field(description="name of a saved SftpServer block")
    backup_dir: str
    store: StoreConfig = Field(default_factory=StoreConfig)

    @field_validator("sftp_server")
    @classmethod
    def _block_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", v):
            raise InputError("sftp_server", f"{v!r} is not a block name", "name a saved SftpServer block")
        return v

    @field_validator("backup_dir")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/") or "\x00" in v or ".." in v.split("/"):
            raise InputError("backup_dir", f"{v!r} is not an absolute path without '..'", "fix the path")
        return v.rstrip("/") or "/"

    @property
    def label(self) -> str:
        """Human name used in reports (``sftp:block:/path`` unless named)."""
        return self.name or f"sftp:{self.sftp_server}:{self.backup_dir}"


AnyStorageConfig = LocalStorageConfig | S3StorageConfig | SftpStorageConfig
StorageConfig = Annotated[AnyStorageConfig, Field(discriminator="storage")]
