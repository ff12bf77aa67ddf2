"""Resource-backup archives in an object-store bucket: upload, download (verified), list, retention.

Layout: see :mod:`planning.archive_layout`. The tarball is uploaded first and the manifest last, so
a backup interrupted half-way has no manifest and is neither listed nor restorable; retention
deletes the manifest first for the same reason.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from blocks.object_store import ObjectStore
from planning.archive_layout import (
    _NAME_RE,
    MANIFEST_NAME,
    TARBALL_NAME,
    ArchiveError,
    ArchiveRefused,
    Manifest,
    archive_prefix,
    manifest_key,
    parse_manifest,
    plan_archive_retention,
    tarball_key,
    validate_backup_name,
)
from stateferry.errors import InputError, StateferryError, translate
from tasks.retry import TRANSIENT_RETRY

#: A manifest larger than this is not one stateferry wrote.
MAX_MANIFEST_BYTES = 16 << 20
#: Largest resource tarball downloaded.
MAX_TARBALL_BYTES = 1 << 30

__all__ = [
    "ArchiveInfo",
    "archive_series",
    "download_archive",
    "ensure_bucket",
    "list_archives",
    "plan_archive_retention",
    "prune_archives",
    "upload_archive",
]


def _s3(store: ObjectStore) -> Any:
    return store.minio_client()


def ensure_bucket(store: ObjectStore, bucket: str) -> bool:
    """Create ``bucket`` if it does not exist; return True if it was created."""
    client = _s3(store)
    try:
        if client.bucket_exists(bucket):
            return False
        client.make_bucket(bucket)
        return True
    except Exception as exc:
        raise translate(exc, context=f"bucket {bucket!r} at {store.url}") from None


@task(**TRANSIENT_RETRY, cache_policy=NO_CACHE)
def upload_archive(store: ObjectStore, bucket: str, prefix: str, manifest: Manifest, tarball: Path) -> str:
    """Upload the tarball, then the manifest (which names the tarball's sha256 and size).

    Returns:
        The archive's key prefix (``<prefix>/<backup-name>/``).
    """
    client = _s3(store)
    ensure_bucket(store, bucket)
    try:
        client.fput_object(
            bucket, tarball_key(prefix, manifest.backup_name), str(tarball), content_type="application/gzip"
        )
        raw = manifest.to_json()
        client.put_object(
            bucket,
            manifest_key(prefix, manifest.backup_name),
            io.BytesIO(raw),
            len(raw),
            content_type="application/json",
        )
    except Exception as exc:
        raise translate(exc, context=f"upload of backup {manifest.backup_name} to {bucket}") from None
    get_run_logger().info(
        "uploaded backup %s to s3://%s/%s (%d bytes)",
        manifest.backup_name,
        bucket,
        archive_prefix(prefix, manifest.backup_name),
        manifest.tarball["size"],
    )
    return archive_prefix(prefix, manifest.backup_name)


def read_manifest(store: ObjectStore, bucket: str, prefix: str, backup_name: str) -> Manifest:
    """Fetch and validate a backup's manifest.

    Raises:
        InputError: the backup does not exist (lists the ones that do).
        ArchiveError: the manifest is corrupt or from an unknown layout version.
    """
    client = _s3(store)
    key = manifest_key(prefix, backup_name)
    try:
        resp = client.get_object(bucket, key)
        try:
            raw = resp.read(MAX_MANIFEST_BYTES)
        finally:
            resp.close()
            resp.release_conn()
    except Exception as exc:
        if getattr(exc, "code", "") in ("NoSuchKey", "NoSuchBucket"):
            known = (
                [a.name for a in list_archives(store, bucket, prefix)]
                if getattr(exc, "code", "") == "NoSuchKey"
                else []
            )
            raise InputError(
                "backup_name",
                f"no backup {backup_name!r} in s3://{bucket}/{archive_prefix(prefix, '').rstrip('/')}"
                f" (found: {', '.join(known[-10:]) or 'none'})",
                "pick one of the listed backups, or check bucket and prefix",
            ) from None
        raise translate(exc, context=f"reading s3://{bucket}/{key}") from None
    manifest = parse_manifest(raw, where=f"s3://{bucket}/{key}")
    if manifest.backup_name != backup_name:
        raise ArchiveError(
            f"s3://{bucket}/{key} names backup {manifest.backup_name!r}, expected {backup_name!r}: "
            "the archive "
            "was moved or is corrupt"
        )
    return manifest


@task(**TRANSIENT_RETRY, cache_policy=NO_CACHE)
def download_archive(store: ObjectStore, bucket: str, prefix: str, backup_name: str, dest: Path) -> Manifest:
    """Download a backup's tarball to ``dest`` and verify its size and sha256 against the manifest.

    Raises:
        ArchiveError: missing tarball, size or checksum mismatch, or a bad manifest.
    """
    manifest = read_manifest(store, bucket, prefix, backup_name)
    client = _s3(store)
    key = tarball_key(prefix, backup_name)
    expected = int(manifest.tarball["size"])
    if expected > MAX_TARBALL_BYTES:
        raise ArchiveRefused(
            "backup_name",
            f"backup {backup_name} records a {expected}-byte tarball (the cap is {MAX_TARBALL_BYTES})",
            "restore another backup",
        )
    sha = hashlib.sha256()
    size = 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        resp = client.get_object(bucket, key)
        try:
            with open(dest, "wb") as fh:
                for chunk in resp.stream(1 << 20):
                    size += len(chunk)
                    if size > expected:
                        break  # longer than the manifest says: reported below, no more disk used
                    fh.write(chunk)
                    sha.update(chunk)
        finally:
            resp.close()
            resp.release_conn()
    except StateferryError:
        raise
    except Exception as exc:
        if getattr(exc, "code", "") == "NoSuchKey":
            raise ArchiveError(
                f"backup {backup_name}: s3://{bucket}/{key} is missing; the archive is incomplete"
            ) from None
        raise translate(exc, context=f"downloading s3://{bucket}/{key}") from None
    if size != manifest.tarball["size"] or sha.hexdigest() != manifest.tarball["sha256"]:
        raise ArchiveError(
            f"backup {backup_name}: s3://{bucket}/{key} has {size} bytes, sha256 {sha.hexdigest()[:16]}…, "
            "but the "
            f"manifest records {manifest.tarball['size']} bytes, "
            f"sha256 {str(manifest.tarball['sha256'])[:16]}…: "
            "the archive is corrupt; restore another backup"
        )
    return manifest


@dataclass(frozen=True)
class ArchiveInfo:
    """One listed backup.

    Attributes:
        name: backup name (a valid one: the folder name and the manifest agree).
        created_at: from the manifest.
        total_objects: from the manifest.
        size: tarball size the manifest records.
        complete: the tarball exists with the size the manifest records.
        series: what identifies the schedule that wrote it: source server and selection.
    """

    name: str
    created_at: str
    total_objects: int
    size: int
    complete: bool = True
    series: str = ""


def archive_series(server: str, selection: Mapping[str, Any]) -> str:
    """The identity of a backup schedule: the source API server and the selection (canonical JSON)."""
    return json.dumps({"server": server, "selection": selection}, sort_keys=True, default=str)


def list_archives(store: ObjectStore, bucket: str, prefix: str) -> list[ArchiveInfo]:
    """Backups of this layout under ``prefix``, oldest first.

    Only ``<prefix>/<name>/manifest.json`` keys count, with ``name`` a valid backup name that the
    manifest repeats; unreadable or foreign manifests and deeper or stray keys are skipped.
    """
    client = _s3(store)
    base = archive_prefix(prefix, "").rstrip("/")
    base = f"{base}/" if base else ""
    out: list[ArchiveInfo] = []
    try:
        if not client.bucket_exists(bucket):
            return []
        manifests: list[str] = []
        tarballs: dict[str, int] = {}
        for item in client.list_objects(bucket, prefix=base, recursive=True):
            rest = item.object_name[len(base) :]
            parts = rest.split("/")
            if len(parts) != 2 or not _NAME_RE.match(parts[0]):
                continue
            if parts[1] == MANIFEST_NAME:
                manifests.append(parts[0])
            elif parts[1] == TARBALL_NAME:
                tarballs[parts[0]] = int(item.size or 0)
        for name in manifests:
            try:
                resp = client.get_object(bucket, manifest_key(prefix, name))
                try:
                    m = parse_manifest(resp.read(MAX_MANIFEST_BYTES), where=manifest_key(prefix, name))
                finally:
                    resp.close()
                    resp.release_conn()
            except (ArchiveError, ValueError):
                continue
            if m.backup_name != name:
                continue
            size = int(m.tarball.get("size", 0))
            out.append(
                ArchiveInfo(
                    name,
                    m.created_at,
                    m.total_objects,
                    size,
                    complete=tarballs.get(name) == size,
                    series=archive_series(str(m.source.get("server", "")), m.selection),
                )
            )
    except StateferryError:
        raise
    except Exception as exc:
        raise translate(exc, context=f"listing s3://{bucket}/{base}") from None
    return sorted(out, key=lambda a: (a.created_at, a.name))


@task(**TRANSIENT_RETRY, cache_policy=NO_CACHE)
def prune_archives(
    store: ObjectStore,
    bucket: str,
    prefix: str,
    *,
    keep_last: int | None,
    ttl_seconds: float | None,
    now: dt.datetime,
    protect: Collection[str] = (),
    series: str | None = None,
) -> list[str]:
    """Apply the retention (count and/or TTL) to one schedule's backups; return the deleted names.

    Only complete backups of this layout under ``prefix`` whose manifest records ``series`` (same
    source server and selection: this schedule) are considered; the newest of them and the names in
    ``protect`` (the backup this run wrote) are never deleted (:func:`plan_archive_retention`).
    """
    if keep_last is None and ttl_seconds is None:
        return []
    archives = [
        a
        for a in list_archives(store, bucket, prefix)
        if a.complete and (series is None or a.series == series)
    ]
    _keep, delete = plan_archive_retention(
        [(a.name, a.created_at) for a in archives],
        keep_last=keep_last,
        ttl=dt.timedelta(seconds=ttl_seconds) if ttl_seconds else None,
        now=now,
        protect=protect,
    )
    client = _s3(store)
    for name in delete:
        validate_backup_name(name)  # the key prefix below ends in "/<valid name>/": nothing else matches
        try:
            client.remove_object(bucket, manifest_key(prefix, name))
            for obj in client.list_objects(bucket, prefix=archive_prefix(prefix, name), recursive=True):
                client.remove_object(bucket, obj.object_name)
        except Exception as exc:
            raise translate(exc, context=f"deleting backup {name}") from None
    if delete:
        get_run_logger().info("retention deleted %d backup(s): %s", len(delete), ", ".join(delete))
    return delete


def put_json(store: ObjectStore, bucket: str, key: str, data: Any) -> None:
    """Write a small JSON object (reports)."""
    raw = json.dumps(data, indent=2, sort_keys=True, default=str).encode()
    try:
        _s3(store).put_object(bucket, key, io.BytesIO(raw), len(raw), content_type="application/json")
    except Exception as exc:
        raise translate(exc, context=f"writing s3://{bucket}/{key}") from None


def get_json(store: ObjectStore, bucket: str, key: str) -> Any:
    """Read a small JSON object; None if it does not exist."""
    client = _s3(store)
    try:
        resp = client.get_object(bucket, key)
        try:
            return json.loads(resp.read())
        finally:
            resp.close()
            resp.release_conn()
    except Exception as exc:
        if getattr(exc, "code", "") == "NoSuchKey":
            return None
        raise translate(exc, context=f"reading s3://{bucket}/{key}") from None
