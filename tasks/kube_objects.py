"""Generic, idempotent Kubernetes object tasks over the official client.

Objects the flows render are written by server-side apply (:func:`apply_object`, field manager
``stateferry``): the server computes the difference and keeps other managers' fields; it returns
``"created"``, ``"patched"`` or ``"unchanged"`` (deletes return ``"deleted"`` or ``"absent"``).
Errors are translated to :mod:`stateferry.errors` types, so transient ones are retried by
:data:`tasks.retry.TRANSIENT_RETRY` and bad requests fail at once with the API server's message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar

from prefect import task
from prefect.cache_policies import NO_CACHE

from planning.etcd_dns_hosts import coredns_with_hosts, module_config_hosts
from stateferry.errors import NotFound, PreconditionFailed, StateferryError, TransientError, translate
from stateferry.waiting import wait_until
from tasks.kube_dynamic import FIELD_MANAGER, dynamic_client
from tasks.kube_dynamic import call as _call
from tasks.retry import TRANSIENT_RETRY

__all__ = [
    "FIELD_MANAGER",
    "Outcome",
    "apply_object",
    "delete_object",
    "dynamic_client",
    "get_object",
    "list_pods",
    "module_config_resource",
    "patch_coredns_hosts",
    "patch_module_config_hosts",
    "scale_statefulset",
    "wait_for_lb_ip",
    "wait_pods_ready",
    "wait_statefulset_rolled_out",
]

Outcome = Literal["created", "patched", "unchanged", "deleted", "absent"]
T = TypeVar("T")
_TASK: dict[str, Any] = {**TRANSIENT_RETRY, "cache_policy": NO_CACHE}


def _status(exc: BaseException) -> int:
    return int(getattr(exc, "status", 0) or 0)


def _sanitize(obj: Any) -> Any:
    import kubernetes.client

    return kubernetes.client.ApiClient().sanitize_for_serialization(obj)


def get_object(api: Any, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    """Read a Service, StatefulSet, ConfigMap or Pod as a plain dict, or None when absent.

    Args:
        api: ``kubernetes.client.ApiClient`` of the cluster.
        kind: ``service``, ``statefulset``, ``configmap``, ``secret``, ``pod``, ``job`` or ``namespace``
            (a Secret's ``data`` stays base64 and must never be logged).
        namespace: Namespace (ignored for ``namespace``).
        name: Object name.
    """
    import kubernetes.client

    core: Any = kubernetes.client.CoreV1Api(api)
    apps: Any = kubernetes.client.AppsV1Api(api)
    readers: dict[str, Callable[[], Any]] = {
        "service": lambda: core.read_namespaced_service(name, namespace),
        "statefulset": lambda: apps.read_namespaced_stateful_set(name, namespace),
        "configmap": lambda: core.read_namespaced_config_map(name, namespace),
        "secret": lambda: core.read_namespaced_secret(name, namespace),
        "pod": lambda: core.read_namespaced_pod(name, namespace),
        "namespace": lambda: core.read_namespace(name),
        "job": lambda: kubernetes.client.BatchV1Api(api).read_namespaced_job(name, namespace),
    }
    try:
        return _sanitize(readers[kind]())
    except kubernetes.client.ApiException as exc:
        if _status(exc) == 404:
            return None
        raise translate(exc, context=f"reading {kind} {namespace}/{name}") from exc
    except StateferryError:
        raise
    except Exception as exc:
        raise translate(exc, context=f"reading {kind} {namespace}/{name}") from exc


def list_pods(api: Any, namespace: str, label_selector: str = "") -> list[dict[str, Any]]:
    """Pods of a namespace (optionally filtered by a label selector) as plain dicts."""
    import kubernetes.client

    core: Any = kubernetes.client.CoreV1Api(api)
    result = _call(
        f"listing pods in {namespace}",
        lambda: core.list_namespaced_pod(namespace, label_selector=label_selector),
    )
    return [_sanitize(p) for p in result.items]


@task(**_TASK)
def apply_object(api: Any, manifest: dict[str, Any]) -> Outcome:
    """Server-side apply ``manifest`` as field manager ``stateferry``.

    The object is the flow's own (rendered by it, named for it), so conflicts are forced: the
    manifest says what every field it names must be; fields stateferry named before and no longer
    names are removed by the server, fields of other managers (defaults, allocations, controllers)
    are kept. Returns ``created``, ``patched`` (the resourceVersion moved) or ``unchanged``.
    """
    meta = manifest["metadata"]
    ns, name = meta.get("namespace"), meta["name"]
    where = f"{manifest['kind']} {ns + '/' if ns else ''}{name}"
    resource = dynamic_client(api).resources.get(api_version=manifest["apiVersion"], kind=manifest["kind"])
    try:
        before = _call(f"reading {where}", lambda: resource.get(name=name, namespace=ns))
    except NotFound:
        before = None
    after = _call(
        f"applying {where}",
        lambda: resource.server_side_apply(
            body=manifest, name=name, namespace=ns, field_manager=FIELD_MANAGER, force_conflicts=True
        ),
    )
    if before is None:
        return "created"
    moved = after.metadata.resourceVersion != before.metadata.resourceVersion
    return "patched" if moved else "unchanged"


@task(**_TASK)
def scale_statefulset(api: Any, namespace: str, name: str, replicas: int) -> Outcome:
    """Set a StatefulSet's replicas (the ``scale`` subresource); ``unchanged`` when already there."""
    import kubernetes.client

    apps: Any = kubernetes.client.AppsV1Api(api)
    observed = get_object(api, "statefulset", namespace, name)
    if observed is None:
        return "absent"
    if int((observed.get("spec") or {}).get("replicas", 1)) == replicas:
        return "unchanged"
    _call(
        f"scaling StatefulSet {namespace}/{name} to {replicas}",
        lambda: apps.patch_namespaced_stateful_set_scale(name, namespace, {"spec": {"replicas": replicas}}),
    )
    return "patched"


@task(**_TASK)
def delete_object(
    api: Any, kind: str, namespace: str, name: str, *, propagation: str = "Background"
) -> Outcome:
    """Delete a Service, StatefulSet, ConfigMap, Secret, PVC or Job with the given propagation policy.

    Returns:
        ``deleted`` or ``absent``.
    """
    import kubernetes.client

    core: Any = kubernetes.client.CoreV1Api(api)
    apps: Any = kubernetes.client.AppsV1Api(api)
    body = kubernetes.client.V1DeleteOptions(propagation_policy=propagation)
    deleters: dict[str, Callable[[], Any]] = {
        "service": lambda: core.delete_namespaced_service(name, namespace, body=body, _preload_content=False),
        "statefulset": lambda: apps.delete_namespaced_stateful_set(
            name, namespace, body=body, _preload_content=False
        ),
        "configmap": lambda: core.delete_namespaced_config_map(
            name, namespace, body=body, _preload_content=False
        ),
        "secret": lambda: core.delete_namespaced_secret(name, namespace, body=body, _preload_content=False),
        "pvc": lambda: core.delete_namespaced_persistent_volume_claim(
            name, namespace, body=body, _preload_content=False
        ),
        "job": lambda: kubernetes.client.BatchV1Api(api).delete_namespaced_job(
            name, namespace, body=body, _preload_content=False
        ),
    }
    try:
        # the body may be the object or a Status (an immediate delete): do not deserialize it
        deleters[kind]().release_conn()
    except kubernetes.client.ApiException as exc:
        if _status(exc) == 404:
            return "absent"
        raise translate(exc, context=f"deleting {kind} {namespace}/{name}") from exc
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

    Uses the ConfigMap's resourceVersion (a concurrent edit makes the replace fail with 409, retried).
    """
    import kubernetes.client

    core: Any = kubernetes.client.CoreV1Api(api)
    for _ in range(5):
        cm = get_object(api, "configmap", namespace, name)
        if cm is None or "Corefile" not in (cm.get("data") or {}):
            raise PreconditionFailed(
                f"ConfigMap {namespace}/{name} with a Corefile was not found: this cluster's DNS is not "
                "CoreDNS; use dns_provider='deckhouse' or add the hosts by hand"
            )
        corefile = cm["data"]["Corefile"]
        updated = coredns_with_hosts(corefile, key, entries)
        if updated == corefile:
            return "unchanged"
        cm["data"]["Corefile"] = updated
        try:
            core.replace_namespaced_config_map(name, namespace, cm)
            return "patched"
        except kubernetes.client.ApiException as exc:
            if _status(exc) != 409:
                raise translate(exc, context=f"updating ConfigMap {namespace}/{name}") from exc
    raise TransientError(f"ConfigMap {namespace}/{name} kept changing under us (409 five times); retry")


def module_config_resource(api: Any) -> Any:
    """The dynamic-client resource of Deckhouse ``ModuleConfig`` (``deckhouse.io/v1alpha1``).

    Raises:
        PreconditionFailed: The cluster does not serve it (not a Deckhouse cluster).
    """
    import kubernetes.dynamic
    from kubernetes.dynamic.exceptions import ResourceNotFoundError

    try:
        dyn = kubernetes.dynamic.DynamicClient(api)
        return dyn.resources.get(api_version="deckhouse.io/v1alpha1", kind="ModuleConfig")
    except ResourceNotFoundError:
        raise PreconditionFailed(
            "the cluster serves no deckhouse.io/v1alpha1 ModuleConfig (not a Deckhouse cluster): "
            "use dns_provider='coredns'"
        ) from None
    except Exception as exc:
        raise translate(exc, context="discovering ModuleConfig") from exc


@task(**_TASK)
def patch_module_config_hosts(
    api: Any,
    remove_names: Sequence[str],
    entries: Sequence[tuple[str, Sequence[str]]],
) -> Outcome:
    """Set Deckhouse ``ModuleConfig kube-dns`` ``spec.settings.hosts``.

    Drops ``remove_names`` (stateferry's earlier entries) and adds ``entries``.
    """
    import kubernetes.client

    resource = module_config_resource(api)
    try:
        current = resource.get(name="kube-dns").to_dict()
    except kubernetes.client.ApiException as exc:
        if _status(exc) != 404:
            raise translate(exc, context="reading ModuleConfig kube-dns") from exc
        current = None
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
        _call("creating ModuleConfig kube-dns", lambda: resource.create(body=body))
        return "created"
    _call(
        "patching ModuleConfig kube-dns",
        lambda: resource.patch(
            name="kube-dns",
            body={"spec": {"settings": {"hosts": updated}}},
            content_type="application/merge-patch+json",
        ),
    )
    return "patched"
