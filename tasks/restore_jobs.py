"""Tasks of the restore flow: find a backup, fetch it with its sha256 checked, restore it."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks.loading import load_saved
from planning.backup_encryption import manifest_encryption
from stateferry.errors import InputError, PermanentError, PreconditionFailed
from tasks.backup_crypto import decrypt_into
from tasks.backup_jobs import Resolved
from tasks.backup_storage import LocalStorage, StoredBackup
from tasks.dumpers import CHUNK, tree_digest
from tasks.inc_files import chain_action, restore_chain
from tasks.inventory import mysql_inventory, postgres_inventory
from tasks.mariadb_physical import restore_physical
from tasks.pvc_backup import pvc_restore_actions, restore_pvc
from tasks.redis_restore import redis_restore_actions, restore_redis
from tasks.restore_checks import InventoryCheck, etcd_data_dir_problems, etcd_inventory
from tasks.restore_extras import restore_mysql_users, restore_pg_globals
from tasks.restore_manifest import check_manifest, extra_part, main_parts
from tasks.restore_ops import (
    mysql_database_exists,
    mysql_drop_database,
    postgres_database_exists,
    postgres_drop_database,
    postgres_recreate_database,
    postgres_swap_in,
    postgres_temp_name,
    restore_etcd_snapshot,
    restore_files,
    restore_mysql,
    restore_postgres,
    spooled_snapshot,
)


class ChecksumMismatch(PermanentError):
    """The stored bytes do not match the manifest's sha256: the copy is corrupt."""


@dataclass(frozen=True)
class Selected:
    """The backup chosen for a restore."""

    storage: str
    backup_id: str
    manifest: dict[str, Any]


def _created(b: StoredBackup) -> dt.datetime:
    return dt.datetime.fromisoformat(str(b.manifest["started"])) if b.manifest else dt.datetime.min


@task(name="select_backup", cache_policy=NO_CACHE)
def select_backup(r: Resolved, backup: str, storage: str | None) -> Selected:
    """Pick ``latest``, an exact id / id prefix, or the newest backup taken at or before an ISO time.

    Local storages are searched first (fastest to read); ``storage`` restricts the search to one label.

    Raises:
        InputError: unknown storage label, or no matching good backup.
    """
    labels = list(r.storages)
    if storage is not None:
        if storage not in r.storages:
            raise InputError("storage", f"no enabled storage named {storage!r}", f"use one of {labels}")
        labels = [storage]
    labels.sort(key=lambda lbl: not isinstance(r.storages[lbl], LocalStorage))
    at: dt.datetime | None = None
    if backup != "latest":
        with contextlib.suppress(ValueError):
            at = dt.datetime.fromisoformat(backup.replace("Z", "+00:00"))
            if at.tzinfo is None:
                at = at.replace(tzinfo=dt.UTC)
    errors: list[str] = []
    for label in labels:
        try:
            good = [b for b in r.storages[label].list_backups(r.job.job) if b.good]
        except Exception as exc:
            errors.append(r.redact(f"{label}: {exc}"))
            continue
        if backup == "latest":
            chosen = max(good, key=_created, default=None)
        elif at is not None and not any(b.backup_id == backup for b in good):
            chosen = max((b for b in good if _created(b) <= at), key=_created, default=None)
        else:
            matches = [b for b in good if b.backup_id == backup or b.backup_id.startswith(backup)]
            if len(matches) > 1:
                raise InputError(
                    "backup", f"{backup!r} matches {len(matches)} backups", "give the full backup id"
                )
            chosen = matches[0] if matches else None
        if chosen is not None and chosen.manifest is not None:
            check_manifest(chosen.manifest)
            return Selected(label, chosen.backup_id, chosen.manifest)
    raise InputError(
        "backup",
        f"no good backup of {r.job.job} matching {backup!r} in {labels}"
        + (f" ({'; '.join(errors)})" if errors else ""),
        "list backups with dry_run=True, or pick another storage / timestamp",
    )


