"""Cron deployment of ``resource_backup`` (the seed's ``ark create schedule k8sbackup
--schedule="*/5 * * * *" --exclude-namespaces kube-system``), plus on-demand ``resource_restore``,
``app_migration``, ``activate``, ``deactivate`` and ``reactivate`` deployments.

Blocks are referenced by saved-block name (``KubeCluster`` ``source-cluster`` / ``target-cluster``,
``ObjectStore`` ``backup-store``); no secret is ever a parameter. Each backup gets a unique name
(``backup-<UTC timestamp>``) and the retention (``keep_last`` / ``ttl_days``) prunes older ones.

Usage::

    python -m deployments.resource_backups apply --work-pool stateferry-k8s   # register with the API
    python -m deployments.resource_backups serve                              # serve from this process
    python -m deployments.resource_backups print-yaml                         # prefect.yaml entries
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import yaml

WORK_POOL = "stateferry"  # process work pool by default; deployments/kubernetes-work-pool.md for clusters
SCHEDULE = "*/5 * * * *"

#: Default parameters of the scheduled backup: everything but the system namespaces, cluster-scoped
#: resources the namespaces need, the newest 48 backups (4 hours at */5) and nothing older than 7 days.
BACKUP_PARAMETERS: dict[str, Any] = {
    "source": "source-cluster",
    "object_store": "backup-store",
    "options": {
        "bucket": "k8s-backups",
        "exclude_namespaces": ["kube-system"],
        "keep_last": 48,
        "ttl_days": 7,
    },
}


def deployment_entries(work_pool: str = WORK_POOL, schedule: str = SCHEDULE) -> list[dict[str, Any]]:
    """The ``prefect.yaml`` entries (the root ``prefect.yaml`` is maintained by the backups module;
    add these entries there)."""

    def entry(name: str, entrypoint: str, description: str, **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "description": description,
            "entrypoint": entrypoint,
            "tags": ["stateferry", "kubernetes"],
            "work_pool": {"name": work_pool, "work_queue_name": None, "job_variables": {}},
            **extra,
        }

    return [
        entry(
            "k8s-resource-backup",
            "flows/resource_backup.py:resource_backup",
            f"Kubernetes resource backup ({schedule}, all namespaces but kube-system)",
            concurrency_limit=1,
            schedules=[{"cron": schedule, "timezone": "UTC", "active": True}],
            parameters=dict(BACKUP_PARAMETERS),
        ),
        entry(
            "k8s-resource-restore",
            "flows/resource_backup.py:resource_restore",
            "Restore a resource backup into a cluster (DR)",
            parameters={
                "target": "target-cluster",
                "object_store": "backup-store",
                "options": {"bucket": "k8s-backups"},  # backup_name: given per run (UI form)
            },
        ),
        entry(
            "app-migration",
            "flows/app_migration.py:app_migration",
            "Migrate namespaces with their volume data to another cluster",
            parameters={
                "source": "source-cluster",
                "target": "target-cluster",
                "object_store": "backup-store",
                "options": {"bucket": "k8s-migrations"},  # namespaces: given per run (UI form)
            },
        ),
        entry(
            "app-migration-activate",
            "flows/app_migration.py:activate",
            "Scale migrated, parked applications back up",
            parameters={"target": "target-cluster"},
        ),
        entry(
            "app-migration-deactivate",
            "flows/app_migration.py:deactivate",
            "Stop the old side after a migration (workloads to 0, CronJobs suspended, counts kept)",
            parameters={"cluster": "source-cluster"},
        ),
        entry(
            "app-migration-reactivate",
            "flows/app_migration.py:reactivate",
            "Failback: restore the replicas and CronJobs that deactivate (or a quiesce) recorded",
            parameters={"cluster": "source-cluster"},
        ),
    ]


def _flows() -> list[tuple[Any, dict[str, Any]]]:
    from flows.app_migration import activate, app_migration, deactivate, reactivate
    from flows.resource_backup import resource_backup, resource_restore

    by_entry = {
        "flows/resource_backup.py:resource_backup": resource_backup,
        "flows/resource_backup.py:resource_restore": resource_restore,
        "flows/app_migration.py:app_migration": app_migration,
        "flows/app_migration.py:activate": activate,
        "flows/app_migration.py:deactivate": deactivate,
        "flows/app_migration.py:reactivate": reactivate,
    }
    return [(by_entry[e["entrypoint"]], e) for e in deployment_entries()]


def to_deployments(schedule: str = SCHEDULE) -> list[Any]:
    """``RunnerDeployment`` objects (for ``serve``)."""
    out = []
    for fl, e in _flows():
        kwargs: dict[str, Any] = {
            "name": e["name"],
            "description": e["description"],
            "tags": e["tags"],
            "parameters": e.get("parameters", {}),
        }
        if e["name"] == "k8s-resource-backup":
            kwargs["cron"] = schedule
        out.append(fl.to_deployment(**kwargs))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``print-yaml`` | ``serve`` | ``apply --work-pool NAME``."""
    ap = argparse.ArgumentParser(prog="python -m deployments.resource_backups")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("print-yaml")
    sub.add_parser("serve")
    a = sub.add_parser("apply")
    a.add_argument("--work-pool", default=WORK_POOL)
    args = ap.parse_args(argv)
    if args.cmd == "print-yaml":
        sys.stdout.write(yaml.safe_dump({"deployments": deployment_entries()}, sort_keys=False))
        return 0
    if args.cmd == "serve":
        from prefect import serve

        serve(*to_deployments())
        return 0
    for fl, e in _flows():
        fl.deploy(
            name=e["name"],
            work_pool_name=args.work_pool,
            description=e["description"],
            tags=e["tags"],
            parameters=e.get("parameters", {}),
            cron=SCHEDULE if e["name"] == "k8s-resource-backup" else None,
            image="stateferry/worker:latest",
            build=False,
            push=False,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
