"""Controller-made objects of the sandbox, checked against ../shared/k8s-fidelity.md (issue 17)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import kubernetes.client

from sandbox.testing import SandboxHandle


def _wait(fn: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.1)


def test_fidelity_deployment_revision_and_generated_pod_names(sandbox: SandboxHandle) -> None:
    """Spec: "Deployment `web` -> ReplicaSet `web-<hash>` (... annotations
    `deployment.kubernetes.io/{desired-replicas,max-replicas,revision}` with revision "1") -> pods
    `web-<hash>-<5>`"; controller-made pods carry `metadata.generateName`; "A template change creates a
    second ReplicaSet (revision "2")" — and the Deployment carries `deployment.kubernetes.io/revision`."""
    api = sandbox.api_client("source")
    core: Any = kubernetes.client.CoreV1Api(api)
    apps: Any = kubernetes.client.AppsV1Api(api)
    ns = f"fid-{uuid.uuid4().hex[:6]}"
    core.create_namespace(kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=ns)))
    _wait(lambda: core.list_namespaced_service_account(ns).items, 10, "default ServiceAccount")
    dep: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            },
        },
    }
    apps.create_namespaced_deployment(ns, dep)

    def revision() -> str | None:
        anns = apps.read_namespaced_deployment("web", ns).metadata.annotations or {}
        return anns.get("deployment.kubernetes.io/revision")

    assert _wait(revision, 20, "the Deployment's revision annotation") == "1"
    pods = _wait(lambda: core.list_namespaced_pod(ns, label_selector="app=web").items, 20, "pods")
    [rs] = apps.list_namespaced_replica_set(ns).items
    for pod in pods:
        assert pod.metadata.generate_name == f"{rs.metadata.name}-"
        suffix = pod.metadata.name.removeprefix(pod.metadata.generate_name)
        assert len(suffix) == 5 and pod.metadata.name != pod.metadata.generate_name

    apps.patch_namespaced_deployment(
        "web", ns, {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox:1.37"}]}}}}
    )
    assert _wait(lambda: revision() == "2", 20, "revision 2")
    core.delete_namespace(ns)
    _wait(lambda: not core.list_namespace(field_selector=f"metadata.name={ns}").items, 60, "namespace gone")
