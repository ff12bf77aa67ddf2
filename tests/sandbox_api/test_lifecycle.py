"""Watch streams, garbage collection, pods, CRDs and persistence of the sandbox API server."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client, config, watch
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError

from sandbox.apiserver import ApiServer

from .conftest import ApiEnv


def _cm(name: str, labels: dict[str, str] | None = None) -> Any:
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, labels=labels))


def test_watch_replays_from_resource_version_with_selector_semantics(api_env: ApiEnv, namespace: str) -> None:
    core = api_env.core
    rv = core.list_namespaced_config_map(namespace).metadata.resource_version
    core.create_namespaced_config_map(namespace, _cm("w", {"app": "a"}))
    core.patch_namespaced_config_map("w", namespace, {"metadata": {"labels": {"app": "b"}}})
    core.patch_namespaced_config_map("w", namespace, {"metadata": {"labels": {"app": "a"}}})
    core.delete_namespaced_config_map("w", namespace)

    def events(**kw: Any) -> list[tuple[str, str | None]]:
        w = watch.Watch()
        out = []
        for ev in w.stream(
            core.list_namespaced_config_map, namespace, resource_version=rv, timeout_seconds=1, **kw
        ):
            out.append((ev["type"], (ev["object"].metadata.labels or {}).get("app")))
            if ev["type"] == "DELETED" and len(out) >= 4:
                w.stop()
        return out

    assert events() == [("ADDED", "a"), ("MODIFIED", "b"), ("MODIFIED", "a"), ("DELETED", "a")]
    # with a selector: leaving the selection is DELETED (previous content), coming back ADDED
    assert events(label_selector="app=a") == [
        ("ADDED", "a"),
        ("DELETED", "a"),
        ("ADDED", "a"),
        ("DELETED", "a"),
    ]


def test_watch_live_events_and_initial_state(api_env: ApiEnv, namespace: str) -> None:
    core = api_env.core
    core.create_namespaced_config_map(namespace, _cm("before"))
    seen: list[tuple[str, str]] = []
    w = watch.Watch()

    def writer() -> None:
        core.create_namespaced_config_map(namespace, _cm("after"))

    started = False
    for ev in w.stream(core.list_namespaced_config_map, namespace, timeout_seconds=5):
        seen.append((ev["type"], ev["object"].metadata.name))
        if not started and ev["object"].metadata.name == "kube-root-ca.crt":
            started = True
            threading.Thread(target=writer).start()
        if ev["object"].metadata.name == "after":
            w.stop()
    assert ("ADDED", "before") in seen and seen[-1] == ("ADDED", "after")


def test_watch_too_old_resource_version_and_bad_rv(api_env: ApiEnv) -> None:
    # a fresh server after restart cannot replay history: ERROR 410 in the stream
    url = api_env.server.url
    with httpx.stream("GET", f"{url}/api/v1/configmaps?watch=true&resourceVersion=abc") as resp:
        assert resp.status_code == 500
    with httpx.stream(
        "GET", f"{url}/api/v1/namespaces?watch=true&resourceVersion=1&timeoutSeconds=1"
    ) as resp:
        lines = [json.loads(line) for line in resp.iter_lines() if line]
    assert resp.status_code == 200
    # resourceVersion 1 predates the bootstrap objects: replayed (the log holds every event)
    assert lines and lines[0]["type"] == "ADDED"


def _owner_chain(api_env: ApiEnv, namespace: str, name: str) -> tuple[Any, Any]:
    apps = api_env.apps
    body = {
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "x:1"}]},
            },
        },
    }
    rs = apps.create_namespaced_replica_set(namespace, body)
    ref = client.V1OwnerReference(
        api_version="apps/v1",
        kind="ReplicaSet",
        name=name,
        uid=rs.metadata.uid,
        controller=True,
        block_owner_deletion=True,
    )
    pod = api_env.core.create_namespaced_pod(
        namespace,
        client.V1Pod(
            metadata=client.V1ObjectMeta(name=f"{name}-p", labels={"app": name}, owner_references=[ref]),
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="x:1")]),
        ),
    )
    return rs, pod


def _gone(fn: Callable[[], object]) -> Callable[[], bool]:
    def check() -> bool:
        try:
            fn()
        except client.ApiException as exc:
            return exc.status == 404
        return False

    return check


def test_cascading_delete_background_foreground_orphan(
    api_env: ApiEnv, namespace: str, wait_for: Callable[..., object]
) -> None:
    core, apps = api_env.core, api_env.apps
    # Background (default): owner gone at once, dependents collected right after
    _owner_chain(api_env, namespace, "bg")
    status = apps.delete_namespaced_replica_set("bg", namespace)
    assert (
        status["status"] == "Success" and status["details"]["kind"] == "replicasets"
    )  # client 37: plain dict
    wait_for(_gone(lambda: core.read_namespaced_pod("bg-p", namespace)))

    # Orphan: dependents stay, ownerReferences removed
    _owner_chain(api_env, namespace, "or")
    apps.delete_namespaced_replica_set("or", namespace, propagation_policy="Orphan")
    wait_for(_gone(lambda: apps.read_namespaced_replica_set("or", namespace)))
    pod = core.read_namespaced_pod("or-p", namespace)
    assert not pod.metadata.owner_references

    # Foreground: the owner carries deletionTimestamp + finalizer until dependents are gone
    _owner_chain(api_env, namespace, "fg")
    code, answer = api_env.request(
        "DELETE", f"/apis/apps/v1/namespaces/{namespace}/replicasets/fg", {"propagationPolicy": "Foreground"}
    )
    assert code == 200 and answer["kind"] == "ReplicaSet"
    assert (
        answer["metadata"]["deletionTimestamp"] and "foregroundDeletion" in answer["metadata"]["finalizers"]
    )
    wait_for(_gone(lambda: apps.read_namespaced_replica_set("fg", namespace)))
    wait_for(_gone(lambda: core.read_namespaced_pod("fg-p", namespace)))

    code, answer = api_env.request(
        "DELETE", f"/apis/apps/v1/namespaces/{namespace}/replicasets/x", {"propagationPolicy": "Sideways"}
    )
    assert code == 422 and answer["details"]["kind"] == "DeleteOptions"


def test_pods_service_account_defaults_and_graceful_delete(
    api_env: ApiEnv, namespace: str, wait_for: Callable[..., object]
) -> None:
    core = api_env.core
    pod = core.create_namespaced_pod(
        namespace,
        client.V1Pod(
            metadata=client.V1ObjectMeta(name="p"),
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]),
        ),
    )
    assert pod.spec.service_account_name == "default" and pod.status.phase == "Pending"
    assert pod.status.qos_class == "BestEffort" and pod.spec.containers[0].image_pull_policy == "Always"
    assert any(v.name.startswith("kube-api-access-") for v in pod.spec.volumes)
    assert {t.key for t in pod.spec.tolerations} == {
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    }

    with pytest.raises(client.ApiException) as err:
        core.create_namespaced_pod(
            namespace,
            client.V1Pod(
                metadata=client.V1ObjectMeta(name="q"),
                spec=client.V1PodSpec(
                    service_account_name="nope", containers=[client.V1Container(name="c", image="b")]
                ),
            ),
        )
    assert err.value.status == 403
    assert (
        f"error looking up service account {namespace}/nope" in json.loads(err.value.body or "{}")["message"]
    )

    # status written without Go's non-omitempty fields reads back with their zero values, as from Go
    status = {
        "containerStatuses": [{"name": "c", "image": "busybox", "state": {"terminated": {"reason": "Done"}}}]
    }
    api_env.request(
        "PATCH",
        f"/api/v1/namespaces/{namespace}/pods/p/status",
        {"status": status},
        "application/merge-patch+json",
    )
    cs = core.read_namespaced_pod_status("p", namespace).status.container_statuses[0]
    assert (cs.image_id, cs.ready, cs.restart_count, cs.state.terminated.exit_code) == ("", False, 0, 0)

    # updates: admission defaults are not re-applied; only a few spec fields may change
    image = core.patch_namespaced_pod(
        "p", namespace, {"spec": {"containers": [{"name": "c", "image": "busybox:2"}]}}
    )
    assert image.spec.containers[0].image == "busybox:2" and len(image.spec.volumes) == 1
    with pytest.raises(client.ApiException) as err:
        core.patch_namespaced_pod("p", namespace, {"spec": {"restartPolicy": "Never"}})
    assert (
        err.value.status == 422
        and "pod updates may not change fields" in json.loads(err.value.body or "{}")["message"]
    )

    # bound pod: DELETE marks it (grace period) until the kubelet confirms with gracePeriodSeconds=0
    core.patch_namespaced_pod("p", namespace, {"spec": {"nodeName": "node-1"}})
    marked = core.delete_namespaced_pod("p", namespace)
    assert marked.metadata.deletion_timestamp and marked.metadata.deletion_grace_period_seconds == 30
    assert core.read_namespaced_pod("p", namespace).metadata.deletion_timestamp
    core.delete_namespaced_pod("p", namespace, grace_period_seconds=0)
    wait_for(_gone(lambda: core.read_namespaced_pod("p", namespace)))


CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "backups.stateferry.io"},
    "spec": {
        "group": "stateferry.io",
        "scope": "Namespaced",
        "names": {"plural": "backups", "singular": "backup", "kind": "Backup", "shortNames": ["bk"]},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}],
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {"size": {"type": "integer"}, "target": {"type": "string"}},
                            },
                            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                        },
                    }
                },
            }
        ],
    },
}


def test_crd_then_custom_resources_with_dynamic_client(
    api_env: ApiEnv, namespace: str, wait_for: Callable[..., object]
) -> None:
    url = api_env.server.url
    assert (
        httpx.get(f"{url}/apis/stateferry.io/v1/namespaces/{namespace}/backups").text
        == "404 page not found\n"
    )
    dyn = DynamicClient(api_env.api_client)
    crds = dyn.resources.get(api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition")
    crds.create(body=CRD)

    def established() -> bool:
        conds = crds.get(name="backups.stateferry.io").status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conds)

    wait_for(established)
    dyn.resources.invalidate_cache()
    backups = dyn.resources.get(api_version="stateferry.io/v1", kind="Backup")
    made = backups.create(
        namespace=namespace,
        body={
            "apiVersion": "stateferry.io/v1",
            "kind": "Backup",
            "metadata": {"name": "b1"},
            "spec": {"size": 3, "unknown": 1},
            "status": {"phase": "x"},
        },
    )
    assert made.metadata.generation == 1 and made.spec.size == 3
    assert "unknown" not in made.spec and not made.get("status")  # pruned / status ignored on create
    with pytest.raises(client.ApiException) as err:
        backups.create(
            namespace=namespace,
            body={
                "apiVersion": "stateferry.io/v1",
                "kind": "Backup",
                "metadata": {"name": "b2"},
                "spec": {"size": "big"},
            },
        )
    assert (
        err.value.status == 422
        and json.loads(err.value.body or "{}")["details"]["causes"][0]["field"] == "spec.size"
    )
    patched = backups.patch(
        namespace=namespace,
        name="b1",
        body={"spec": {"target": "s3"}},
        content_type="application/merge-patch+json",
    )
    assert patched.spec.target == "s3" and patched.metadata.generation == 2
    table = api_env.kubectl("get", "bk", "-n", namespace, check=True).stdout.split()
    assert table == ["NAME", "SIZE", "b1", "3"]  # short name + additionalPrinterColumns
    code, _body = api_env.request(
        "PATCH",
        f"/apis/stateferry.io/v1/namespaces/{namespace}/backups/b1",
        {"spec": {"size": 1}},
        "application/strategic-merge-patch+json",
    )
    assert code == 415
    crds.delete(name="backups.stateferry.io")
    wait_for(
        lambda: httpx.get(f"{url}/apis/stateferry.io/v1/namespaces/{namespace}/backups").status_code == 404
    )
    with pytest.raises(NotFoundError):
        crds.get(name="backups.stateferry.io")


def test_dynamic_client_round_trip(api_env: ApiEnv, namespace: str) -> None:
    dyn = DynamicClient(api_env.api_client)
    deployments = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "w", "image": "nginx:1"}]},
            },
        },
    }
    made = deployments.create(namespace=namespace, body=body)
    assert made.spec.strategy.type == "RollingUpdate" and made.spec.progressDeadlineSeconds == 600
    listed = deployments.get(namespace=namespace, label_selector="")
    assert [i.metadata.name for i in listed.items] == ["web"]
    patched = deployments.patch(
        namespace=namespace,
        name="web",
        body={"spec": {"replicas": 4}},
        content_type="application/merge-patch+json",
    )
    assert patched.spec.replicas == 4
    stale = made.to_dict()
    stale["spec"]["replicas"] = 9
    with pytest.raises(client.ApiException) as err:
        deployments.replace(namespace=namespace, body=stale)
    assert err.value.status == 409
    deployments.delete(namespace=namespace, name="web")
    with pytest.raises(NotFoundError):
        deployments.get(namespace=namespace, name="web")


def test_objects_survive_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    server = ApiServer("target", "127.0.0.1", 0, state, service_cidr_base="127.252.96")
    server.start()
    try:
        api = config.new_client_from_config_dict(
            {
                "clusters": [{"name": "t", "cluster": {"server": server.url}}],
                "users": [{"name": "u", "user": {}}],
                "contexts": [{"name": "t", "context": {"cluster": "t", "user": "u"}}],
                "current-context": "t",
            }
        )
        core: Any = client.CoreV1Api(api)
        core.create_namespaced_config_map("default", _cm("keep"))
        rv = core.read_namespaced_config_map("keep", "default").metadata.resource_version
    finally:
        server.stop()
    # a stopped server no longer answers, not even on the client's pooled keep-alive connection
    with pytest.raises(Exception) as gone:
        core.read_namespaced_config_map("keep", "default", _request_timeout=2)
    assert not isinstance(gone.value, client.ApiException)
    again = ApiServer("target", "127.0.0.1", 0, state, service_cidr_base="127.252.96")
    again.start()
    try:
        api = config.new_client_from_config_dict(
            {
                "clusters": [{"name": "t", "cluster": {"server": again.url}}],
                "users": [{"name": "u", "user": {}}],
                "contexts": [{"name": "t", "context": {"cluster": "t", "user": "u"}}],
                "current-context": "t",
            }
        )
        core = client.CoreV1Api(api)
        kept = core.read_namespaced_config_map("keep", "default")
        assert kept.metadata.resource_version == rv
        fresh = core.create_namespaced_config_map("default", _cm("new"))
        assert int(fresh.metadata.resource_version) > int(rv)
        svc = core.read_namespaced_service("kubernetes", "default")
        assert svc.spec.cluster_ip == "127.252.96.1"
    finally:
        again.stop()


def test_foreground_delete_waits_for_the_kubelet_of_bound_pods(
    api_env: ApiEnv, namespace: str, wait_for: Callable[..., object]
) -> None:
    core, apps = api_env.core, api_env.apps
    _owner_chain(api_env, namespace, "kb")
    core.patch_namespaced_pod("kb-p", namespace, {"spec": {"nodeName": "node-1"}})
    apps.delete_namespaced_replica_set("kb", namespace, propagation_policy="Foreground")
    wait_for(lambda: core.read_namespaced_pod("kb-p", namespace).metadata.deletion_timestamp)
    # the pod is Terminating (grace period), so the owner waits with its foregroundDeletion finalizer
    assert apps.read_namespaced_replica_set("kb", namespace).metadata.finalizers == ["foregroundDeletion"]
    assert core.read_namespaced_pod("kb-p", namespace).metadata.deletion_grace_period_seconds == 30
    core.delete_namespaced_pod("kb-p", namespace, grace_period_seconds=0)  # what the kubelet sends
    wait_for(_gone(lambda: core.read_namespaced_pod("kb-p", namespace)))
    wait_for(_gone(lambda: apps.read_namespaced_replica_set("kb", namespace)))


def test_watch_list_initial_events_end_with_a_bookmark(api_env: ApiEnv, namespace: str) -> None:
    api_env.core.create_namespaced_config_map(namespace, _cm("wl"))
    url = (
        f"{api_env.server.url}/api/v1/namespaces/{namespace}/configmaps?watch=true&sendInitialEvents=true"
        "&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1"
    )
    with httpx.stream("GET", url) as resp:
        events = [json.loads(line) for line in resp.iter_lines() if line]
    assert [(e["type"], e["object"]["metadata"].get("name")) for e in events] == [
        ("ADDED", "kube-root-ca.crt"),
        ("ADDED", "wl"),
        ("BOOKMARK", None),
    ]
    assert events[-1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_custom_resource_status_and_scale_subresources(
    api_env: ApiEnv, namespace: str, wait_for: Callable[..., object]
) -> None:
    crd = json.loads(json.dumps(CRD))
    crd["metadata"]["name"] = "clusters.db.stateferry.io"
    crd["spec"]["group"] = "db.stateferry.io"
    crd["spec"]["names"] = {"plural": "clusters", "singular": "cluster", "kind": "Cluster"}
    version = crd["spec"]["versions"][0]
    version.pop("additionalPrinterColumns")
    version["subresources"] = {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.size",
            "statusReplicasPath": ".status.ready",
            "labelSelectorPath": ".status.selector",
        },
    }
    code, _ = api_env.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    assert code == 201
    base = f"/apis/db.stateferry.io/v1/namespaces/{namespace}/clusters"
    wait_for(lambda: api_env.request("GET", base)[0] == 200)
    code, _made = api_env.request(
        "POST",
        base,
        {
            "apiVersion": "db.stateferry.io/v1",
            "kind": "Cluster",
            "metadata": {"name": "c"},
            "spec": {"size": 3},
        },
    )
    assert code == 201
    code, status = api_env.request(
        "PATCH",
        f"{base}/c/status",
        {"status": {"ready": 2, "selector": "app=c"}},
        "application/merge-patch+json",
    )
    assert code == 200 and status["status"]["ready"] == 2 and status["metadata"]["generation"] == 1
    code, scale = api_env.request("GET", f"{base}/c/scale")
    assert code == 200 and scale["kind"] == "Scale"
    assert scale["spec"] == {"replicas": 3} and scale["status"] == {"replicas": 2, "selector": "app=c"}
    code, scaled = api_env.request(
        "PATCH", f"{base}/c/scale", {"spec": {"replicas": 5}}, "application/merge-patch+json"
    )
    assert code == 200 and scaled["spec"]["replicas"] == 5
    code, cr = api_env.request("GET", f"{base}/c")
    assert cr["spec"]["size"] == 5 and cr["metadata"]["generation"] == 2
    api_env.request(
        "DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/clusters.db.stateferry.io"
    )
    wait_for(lambda: api_env.request("GET", base)[0] == 404)


def test_pod_logs_come_from_the_plugged_in_reader(api_env: ApiEnv, namespace: str) -> None:
    core = api_env.core
    core.create_namespaced_pod(
        namespace,
        client.V1Pod(
            metadata=client.V1ObjectMeta(name="logger"),
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]),
        ),
    )
    waiting = api_env.kubectl("logs", "-n", namespace, "logger")
    assert waiting.returncode == 1 and 'container "c" in pod "logger" is waiting to start' in waiting.stderr

    def reader(ns: str, pod: str, container: str, tail: int | None, previous: bool) -> str | None:
        lines = [f"{ns}/{pod}/{container} line {i}" for i in range(5)]
        return "".join(f"{line}\n" for line in (lines[-tail:] if tail else lines))

    api_env.server.set_log_reader(reader)
    try:
        out = api_env.kubectl("logs", "-n", namespace, "logger", "--tail=2", check=True).stdout
        assert out == f"{namespace}/logger/c line 3\n{namespace}/logger/c line 4\n"
        assert core.read_namespaced_pod_log("logger", namespace).count("\n") == 5
    finally:
        api_env.server.set_log_reader(None)
