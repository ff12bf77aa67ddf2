"""Serve every stateferry flow from this machine (no work pool needed): ``python -m deployments.serve``.

For local use and development. Backups and resource backups run on their cron schedules; the
migrations are manual deployments you trigger from the UI or with ``prefect deployment run``. For
production use ``prefect.yaml`` (``prefect deploy --all``) with a process or Kubernetes work pool.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any


def migration_deployments() -> list[Any]:
    """The manual migration deployments (etcd stretch migration, bucket mirror)."""
    from flows.bucket_mirror import bucket_mirror
    from flows.etcd_migration import etcd_stretch_migration

    return [
        etcd_stretch_migration.to_deployment(
            name="etcd-stretch-migration",
            description="Zero-downtime etcd migration between two Kubernetes clusters (approvals in the UI).",
            tags=["stateferry", "migration", "etcd"],
        ),
        bucket_mirror.to_deployment(
            name="bucket-mirror",
            description="mc-mirror-like object store sync; watch mode until the DNS cutover is approved.",
            tags=["stateferry", "migration", "s3"],
        ),
    ]


def all_deployments() -> list[Any]:
    """Every deployment of the project as ``RunnerDeployment`` objects."""
    from deployments import backups, resource_backups

    return [*migration_deployments(), *backups.build_deployments(), *resource_backups.to_deployments()]


def main(argv: Sequence[str] | None = None) -> int:
    """Serve all deployments until interrupted (``--list`` prints them and exits)."""
    parser = argparse.ArgumentParser(prog="python -m deployments.serve", description=__doc__)
    parser.add_argument("--list", action="store_true", help="print the deployments and exit")
    args = parser.parse_args(argv)
    deployments = all_deployments()
    if args.list:
        for d in deployments:
            schedule = ", ".join(
                str(s.schedule.cron) for s in (d.schedules or []) if hasattr(s.schedule, "cron")
            )
            print(f"{d.flow_name}/{d.name}" + (f"  [cron {schedule}]" if schedule else "  [manual]"))
        return 0
    from prefect import serve

    serve(*deployments)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
