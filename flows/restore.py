"""``restore_backup``: restore a job's backup (latest or by timestamp) after checking its sha256."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from planning.backup_encryption import manifest_encryption
from planning.backup_options import DOCS, BackupJobSpec, RestoreBackupOptions, job_config
from planning.flow_options import ModelOrMapping, merge_options
from tasks.approvals import request_approval
from tasks.backup_crypto import load_job_identities
from tasks.backup_jobs import resolve_job
from tasks.restore_checks import RestoreIncomplete, inventory_markdown
from tasks.restore_jobs import plan_restore, restore_selected, select_backup


@flow(name="restore_backup", log_prints=True)
def restore_backup(
    job: ModelOrMapping[BackupJobSpec],
    options: ModelOrMapping[RestoreBackupOptions] | None = None,
    auto_approve: bool = False,
    backup: str | None = None,
    storage: str | None = None,
    target_database: str | None = None,
    target_block: str | None = None,
    target_dir: str | None = None,
    overwrite: bool | None = None,
    dry_run: bool | None = None,
    etcd_name: str | None = None,
    etcd_peer_url: str | None = None,
    etcd_initial_cluster: str | None = None,
    restore_globals: bool | None = None,
    restore_users: bool | None = None,
    target_pvc: str | None = None,
    identity_secret: str | None = None,
) -> dict[str, Any]:
    """Restore one backup of a job.

    The parameters after ``auto_approve`` are the fields of ``options`` as flat parameters,
    deprecated: they work for one more release (a field given both ways with different values is
    refused).

    Args:
        job: the job config (the same as the backup deployment's ``job``).
        options: which backup, from which storage, into what (``RestoreBackupOptions``,
            planning/backup_options.py: every field is described in the UI form). An encrypted backup's
            identity (``identity_secret``) is never logged; an identity that is none of the backup's
            recipients is refused before anything is read.
        auto_approve: with ``overwrite`` (or ``restore_globals`` / ``restore_users``), go ahead
            without asking; otherwise the run pauses for an operator's approval of the plan in the
            UI (a restore into new targets without roles/users never asks).

    Returns:
        ``{"backup_id", "storage", "actions", "dry_run", "inventory": {"expected", "restored"},
        ...what was restored}``.

    Raises:
        InputError: bad options, or a backup / storage / target that does not fit the job.
        RestoreIncomplete: the restored copy lacks objects the backup's inventory lists (each one
            named; for an overwrite the live database is left untouched when the trial copy /
            temporary database failed the check).
    """
    logger = get_run_logger()
    opts = merge_options(RestoreBackupOptions, options, locals(), docs=DOCS, warn=logger.warning)
    cfg = job_config(job)
    dry_run, overwrite = opts.dry_run, opts.overwrite
    restore_globals, restore_users = opts.restore_globals, opts.restore_users
    target_database, target_block, target_dir = opts.target_database, opts.target_block, opts.target_dir
    target_pvc = opts.target_pvc
    r = resolve_job(cfg)
    sel = select_backup(r, opts.backup, opts.storage)
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
            secret=opts.identity_secret,
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
            etcd={
                "name": opts.etcd_name,
                "peer_url": opts.etcd_peer_url,
                "initial_cluster": opts.etcd_initial_cluster,
            },
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