@contextlib.contextmanager
def verified_parts(r: Resolved, sel: Selected) -> Iterator[dict[str, Path]]:
    """Yield part name -> local file whose sha256 matched the manifest (decrypted when encrypted).

    Local parts are hashed in place; S3 parts are downloaded into the restore's own temporary
    directory (mode 0700) under a name of our own (``part-<n>``), never the manifest's, and a
    part whose digest does not match is removed at once. Encrypted parts are then decrypted whole
    into ``part-<n>.plain`` there, all before the caller restores anything (nothing changed on error).

    Raises:
        InputError: the manifest does not follow the layout (nothing is read or written); field
            ``identity_secret``: encrypted and no identity, or one that cannot open the parts.
        ChecksumMismatch: naming the part, the expected and the found digest.
        DecryptionFailed: an encrypted part matched its digest but does not decrypt.
    """
    check_manifest(sel.manifest)
    encrypted = manifest_encryption(sel.manifest) is not None
    identities = r.age_identities or []
    if encrypted and not identities:
        fix = "pass identity_secret=<Secret block> or set the job's encryption.identity_secret"
        raise InputError("identity_secret", f"backup {sel.backup_id} is encrypted (age), no identity", fix)
    storage = r.storages[sel.storage]
    tmp = Path(tempfile.mkdtemp(prefix="stateferry-restore-"))
    try:
        out: dict[str, Path] = {}
        for i, part in enumerate(sel.manifest["parts"]):
            name = part["name"]
            h = hashlib.sha256()
            size = 0
            if isinstance(storage, LocalStorage):
                path = storage.part_path(r.job.job, sel.backup_id, name)
                with open(path, "rb") as fh:
                    for chunk in iter(lambda fh=fh: fh.read(CHUNK), b""):  # type: ignore[misc]
                        h.update(chunk)
                        size += len(chunk)
            else:
                path = tmp / f"part-{i}"
                with storage.open_read(r.job.job, sel.backup_id, name) as src, open(path, "wb") as dst:
                    for chunk in iter(lambda src=src: src.read(CHUNK), b""):  # type: ignore[misc]
                        h.update(chunk)
                        size += len(chunk)
                        dst.write(chunk)
            if h.hexdigest() != part["sha256"] or size != part["size"]:
                if path.parent == tmp:
                    path.unlink(missing_ok=True)
                raise ChecksumMismatch(
                    f"{sel.storage}: {r.job.job}/{sel.backup_id}/{name} is corrupt: manifest sha256 "
                    f"{part['sha256']} ({part['size']} bytes), stored {h.hexdigest()} ({size} bytes). "
                    "Restore another backup or from another storage."
                )
            if encrypted:  # decrypted whole into our temp dir before any restore step reads it
                path = decrypt_into(path, tmp / f"part-{i}.plain", identities, f"{sel.backup_id}/{name}")
            out[name] = path
        yield out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def plan_restore(
    r: Resolved,
    sel: Selected,
    target_database: str | None,
    target_dir: str | None,
    overwrite: bool,
    *,
    restore_globals: bool = False,
    restore_users: bool = False,
    target_block: str | None = None,
    target_pvc: str | None = None,
) -> list[str]:
    """Human-readable list of the actions a restore would take (used by ``dry_run`` and the summary).

    Raises:
        InputError: the target parameters do not fit the backup (e.g. a rename of a multi-database dump).
    """
    m = sel.manifest
    engine = m["engine"]
    if target_database is not None and (
        not target_database
        or len(target_database.encode()) > 63
        or any(ord(ch) < 32 or ord(ch) == 127 for ch in target_database)
    ):
        raise InputError(
            "target_database",
            "must be 1-63 bytes without control characters",
            "give a plain database name",
        )
    actions = [f"verify sha256 of {len(m['parts'])} part(s) of {sel.backup_id} from {sel.storage}"]
    if manifest_encryption(m):
        actions.append("decrypt every part (age) into a private temp directory before restoring anything")
    extra = extra_part(m)
    for asked, kind, field, engine_name in (
        (restore_globals, "globals", "restore_globals", "postgres"),
        (restore_users, "users", "restore_users", "mysql"),
    ):
        if not asked:
            continue
        if engine != engine_name or extra is None or extra["extra"] != kind:
            raise InputError(
                field,
                f"backup {sel.backup_id} ({engine}) holds no {kind} part",
                f"omit {field}; {kind} are backed up by {engine_name} jobs"
                + (" (globals: true, the default)" if kind == "globals" else " with users: true"),
            )
    if restore_globals:
        actions.append("restore roles and tablespaces (globals) first; existing ones are kept")
    if engine in ("mysql", "postgres"):
        dbs = main_parts(m)[0]["databases"] if engine == "mysql" else [p["database"] for p in main_parts(m)]
        if target_database and len(dbs) != 1:
            raise InputError(
                "target_database",
                f"the backup holds {len(dbs)} databases ({dbs}); a new name fits only one",
                "omit target_database, or back up that database in its own job",
            )
        for d in dbs:
            name = target_database or d
            verb = "replace" if overwrite else "create (must not exist)"
            actions.append(f"{verb} database {name!r} from {d!r}")
        skipped = [str(k)[:20] for k in main_parts(m)[0].get("skipped_objects") or []]
        if skipped:  # the job opted out: say what the restored databases will not have
            actions.append(
                f"note: the backup was made without {', '.join(skipped)} (skip_objects); the restored"
                f" database{'s' if len(dbs) > 1 else ''} will not have them"
                + (" (the replaced ones lose theirs)" if overwrite else "")
            )
        if restore_users:
            actions.append("restore users and grants (CREATE USER IF NOT EXISTS, GRANT) afterwards")
    elif engine == "redis":
        actions += redis_restore_actions(target_dir, target_block, overwrite)
    elif engine == "pvc":
        actions += pvc_restore_actions(m, target_pvc, overwrite)
    elif engine == "mysql_physical":
        if not target_dir or overwrite:
            raise InputError(
                "target_dir" if not target_dir else "overwrite",
                "a physical backup is restored as a new data directory, never over a live one",
                "give target_dir (missing or empty) without overwrite; stop the server, point its"
                " datadir at the new directory (chown -R mysql:mysql) and start it",
            )
        actions += [
            f"check every chunk, unpack (mbstream) and prepare (mariadb-backup --prepare) in a staging"
            f" directory next to {target_dir}",
            "start a scratch mariadbd on it (socket only) and compare its inventory with the backup's",
            f"rename it to {target_dir} (must be missing or empty)",
        ]
    else:
        if not target_dir:
            raise InputError(
                "target_dir", "is required to restore files or an etcd snapshot", "give a directory"
            )
        what = chain_action(engine, main_parts(m)[0])
        actions.append(f"{what} {target_dir}" + (" (overwrite)" if overwrite else " (must be empty/missing)"))
    return actions


