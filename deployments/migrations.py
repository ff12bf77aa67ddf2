"""The manual migration deployments (etcd stretch migration, bucket mirror) as ``prefect.yaml`` entries.

Migrations are triggered by hand (UI or ``prefect deployment run``) with the clusters / stores of
the moment, so the entries carry only the parameters that do not depend on them.
"""

from __future__ import annotations

from typing import Any

WORK_POOL = "stateferry"


def deployment_entries(work_pool: str = WORK_POOL) -> list[dict[str, Any]]:
    """``prefect.yaml`` entries of the migration flows."""

    def entry(name: str, entrypoint: str, description: str, tags: list[str]) -> dict[str, Any]:
        return {
            "name": name,
            "description": description,
            "entrypoint": entrypoint,
            "tags": ["stateferry", "migration", *tags],
            "work_pool": {"name": work_pool, "work_queue_name": None, "job_variables": {}},
        }

    return [
        entry(
            "etcd-stretch-migration",
            "flows/etcd_migration.py:etcd_stretch_migration",
            "Zero-downtime etcd migration between two Kubernetes clusters (approve each cutover in the UI)",
            ["etcd"],
        ),
        entry(
            "bucket-mirror",
            "flows/bucket_mirror.py:bucket_mirror",
            "mc-mirror-like object store sync; watch mode until the DNS cutover is approved",
            ["s3"],
        ),
    ]
