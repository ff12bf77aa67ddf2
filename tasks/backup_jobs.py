"""Tasks of the backup / restore flows: resolve blocks, preflight, dump, verify, publish, rotate.

Each task is small and reports what it did. The flows (``flows/backup.py``, ``flows/restore.py``)
only sequence them.
"""

from __future__ import annotations

import datetime as dt
import functools
import secrets as pysecrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from planning.backup_config import (
    BackupJob,
    DatabaseSourceConfig,
    EtcdSourceConfig,
    FilesSourceConfig,
    PhysicalSourceConfig,
    PvcSourceConfig,
    RedisSourceConfig,
)
from planning.backup_layout import (
    FILES_SNAPSHOT_PART,
    FIXED_PART,
    MYSQL_USERS_PART,
    PG_GLOBALS_PART,
    check_part_name,
    part_name,
    pg_part,
)
from planning.db_args import is_safe_database_name
from planning.storage_config import AnyStorageConfig, LocalStorageConfig, SftpStorageConfig
from stateferry.errors import InputError, PermanentError, StateferryError, TransientError
from stateferry.logs import run_logger
from tasks.backup_pipeline import PartResult, stream_part
from tasks.backup_sftp import SftpStorage
from tasks.backup_storage import BackupStorage, LocalStorage, S3Storage
from tasks.dump_extras import mysql_users_producer, pg_globals_producer
from tasks.dumpers import (
    etcd_snapshot_producer,
    mysql_data_size,
    mysql_user_databases,
    mysqldump_producer,
    pg_dump_producer,
    postgres_data_size,
    postgres_user_databases,
    redactor,
    tar_producer,
)
from tasks.inc_files import IncPlan, file_producer, gnu_tar_producer, snapshot_dir
from tasks.inventory import postgres_inventory
from tasks.mariadb_physical import mariabackup_producer, physical_preflight
from tasks.pvc_backup import pvc_preflight, pvc_tar_producer
from tasks.redis_source import redis_preflight, redis_rdb_producer
from tasks.retry import TRANSIENT_RETRY

FORMAT = "stateferry-backup/1"


class VerificationFailed(PermanentError):
    """The backup could not be restored, or the restored copy differs from the source.

    ``problems`` names each missing or different object; ``expected`` is what each section had to
    hold and ``checks`` what the restored copy held (the run's summary artifact shows them side by side).
    """

    problems: list[str]
    expected: dict[str, Any]
    checks: dict[str, Any]


@dataclass
class Resolved:
    """A job with its blocks loaded."""

    job: BackupJob
    source_block: Any = None
    storages: dict[str, BackupStorage] = field(default_factory=dict)
    storage_configs: dict[str, AnyStorageConfig] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)
    #: age identities (from the Secret block the user named) when verifying / restoring encrypted backups
    age_identities: list[Any] | None = None

    @property
    def redact(self) -> Callable[[str], str]:
        """Scrubs every secret of the job's blocks."""
        return redactor(*self.secrets)


def _secret_values(block: Any) -> list[str]:
    from pydantic import SecretStr

    out: list[str] = []
    for name in type(block).model_fields:
        value = getattr(block, name, None)
        if isinstance(value, SecretStr):
            out.append(value.get_secret_value())
    return out


@task(name="resolve_job", cache_policy=NO_CACHE)
def resolve_job(job: BackupJob) -> Resolved:
    """Load the job's saved blocks and build its storages.

    Raises:
        InputError: a named block does not exist, or its engine does not match the job's type.
    """
    from blocks.database import Database
    from blocks.etcd import EtcdCluster
    from blocks.loading import load_saved, resolve_kube, resolve_store
    from blocks.sftp import SftpServer

    r = Resolved(job)
    src = job.source
    if isinstance(src, DatabaseSourceConfig | PhysicalSourceConfig):
        r.source_block = load_saved(Database, src.connect.block, "sources[0].connect.block")
        if r.source_block.engine != job.engine.removesuffix("_physical"):
            raise InputError(
                "type",
                f"the job is {job.engine} but block {src.connect.block!r} is {r.source_block.engine}",
                "point connect.block at a block of the job's engine",
            )
    elif isinstance(src, EtcdSourceConfig):
        r.source_block = load_saved(EtcdCluster, src.connect.block, "sources[0].connect.block")
    elif isinstance(src, RedisSourceConfig):
        from blocks.redis import RedisServer

        r.source_block = load_saved(RedisServer, src.connect.block, "sources[0].connect.block")
    elif isinstance(src, PvcSourceConfig):
        r.source_block = resolve_kube(src.connect.block, "sources[0].connect.block")
    if r.source_block is not None:
        r.secrets += _secret_values(r.source_block)
    for i, cfg in enumerate(job.enabled_storages):
        storage: BackupStorage
        if isinstance(cfg, LocalStorageConfig):
            storage = LocalStorage(cfg.backup_dir, cfg.label)
        elif isinstance(cfg, SftpStorageConfig):
            server = load_saved(SftpServer, cfg.sftp_server, f"storages[{i}].sftp_server")
            r.secrets += _secret_values(server)
            storage = SftpStorage(server, cfg.backup_dir, cfg.label)
        else:
            ref = resolve_store(cfg.object_store, f"storages[{i}].object_store")
            r.secrets += _secret_values(ref.store)
            bucket = ref.require_bucket(cfg.bucket_name, f"storages[{i}].bucket_name")
            storage = S3Storage(ref.store, bucket, cfg.backup_dir, cfg.label)
        r.storages[cfg.label] = storage
        r.storage_configs[cfg.label] = cfg
    return r