@task(name="restore_selected", cache_policy=NO_CACHE)
def restore_selected(
    r: Resolved,
    sel: Selected,
    *,
    target_database: str | None,
    target_block: str | None,
    target_dir: str | None,
    overwrite: bool,
    etcd: dict[str, Any],
    restore_extra: bool = False,
    target_pvc: str | None = None,
) -> dict[str, Any]:
    """Restore the selected backup after checking its sha256, then compare what was restored with
    the manifest's inventory (``tasks/restore_checks.py``).

    Args:
        r: the resolved job.
        sel: the chosen backup.
        target_database: a new name (single-database backups).
        target_block: a saved ``Database`` block to restore into.
        target_dir: files / etcd data dir.
        overwrite: replace existing databases / write into a non-empty directory.
        etcd: ``snapshot restore`` member settings.
        restore_extra: also the PostgreSQL globals (first) or the MySQL users (last).

    Returns:
        What was restored, with ``inventory``: ``{"expected", "restored", "compared",
        "not_compared", "notes"}``.

    Raises:
        ChecksumMismatch: corrupt copy (nothing restored).
        PreconditionFailed: the target exists and ``overwrite`` is False.
        RestoreIncomplete: an object of the inventory is missing or different (each one named).
    """
    engine = sel.manifest["engine"]
    db = r.source_block
    if target_block and engine in ("mysql", "postgres"):
        from blocks.database import Database

        db = load_saved(Database, target_block, "target_block")
    done: dict[str, Any] = {"backup_id": sel.backup_id, "storage": sel.storage}
    check = InventoryCheck(sel.manifest)
    what = f"restore of {r.job.job}/{sel.backup_id}"
    with verified_parts(r, sel) as files:
        part = main_parts(sel.manifest)[0]
        extra = extra_part(sel.manifest) if restore_extra else None
        if extra is not None and engine == "postgres":  # roles first: the dumps' owners and grants
            done["globals"] = restore_pg_globals(db, files[extra["name"]], extra)
        if engine == "mysql":
            done["databases"] = _restore_mysql_checked(
                db, sel, files[part["name"]], target_database, overwrite, check
            )
        elif engine == "postgres":
            done["databases"] = _restore_postgres_parts(db, sel, files, target_database, overwrite, check)
        elif engine == "redis":
            args = (target_dir, target_block, overwrite, check)
            done.update(restore_redis(r, files[part["name"]], sel.manifest, *args))
        elif engine == "pvc":
            pvc_args = (str(target_pvc), check, overwrite)
            done.update(restore_pvc(r, files[part["name"]], sel.manifest, part, *pvc_args))
        elif engine == "mysql_physical":

            def accept(got: dict[str, Any]) -> None:
                for d in part["databases"]:
                    check.add(d, got[d])
                check.raise_if_problems(what, f"nothing was written to {target_dir}")

            with open(files[part["name"]], "rb") as fh:
                restore_physical(fh, Path(str(target_dir)), part["databases"], accept)
            done["data_dir"] = str(target_dir)
        elif engine == "files" and part.get("chain") is not None:  # inc_files: every link, in order
            done.update(restore_chain(r, sel, Path(str(target_dir)), verified_parts, Selected))
            done["tree"] = tree_digest(Path(str(target_dir)))
            check.add("files", done["tree"])  # against the verified chain's tree, when recorded
            check.raise_if_problems(what, f"the restored files are left in {target_dir} for inspection")
        elif engine == "files":
            dest = Path(str(target_dir))
            was_empty = not dest.exists() or (dest.is_dir() and not any(dest.iterdir()))
            with open(files[part["name"]], "rb") as fh:
                restore_files(fh, dest, overwrite=overwrite)
            done["directory"] = str(dest)
            done["tree"] = tree_digest(dest)
            if was_empty:  # a non-empty directory holds more than the archive: not compared
                facts = {k: part.get(k) for k in ("file_count", "total_bytes", "tree_sha256")}
                check.add("files", done["tree"], fallback=facts)
                check.raise_if_problems(what, f"the extracted files are left in {dest} for inspection")
        else:
            dest = Path(str(target_dir))
            with open(files[part["name"]], "rb") as fh, spooled_snapshot(fh) as snap:
                status = etcd_inventory(snap)
                check.add("etcd", status)
                check.raise_if_problems(what, "nothing was restored")
                if dest.exists() and overwrite:
                    shutil.rmtree(dest)
                restore_etcd_snapshot(snap, dest, **etcd)
            check.problems += etcd_data_dir_problems(dest, status)
            check.raise_if_problems(what, f"the restored data dir is left in {dest} for inspection")
            done["data_dir"] = str(dest)
        if extra is not None and engine == "mysql":
            done["users"] = restore_mysql_users(db, files[extra["name"]], extra)
    done["inventory"] = check.record()
    return done


