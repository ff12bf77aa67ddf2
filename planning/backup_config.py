"""Backup job configuration: the model and its YAML parsing (pure: no I/O, no clock, no clients).

A job reads like nxs-backup's (see ``deployments/jobs/*.yaml``)::

    job: redmine-mysql
    type: mysql                      # mysql | mariadb | postgres | files | etcd | redis | mariadb_backup
    schedule: "0 0 * * *"            # cron, for the deployment (optional)
    sources:
    - connect: {block: redmine-db}   # a saved `Database` block (credentials never live here)
      target: [redmine_db]           # databases; empty = all user databases
      extra_keys: "--opt --add-drop-database --routines ..."
    storages:
    - storage: local
      backup_dir: /var/stateferry/backups
      store: {days: 6, weeks: 4, months: 6}
    - storage: s3
      object_store: backups-s3       # a saved `ObjectStore` block, or e.g. aws-credentials/prod,
      bucket_name: backups           # s3-bucket/backups (then bucket_name may be left out)
      backup_dir: /stateferry/mysql  # key prefix
      store: {days: 2, weeks: 1, months: 6}
    verify: true
    notify: {block: custom-webhook/ops, on_success: false}   # or {email: {credentials: ops-smtp, to: [...]}}
    encryption: {recipients: [age1...], identity_secret: backups-age-key}   # planning/backup_encryption.py

Every problem is reported as :class:`stateferry.errors.InputError` naming the field (e.g.
``storages[1].store.days``) and the fix.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from planning.backup_encryption import EncryptionConfig
from planning.config_model import ConfigModel as _Model
from planning.config_model import input_error_from
from planning.db_args import check_database_name, check_extra_keys
from planning.inc_chain import check_incremental, parse_full_every
from planning.notify_config import NotifyConfig
from planning.pvc_source import check_paths, parse_claim
from planning.storage_config import (
    AnyStorageConfig,
    StorageConfig,
)
from stateferry.errors import InputError

#: nxs-backup's extra keys for mysqldump (the seed), plus --single-transaction added separately.
DEFAULT_MYSQLDUMP_KEYS = (
    "--opt --add-drop-database --routines --comments --create-options --quote-names"
    " --order-by-primary --hex-blob"
)
#: pg_dump options that would leave objects out of a dump (grants, comments, large objects).
#: dump options after which the archive holds less than the database: an inventory of the whole
#: database cannot be compared with what such a dump restores.
_NARROWING = {
    "mysql": ("--no-data", "--no-create-info", "--ignore-table"),
    "postgres": (
        "--schema-only",
        "--data-only",
        "--schema",
        "--exclude-schema",
        "--table",
        "--exclude-table",
        "--exclude-table-data",
        "--section",
        "--no-unlogged-table-data",
    ),
}
_PG_INCOMPLETE = (
    "--no-privileges",
    "--no-acl",
    "--no-comments",
    "--no-blobs",
    "--no-large-objects",
    "--no-owner",
    "--no-security-labels",
    "--no-publications",
    "--no-subscriptions",
)
_ENGINES = {
    "mysql": "mysql",
    "mariadb": "mysql",
    "postgres": "postgres",
    "postgresql": "postgres",
    "pgsql": "postgres",
    "files": "files",
    "desc_files": "files",
    "inc_files": "files",
    "etcd": "etcd",
    "redis": "redis",
    "mariadb_backup": "mysql_physical",
    "mysql_xtrabackup": "mysql_physical",  # nxs-backup's name; MariaDB's own tool does the work
}
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_SECRET_KEYS = ("db_password", "password", "secret_access_key", "secret_key", "access_key_id")


class ConnectConfig(_Model):
    """Where the credentials are: the name of a saved block (never the password itself)."""

    block: str


class _SourceModel(_Model):
    gzip: bool = True

    @field_validator("gzip")
    @classmethod
    def _gzip(cls, v: bool) -> bool:
        if not v:
            raise InputError(
                "gzip",
                "stateferry always compresses (gzip or zstd)",
                "remove gzip: no; for data that is already compressed use compression: zstd"
                " with compression_level: 1 (zstd stores incompressible blocks as they are)",
            )
        return v


class DatabaseSourceConfig(_SourceModel):
    """A MySQL/MariaDB or PostgreSQL source."""

    connect: ConnectConfig
    target: list[str] = Field(default_factory=list, description="databases; empty = all user databases")
    extra_keys: str | None = None
    single_transaction: bool = True
    skip_objects: list[Literal["events", "routines", "triggers"]] = Field(
        default_factory=list,
        description="MySQL/MariaDB: object kinds left out of the dump on purpose (default: none)",
    )
    format: Literal["custom", "plain"] = "custom"
    globals: bool = Field(True, description="PostgreSQL: roles and tablespaces (pg_dumpall -g) too")
    role_passwords: bool = Field(True, description="PostgreSQL globals: keep the roles' password hashes")
    users: bool = Field(False, description="MySQL/MariaDB: users with grants on the databases, and grants")
    is_slave: bool = False

    @field_validator("is_slave")
    @classmethod
    def _no_slave(cls, v: bool) -> bool:
        if v:
            raise InputError(
                "is_slave",
                "stopping a replica around the dump is not supported",
                "remove is_slave (--single-transaction dumps InnoDB consistently without stopping anything)",
            )
        return v

    @field_validator("target")
    @classmethod
    def _targets(cls, v: list[str]) -> list[str]:
        return [check_database_name(name, "target") for name in v]

    def narrowed_by(self, engine: str) -> list[str]:
        """The options (names only) in ``extra_keys`` that leave part of the database out."""
        names = [k.split("=", 1)[0] for k in self.dump_args(engine)]
        return sorted({n for n in names if n in _NARROWING["mysql" if engine == "mysql" else "postgres"]})

    def dump_args(self, engine: str) -> list[str]:
        """Extra command-line keys for the dump tool."""
        if engine == "mysql":
            keys = check_extra_keys(
                "mysqldump", self.extra_keys if self.extra_keys is not None else DEFAULT_MYSQLDUMP_KEYS
            )
            # complete by default, whatever extra_keys says (later options win); opt-outs explicit
            for kind in ("events", "routines", "triggers"):
                on, off = f"--{kind}", f"--skip-{kind}"
                want, drop = (off, on) if kind in self.skip_objects else (on, off)
                keys = [k for k in keys if k != drop]
                if want not in keys:
                    keys.append(want)
            if self.single_transaction and "--single-transaction" not in keys:
                keys.append("--single-transaction")
            return keys
        keys = check_extra_keys("pg_dump", self.extra_keys or "")
        if self.format == "custom" and "--blobs" not in keys and "--large-objects" not in keys:
            keys.append("--blobs")  # large objects even when --schema/--table narrow the dump
        return keys


class FilesSourceConfig(_SourceModel):
    """Files and directories archived with tar."""

    target: list[str] = Field(min_length=1)
    excludes: list[str] = Field(default_factory=list)
    full_every: str | int | None = Field(default=None, description="inc_files: month | week | N days")

    @field_validator("full_every")
    @classmethod
    def _every(cls, v: str | int | None) -> str | int | None:
        if v is not None:
            parse_full_every(v, "full_every")
        return v

    @field_validator("target")
    @classmethod
    def _abs(cls, v: list[str]) -> list[str]:
        for p in v:
            if not p.startswith("/"):
                raise InputError("target", f"{p!r} is not an absolute path", "list absolute paths to archive")
        return [p.rstrip("/") or "/" for p in v]


class EtcdSourceConfig(_SourceModel):
    """An etcd cluster described by a saved ``EtcdCluster`` block."""

    connect: ConnectConfig


class RedisSourceConfig(_SourceModel):
    """A Redis server described by a saved ``RedisServer`` block (RDB snapshot via ``redis-cli --rdb``)."""

    connect: ConnectConfig


class PhysicalSourceConfig(_SourceModel):
    """A MariaDB server backed up file by file with ``mariadb-backup`` (tasks/mariadb_physical.py)."""

    connect: ConnectConfig
    datadir: str | None = Field(default=None, description="as this worker sees it; default: @@datadir")
    parallel: int = Field(default=2, ge=1, le=16, description="files copied at once")

    @field_validator("datadir")
    @classmethod
    def _datadir(cls, v: str | None) -> str | None:
        if v is not None and (not v.startswith("/") or any(ord(c) < 32 or ord(c) == 127 for c in v)):
            raise InputError(
                "datadir", f"{v[:80]!r} is not an absolute path", "give the data directory's path"
            )
        return v


class PvcSourceConfig(_SourceModel):
    """Files from a PersistentVolumeClaim, packed by a mover Job in the cluster (``tasks/pvc_backup.py``)."""

    pvc: str = Field(description="<namespace>/<claim>")
    paths: list[str] = Field(default_factory=lambda: ["."], description="inside the volume; . = all")
    connect: ConnectConfig = Field(description="a saved KubeCluster block, or <block-type-slug>/<name>")
    mover_endpoint: str | None = Field(default=None, description="S3 endpoint as the mover pod sees it")
    mover_image: str | None = None
    mover_security: Literal["root", "workload", "image"] = "root"
    timeout_seconds: int = Field(default=3600, ge=10)

    @field_validator("pvc")
    @classmethod
    def _pvc(cls, v: str) -> str:
        parse_claim(v)
        return v

    @field_validator("paths")
    @classmethod
    def _paths(cls, v: list[str]) -> list[str]:
        return check_paths(v)


class BackupJob(_Model):
    """One backup job: one source, any number of storages."""

    job: str
    type: str
    engine: Literal["mysql", "postgres", "files", "etcd", "redis", "pvc", "mysql_physical"]
    source: (
        DatabaseSourceConfig
        | FilesSourceConfig
        | EtcdSourceConfig
        | RedisSourceConfig
        | PvcSourceConfig
        | PhysicalSourceConfig
    )
    storages: list[StorageConfig] = Field(min_length=1)
    verify: bool = False
    schedule: str | None = None
    timezone: str = "UTC"
    notify: NotifyConfig | None = None
    compression: Literal["gzip", "zstd"] = "gzip"
    compression_level: int | None = Field(default=None, description="gzip 0-3 (ISA-L), zstd 1-19")
    encryption: EncryptionConfig | None = Field(default=None, description="age recipients (at rest)")
    description: str = ""

    @model_validator(mode="after")
    def _level(self) -> BackupJob:
        lo, hi = (0, 3) if self.compression == "gzip" else (1, 19)
        if self.compression_level is not None and not lo <= self.compression_level <= hi:
            raise InputError(
                "compression_level",
                f"{self.compression_level} is outside {lo}..{hi} for {self.compression}",
                f"use {lo}..{hi} (gzip through ISA-L has levels 0-3; zstd 1-19) or leave it out",
            )
        return self

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(v)
        except (ValueError, KeyError, OSError):
            raise InputError(
                "timezone", f"unknown timezone {v!r}", "use an IANA name such as UTC or Europe/Moscow"
            ) from None
        return v

    @property
    def incremental(self) -> bool:
        """``type: inc_files`` of files on the worker: GNU tar chains (planning/inc_chain.py)."""
        return self.type.lower() == "inc_files" and isinstance(self.source, FilesSourceConfig)

    @property
    def enabled_storages(self) -> list[AnyStorageConfig]:
        """Storages with ``enable: yes``."""
        return [s for s in self.storages if s.enable]

    @property
    def storage_labels(self) -> list[str]:
        """Report names of the enabled storages."""
        return [s.label for s in self.enabled_storages]


def _source_model(engine: str) -> type[_SourceModel]:
    if engine in ("mysql", "postgres"):
        return DatabaseSourceConfig
    if engine == "files":
        return FilesSourceConfig
    if engine == "redis":
        return RedisSourceConfig
    if engine == "pvc":
        return PvcSourceConfig
    if engine == "mysql_physical":
        return PhysicalSourceConfig
    return EtcdSourceConfig


def _refuse_secrets(entry: Any, where: str, fix: str) -> None:
    """Refuse a secret key in the mapping ``entry`` (at ``where`` in the job); ``fix`` names its block."""
    key = next((k for k in _SECRET_KEYS if k in entry), None) if isinstance(entry, dict) else None
    if key is not None:
        raise InputError(
            f"{where}.{key}", "secrets do not belong in a job config (it is a visible flow parameter)", fix
        )


def parse_job(data: Any) -> BackupJob:
    """Validate one job mapping (as loaded from YAML or given as flow parameter).

    Args:
        data: the job mapping (``job``, ``type``, ``sources``, ``storages``, ...).

    Returns:
        The validated job.

    Raises:
        InputError: naming the offending field and the fix.
    """
    if not isinstance(data, dict):
        raise InputError(
            "job", f"expected a mapping, got {type(data).__name__}", "give job, type, sources, storages"
        )
    data = dict(data)
    name = data.get("job")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InputError(
            "job", f"{name!r} is not a valid job name", "use 1-63 chars of a-z 0-9 . _ - (lowercase)"
        )
    kind = data.get("type")
    if not isinstance(kind, str) or kind.lower() not in _ENGINES:
        raise InputError(
            "type",
            f"unknown engine {kind!r}",
            f"use one of {', '.join(sorted(set(_ENGINES)))}",
        )
    engine = _ENGINES[kind.lower()]
    if "source" in data and "sources" not in data:
        data["sources"] = [data.pop("source")]
    sources = data.pop("sources", None)
    if not isinstance(sources, list) or len(sources) != 1:
        raise InputError(
            "sources", "a job backs up exactly one source", "list one source (make one job per service)"
        )
    src = sources[0]
    if engine == "files" and isinstance(src, dict) and "pvc" in src:
        engine = "pvc"  # files of a PersistentVolumeClaim, packed in the cluster
    if isinstance(src, dict):
        src = dict(src)
        fix = "save a Database/EtcdCluster/RedisServer block and reference it as connect: {block: <name>}"
        _refuse_secrets(src.get("connect"), "sources[0].connect", fix)
    for i, st in enumerate(data.get("storages") or []):
        if isinstance(st, dict):
            _refuse_secrets(
                st, f"storages[{i}]", "save an ObjectStore block and reference it as object_store: <name>"
            )
            if st.get("storage") not in ("local", "s3", "sftp"):
                raise InputError(
                    f"storages[{i}].storage",
                    f"unknown storage {st.get('storage')!r}",
                    "use storage: local, s3 or sftp",
                )
    if engine == "mysql_physical" and isinstance(src, dict) and src.get("target"):
        raise InputError(
            "sources[0].target",
            "a physical backup copies the whole server (every database)",
            "remove target, or use type: mysql for a logical dump of some databases",
        )
    try:
        source = _source_model(engine).model_validate(src)
    except ValidationError as exc:
        raise input_error_from(exc, "sources[0].") from None
    if isinstance(source, DatabaseSourceConfig) and source.skip_objects and engine != "mysql":
        raise InputError(
            "sources[0].skip_objects", "applies to MySQL/MariaDB dumps only", "remove skip_objects"
        )
    if isinstance(source, DatabaseSourceConfig):  # options of the other engine are refused
        for key in ("users",) if engine != "mysql" else ("globals", "role_passwords"):
            if key in src:
                which = "MySQL/MariaDB" if key == "users" else "PostgreSQL"
                raise InputError(f"sources[0].{key}", f"applies to {which} sources only", f"remove {key}")
    if isinstance(source, DatabaseSourceConfig) and source.extra_keys is not None:
        tool: Literal["mysqldump", "pg_dump"] = "mysqldump" if engine == "mysql" else "pg_dump"
        keys = check_extra_keys(tool, source.extra_keys, "sources[0].extra_keys")
        incomplete = [k for k in keys if k in _PG_INCOMPLETE]
        if engine == "postgres" and incomplete:
            raise InputError(
                "sources[0].extra_keys",
                f"{incomplete[0]} leaves owners, grants, comments, labels, publications or large objects"
                " out of the dump",
                "remove it: a backup keeps everything the database has (pg_restore can still skip"
                " objects at restore time)",
            )
        bad = [k for k in keys if k in ("--create", "--clean", "--if-exists")]
        if engine == "postgres" and bad:
            raise InputError(
                "sources[0].extra_keys",
                f"{bad[0]} makes a dump drop or create databases (restores would replace live data)",
                "remove it; restores always go into a fresh temporary database and are swapped in",
            )
    data.pop("tmp_dir", None)  # nxs-backup's staging dir: stateferry streams, nothing is staged
    try:
        job = BackupJob.model_validate({**data, "type": kind, "engine": engine, "source": source})
    except ValidationError as exc:
        raise input_error_from(exc) from None
    if not job.enabled_storages:
        raise InputError("storages", "no storage is enabled", "enable at least one storage")
    if engine == "pvc" and not any(s.storage == "s3" for s in job.enabled_storages):
        raise InputError(
            "storages",
            "a pvc source needs an S3 storage (the mover Job in the cluster streams through it)",
            "add a storage: s3",
        )
    every = job.source.full_every if isinstance(job.source, FilesSourceConfig) else None
    check_incremental(job.type.lower() == "inc_files", job.incremental, every is not None)
    labels = job.storage_labels
    if len(set(labels)) != len(labels):
        raise InputError(
            "storages", f"two storages share a name: {labels}", "give each storage a distinct name"
        )
    return job


def parse_job_yaml(text: str) -> BackupJob:
    """Parse a job from YAML text (a mapping, or a one-item list as in nxs-backup's conf.d files).

    Raises:
        InputError: for YAML syntax errors and every validation problem.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError("job config", f"is not valid YAML ({exc})", "fix the YAML syntax") from None
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    return parse_job(data)


def job_to_parameters(job: BackupJob) -> dict[str, Any]:
    """The JSON-able mapping to pass as the flow's ``job`` parameter (round-trips through parse_job)."""
    src = job.source.model_dump(mode="json", exclude_defaults=True)
    storages = [s.model_dump(mode="json", exclude_none=True) for s in job.storages]
    out: dict[str, Any] = {"job": job.job, "type": job.type, "sources": [src], "storages": storages}
    if job.verify:
        out["verify"] = True
    if job.schedule:
        out["schedule"] = job.schedule
    if job.timezone != "UTC":
        out["timezone"] = job.timezone
    if job.notify:
        out["notify"] = job.notify.model_dump(mode="json", by_alias=True, exclude_none=True)
    if job.compression != "gzip":
        out["compression"] = job.compression
    if job.compression_level is not None:
        out["compression_level"] = job.compression_level
    if job.description:
        out["description"] = job.description
    if job.encryption:
        out["encryption"] = job.encryption.model_dump(mode="json", exclude_none=True)
    return out