# --------------------------------------------------------------------------------------------------
# preflight


@task(name="preflight_source", cache_policy=NO_CACHE, **TRANSIENT_RETRY)
def preflight_source(r: Resolved) -> dict[str, Any]:
    """Check the source is reachable with the given credentials and resolve what to back up.

    Returns:
        ``{"databases": [...]}`` for databases, ``{"paths": [...]}`` for files, ``{"members": n}`` for etcd.

    Raises:
        InputError / StateferryError: naming the field and the fix (unreachable host, wrong password,
        missing database or path).
    """
    job, src = r.job, r.job.source
    if isinstance(src, DatabaseSourceConfig):
        db = r.source_block
        where = f"{job.engine} at {db.host}:{db.effective_port} as {db.user}"
        try:
            found = mysql_user_databases(db) if job.engine == "mysql" else postgres_user_databases(db)
        except TransientError as exc:
            raise TransientError(
                r.redact(
                    f"sources[0].connect: cannot reach {where} ({exc}). Fix: check host/port in the "
                    f"Database block {src.connect.block!r} and that the server is up"
                )
            ) from None
        except StateferryError as exc:
            raise InputError(
                "sources[0].connect",
                r.redact(f"cannot log in to {where} ({exc})"),
                f"check user/password in the Database block {src.connect.block!r}",
            ) from None
        unsafe = [d for d in found if not is_safe_database_name(d)]
        if unsafe:  # a name read from the server never becomes an argument; the rest is backed up
            run_logger().warning(
                "skipping %d database(s) whose names no dump tool may receive: %s",
                len(unsafe),
                ", ".join(repr(d)[:80] for d in unsafe),
            )
        found = [d for d in found if is_safe_database_name(d)]
        wanted = list(src.target) or list(db.databases) or found
        missing = [d for d in wanted if d not in found]
        if missing:
            raise InputError(
                "sources[0].target",
                f"database(s) {missing} do not exist on {where}",
                "fix the list or create them",
            )
        if not wanted:
            raise InputError(
                "sources[0].target", f"no user database on {where}", "create one or list targets"
            )
        size = (mysql_data_size if job.engine == "mysql" else postgres_data_size)(db, wanted)
        facts = {"databases": wanted, "host": db.host, "port": db.effective_port, "estimated_bytes": size}
        if unsafe and not src.target and not db.databases:
            facts["skipped_unsafe_names"] = len(unsafe)
        return facts
    if isinstance(src, RedisSourceConfig):
        return redis_preflight(r.source_block, src.connect.block, r.redact)
    if isinstance(src, PhysicalSourceConfig):
        return physical_preflight(r.source_block, src.datadir, src.connect.block, r.redact)
    if isinstance(src, PvcSourceConfig):
        return pvc_preflight(r)
    if isinstance(src, FilesSourceConfig):
        for p in src.target:
            path = Path(p)
            if not path.exists():
                raise InputError("sources[0].target", f"{p} does not exist", "fix the path")
            if path.is_dir() and not (path.stat().st_mode & 0o444):
                raise InputError("sources[0].target", f"{p} is not readable", "grant read access")
        return {"paths": list(src.target)}
    import asyncio

    async def members() -> int:
        async with r.source_block.client() as client:
            return len(await client.member_list())

    try:
        return {"members": asyncio.run(members()), "endpoints": list(r.source_block.endpoints)}
    except StateferryError as exc:
        raise type(exc)(r.redact(f"sources[0].connect: etcd cluster {src.connect.block!r}: {exc}")) from None


