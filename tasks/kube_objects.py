"""Generic, idempotent Kubernetes object tasks over the dynamic client (:mod:`tasks.kube_dynamic`).

Objects the flows render are written by server-side apply (:func:`apply_object`, field manager
``stateferry``): the server computes the difference and keeps other managers' fields; it returns
``"created"``, ``"patched"`` or ``"unchanged"`` (deletes return ``"deleted"`` or ``"absent"``).
Targeted field changes are merge patches by the same manager. Objects are read as the server's JSON
(plain dicts, camelCase keys). Errors are :mod:`stateferry.errors` types, so transient ones are
retried by :data:`tasks.retry.TRANSIENT_RETRY` and bad requests fail at once with the API server's
message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE

from planning.etcd_dns_hosts import coredns_with_hosts, module_config_hosts
from stateferry.errors import Conflict, NotFound, PreconditionFailed, TransientError
from stateferry.waiting import wait_until
from tasks.kube_dynamic import (
    FIELD_MANAGER,
    call,
    dynamic_client,
    get_or_none,
    list_objects,
    list_selected,
    merge_patch,
    resource_for,
    served_resource,
    server_side_apply,
)
from tasks.retry import TRANSIENT_RETRY

__all__ = [
    "FIELD_MANAGER",
    "Outcome",
    "apply_object",
    "delete_object",
    "dynamic_client",
    "get_object",
    "list_kind",
    "list_pods",
    "module_config_resource",
    "patch_coredns_hosts",
    "patch_module_config_hosts",
    "patch_object",
    "read_pod_log",
    "scale_statefulset",
    "wait_for_lb_ip",
    "wait_pods_ready",
    "wait_statefulset_rolled_out",
]

Outcome = Literal["created", "patched", "unchanged", "deleted", "absent"]
_TASK: dict[str, Any] = {**TRANSIENT_RETRY, "cache_policy": NO_CACHE}
# the short kind names the tasks take -> apiVersion, kind
_KINDS: dict[str, tuple[str, str]] = {
    "service": ("v1", "Service"),
    "statefulset": ("apps/v1", "StatefulSet"),
    "configmap": ("v1", "ConfigMap"),
    "secret": ("v1", "Secret"),
    "pod": ("v1", "Pod"),
    "pvc": ("v1", "PersistentVolumeClaim"),
    "namespace": ("v1", "Namespace"),
    "job": ("batch/v1", "Job"),
}


def _resource(api: Any, api_version: str, kind: str) -> tuple[Any, Any]:
    """The dynamic client of ``api`` and its served ``Resource`` of ``api_version``/``kind``.

    Raises:
        PreconditionFailed: The cluster does not serve that kind.
    """
    dyn = dynamic_client(api)
    return dyn, served_resource(dyn, api_version, kind)


def get_object(api: Any, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    """Read a Service, StatefulSet, ConfigMap, Secret, Pod, Job or Namespace as a plain dict, or None
    when absent.

    Args:
        api: ``kubernetes.client.ApiClient`` of the cluster.
        kind: ``service``, ``statefulset``, ``configmap``, ``secret``, ``pod``, ``pvc``, ``job`` or
            ``namespace`` (a Secret's ``data`` stays base64 and must never be logged).
        namespace: Namespace (ignored for ``namespace``).
        name: Object name.

    Returns:
        The server's JSON of the object (camelCase keys), or None when it does not exist.
    """
    dyn, resource = _resource(api, *_KINDS[kind])
    return get_or_none(dyn, resource, name, namespace if resource.namespaced else None)


def list_kind(api: Any, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
    """Every object of a kind (see :func:`get_object`) in ``namespace`` (all when None) as plain dicts."""
    dyn, resource = _resource(api, *_KINDS[kind])
    return list(list_objects(dyn, resource, namespace if resource.namespaced else None))


def patch_object(api: Any, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> None:
    """A JSON merge patch of a few fields of an object (see :func:`get_object`) as ``stateferry``.

    Raises:
        NotFound: The object does not exist.
    """
    dyn, resource = _resource(api, *_KINDS[kind])
    merge_patch(dyn, resource, name, namespace if resource.namespaced else None, patch)


def list_pods(api: Any, namespace: str, label_selector: str = "") -> list[dict[str, Any]]:
    """Pods of a namespace (optionally filtered by a label selector) as plain dicts."""
    dyn, pods = _resource(api, *_KINDS["pod"])
    return list_selected(dyn, pods, namespace, label_selector)


def read_pod_log(api: Any, namespace: str, name: str) -> str:
    """The log of a pod's (only) container, as text."""
    dyn, pods = _resource(api, *_KINDS["pod"])
    response = call(
        f"reading the log of pod {namespace}/{name}",
        lambda: dyn.request(
            "get",
            f"{pods.path(name=name, namespace=namespace)}/log",
            header_params={"Accept": "*/*"},
            serialize=False,
        ),
    )
    return bytes(response.data or b"").decode("utf-8", errors="replace")


@task(**_TASK)
def apply_object(api: Any, manifest: dict[str, Any]) -> Outcome:
    """Server-side apply ``manifest`` as field manager ``stateferry``.

    The object is the flow's own (rendered by it, named for it), so conflicts are forced: the
    manifest says what every field it names must be; fields stateferry named before and no longer
    names are removed by the server, fields of other managers (defaults, allocations, controllers)
    are kept. Returns ``created``, ``patched`` (the resourceVersion moved) or ``unchanged``.
    """
    meta = manifest["metadata"]
    dyn, resource = _resource(api, manifest["apiVersion"], manifest["kind"])
    before = get_or_none(dyn, resource, meta["name"], meta.get("namespace") if resource.namespaced else None)
    after = server_side_apply(dyn, resource, manifest, force=True)
    if before is None:
        return "created"
    moved = after["metadata"]["resourceVersion"] != before["metadata"]["resourceVersion"]
    return "patched" if moved else "unchanged"


@task(**_TASK)
def scale_statefulset(api: Any, namespace: str, name: str, replicas: int) -> Outcome:
    """Set a StatefulSet's replicas (the ``scale`` subresource); ``unchanged`` when already there."""
    observed = get_object(api, "statefulset", namespace, name)
    if observed is None:
        return "absent"
    if int((observed.get("spec") or {}).get("replicas", 1)) == replicas:
        return "unchanged"
    dyn, statefulsets = _resource(api, *_KINDS["statefulset"])
    merge_patch(dyn, statefulsets.subresources["scale"], name, namespace, {"spec": {"replicas": replicas}})
    return "patched"


@task(**_TASK)
def delete_object(
    api: Any, kind: str, namespace: str, name: str, *, propagation: str = "Background"
) -> Outcome:
    """Delete a Service, StatefulSet, ConfigMap, Secret, PVC or Job with the given propagation policy.

    Returns:
        ``deleted`` or ``absent``.
    """
    dyn, resource = _resource(api, *_KINDS[kind])
    try:
        # the answer may be the object or a Status (an immediate delete): it is not read
        call(
            f"deleting {kind} {namespace}/{name}",
            lambda: dyn.delete(
                resource,
                name=name,
                namespace=namespace,
                body={"propagationPolicy": propagation},
                serialize=False,
            ),
        )
    except NotFound:
        return "absent"
    return "deleted"


@task(**{**_TASK, "retries": 0})
def wait_for_lb_ip(api: Any, namespace: str, name: str, *, timeout: float = 60.0) -> str:
    """Wait until the LoadBalancer Service has ``status.loadBalancer.ingress[0].ip`` (or hostname).

    Raises:
        PreconditionFailed: No address within ``timeout`` (no LoadBalancer provider, quota...).
    """

    def address() -> str | None:
        svc = get_object(api, "service", namespace, name)
        ingress = (((svc or {}).get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        if ingress and (ingress[0].get("ip") or ingress[0].get("hostname")):
            return str(ingress[0].get("ip") or ingress[0].get("hostname"))
        return None

    return wait_until(
        address,
        timeout=timeout,
        describe=lambda: (
            f"Service {namespace}/{name} got no LoadBalancer address within {timeout:g}s: check that the "
            "cluster has a LoadBalancer provider (and its quota), or pass the provider's annotations"
        ),
    )


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") != "Running" or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


@task(**{**_TASK, "retries": 0})
def wait_pods_ready(
    api: Any, namespace: str, pods: Sequence[str], *, timeout: float = 120.0, running_only: bool = False
) -> None:
    """Wait until every named pod is Running (and Ready unless ``running_only``).

    Raises:
        PreconditionFailed: A pod is not there within ``timeout``; the message names it and its phase.
    """
    pending: list[str] = []

    def all_there() -> bool:
        pending.clear()
        for name in pods:
            pod = get_object(api, "pod", namespace, name)
            ok = pod is not None and (
                ((pod.get("status") or {}).get("phase") == "Running") if running_only else _pod_ready(pod)
            )
            if not ok:
                phase = ((pod or {}).get("status") or {}).get("phase", "absent") if pod else "absent"
                pending.append(f"{name} ({phase})")
        return not pending

    wait_until(
        all_there,
        timeout=timeout,
        describe=lambda: (
            f"pods not {'running' if running_only else 'ready'} after {timeout:g}s in {namespace}: "
            f"{', '.join(pending)}; check `kubectl describe pod` and the pod logs"
        ),
    )


@task(**{**_TASK, "retries": 0})
def wait_statefulset_rolled_out(api: Any, namespace: str, name: str, *, timeout: float = 180.0) -> None:
    """Wait until every pod of the StatefulSet runs the update revision and is ready."""
    seen: dict[str, Any] = {}

    def rolled_out() -> bool:
        sts = get_object(api, "statefulset", namespace, name) or {}
        spec, status = sts.get("spec") or {}, sts.get("status") or {}
        seen["status"] = status
        want = int(spec.get("replicas", 1))
        return bool(
            status.get("observedGeneration") == (sts.get("metadata") or {}).get("generation")
            and int(status.get("updatedReplicas") or 0) == want
            and int(status.get("readyReplicas") or 0) == want
            and status.get("updateRevision") == status.get("currentRevision")
        )

    wait_until(
        rolled_out,
        timeout=timeout,
        interval=0.3,
        describe=lambda: (
            f"StatefulSet {namespace}/{name} did not roll out within {timeout:g}s "
            f"(status {seen.get('status')}); check its pods"
        ),
    )


@task(**_TASK)
def patch_coredns_hosts(
    api: Any,
    key: str,
    entries: Sequence[tuple[str, Sequence[str]]],
    *,
    namespace: str = "kube-system",
    name: str = "coredns",
) -> Outcome:
    """Set stateferry's marked section of the CoreDNS ``hosts`` block (empty ``entries`` remove it).

    The merge patch carries the ConfigMap's resourceVersion (a concurrent edit makes it fail with
    409: read again and retried).
    """
    dyn, configmaps = _resource(api, *_KINDS["configmap"])
    for _ in range(5):
        cm = get_or_none(dyn, configmaps, name, namespace)
        if cm is None or "Corefile" not in (cm.get("data") or {}):
            raise PreconditionFailed(
                f"ConfigMap {namespace}/{name} with a Corefile was not found: this cluster's DNS is not "
                "CoreDNS; use dns_provider='deckhouse' or add the hosts by hand"
            )
        corefile = cm["data"]["Corefile"]
        updated = coredns_with_hosts(corefile, key, entries)
        if updated == corefile:
            return "unchanged"
        patch = {
            "metadata": {"resourceVersion": cm["metadata"]["resourceVersion"]},
            "data": {"Corefile": updated},
        }
        try:
            merge_patch(dyn, configmaps, name, namespace, patch)
            return "patched"
        except Conflict:
            continue
    raise TransientError(f"ConfigMap {namespace}/{name} kept changing under us (409 five times); retry")


def module_config_resource(api: Any) -> Any:
    """The dynamic-client resource of Deckhouse ``ModuleConfig`` (``deckhouse.io/v1alpha1``).

    Raises:
        PreconditionFailed: The cluster does not serve it (not a Deckhouse cluster).
    """
    resource = resource_for(dynamic_client(api), "deckhouse.io/v1alpha1", "ModuleConfig")
    if resource is None:
        raise PreconditionFailed(
            "the cluster serves no deckhouse.io/v1alpha1 ModuleConfig (not a Deckhouse cluster): "
            "use dns_provider='coredns'"
        )
    return resource


@task(**_TASK)
def patch_module_config_hosts(
    api: Any,
    remove_names: Sequence[str],
    entries: Sequence[tuple[str, Sequence[str]]],
) -> Outcome:
    """Set Deckhouse ``ModuleConfig kube-dns`` ``spec.settings.hosts``.

    Drops ``remove_names`` (stateferry's earlier entries) and adds ``entries``.
    """
    resource = module_config_resource(api)
    dyn = dynamic_client(api)
    current = get_or_none(dyn, resource, "kube-dns", None)
    hosts = ((((current or {}).get("spec") or {}).get("settings") or {}).get("hosts")) or []
    updated = module_config_hosts(hosts, remove_names, entries)
    if current is not None and updated == hosts:
        return "unchanged"
    if current is None:
        body = {
            "apiVersion": "deckhouse.io/v1alpha1",
            "kind": "ModuleConfig",
            "metadata": {"name": "kube-dns"},
            "spec": {"version": 1, "enabled": True, "settings": {"hosts": updated}},
        }
        server_side_apply(dyn, resource, body)
        return "created"
    merge_patch(dyn, resource, "kube-dns", None, {"spec": {"settings": {"hosts": updated}}})
    return "patched"
