"""Publishing a backup (the manifest, written last) and rotating each storage by its retention."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from prefect import task
from prefect.cache_policies import NO_CACHE

from planning.backup_layout import is_backup_id
from planning.inc_chain import protect_chains
from planning.retention import BackupEntry, RetentionPlan, plan_retention
from stateferry.errors import PermanentError
from tasks.backup_jobs import FORMAT, Resolved
from tasks.backup_pipeline import PartResult
from tasks.backup_storage import StoredBackup
from tasks.inc_files import links_of
from tasks.retry import TRANSIENT_RETRY


def build_manifest(
    r: Resolved,
    backup_id: str,
    started: dt.datetime,
    finished: dt.datetime,
    parts: list[PartResult],
    source_facts: dict[str, Any],
    verification: dict[str, Any] | None,
    flow_run_id: str | None,
    inventory: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest stored next to the backup (no secrets); ``inventory`` per database."""
    tools = sorted({str(p.info.get("tool")) for p in parts if p.info.get("tool")})
    enc = r.job.encryption
    # encrypted: the stored bytes (size, sha256) are the age file; no digest of the plaintext is kept
    # next to it (it would let anyone confirm a guessed content), and no key, only fingerprints
    crypto = {"encryption": "age", "age_recipients": enc.fingerprints} if enc else {}
    return {
        "format": FORMAT,
        "job": r.job.job,
        "engine": r.job.engine,
        "type": r.job.type,
        "backup_id": backup_id,
        "status": "good",
        "started": started.isoformat(),
        "finished": finished.isoformat(),
        "compression": r.job.compression,
        **crypto,
        "source": {k: v for k, v in source_facts.items() if k != "password"},
        "size": sum(p.size for p in parts),
        "sha256": parts[0].sha256 if len(parts) == 1 else _combined_sha(parts),
        "parts": [
            {
                "name": p.name,
                "size": p.size,
                "sha256": p.sha256,
                "raw_size": p.raw_size,
                **({} if enc else {"raw_sha256": p.raw_sha256}),
                "seconds": round(p.seconds, 3),
                **{k: v for k, v in p.info.items() if k not in ("bytes", "inventory")},
            }
            for p in parts
        ],
        "tools": tools,
        "verification": verification,
        "inventory": {
            **(inventory or {}),
            **{p.info["database"]: p.info["inventory"] for p in parts if p.info.get("inventory")},
        }
        or None,
        "flow_run_id": flow_run_id,
    }


def _combined_sha(parts: list[PartResult]) -> str:
    import hashlib

    return hashlib.sha256("\n".join(f"{p.sha256}  {p.name}" for p in parts).encode()).hexdigest()


@task(name="publish_backup", cache_policy=NO_CACHE)
def publish_backup(
    r: Resolved, backup_id: str, manifest: dict[str, Any], labels: list[str]
) -> dict[str, str]:
    """Write the manifest to every storage that holds the parts. Returns label -> error for failures."""
    failed: dict[str, str] = {}
    for label in labels:
        try:
            r.storages[label].publish(r.job.job, backup_id, manifest)
        except Exception as exc:
            failed[label] = r.redact(f"publishing failed: {exc}")
            try:
                r.storages[label].discard(r.job.job, backup_id)
            except Exception:
                pass
    return failed


def _entries(stored: list[StoredBackup]) -> list[BackupEntry]:
    out = []
    for b in stored:
        created = None
        if b.manifest and b.manifest.get("started"):
            try:
                created = dt.datetime.fromisoformat(b.manifest["started"])
            except ValueError:
                created = None
        if created is None:
            created = _id_time(b.backup_id)
        out.append(BackupEntry(b.backup_id, created, good=b.good, unreadable=b.unreadable))
    return out


def _id_time(backup_id: str) -> dt.datetime:
    raw = backup_id.removeprefix(".partial-")[:16]
    try:
        return dt.datetime.strptime(raw, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@task(name="rotate_storage", cache_policy=NO_CACHE, **TRANSIENT_RETRY)
def rotate_storage(r: Resolved, label: str, now: dt.datetime, new_backup_id: str) -> RetentionPlan:
    """Apply the storage's retention (only called after the new backup was published there).

    Calendar days / weekdays / the 1st are taken in the job's ``timezone`` (the cron's timezone).

    Raises:
        PermanentError: the plan would delete the new backup (never happens with the planner's rules).
    """
    storage = r.storages[label]
    policy = r.storage_configs[label].store.policy()
    if not policy.rotation:  # not even listed: a write-only bucket may refuse listing
        return RetentionPlan((), note=f"Rotation is off on {label}: nothing was listed or deleted.")
    stored = storage.list_backups(r.job.job)
    tz = ZoneInfo(r.job.timezone)
    entries = [
        BackupEntry(e.backup_id, e.created.astimezone(tz), e.good, e.unreadable) for e in _entries(stored)
    ]
    plan = plan_retention(entries, policy, now.astimezone(tz))
    if r.job.incremental:  # never delete a link a kept point of a chain needs
        plan = protect_chains(plan, links_of(stored)[0])
    good = sorted((e for e in entries if e.good), key=lambda e: (e.created, e.backup_id))
    protected = {new_backup_id, *(e.backup_id for e in good[-1:])}
    if protected & set(plan.delete) or not any(e.backup_id == new_backup_id and e.good for e in entries):
        raise PermanentError(
            f"retention on {label} would delete the new or newest good backup, or the new backup"
            f" {new_backup_id} is not listed as good; refusing to delete anything"
        )
    for bid in plan.delete:
        raw = bid.removeprefix(".partial-")
        if not is_backup_id(raw):  # listings filter these already; never delete outside the layout
            continue
        storage.discard(r.job.job, raw)
    return plan