@task(name="preflight_storages", cache_policy=NO_CACHE)
def preflight_storages(r: Resolved) -> dict[str, str]:
    """Check every storage is writable now. Returns label -> error for those that are not.

    Raises:
        StateferryError: when no storage is writable (nothing would be backed up).
    """
    failed: dict[str, str] = {}
    errors: list[StateferryError] = []
    for i, (label, storage) in enumerate(r.storages.items()):
        try:
            for warning in storage.check_writable(
                r.job.job, rotation=r.storage_configs[label].store.rotation
            ):
                run_logger().warning("%s", r.redact(warning))
        except InputError as exc:
            err: StateferryError = InputError(f"storages[{i}].{exc.field}", r.redact(exc.problem), exc.fix)
            failed[label] = str(err)
            errors.append(err)
        except Exception as exc:
            failed[label] = r.redact(f"storages[{i}] ({label}): {exc}")
            errors.append(StateferryError(failed[label]))
    if len(failed) == len(r.storages):
        if len(errors) == 1:
            raise errors[0]
        raise StateferryError("no storage is writable: " + "; ".join(failed.values()))
    return failed


# --------------------------------------------------------------------------------------------------
# dump


def new_backup_id(now: dt.datetime) -> str:
    """``YYYYMMDDTHHMMSSZ-xxxxxx``: sortable by time, unique per run."""
    return now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + pysecrets.token_hex(3)


class _Progress:
    """Logs progress and keeps a Prefect progress artifact up to date (estimated from the source size)."""

    def __init__(self, job: str, estimate: int | None) -> None:
        self.estimate = estimate or 0
        self.done = 0  # raw bytes of finished parts
        self.artifact: Any = None
        if self.estimate > 0:
            try:
                from prefect.artifacts import create_progress_artifact

                self.artifact = create_progress_artifact(
                    0.0, description=f"backup {job}: dump progress (estimate)"
                )
            except Exception as exc:
                run_logger().debug("no progress artifact: %s", exc)

    def _update(self, raw: int) -> None:
        if self.artifact is None:
            return
        try:
            from prefect.artifacts import update_progress_artifact

            update_progress_artifact(self.artifact, min(99.0, 100.0 * raw / self.estimate))
        except Exception as exc:
            run_logger().debug("progress update failed: %s", exc)

    def reporter(self, name: str) -> Callable[[int, int], None]:
        """Callback for one part."""

        def report(raw: int, stored: int) -> None:
            run_logger().info("%s: %d MiB read, %d MiB stored", name, raw >> 20, stored >> 20)
            self._update(self.done + raw)

        return report

    def finish(self) -> None:
        """All parts done."""
        if self.artifact is not None:
            try:
                from prefect.artifacts import update_progress_artifact

                update_progress_artifact(self.artifact, 100.0)
            except Exception as exc:
                run_logger().debug("progress update failed: %s", exc)


