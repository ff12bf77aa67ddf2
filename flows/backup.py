"""``scheduled_backup``: one backup job (nxs-backup style) as a Prefect flow.

observe -> plan -> act -> verify:

1. parse the job (clear errors naming the field), load its blocks;
2. preflight: the source answers with the given credentials, every storage is writable (a storage
   that is not is reported as failed and skipped; if none is writable the run fails before dumping);
3. stream the dump -> gzip/zstd (-> age encryption) -> sha256 -> every storage at once (constant
   memory);
4. ``verify``: restore the unpublished backup into a scratch database / directory and compare;
5. publish (manifest last) on every storage that holds the complete backup;
6. rotate each storage that got the new backup (retention planner; never the newest good backup);
7. summary artifact + notification.

Outcome policy: if any storage failed, the run ends **Failed** (raising :class:`BackupTargetsFailed`
after the healthy storages were published and rotated), so alerting and notifications fire; the copies
on the healthy storages are good and restorable. A failed dump or verification publishes nothing.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from planning.backup_config import BackupJob, DatabaseSourceConfig, PhysicalSourceConfig
from planning.backup_options import BackupJobSpec, job_config
from planning.flow_options import ModelOrMapping
from stateferry.errors import PermanentError
from tasks.backup_crypto import load_job_identities
from tasks.backup_jobs import (
    Resolved,
    VerificationFailed,
    dump_to_storages,
    new_backup_id,
    preflight_source,
    preflight_storages,
    resolve_job,
)
from tasks.backup_publish import build_manifest, publish_backup, rotate_storage
from tasks.backup_storage import LocalStorage
from tasks.backup_verify import inventory_source, verify_backup
from tasks.inc_files import plan_incremental
from tasks.inventory import inventory_table
from tasks.notify import send_notification
from tasks.redis_source import redis_backup_inventory
from tasks.restore_checks import etcd_backup_inventory, printable


class BackupTargetsFailed(PermanentError):
    """The backup is good on some storages but failed on others (named in the message)."""

    def __init__(self, job: str, backup_id: str, good: list[str], failed: dict[str, str]) -> None:
        self.job, self.backup_id, self.good, self.failed = job, backup_id, good, failed
        detail = "; ".join(f"{k}: {v}" for k, v in failed.items())
        ok, bad = ", ".join(good), ", ".join(failed)
        super().__init__(f"backup {job}/{backup_id} is good on {ok} but FAILED on {bad}: {detail}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.job, self.backup_id, self.good, self.failed))


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")[:60] or "backup"


def _part_inventory(parts: list[Any]) -> dict[str, Any]:
    """Files: count, bytes and tree digest of the archive (from the part facts)."""
    keys = ("file_count", "total_bytes", "tree_sha256")
    found = [p for p in parts if "file_count" in p.info]
    return {"files": {k: found[0].info[k] for k in keys if k in found[0].info}} if found else {}


def _summary(
    job: BackupJob, backup_id: str, result: dict[str, Any], failed: dict[str, str], seconds: float
) -> str:
    lines = [
        f"# Backup `{job.job}` ({job.engine}) — {backup_id}",
        "",
        f"Duration {seconds:.1f} s; size {result.get('size', 0)} bytes; sha256 `{result.get('sha256', '')}`.",
        "",
        "| part | stored bytes | raw bytes | sha256 |",
        "|---|---|---|---|",
    ]
    for p in result.get("parts", []):
        lines.append(f"| {p['name']} | {p['size']} | {p['raw_size']} | `{p['sha256'][:16]}…` |")
    lines += ["", "| storage | result |", "|---|---|"]
    for label in job.storage_labels:
        lines.append(f"| {label} | {'FAILED: ' + failed[label] if label in failed else 'good'} |")
    verification = result.get("verification")
    if verification:
        lines += [
            "",
            f"Verification: {verification.get('result')} (read from {verification.get('read_from')}).",
        ]
    left_out = _left_out(result.get("parts", []))
    if left_out:
        lines += ["", "## Left out of the dump", "", *left_out]
    if result.get("inventory"):
        checks = (verification or {}).get("checks") if verification else None
        lines += [
            "",
            "## Inventory (source / restored copy)",
            "",
            *inventory_table(result["inventory"], checks),
        ]
    for label, plan in result.get("retention", {}).items():
        lines += ["", f"## Retention on {label}", "", plan]
    return "\n".join(lines)


def _left_out(parts: list[dict[str, Any]]) -> list[str]:
    """What the job left out of the dump on purpose (``skip_objects``, narrowing ``extra_keys``)."""
    lines = []
    for p in parts:
        if p.get("skipped_objects"):
            lines.append(
                f"- {p['name']}: left out on purpose (skip_objects): {', '.join(p['skipped_objects'])}"
            )
        if p.get("narrowed_by"):
            lines.append(f"- {p['name']}: narrowed by {', '.join(p['narrowed_by'])}: not compared")
    return lines


def _failed_summary(job: BackupJob, exc: VerificationFailed, redact: Callable[[str], str]) -> str:
    """The artifact of a run whose verification failed: each problem, and the inventory side by side."""
    lines = [
        f"# Backup `{job.job}` ({job.engine}) — verification FAILED, nothing was published",
        "",
        *[f"- {redact(printable(p))}" for p in exc.problems],
    ]
    if exc.expected:
        lines += ["", "## Inventory (source / restored copy)", "", *inventory_table(exc.expected, exc.checks)]
    return "\n".join(lines)


@flow(name="scheduled_backup", log_prints=True)
def scheduled_backup(
    job: ModelOrMapping[BackupJobSpec],
    verify: bool | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Back up one job's source to all of its storages, verify, publish and rotate.

    Args:
        job: the job config (``BackupJobSpec`` in planning/backup_options.py, or its mapping as in
            ``deployments/jobs/*.yaml``; no secrets, blocks are named), checked completely before
            the run starts.
        verify: override the job's ``verify`` setting.
        now: reference time for the backup id and retention (default: the clock; tests pass it).

    Returns:
        ``{"backup_id", "good": [labels], "failed": {label: error}, "size", "sha256", "parts",
        "verification", "retention": {label: plan markdown}, "deleted": {label: [ids]}}``.

    Raises:
        InputError: bad config (before anything is written or deleted).
        DumpFailed / VerificationFailed: nothing was published.
        BackupTargetsFailed: the backup is good on some storages only.
    """
    logger = get_run_logger()
    cfg = job_config(job)
    t0 = time.monotonic()
    r: Resolved | None = None
    try:
        r = resolve_job(cfg)
        result = _run(r, cfg, verify, now)
    except Exception as exc:
        redact = r.redact if r is not None else (lambda s: s)
        if isinstance(exc, VerificationFailed) and hasattr(exc, "problems"):
            create_markdown_artifact(
                key=f"backup-{_slug(cfg.job)}",
                markdown=_failed_summary(cfg, exc, redact),
                description=f"backup {cfg.job}: verification failed",
            )
        if cfg.notify and cfg.notify.on_failure:
            send_notification(
                cfg.notify,
                cfg.job,
                "FAILED",
                f"Storages: {', '.join(cfg.storage_labels)}\nDuration: {time.monotonic() - t0:.1f} s\n"
                f"Error: {exc}",
                redact=redact,
            )
        raise
    failed = result["failed"]
    create_markdown_artifact(
        key=f"backup-{_slug(cfg.job)}",
        markdown=_summary(cfg, result["backup_id"], result, failed, time.monotonic() - t0),
        description=f"backup {cfg.job} {result['backup_id']}",
    )
    if failed:
        err = BackupTargetsFailed(cfg.job, result["backup_id"], result["good"], failed)
        if cfg.notify and cfg.notify.on_failure:
            send_notification(
                cfg.notify, cfg.job, "FAILED (partially)", f"{_facts(result, t0)}\n{err}", redact=r.redact
            )
        raise err
    if cfg.notify and cfg.notify.on_success:
        send_notification(cfg.notify, cfg.job, "completed", _facts(result, t0), redact=r.redact)
    logger.info("backup %s/%s good on %s", cfg.job, result["backup_id"], ", ".join(result["good"]))
    return result