def _mysql_problems(db: Any, check: InventoryCheck, names: dict[str, str]) -> None:
    for source, restored in names.items():
        check.add(source, mysql_inventory(db, restored))


def _restore_mysql_checked(
    db: Any, sel: Selected, path: Path, target_database: str | None, overwrite: bool, check: InventoryCheck
) -> list[str]:
    """Restore a MySQL/MariaDB archive and compare every restored database with the manifest.

    Existing databases (``overwrite``) are touched only after a trial restore into temporary
    databases held every object of the inventory; a new database whose restore or check failed is
    dropped again (it did not exist before).
    """
    dbs: list[str] = main_parts(sel.manifest)[0]["databases"]
    rename = {dbs[0]: target_database} if target_database else {}
    targets = [rename.get(d, d) for d in dbs]
    existing = [t for t in targets if mysql_database_exists(db, t)]
    if existing and not overwrite:
        raise PreconditionFailed(f"database(s) {existing} exist; drop them or pass overwrite=True")
    what = f"restore of {sel.backup_id}"
    if existing:
        trial = InventoryCheck(sel.manifest)
        _prove_mysql_archive(db, path, dbs, trial)
        trial.raise_if_problems(f"{what} (trial copy)", "the live databases were not touched")
    created = [t for t in targets if t not in existing]
    try:
        with open(path, "rb") as fh:
            restore_mysql(db, fh, rename=rename)
        _mysql_problems(db, check, dict(zip(dbs, targets, strict=True)))
        check.raise_if_problems(
            what,
            "the live databases were replaced after a complete trial restore, yet differ now"
            if existing
            else "the new database(s) were dropped again",
        )
    except BaseException:
        for t in created:
            mysql_drop_database(db, t)
        raise
    return targets