@task(name="dump_to_storages", cache_policy=NO_CACHE)
def dump_to_storages(
    r: Resolved,
    backup_id: str,
    source_facts: dict[str, Any],
    healthy: list[str],
    incremental: IncPlan | None = None,
) -> tuple[list[PartResult], dict[str, str]]:
    """Stream every part of the backup to every healthy storage at once.

    ``incremental`` (``inc_files``): the chain decision and the snapshot GNU tar starts from.

    Returns:
        The parts written and label -> error of the storages that failed on the way.

    Raises:
        Exception: the source failed (every partial object is removed first).
    """
    job, src = r.job, r.job.source
    enc = "age" if job.encryption else None
    snar: Path | None = None
    parts: list[tuple[str, Any, dict[str, Any]]] = []
    if isinstance(src, DatabaseSourceConfig) and job.engine == "mysql":
        dbs = source_facts["databases"]
        parts.append(
            (
                part_name(FIXED_PART["mysql"], job.compression, enc),
                mysqldump_producer(r.source_block, dbs, src.dump_args("mysql")),
                {
                    "kind": "mysqldump",
                    "databases": dbs,
                    "format": "sql",
                    "objects": [k for k in ("events", "routines", "triggers") if k not in src.skip_objects],
                    "skipped_objects": list(src.skip_objects),
                    "narrowed_by": src.narrowed_by("mysql"),
                },
            )
        )
        if src.users:
            meta = {"kind": "mysql-users", "extra": "users", "format": "sql"}
            users = mysql_users_producer(r.source_block, dbs)
            parts.append((part_name(MYSQL_USERS_PART, job.compression, enc), users, meta))
    elif isinstance(src, DatabaseSourceConfig):
        narrowed = src.narrowed_by("postgres")
        for d in source_facts["databases"]:
            parts.append(
                (
                    check_part_name(
                        part_name(pg_part(d, src.format), job.compression, enc), "sources[0].target"
                    ),
                    pg_dump_producer(
                        r.source_block,
                        d,
                        src.format,
                        src.dump_args("postgres"),
                        inventory=functools.partial(postgres_inventory, r.source_block, d),
                    ),
                    {"kind": "pg_dump", "database": d, "format": src.format, "narrowed_by": narrowed},
                )
            )
        if src.globals:
            meta = {"kind": "pg_dumpall", "extra": "globals", "format": "sql"}
            producer = pg_globals_producer(r.source_block, passwords=src.role_passwords)
            parts.append((part_name(PG_GLOBALS_PART, job.compression, enc), producer, meta))
    elif isinstance(src, FilesSourceConfig) and incremental is not None:
        snar = snapshot_dir() / "snapshot.snar"
        snar.write_bytes(incremental.snapshot)  # empty for a full
        chain = incremental.next.chain(backup_id)
        tar_meta = {"kind": "gnu-tar", "format": "gnu-tar", "reason": incremental.next.reason, "chain": chain}
        tar = gnu_tar_producer(src.target, src.excludes, snar)
        parts.append((part_name(FIXED_PART["files"], job.compression, enc), tar, tar_meta))
        snap_meta = {"kind": "tar-snapshot", "extra": "snapshot"}
        parts.append((part_name(FILES_SNAPSHOT_PART, job.compression, enc), file_producer(snar), snap_meta))
    elif isinstance(src, FilesSourceConfig):
        parts.append(
            (
                part_name(FIXED_PART["files"], job.compression, enc),
                tar_producer(src.target, src.excludes),
                {"kind": "tar", "format": "tar"},
            )
        )
    elif isinstance(src, RedisSourceConfig):
        producer = redis_rdb_producer(r.source_block, r.redact)
        parts.append((part_name(FIXED_PART["redis"], job.compression, enc), producer, {"kind": "redis-rdb"}))
    elif isinstance(src, PhysicalSourceConfig):
        producer = mariabackup_producer(r.source_block, source_facts["datadir"], src.parallel)
        meta = {"kind": "mariadb-backup", "databases": source_facts["databases"]}
        parts.append((part_name(FIXED_PART["mysql_physical"], job.compression, enc), producer, meta))
    elif isinstance(src, PvcSourceConfig):
        producer = pvc_tar_producer(r, backup_id, healthy)
        parts.append((part_name(FIXED_PART["pvc"], job.compression, enc), producer, {"kind": "pvc-tar"}))
    else:
        parts.append(
            (
                part_name(FIXED_PART["etcd"], job.compression, enc),
                etcd_snapshot_producer(r.source_block),
                {"kind": "etcd-snapshot"},
            )
        )

    failed: dict[str, str] = {}
    results: list[PartResult] = []
    alive = list(healthy)
    progress = _Progress(job.job, source_facts.get("estimated_bytes"))
    try:
        for name, producer, meta in parts:
            writers = {}
            for label in alive:
                try:
                    writers[label] = r.storages[label].open_part(job.job, backup_id, name)
                except Exception as exc:
                    failed[label] = r.redact(f"cannot start writing {name}: {exc}")
            alive = [a for a in alive if a in writers]
            if not writers:
                raise StateferryError("no storage accepted the backup: " + "; ".join(failed.values()))
            run_logger().info("streaming %s to %s", name, ", ".join(alive))
            res = stream_part(
                name,
                producer,
                writers,
                compression=job.compression,
                level=job.compression_level,
                redact=r.redact,
                progress=progress.reporter(name),
                age_recipients=job.encryption.recipients if job.encryption else None,
            )
            res.info = {**meta, **res.info}
            results.append(res)
            progress.done += res.raw_size
            for label, err in res.failed.items():
                failed[label] = err
            alive = [a for a in alive if a not in res.failed]
    except BaseException:
        for label in healthy:
            try:
                r.storages[label].discard(job.job, backup_id)
            except Exception as exc:
                run_logger().warning(
                    "could not remove the partial backup from %s: %s", label, r.redact(str(exc))
                )
        raise
    finally:
        if snar is not None:
            shutil.rmtree(snar.parent, ignore_errors=True)
    progress.finish()
    for label in failed:
        try:
            r.storages[label].discard(job.job, backup_id)
        except Exception:
            pass
    return results, failed
