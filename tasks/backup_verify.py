"""Backup verification: restore the new backup into scratch targets and compare inventories."""

from __future__ import annotations

import contextlib
import secrets as pysecrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from prefect import task
from prefect.cache_policies import NO_CACHE

from stateferry.errors import InputError, StateferryError
from tasks.backup_crypto import open_plain
from tasks.backup_jobs import Resolved, VerificationFailed
from tasks.backup_pipeline import PartResult
from tasks.dumpers import (
    tree_digest,
)
from tasks.inventory import compare_inventories, mysql_inventory, postgres_inventory, without_kinds
from tasks.redis_source import part_inventory
from tasks.restore_checks import etcd_data_dir_problems, etcd_inventory
from tasks.restore_ops import (
    mysql_drop_database,
    postgres_drop_database,
    postgres_recreate_database,
    restore_etcd_snapshot,
    restore_files,
    restore_mysql,
    restore_postgres,
    spooled_snapshot,
)


def _inventory(r: Resolved, database: str) -> dict[str, Any]:
    mysql = r.job.engine in ("mysql", "mysql_physical")
    return (mysql_inventory if mysql else postgres_inventory)(r.source_block, database)


def _compare(
    name: str, before: dict[str, Any], restored: dict[str, Any], now: dict[str, Any], drift: list[str]
) -> list[str]:
    """Every object of the source (before the dump) missing or different in the restored copy.

    Objects opted out of the dump (``skip_objects``) are not expected back. A difference the source
    itself shows now (it changed during the dump) is drift, not a failure: it is added to ``drift``
    (the manifest keeps it, so later restores accept the same difference).
    """
    problems = compare_inventories(name, before, restored, now)
    drift += [p for p in compare_inventories(name, before, restored) if p not in problems]
    return problems


