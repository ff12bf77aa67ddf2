"""The backup flows' typed parameters: ``job`` (:class:`BackupJobSpec`, the job config as in
``deployments/jobs/*.yaml``) of ``scheduled_backup`` / ``restore_backup``, and ``restore_backup``'s
``options`` (:class:`RestoreBackupOptions`).

:class:`BackupJobSpec` is the job in the form users write it (``sources: [...]``, ``type: mysql``,
storages with nxs-backup's aliases); its validator is :func:`planning.backup_config.parse_job`, so a
job is checked completely (errors name ``storages[1].store.days`` and the fix) before the run starts,
and :meth:`BackupJobSpec.config` hands the flows the normalised
:class:`~planning.backup_config.BackupJob`. A plain mapping is accepted wherever a spec is.
``sources``, ``storages`` and ``notify`` stay mappings in the schema: their accepted spellings
(engine-dependent source keys, ``bucket``/``prefix``/``month`` aliases, ``from``) are more than one
JSON schema can say, and the deployments that use them keep working.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from planning.backup_config import BackupJob, parse_job
from planning.backup_encryption import EncryptionConfig
from planning.flow_options import FlowOptions
from planning.pvc_source import parse_claim

__all__ = ["DOCS", "BackupJobSpec", "RestoreBackupOptions", "job_config"]

DOCS = "docs/backups.md (job format and restore parameters)"


class BackupJobSpec(FlowOptions):
    """One backup job (nxs-backup style): one source, its storages, verification and notification."""

    job: str = Field(
        pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$", description="Job name (1-63 chars of a-z 0-9 . _ -)."
    )
    type: str = Field(
        description="Engine: mysql, mariadb, postgres (postgresql, pgsql), files (desc_files, "
        "inc_files), etcd, redis, mariadb_backup (mysql_xtrabackup)."
    )
    sources: list[dict[str, Any]] = Field(
        default_factory=list,
        max_length=1,
        description="Exactly one source: `{connect: {block: <saved block>}, target: [...], ...}` "
        "(keys per engine: docs/backups.md).",
    )
    source: dict[str, Any] | None = Field(
        default=None, description="The one source, instead of `sources: [...]`."
    )
    storages: list[dict[str, Any]] = Field(
        min_length=1,
        description="Where backups go: `{storage: local | s3 | sftp, backup_dir, store: {days, weeks, "
        "months} | {count}, ...}`.",
    )
    verify: bool = Field(default=False, description="Restore the new backup into a scratch copy and compare.")
    schedule: str | None = Field(default=None, description="Cron schedule of the deployment.")
    timezone: str = Field(
        default="UTC", description="Time zone of the schedule and of retention (IANA name)."
    )
    notify: dict[str, Any] | None = Field(
        default=None,
        description="`{block: <slug>/<name>}` or `{email: {credentials, to: [...]}}`, with on_failure / "
        "on_success.",
    )
    compression: Literal["gzip", "zstd"] = Field(default="gzip", description="Compression of the parts.")
    compression_level: int | None = Field(
        default=None, ge=0, le=19, description="gzip 0-3 (ISA-L), zstd 1-19; default per algorithm."
    )
    encryption: EncryptionConfig | None = Field(
        default=None, description="age recipients (encryption at rest)."
    )
    description: str = Field(default="", description="Deployment description.")
    tmp_dir: str | None = Field(
        default=None, description="nxs-backup's staging directory: accepted, not used."
    )

    _config: BackupJob | None = PrivateAttr(None)

    @model_validator(mode="before")
    @classmethod
    def _one_source(cls, data: Any) -> Any:
        """``source: {...}`` is ``sources: [{...}]`` (so a dumped spec validates again)."""
        if isinstance(data, dict) and data.get("source") is not None and not data.get("sources"):
            data = {**{k: v for k, v in data.items() if k != "source"}, "sources": [data["source"]]}
        return data

    @model_validator(mode="after")
    def _whole_job(self) -> BackupJobSpec:
        self._config = parse_job(self.mapping())
        return self

    def mapping(self) -> dict[str, Any]:
        """The job as the mapping it was given (what :func:`parse_job` reads)."""
        data = self.model_dump(mode="json", exclude_unset=True)
        if data.get("source") is None:
            data.pop("source", None)
        return data

    def config(self) -> BackupJob:
        """The validated, normalised job."""
        if self._config is None:
            self._config = parse_job(self.mapping())
        return self._config


def job_config(job: BackupJobSpec | Mapping[str, Any]) -> BackupJob:
    """The validated job of a flow's ``job`` parameter (a spec, or its mapping when not validated yet).

    Raises:
        InputError: Naming the job's field and the fix.
    """
    return job.config() if isinstance(job, BackupJobSpec) else parse_job(dict(job))


class RestoreBackupOptions(FlowOptions):
    """What ``restore_backup`` restores, from where, and into what."""

    backup: str = Field(
        default="latest",
        min_length=1,
        description="`latest`, a backup id (or unique prefix), or an ISO time (newest backup at or before).",
    )
    storage: str | None = Field(
        default=None,
        description="The storage label to restore from (default: local storages first, then S3).",
    )
    target_database: str | None = Field(
        default=None, description="Restore a single database under this name (default: its own name)."
    )
    target_block: str | None = Field(
        default=None,
        description="A saved Database block to restore into (default: the job's source); for Redis a "
        "RedisServer block to copy the keys into.",
    )
    target_dir: str | None = Field(
        default=None,
        description="Directory for files / etcd data dir (required for those engines); for Redis the data "
        "dir of a new instance.",
    )
    overwrite: bool = Field(
        default=False,
        description="Replace existing databases / write into a non-empty directory (asks first).",
    )
    dry_run: bool = Field(default=False, description="Only list what would be done.")
    etcd_name: str = Field(default="default", description="Member name for `etcdctl snapshot restore`.")
    etcd_peer_url: str = Field(default="http://127.0.0.1:2380", description="The member's peer URL.")
    etcd_initial_cluster: str | None = Field(
        default=None, description="`--initial-cluster` (default: the single member)."
    )
    restore_globals: bool = Field(
        default=False,
        description="PostgreSQL: apply the backup's roles and tablespaces first (existing ones are kept; "
        "asks first).",
    )
    restore_users: bool = Field(
        default=False,
        description="MySQL/MariaDB backups taken with `users: true`: create the missing users and apply "
        "their grants (asks first).",
    )
    target_pvc: str | None = Field(
        default=None,
        description="Files of a PVC: `<namespace>/<claim>` to unpack into (created like the source's "
        "claim when missing; an existing one must be empty).",
    )
    identity_secret: str | None = Field(
        default=None,
        description="Encrypted backups: the Prefect Secret block holding the age identity (default: the "
        "job's encryption.identity_secret).",
    )

    @field_validator("target_pvc")
    @classmethod
    def _claim(cls, value: str | None) -> str | None:
        if value is not None:
            parse_claim(value, "target_pvc")
        return value
