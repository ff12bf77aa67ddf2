"""``restore_backup``: restore a job's backup (latest or by timestamp) after checking its sha256."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from planning.backup_config import parse_job
from planning.backup_encryption import manifest_encryption
from tasks.approvals import request_approval
from tasks.backup_crypto import load_job_identities
from tasks.backup_jobs import resolve_job
from tasks.restore_checks import RestoreIncomplete, inventory_markdown
from tasks.restore_jobs import plan_restore, restore_selected, select_backup


@flow(name="restore_backup", log_prints=True)
def restore_backup(
    job: dict[str, Any],
    backup: str = "latest",
    storage: str | None = None,
    target_database: str | None = None,
    target_block: str | None = None,
    target_dir: str | None = None,
    overwrite: bool = False,
    dry_run: bool = False,
    etcd_name: str = "default",
    etcd_peer_url: str = "http://127.0.0.1:2380",
    etcd_initial_cluster: str | None = None,
    auto_approve: bool = False,
    restore_globals: bool = False,
    restore_users: bool = False,
    target_pvc: str | None = None,
    identity_secret: str | None = None,
) -> dict[str, Any]:
    """Restore one backup of a job.

    Args:
        job: the job config (the same mapping the backup deployment uses).
        backup: ``latest``, a backup id (or unique prefix), or an ISO time (newest backup at or before it).
        storage: the storage label to restore from (default: local storages first, then S3).
        target_database: restore a single database under this name (default: its own name).
        target_block: a saved ``Database`` block to restore into (default: the job's source); for
            Redis a saved ``RedisServer`` block to copy the keys into (only when named).
        target_dir: directory for files / etcd data dir (required for those engines); for Redis the
            data dir of a new instance (``dump.rdb`` is written there).
        overwrite: replace existing databases / write into a non-empty directory.
        dry_run: only list what would be done.
        etcd_name: member name for ``etcdctl snapshot restore``.
        etcd_peer_url: the member's peer URL.
        etcd_initial_cluster: ``--initial-cluster`` (default: the single member).
        auto_approve: with ``overwrite`` (or ``restore_globals`` / ``restore_users``), go ahead
            without asking; otherwise the run pauses for an operator's approval of the plan in the
            UI (a restore into new targets without roles/users never asks).
        restore_globals: PostgreSQL: apply the backup's roles and tablespaces first (existing ones
            are kept; the backup's passwords and memberships are set; the restoring role itself is
            never altered).
        target_pvc: files of a PVC: ``<namespace>/<claim>`` to unpack into (created like the
            source's claim when missing; an existing one must be empty).
        restore_users: MySQL/MariaDB backups taken with ``users: true``: create the missing users
            and apply their grants after the databases.
        identity_secret: encrypted backups: the Prefect Secret block holding the age identity
            (default: the job's ``encryption.identity_secret``). Its text is never logged; an
            identity that is none of the backup's recipients is refused before anything is read.

    Returns:
        ``{"backup_id", "storage", "actions", "dry_run", "inventory": {"expected", "restored"},
        ...what was restored}``.

    Raises:
        RestoreIncomplete: the restored copy lacks objects the backup's inventory lists (each one
            named; for an overwrite the live database is left untouched when the trial copy /
            temporary database failed the check).
    """
    logger = get_run_logger()
    cfg = parse_job(job)
    r = resolve_job(cfg)
    sel = select_backup(r, backup, storage)
    actions = plan_restore(
        r,
        sel,
        target_database,
        target_dir,
        overwrite,
        restore_globals=restore_globals,
        restore_users=restore_users,
        target_block=target_block,
        target_pvc=target_pvc,
    )
    if manifest_encryption(sel.manifest):  # a dry run lists without the key; a restore needs it
        load_job_identities(
            r,
            required=not dry_run,
            secret=identity_secret,
            field="identity_secret",
            fingerprints=sel.manifest["age_recipients"],
            what=f"backup {sel.backup_id}",
        )
    header = f"# Restore `{cfg.job}` {sel.backup_id} from {sel.storage}" + (" (dry run)" if dry_run else "")
    markdown = "\n".join([header, "", *[f"- {a}" for a in actions]])
    if dry_run:
        create_markdown_artifact(markdown=markdown, description=f"restore plan {cfg.job}")
        logger.info("dry run: %s", "; ".join(actions))
        return {"backup_id": sel.backup_id, "storage": sel.storage, "actions": actions, "dry_run": True}
    if overwrite or restore_globals or restore_users:  # roles/users: existing ones get the backup's
        request_approval(  # passwords and attributes again, a change to live state
            f"{'Overwrite with' if overwrite else 'Restore roles/users of'} backup {sel.backup_id}",
            markdown,
            key=f"restore-{cfg.job}-{sel.backup_id}",
            auto_approve=auto_approve,
        )
    try:
        done = restore_selected(
            r,
            sel,
            target_database=target_database,
            target_block=target_block,
            target_dir=target_dir,
            overwrite=overwrite,
            etcd={"name": etcd_name, "peer_url": etcd_peer_url, "initial_cluster": etcd_initial_cluster},
            restore_extra=restore_globals or restore_users,
            target_pvc=target_pvc,
        )
    except RestoreIncomplete as exc:
        table = inventory_markdown(exc.expected, exc.restored)
        create_markdown_artifact(
            markdown="\n".join([markdown, "", f"FAILED: {r.redact(str(exc))}", *table]),
            description=f"restore {cfg.job}",
        )
        raise
    table = inventory_markdown(done["inventory"]["expected"], done["inventory"]["restored"])
    table += [f"- {name}: not compared, {why}" for name, why in done["inventory"]["not_compared"].items()]
    table += [f"- note: {note}" for note in done["inventory"]["notes"]]
    create_markdown_artifact(
        markdown="\n".join([markdown, "", "Done.", *table]), description=f"restore {cfg.job}"
    )
    return {**done, "actions": actions, "dry_run": False}