def _prove_mysql_archive(db: Any, path: Path, dbs: list[str], check: InventoryCheck) -> None:
    """Restore the archive into temporary databases first (then drop them), so an archive that does
    not restore (version mismatch, corrupt SQL) or lacks objects of its inventory fails before the
    dump's ``DROP DATABASE`` reaches the live databases. Not a swap: MariaDB has no ``RENAME
    DATABASE``, and ``RENAME TABLE`` cannot move views, or tables with triggers, across databases."""
    token = secrets.token_hex(4)
    proof = {d: f"sfrestore_{token}_{i}" for i, d in enumerate(dbs)}
    try:
        with open(path, "rb") as fh:
            restore_mysql(db, fh, rename=proof, scratch=True)
        _mysql_problems(db, check, proof)
    finally:
        for temp in proof.values():
            mysql_drop_database(db, temp)


def _restore_postgres_parts(
    db: Any,
    sel: Selected,
    files: dict[str, Path],
    target_database: str | None,
    overwrite: bool,
    check: InventoryCheck,
) -> list[str]:
    """Restore every part into a fresh temporary database, compare it with the manifest's
    inventory, then swap each into place.

    The live databases are touched only after every part restored completely: on any failure the
    temporary databases are dropped and the live ones are as they were.
    """
    parts = main_parts(sel.manifest)
    targets = [target_database or p["database"] for p in parts]
    existing = [t for t in targets if postgres_database_exists(db, t)]
    if existing and not overwrite:
        raise PreconditionFailed(f"database(s) {existing} exist; drop them or pass overwrite=True")
    token = secrets.token_hex(4)
    temps = [postgres_temp_name(f"{token}_{i}") for i in range(len(parts))]
    try:
        for part, temp in zip(parts, temps, strict=True):
            postgres_recreate_database(db, temp, drop=True)
            with open(files[part["name"]], "rb") as fh:
                restore_postgres(db, fh, temp, part["format"])
            check.add(part["database"], postgres_inventory(db, temp))
        check.raise_if_problems(f"restore of {sel.backup_id}", "no database was touched")
        for i, (temp, name) in enumerate(zip(temps, targets, strict=True)):
            postgres_swap_in(db, temp, name, token=f"{token}_{i}")
    finally:
        for temp in temps:
            postgres_drop_database(db, temp)
    return targets