@task(name="verify_backup", cache_policy=NO_CACHE)
def verify_backup(
    r: Resolved,
    backup_id: str,
    parts: list[PartResult],
    reader_label: str,
    before: dict[str, Any],
    dump_started: float | None = None,
) -> dict[str, Any]:
    """Restore the unpublished backup into a scratch database / directory and check it.

    Args:
        r: the resolved job.
        backup_id: the new backup.
        parts: what was written.
        reader_label: the storage to read the (still unpublished) backup from.
        before: source inventories taken before the dump (databases only).
        dump_started: when the dump started (epoch seconds; ``inc_files``: later source changes are drift).

    Returns:
        The verification record for the manifest.

    Raises:
        VerificationFailed: with every difference found.
    """
    storage = r.storages[reader_label]
    job = r.job

    if job.encryption and not r.age_identities:
        raise InputError(
            "encryption.identity_secret",
            "verification decrypts the new backup, and no age identity was loaded",
            "name the Secret block holding the identity in encryption.identity_secret, or turn verify off",
        )
    identities = r.age_identities if job.encryption else None

    @contextlib.contextmanager
    def open_part(name: str) -> Iterator[BinaryIO]:
        with (
            storage.open_read(job.job, backup_id, name, published=False) as fh,
            open_plain(fh, identities, field="encryption.identity_secret", what=name) as plain,
        ):
            yield plain

    token = pysecrets.token_hex(3)
    problems: list[str] = []
    expected: dict[str, Any] = dict(before)  # what each section must hold (for the failure's summary)
    record: dict[str, Any] = {"read_from": reader_label, "checks": {}, "drift": []}
    if job.engine == "mysql":
        part = next(p for p in parts if "extra" not in p.info)  # users are not restored here
        dbs: list[str] = part.info["databases"]
        mapping = {d: f"sfverify_{token}_{d}"[:64] for d in dbs}
        try:
            with open_part(part.name) as fh:
                restore_mysql(r.source_block, fh, rename=mapping, scratch=True)
            for d, scratch in mapping.items():
                restored = mysql_inventory(r.source_block, scratch)
                if part.info.get("narrowed_by"):  # the archive holds less than the database
                    record.setdefault("not_compared", {})[d] = part.info["narrowed_by"]
                else:
                    problems += _compare(d, before[d], restored, _inventory(r, d), record["drift"])
                record["checks"][d] = restored
        except StateferryError as exc:
            problems.append(r.redact(f"restore into a scratch database failed: {exc}"))
        finally:
            for scratch in mapping.values():
                mysql_drop_database(r.source_block, scratch)
    elif job.engine == "postgres":
        for part in parts:
            if "extra" in part.info:  # globals are cluster-wide: checked at dump time (completion marker)
                continue
            d = part.info["database"]
            scratch = f"sfverify_{token}_{d}"[:63]
            want = expected[d] = part.info.get("inventory") or before[d]  # the dump's own snapshot
            try:
                postgres_recreate_database(r.source_block, scratch, drop=True)
                with open_part(part.name) as fh:
                    restore_postgres(r.source_block, fh, scratch, part.info["format"])
                restored = postgres_inventory(r.source_block, scratch)
                if part.info.get("narrowed_by"):  # the archive holds less than the database
                    record.setdefault("not_compared", {})[d] = part.info["narrowed_by"]
                elif part.info.get("inventory"):  # the dump's own snapshot: nothing changed in between
                    problems += compare_inventories(d, want, restored)
                else:
                    problems += _compare(d, want, restored, _inventory(r, d), record["drift"])
                record["checks"][d] = restored
            except StateferryError as exc:
                problems.append(r.redact(f"{d}: restore into a scratch database failed: {exc}"))
            finally:
                postgres_drop_database(r.source_block, scratch)
    elif job.engine == "mysql_physical":  # prepared and started in scratch, compared like a dump
        from tasks.mariadb_physical import extract_and_prepare, prepared_inventory

        (part,) = parts
        dbs = part.info["databases"]
        scratch_dir = Path(tempfile.mkdtemp(prefix="stateferry-verify-"))
        try:
            with open_part(part.name) as fh:
                options = extract_and_prepare(fh, scratch_dir / "data")
            restored = prepared_inventory(scratch_dir / "data", options, dbs)
            for d in dbs:
                problems += _compare(d, before[d], restored[d], _inventory(r, d), record["drift"])
                record["checks"][d] = restored[d]
        except StateferryError as exc:
            problems.append(r.redact(f"prepare and start in scratch failed: {exc}"))
        finally:
            shutil.rmtree(scratch_dir, ignore_errors=True)
    elif job.incremental:  # the whole chain restored into scratch, compared with the source now
        from tasks.inc_verify import verify_inc_chain

        checks, found, drift = verify_inc_chain(
            r, backup_id, parts, reader_label, open_part, dump_started or 0.0
        )
        record["checks"]["files"] = checks
        record["drift"] += drift
        problems += found
    elif job.engine == "files":
        (part,) = parts
        scratch_dir = Path(tempfile.mkdtemp(prefix="stateferry-verify-"))
        try:
            with open_part(part.name) as fh:
                restore_files(fh, scratch_dir)
            got = tree_digest(scratch_dir)
            want = expected["files"] = {k: part.info[k] for k in ("file_count", "total_bytes", "tree_sha256")}
            record["checks"]["files"] = got
            problems += compare_inventories("files", want, got)
        except StateferryError as exc:
            problems.append(f"extracting the archive failed: {exc}")
        finally:
            shutil.rmtree(scratch_dir, ignore_errors=True)
    elif job.engine == "pvc":  # the archive reads through the mover's member check, counts agree
        from tasks.pvc_backup import verify_volume_archive

        (part,) = parts
        with open_part(part.name) as fh:
            problems += verify_volume_archive(fh, part.info)
        record["checks"]["files"] = {k: part.info.get(k) for k in ("file_count", "total_bytes")}
    elif job.engine == "redis":  # loadable by redis-server, CRC64 and counts agree (redis_source.py)
        (part,) = parts
        try:
            with open_part(part.name) as fh:
                got = part_inventory(fh)
            record["checks"]["redis"] = {k: got[k] for k in ("keys", "expires")}
        except StateferryError as exc:
            problems.append(f"the RDB does not load: {exc}")
    else:
        (part,) = parts
        with open_part(part.name) as fh, spooled_snapshot(fh) as snap:
            try:
                status = etcd_inventory(snap)
                data_dir = snap.parent / "restored"
                restore_etcd_snapshot(snap, data_dir)
                record["checks"]["etcd"] = status
                problems += etcd_data_dir_problems(data_dir, status)
            except StateferryError as exc:
                problems.append(f"etcd snapshot restore failed: {exc}")
    if problems:
        failure = VerificationFailed("verification failed: " + "; ".join(problems))
        failure.problems, failure.expected, failure.checks = problems, expected, record["checks"]
        raise failure
    record["result"] = "ok"
    return record


@task(name="inventory_source", cache_policy=NO_CACHE)
def inventory_source(r: Resolved, databases: list[str]) -> dict[str, Any]:
    """Inventory of each source database (taken before the dump; stored in the manifest).

    Kinds the job opted out of (``skip_objects``) are left out: they are not expected back.
    """
    skip = set(getattr(r.job.source, "skip_objects", ()) or ())
    return {d: without_kinds(_inventory(r, d), skip) for d in databases}
