"""Backup deployments: one cron deployment of ``scheduled_backup`` per job in ``deployments/jobs/``.

The same job files feed both ways of deploying:

* ``prefect.yaml`` (repo root) holds one ``backup-<job>`` entry per job (and an unscheduled
  ``restore-<job>`` whose ``options.dry_run`` defaults to true) — regenerate those entries
  with ``python -m deployments.backups write-prefect-yaml`` (other entries are left alone) and deploy
  with ``prefect deploy --all`` (or ``-n backup-<job>``);
* programmatically: ``python -m deployments.backups apply --work-pool stateferry-backups`` registers
  the deployments with the API, ``python -m deployments.backups serve`` serves them from this process.

Every deployment has ``concurrency_limit: 1`` (a backup never overlaps its previous run), the job's
cron schedule and timezone, and the job config as its ``job`` parameter (blocks are referenced by
name; no secret is ever a parameter).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from planning.backup_config import BackupJob, job_to_parameters, parse_job_yaml

JOBS_DIR = Path(__file__).resolve().parent / "jobs"
PREFECT_YAML = Path(__file__).resolve().parents[1] / "prefect.yaml"
WORK_POOL = "stateferry"  # process work pool (see docs: Kubernetes work pool)
ENTRYPOINT = "flows/backup.py:scheduled_backup"
RESTORE_ENTRYPOINT = "flows/restore.py:restore_backup"
PREFIX = "backup-"
RESTORE_PREFIX = "restore-"


def load_jobs(jobs_dir: Path = JOBS_DIR) -> list[BackupJob]:
    """Every ``*.yaml`` job in ``jobs_dir`` (sorted by file name)."""
    return [parse_job_yaml(p.read_text()) for p in sorted(jobs_dir.glob("*.yaml"))]


def deployment_name(job: BackupJob) -> str:
    """``backup-<job>``."""
    return f"{PREFIX}{job.job}"


def deployment_entry(job: BackupJob, work_pool: str = WORK_POOL) -> dict[str, Any]:
    """The ``prefect.yaml`` entry of one job."""
    if not job.schedule:
        raise ValueError(f"job {job.job} has no schedule; add `schedule: <cron>` to deploy it")
    return {
        "name": deployment_name(job),
        "description": job.description or f"Scheduled backup of {job.job} ({job.engine})",
        "entrypoint": ENTRYPOINT,
        "tags": ["stateferry", "backup", job.engine],
        "concurrency_limit": 1,
        "schedules": [{"cron": job.schedule, "timezone": job.timezone, "active": True}],
        "parameters": {"job": job_to_parameters(job)},
        "work_pool": {"name": work_pool, "work_queue_name": None, "job_variables": {}},
    }


def restore_entry(job: BackupJob, work_pool: str = WORK_POOL) -> dict[str, Any]:
    """The ``prefect.yaml`` entry of the job's restore deployment: no schedule, ``options.dry_run: true``
    by default, so a run from the UI only lists what it would do until the operator unticks it."""
    return {
        "name": f"{RESTORE_PREFIX}{job.job}",
        "description": f"Restore a backup of {job.job} (dry run unless dry_run is set to false)",
        "entrypoint": RESTORE_ENTRYPOINT,
        "tags": ["stateferry", "restore", job.engine],
        "concurrency_limit": 1,
        "schedules": [],
        "parameters": {"job": job_to_parameters(job), "options": {"backup": "latest", "dry_run": True}},
        "work_pool": {"name": work_pool, "work_queue_name": None, "job_variables": {}},
    }


def render_prefect_yaml(
    existing: dict[str, Any] | None, jobs: list[BackupJob], work_pool: str = WORK_POOL
) -> dict[str, Any]:
    """``prefect.yaml`` content with every ``backup-*`` / ``restore-*`` entry replaced by the jobs'."""
    doc: dict[str, Any] = dict(existing or {})
    doc.setdefault("name", "stateferry")
    doc.setdefault("prefect-version", "3.8.8")
    doc.setdefault("build", None)
    doc.setdefault("push", None)
    ours = (PREFIX, RESTORE_PREFIX)
    others = [d for d in doc.get("deployments") or [] if not str(d.get("name", "")).startswith(ours)]
    doc["deployments"] = (
        [deployment_entry(j, work_pool) for j in jobs] + [restore_entry(j, work_pool) for j in jobs] + others
    )
    return doc


def write_prefect_yaml(path: Path = PREFECT_YAML, jobs_dir: Path = JOBS_DIR) -> None:
    """Regenerate the backup entries of ``prefect.yaml`` from the job files."""
    existing = yaml.safe_load(path.read_text()) if path.exists() else None
    doc = render_prefect_yaml(existing, load_jobs(jobs_dir))
    header = (
        "# Prefect deployments of stateferry: every flow, on the process work pool `stateferry`\n"
        "# (`prefect work-pool create stateferry --type process`; for a Kubernetes work pool see\n"
        "# deployments/kubernetes-work-pool.md). Migrations are manual; backups run on cron.\n"
        "# The backup-*/restore-* entries are generated from deployments/jobs/*.yaml by\n"
        "# `python -m deployments.backups write-prefect-yaml`; the others come from\n"
        "# deployments/migrations.py and deployments/resource_backups.py.\n"
        "# Deploy: `prefect deploy --all` (or `-n 'backup-*'`).\n"
    )
    path.write_text(header + yaml.safe_dump(doc, sort_keys=False, width=110))


def build_deployments(jobs: list[BackupJob] | None = None, work_pool: str | None = None) -> list[Any]:
    """``RunnerDeployment`` objects for the jobs: the cron backups and the (unscheduled) restores."""
    from flows.backup import scheduled_backup
    from flows.restore import restore_backup

    out = []
    for job in jobs if jobs is not None else load_jobs():
        entry = deployment_entry(job)
        out.append(
            scheduled_backup.to_deployment(
                name=entry["name"],
                cron=job.schedule,
                parameters=entry["parameters"],
                concurrency_limit=1,
                description=entry["description"],
                tags=entry["tags"],
                work_pool_name=work_pool,
            )
        )
        rentry = restore_entry(job)
        out.append(
            restore_backup.to_deployment(
                name=rentry["name"],
                parameters=rentry["parameters"],
                concurrency_limit=1,
                description=rentry["description"],
                tags=rentry["tags"],
                work_pool_name=work_pool,
            )
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``write-prefect-yaml`` | ``apply [--work-pool P]`` | ``serve``."""
    parser = argparse.ArgumentParser(prog="python -m deployments.backups", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("write-prefect-yaml", help="regenerate the backup-* entries of prefect.yaml")
    apply = sub.add_parser("apply", help="register the deployments with the Prefect API")
    apply.add_argument("--work-pool", default=WORK_POOL)
    sub.add_parser("serve", help="serve the deployments from this process (no work pool needed)")
    args = parser.parse_args(argv)
    if args.cmd == "write-prefect-yaml":
        write_prefect_yaml()
        print(f"wrote {PREFECT_YAML}")
    elif args.cmd == "apply":
        for dep in build_deployments(work_pool=args.work_pool):
            print(f"{dep.name}: {dep.apply(work_pool_name=args.work_pool)}")
    else:
        from prefect import serve

        serve(*build_deployments())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
