"""DNS check of the etcd stretch migration: resolve member names inside each cluster with a short Job.

The names and the image come from the migration's layout (Kubernetes object names, already valid DNS
labels); each name is one argv entry of ``getent hosts`` (no shell), so nothing read from a server
becomes a command. The Job is labelled with the migration and deleted afterwards.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from planning.etcd_layout import MANAGED_BY, MIGRATION_LABEL
from stateferry.errors import PreconditionFailed
from stateferry.waiting import wait_until
from tasks.kube_objects import apply_object, delete_object, get_object, list_pods, read_pod_log

__all__ = ["dns_mismatches", "resolve_in_cluster"]


def _job_name(names: Sequence[str]) -> str:
    """A fresh name per check (pods of an earlier check's Job may still exist with their old answers)."""
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:8]
    return f"stateferry-dns-{digest}-{uuid.uuid4().hex[:6]}"


def resolve_in_cluster(
    api: Any, namespace: str, names: Sequence[str], *, image: str, migration_id: str, timeout: float = 60.0
) -> dict[str, list[str]]:
    """Resolve ``names`` from a pod of the cluster: name -> addresses (empty when it does not resolve).

    ``localhost`` is resolved too, to tell "the image cannot run getent" from "nothing resolves".

    Raises:
        PreconditionFailed: The Job did not finish within ``timeout`` (the image cannot run
            ``getent``? give another image).
    """
    job = _job_name(names)
    labels = {**MANAGED_BY, MIGRATION_LABEL: migration_id}
    apply_object(
        api,
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": job, "namespace": namespace, "labels": labels},
            "spec": {
                "backoffLimit": 0,
                "ttlSecondsAfterFinished": 300,
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {
                                "name": "resolve",
                                "image": image,
                                "command": ["getent", "hosts", "localhost", *names],
                            }
                        ],
                    },
                },
            },
        },
    )
    try:

        def finished() -> tuple[str, str] | None:
            pods = list_pods(api, namespace, label_selector=f"job-name={job}")
            done = [p for p in pods if (p.get("status") or {}).get("phase") in ("Succeeded", "Failed")]
            return (str(done[0]["metadata"]["name"]), str(done[0]["status"]["phase"])) if done else None

        pod_name, phase = wait_until(
            finished,
            timeout=timeout,
            describe=lambda: (
                f"the DNS check Job {namespace}/{job} (image {image}) did not finish within {timeout:g}s: "
                "give dns_check_image an image that has getent (e.g. debian:bookworm-slim)"
            ),
        )
        log = read_pod_log(api, namespace, pod_name)
        names_ok = phase == "Succeeded" or "localhost" in log.split()
    finally:
        if get_object(api, "job", namespace, job) is not None:
            delete_object(api, "job", namespace, job, propagation="Background")
    if not names_ok:
        raise PreconditionFailed(
            f"the DNS check Job {namespace}/{job} failed without output: the image {image} cannot run "
            "getent? give dns_check_image an image that has it (e.g. debian:bookworm-slim)"
        )
    found: dict[str, list[str]] = {n: [] for n in names}
    for line in log.splitlines():
        parts = line.split()
        for alias in parts[1:]:
            if alias in found and parts[0] not in found[alias]:
                found[alias].append(parts[0])
    return found


def dns_mismatches(answers: Mapping[str, Sequence[str]], expected: Mapping[str, str]) -> list[str]:
    """One line per name that does not resolve to its expected address (empty when all do)."""
    wrong = []
    for name, ip in sorted(expected.items()):
        got = list(answers.get(name) or [])
        if ip not in got:
            wrong.append(f"{name} -> {', '.join(got) or 'does not resolve'} (expected {ip})")
    return wrong
