"""Cut-over steps of application migration: deactivate / reactivate workloads, wait for claims.

Used to quiesce the source before the final delta copy, to roll it back when a migration fails
before activation, and by the ``deactivate`` / ``reactivate`` flows (Stork's deactivate and
failback).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from planning.app_migration import cronjob_activation_patch, deactivation_patch, reactivation_patch
from stateferry.errors import PermanentError, StateferryError
from stateferry.waiting import wait_until
from tasks.kube_export import KubeRest

_KINDS = (
    ("apps/v1", "deployments", "Deployment"),
    ("apps/v1", "statefulsets", "StatefulSet"),
    ("batch/v1", "cronjobs", "CronJob"),
)


def _apply(
    rest: KubeRest, namespaces: Iterable[str], decide: Callable[[dict[str, Any]], dict[str, Any] | None]
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for ns in namespaces:
        for api, plural, kind in _KINDS:
            base = f"/apis/{api}/namespaces/{ns}/{plural}"
            for obj in (rest.get_or_none(base) or {}).get("items") or []:
                obj.setdefault("kind", kind)
                name = obj["metadata"]["name"]
                row = {"kind": kind, "namespace": ns, "name": name, "result": "unchanged", "message": ""}
                out.append(row)
                try:
                    patch = decide(obj)
                    if patch is None:
                        continue
                    rest.request(
                        "PATCH", f"{base}/{name}", body=patch, content_type="application/merge-patch+json"
                    )
                    row["result"] = "updated"
                    spec = patch["spec"]
                    row["message"] = (
                        f"replicas {spec['replicas']}" if "replicas" in spec else f"suspend {spec['suspend']}"
                    )
                except StateferryError as exc:
                    row["result"], row["message"] = "failed", str(exc)
    return out


@task(cache_policy=NO_CACHE)
def deactivate_workloads(rest: KubeRest, namespaces: list[str]) -> list[dict[str, Any]]:
    """Scale Deployments/StatefulSets to 0 and suspend CronJobs, recording what they had."""
    return _apply(rest, namespaces, deactivation_patch)


@task(cache_policy=NO_CACHE)
def reactivate_workloads(rest: KubeRest, namespaces: list[str]) -> list[dict[str, Any]]:
    """Restore the replica counts and CronJob suspension recorded by :func:`deactivate_workloads`."""
    return _apply(rest, namespaces, reactivation_patch)


@task(cache_policy=NO_CACHE)
def activate_cronjobs(rest: KubeRest, namespaces: list[str]) -> list[dict[str, Any]]:
    """Resume the CronJobs a migration parked (``stateferry.io/migration-suspend``)."""
    return [r for r in _apply(rest, namespaces, cronjob_activation_patch) if r["kind"] == "CronJob"]


@task(cache_policy=NO_CACHE)
def wait_claims_released(rest: KubeRest, claims: list[tuple[str, str]], timeout: float = 120.0) -> None:
    """Wait until no running pod mounts any of the claims (the application has stopped writing).

    Raises:
        PermanentError: naming the pods still using a claim after ``timeout``.
    """
    busy: list[str] = []

    def released() -> bool:
        busy.clear()
        for ns in sorted({ns for ns, _ in claims}):
            names = {c for n, c in claims if n == ns}
            for pod in (rest.get_or_none(f"/api/v1/namespaces/{ns}/pods") or {}).get("items") or []:
                if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                    continue
                if (pod.get("metadata") or {}).get("labels", {}).get("stateferry.io/mover"):
                    continue
                vols = (pod.get("spec") or {}).get("volumes") or []
                if any((v.get("persistentVolumeClaim") or {}).get("claimName") in names for v in vols):
                    busy.append(f"{ns}/{pod['metadata']['name']}")
        return not busy

    wait_until(
        released,
        timeout=timeout,
        interval=0.5,
        error=PermanentError,
        describe=lambda: (
            f"pods {', '.join(busy)} still use the volumes {timeout:.0f}s after the application was "
            "scaled to 0: stop them (or the controller that recreates them), then re-run"
        ),
    )