def _facts(result: dict[str, Any], t0: float) -> str:
    """The notification's lines: backup id, good storages, size, duration."""
    return (
        f"Backup: {result['backup_id']}\n"
        f"Storages: {', '.join(result['good']) or 'none'}\n"
        f"Size: {result['size']} bytes\n"
        f"Duration: {time.monotonic() - t0:.1f} s"
    )


def _run(r: Resolved, cfg: BackupJob, verify: bool | None, now: dt.datetime | None) -> dict[str, Any]:
    logger = get_run_logger()
    do_verify = cfg.verify if verify is None else verify
    if cfg.encryption and (do_verify or cfg.engine in ("etcd", "redis") or cfg.incremental):  # before writes
        load_job_identities(r, required=do_verify)
    facts = preflight_source(r)
    storage_failed = preflight_storages(r)
    for label, err in storage_failed.items():
        logger.error("storage %s is not usable, skipping it: %s", label, err)
    healthy = [label for label in r.storages if label not in storage_failed]

    started = now or dt.datetime.now(dt.UTC)
    backup_id = new_backup_id(started)
    # the databases' inventory is listed while the dump runs (it is no snapshot of its own for MySQL
    # either way; PostgreSQL parts carry the one taken inside the dump's snapshot)
    listing = (
        inventory_source.submit(r, facts["databases"])
        if isinstance(cfg.source, DatabaseSourceConfig | PhysicalSourceConfig)
        else None
    )
    inc = plan_incremental(r, healthy, started) if cfg.incremental else None
    if inc is not None:
        logger.info("inc_files: %s", inc.next.reason)
    dump_started = time.time()
    parts, dump_failed = dump_to_storages(r, backup_id, facts, healthy, inc)
    failed = {**storage_failed, **dump_failed}
    holding = [label for label in healthy if label not in dump_failed]

    verification = None
    try:
        before: dict[str, Any] = listing.result() if listing is not None else {}
        if do_verify:
            reader = next((lbl for lbl in holding if isinstance(r.storages[lbl], LocalStorage)), holding[0])
            verification = verify_backup(r, backup_id, parts, reader, before, dump_started)
    except BaseException:
        for label in holding:
            try:
                r.storages[label].discard(cfg.job, backup_id)
            except Exception as exc:  # the first error is the one to report
                logger.warning(
                    "could not remove the unpublished backup from %s: %s", label, r.redact(str(exc))
                )
        raise
    finished = dt.datetime.now(dt.UTC) if now is None else max(now, started)
    inventory = before or _part_inventory(parts)
    chain_tree = ((verification or {}).get("checks") or {}).get("files") if cfg.incremental else None
    if chain_tree:  # inc_files: the tree the verified chain restores (file count, bytes, digest)
        inventory = {"files": {k: chain_tree[k] for k in ("file_count", "total_bytes", "tree_sha256")}}
    etcd_status = ((verification or {}).get("checks") or {}).get("etcd")
    if cfg.engine == "etcd" and not etcd_status and (not cfg.encryption or r.age_identities):
        # no verification: still record what the snapshot holds (encrypted: only with the identity)
        etcd_status = etcd_backup_inventory(
            r.storages[holding[0]], cfg.job, backup_id, parts[0].name, r.age_identities
        )
    if etcd_status:
        inventory = {"etcd": {k: etcd_status.get(k) for k in ("totalKey", "revision", "hash")}}
    if cfg.engine == "redis" and (not cfg.encryption or r.age_identities):  # encrypted: with the key
        checked = ((verification or {}).get("checks") or {}).get("redis")
        first = r.storages[holding[0]]
        inventory = {
            "redis": checked
            or redis_backup_inventory(first, cfg.job, backup_id, parts[0].name, r.age_identities)
        }
    manifest = build_manifest(
        r, backup_id, started, finished, parts, facts, verification, flow_run.id, inventory=inventory
    )
    publish_failed = publish_backup(r, backup_id, manifest, holding)
    failed.update(publish_failed)
    good = [label for label in holding if label not in publish_failed]

    retention: dict[str, str] = {}
    deleted: dict[str, list[str]] = {}
    for label in good:
        try:
            plan = rotate_storage(r, label, started, backup_id)
        except Exception as exc:
            failed[label] = r.redact(f"backup is good but rotation failed: {exc}")
            continue
        retention[label] = plan.to_markdown()
        deleted[label] = plan.delete
    return {
        "job": cfg.job,
        "backup_id": backup_id,
        "good": good,
        "failed": failed,
        "size": manifest["size"],
        "sha256": manifest["sha256"],
        "parts": manifest["parts"],
        "verification": verification,
        "inventory": manifest["inventory"],
        "retention": retention,
        "deleted": deleted,
    }
