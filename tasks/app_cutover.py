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

from blocks.kube import KubeCluster
from planning.app_migration import cronjob_activation_patch, deactivation_patch, reactivation_patch
from stateferry.errors import PermanentError, StateferryError
from stateferry.waiting import wait_until
from tasks.kube_dynamic import dynamic_client, list_objects, merge_patch, resource_for

_KINDS = (("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"), ("batch/v1", "CronJob"))


def _apply(
    cluster: KubeCluster,
    namespaces: Iterable[str],
    decide: Callable[[dict[str, Any]], dict[str, Any] | None],
) -> list[dict[str, Any]]:
    dyn = dynamic_client(cluster.api_client())
    out: list[dict[str, Any]] = []
    for ns in namespaces:
        for api_version, kind in _KINDS:
            resource = resource_for(dyn, api_version, kind)
            for obj in list_objects(dyn, resource, ns) if resource is not None else ():
                name = obj["metadata"]["name"]
                row = {"kind": kind, "namespace": ns, "name": name, "result": "unchanged", "message": ""}
                out.append(row)
                try:
                    patch = decide(obj)
                    if patch is None:
                        continue
                    merge_patch(dyn, resource, name, ns, patch)
                    row["result"] = "updated"
                    spec = patch["spec"]
                    row["message"] = (
                        f"replicas {spec['replicas']}" if "replicas" in spec else f"suspend {spec['suspend']}"
                    )
                except StateferryError as exc:
                    row["result"], row["message"] = "failed", str(exc)
    return out


@task(cache_policy=NO_CACHE)
def deactivate_workloads(cluster: KubeCluster, namespaces: list[str]) -> list[dict[str, Any]]:
    """Scale Deployments/StatefulSets to 0 and suspend CronJobs, recording what they had.

    Args:
        cluster: The cluster whose applications stop.
        namespaces: The namespaces whose workloads stop.

    Returns:
        A row per Deployment, StatefulSet and CronJob: kind, namespace, name, result
        (``updated`` / ``unchanged`` / ``failed``) and message.
    """
    return _apply(cluster, namespaces, deactivation_patch)


@task(cache_policy=NO_CACHE)
def reactivate_workloads(cluster: KubeCluster, namespaces: list[str]) -> list[dict[str, Any]]:
    """Restore the replica counts and CronJob suspension recorded by :func:`deactivate_workloads`."""
    return _apply(cluster, namespaces, reactivation_patch)


@task(cache_policy=NO_CACHE)
def activate_cronjobs(cluster: KubeCluster, namespaces: list[str]) -> list[dict[str, Any]]:
    """Resume the CronJobs a migration parked (``stateferry.io/migration-suspend``)."""
    return [r for r in _apply(cluster, namespaces, cronjob_activation_patch) if r["kind"] == "CronJob"]


@task(cache_policy=NO_CACHE)
def wait_claims_released(cluster: KubeCluster, claims: list[tuple[str, str]], timeout: float = 120.0) -> None:
    """Wait until no running pod mounts any of the claims (the application has stopped writing).

    Raises:
        PermanentError: naming the pods still using a claim after ``timeout``.
    """
    busy: list[str] = []
    dyn = dynamic_client(cluster.api_client())
    pods = resource_for(dyn, "v1", "Pod")

    def released() -> bool:
        busy.clear()
        for ns in sorted({ns for ns, _ in claims}):
            names = {c for n, c in claims if n == ns}
            for pod in list_objects(dyn, pods, ns) if pods is not None else ():
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
