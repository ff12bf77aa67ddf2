"""The official typed Python client against the sandbox API server: round trips and server semantics."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from .conftest import ApiEnv


def _sts(name: str, replicas: int = 1, env_value: object = "1") -> dict[str, object]:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "serviceName": name,
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "image": "quay.io/coreos/etcd:v3.4.18",
                            "env": [{"name": "A", "value": env_value}],
                            "ports": [{"containerPort": 2379, "name": "client"}],
                        }
                    ]
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
                }
            ],
        },
    }


def _status(exc: client.ApiException) -> dict[str, Any]:
    return dict(json.loads(exc.body or "{}"))


def test_configmap_round_trip_and_optimistic_concurrency(api_env: ApiEnv, namespace: str) -> None:
    core = api_env.core
    cm = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cm"), data={"a": "1"})
    )
    assert cm.metadata.uid and cm.metadata.creation_timestamp and cm.metadata.generation is None
    rv1 = int(cm.metadata.resource_version)

    cm.data["a"] = "2"
    updated = core.replace_namespaced_config_map("cm", namespace, cm)
    assert int(updated.metadata.resource_version) > rv1

    cm.data["a"] = "3"  # cm still carries the old resourceVersion
    with pytest.raises(client.ApiException) as err:
        core.replace_namespaced_config_map("cm", namespace, cm)
    assert err.value.status == 409
    body = _status(err.value)
    assert body["reason"] == "Conflict"
    assert body["details"] == {"name": "cm", "kind": "configmaps"}
    assert body["message"] == (
        'Operation cannot be fulfilled on configmaps "cm": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )

    same = core.patch_namespaced_config_map("cm", namespace, {"data": {"a": "2"}})
    assert same.metadata.resource_version == updated.metadata.resource_version  # no-op keeps the rv

    core.delete_namespaced_config_map("cm", namespace)
    with pytest.raises(client.ApiException) as err:
        core.read_namespaced_config_map("cm", namespace)
    assert err.value.status == 404
    assert _status(err.value)["message"] == 'configmaps "cm" not found'


def test_namespace_defaults_and_content(api_env: ApiEnv, namespace: str) -> None:
    ns = api_env.core.read_namespace(namespace)
    assert ns.metadata.labels == {"kubernetes.io/metadata.name": namespace}
    assert ns.spec.finalizers == ["kubernetes"]
    assert ns.status.phase == "Active"
    assert [sa.metadata.name for sa in api_env.core.list_namespaced_service_account(namespace).items] == [
        "default"
    ]
    ca = api_env.core.read_namespaced_config_map("kube-root-ca.crt", namespace)
    assert "ca.crt" in ca.data


def test_namespace_terminating_forbids_create_then_disappears(
    api_env: ApiEnv, wait_for: Callable[..., object]
) -> None:
    core = api_env.core
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="doomed")))
    core.create_namespaced_config_map("doomed", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="x")))
    _code, answer = api_env.request("DELETE", "/api/v1/namespaces/doomed")
    assert answer["kind"] == "Namespace"  # the object comes back, not a Status
    assert answer["status"]["phase"] == "Terminating" and answer["metadata"]["deletionTimestamp"]
    with pytest.raises(client.ApiException) as err:
        core.create_namespaced_config_map(
            "doomed", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="y"))
        )
    if err.value.status == 403:
        body = _status(err.value)
        assert body["reason"] == "Forbidden"
        assert "because it is being terminated" in body["message"]
    else:  # already gone
        assert err.value.status == 404

    def gone() -> bool:
        try:
            core.read_namespace("doomed")
        except client.ApiException as exc:
            return exc.status == 404
        return False

    wait_for(gone)


def test_invalid_names_and_already_exists(api_env: ApiEnv) -> None:
    with pytest.raises(client.ApiException) as err:
        api_env.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="Bad_Name")))
    body = _status(err.value)
    assert err.value.status == 422 and body["reason"] == "Invalid"
    assert body["details"]["kind"] == "Namespace"
    assert body["details"]["causes"][0]["field"] == "metadata.name"
    assert "RFC 1123 label" in body["message"]
    with pytest.raises(client.ApiException) as err:
        api_env.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="default")))
    body = _status(err.value)
    assert err.value.status == 409 and body["reason"] == "AlreadyExists"
    assert body["message"] == 'namespaces "default" already exists'


def test_statefulset_defaults_generation_scale(api_env: ApiEnv, namespace: str) -> None:
    apps = api_env.apps
    code, created = api_env.request(
        "POST", f"/apis/apps/v1/namespaces/{namespace}/statefulsets", _sts("db", 3)
    )
    assert code == 201
    spec = created["spec"]
    assert spec["podManagementPolicy"] == "OrderedReady"
    assert spec["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
    container = spec["template"]["spec"]["containers"][0]
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert spec["template"]["spec"]["restartPolicy"] == "Always"
    assert spec["volumeClaimTemplates"][0]["spec"]["volumeMode"] == "Filesystem"
    assert (
        created["status"] == {"replicas": 0, "availableReplicas": 0} or created["status"].get("replicas") == 0
    )
    assert created["metadata"]["generation"] == 1

    labelled = apps.patch_namespaced_stateful_set("db", namespace, {"metadata": {"labels": {"x": "y"}}})
    assert labelled.metadata.generation == 1  # metadata changes keep generation

    scale = apps.read_namespaced_stateful_set_scale("db", namespace)
    assert scale.spec.replicas == 3 and scale.status.selector == "app=db"
    scaled = apps.patch_namespaced_stateful_set_scale("db", namespace, {"spec": {"replicas": 5}})
    assert scaled.spec.replicas == 5
    sts = apps.read_namespaced_stateful_set("db", namespace)
    assert sts.spec.replicas == 5 and sts.metadata.generation == 2

    with pytest.raises(client.ApiException) as err:
        apps.patch_namespaced_stateful_set_scale("db", namespace, {"spec": {"replicas": -1}})
    body = _status(err.value)
    assert err.value.status == 422
    assert body["details"]["kind"] == "Scale" and body["details"]["group"] == "autoscaling"

    with pytest.raises(client.ApiException) as err:
        apps.patch_namespaced_stateful_set("db", namespace, {"spec": {"serviceName": "other"}})
    body = _status(err.value)
    assert err.value.status == 422 and body["details"]["causes"][0]["field"] == "spec"
    assert "updates to statefulset spec for fields other than" in body["message"]


def test_status_subresource_is_separate(api_env: ApiEnv, namespace: str) -> None:
    apps = api_env.apps
    assert api_env.request("POST", f"/apis/apps/v1/namespaces/{namespace}/statefulsets", _sts("st"))[0] == 201
    ignored = apps.patch_namespaced_stateful_set("st", namespace, {"status": {"replicas": 7}})
    assert (ignored.status.replicas or 0) == 0
    written = apps.patch_namespaced_stateful_set_status("st", namespace, {"status": {"replicas": 7}})
    assert written.status.replicas == 7
    assert written.metadata.generation == 1


def test_env_number_is_decode_error_on_create_and_invalid_on_patch(api_env: ApiEnv, namespace: str) -> None:
    code, body = api_env.request(
        "POST", f"/apis/apps/v1/namespaces/{namespace}/statefulsets", _sts("bad", env_value=200)
    )
    assert code == 400 and body["reason"] == "BadRequest"
    assert body["message"] == (
        'StatefulSet in version "v1" cannot be handled as a StatefulSet: json: cannot unmarshal number into '
        "Go struct field EnvVar.spec.template.spec.containers.env.value of type string"
    )
    assert (
        api_env.request("POST", f"/apis/apps/v1/namespaces/{namespace}/statefulsets", _sts("good"))[0] == 201
    )
    patch = {
        "spec": {"template": {"spec": {"containers": [{"name": "main", "env": [{"name": "B", "value": 5}]}]}}}
    }
    with pytest.raises(client.ApiException) as err:
        api_env.apps.patch_namespaced_stateful_set("good", namespace, patch)
    body = _status(err.value)
    assert err.value.status == 422
    assert body["details"]["causes"][0]["field"] == "patch"
    assert body["message"].startswith(' "" is invalid: patch: Invalid value: ')
    assert "cannot convert int64 to string" in body["message"]


def test_strategic_merge_keys_and_merge_patch_lists(api_env: ApiEnv, namespace: str) -> None:
    apps = api_env.apps
    assert api_env.request("POST", f"/apis/apps/v1/namespaces/{namespace}/statefulsets", _sts("m"))[0] == 201
    # strategic (dict body): containers merged by name, env by name, new entries prepended
    patched = apps.patch_namespaced_stateful_set(
        "m",
        namespace,
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "main",
                                "image": "quay.io/coreos/etcd:v3.4.23",
                                "env": [{"name": "B", "value": "2"}],
                            },
                            {"name": "side", "image": "busybox:1.36"},
                        ]
                    }
                }
            }
        },
    )
    cs = patched.spec.template.spec.containers
    assert [c.name for c in cs] == ["side", "main"] or [c.name for c in cs] == ["main", "side"]
    main = next(c for c in cs if c.name == "main")
    assert main.image == "quay.io/coreos/etcd:v3.4.23"
    assert [e.name for e in main.env] == ["B", "A"]
    assert patched.metadata.generation == 2
    # $patch: delete removes one container
    patched = apps.patch_namespaced_stateful_set(
        "m",
        namespace,
        {"spec": {"template": {"spec": {"containers": [{"name": "side", "$patch": "delete"}]}}}},
    )
    assert [c.name for c in patched.spec.template.spec.containers] == ["main"]
    # JSON patch (list body)
    patched = apps.patch_namespaced_stateful_set(
        "m",
        namespace,
        [{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "etcd:3"}],
    )
    assert patched.spec.template.spec.containers[0].image == "etcd:3"
    # merge patch replaces the containers list (env is gone, defaults re-applied)
    _code, merged = api_env.request(
        "PATCH",
        f"/apis/apps/v1/namespaces/{namespace}/statefulsets/m",
        {"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "etcd:4"}]}}}},
        "application/merge-patch+json",
    )
    container = merged["spec"]["template"]["spec"]["containers"][0]
    assert "env" not in container and container["terminationMessagePolicy"] == "File"


def test_json_patch_failing_test_op_and_wrong_content_type(api_env: ApiEnv, namespace: str) -> None:
    core = api_env.core
    core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="j"), data={"k": "v"})
    )
    with pytest.raises(client.ApiException) as err:
        core.patch_namespaced_config_map("j", namespace, [{"op": "test", "path": "/data/k", "value": "nope"}])
    assert err.value.status == 422
    assert core.read_namespaced_config_map("j", namespace).data == {"k": "v"}
    code, body = api_env.request(
        "PATCH", f"/api/v1/namespaces/{namespace}/configmaps/j", {"data": {"k": "w"}}
    )
    assert code == 415 and body["reason"] == "UnsupportedMediaType"


def test_service_allocation_and_validation(api_env: ApiEnv, namespace: str) -> None:
    core = api_env.core
    svc = core.create_namespaced_service(
        namespace,
        client.V1Service(
            metadata=client.V1ObjectMeta(name="lb"),
            spec=client.V1ServiceSpec(
                type="LoadBalancer", selector={"app": "x"}, ports=[client.V1ServicePort(port=2379)]
            ),
        ),
    )
    assert svc.spec.cluster_ip.startswith("127.251.96.") and svc.spec.cluster_ips == [svc.spec.cluster_ip]
    assert svc.spec.ip_families == ["IPv4"] and svc.spec.ip_family_policy == "SingleStack"
    assert 30000 <= svc.spec.ports[0].node_port <= 32767
    assert svc.spec.ports[0].target_port == 2379 and svc.spec.ports[0].protocol == "TCP"
    assert svc.spec.external_traffic_policy == "Cluster" and svc.spec.allocate_load_balancer_node_ports
    headless = core.create_namespaced_service(
        namespace,
        client.V1Service(
            metadata=client.V1ObjectMeta(name="hl"), spec=client.V1ServiceSpec(cluster_ip="None")
        ),
    )
    assert headless.spec.cluster_ips == ["None"]

    for spec, field in (
        (client.V1ServiceSpec(type="LoadBalancer"), "spec.ports"),
        (
            client.V1ServiceSpec(ports=[client.V1ServicePort(port=1), client.V1ServicePort(port=2)]),
            "spec.ports[0].name",
        ),
    ):
        with pytest.raises(client.ApiException) as err:
            core.create_namespaced_service(
                namespace, client.V1Service(metadata=client.V1ObjectMeta(name="bad"), spec=spec)
            )
        assert err.value.status == 422
        assert _status(err.value)["details"]["causes"][0]["field"] == field

    with pytest.raises(client.ApiException) as err:
        core.patch_namespaced_service("lb", namespace, {"spec": {"clusterIP": "127.251.96.200"}})
    assert _status(err.value)["details"]["causes"][0]["field"] == "spec.clusterIPs[0]"
    answer = core.delete_namespaced_service("lb", namespace)
    assert answer.metadata.name == "lb"  # Service DELETE returns the object


def test_secret_string_data_and_base64(api_env: ApiEnv, namespace: str) -> None:
    core = api_env.core
    sec = core.create_namespaced_secret(
        namespace, client.V1Secret(metadata=client.V1ObjectMeta(name="s"), string_data={"user": "admin"})
    )
    assert sec.type == "Opaque" and sec.data == {"user": "YWRtaW4="} and sec.string_data is None
    code, body = api_env.request(
        "POST", f"/api/v1/namespaces/{namespace}/secrets", {"metadata": {"name": "b"}, "data": {"k": "!!!"}}
    )
    assert code == 400
    assert body["message"] == (
        'Secret in version "v1" cannot be handled as a Secret: illegal base64 data at input byte 0'
    )


def test_selectors_limit_continue(api_env: ApiEnv, namespace: str) -> None:
    core = api_env.core
    for i, labels in enumerate([{"a": "1"}, {"a": "2"}, {"b": "x"}, {}]):
        core.create_namespaced_config_map(
            namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"c{i}", labels=labels))
        )

    def names(**kw: object) -> list[str]:
        return [
            i.metadata.name
            for i in core.list_namespaced_config_map(namespace, **kw).items
            if i.metadata.name != "kube-root-ca.crt"
        ]

    assert names(label_selector="a=1") == ["c0"]
    assert names(label_selector="a!=1") == ["c1", "c2", "c3"]
    assert names(label_selector="a in (1,2)") == ["c0", "c1"]
    assert names(label_selector="a notin (1)") == ["c1", "c2", "c3"]
    assert names(label_selector="a") == ["c0", "c1"]
    assert names(label_selector="!a") == ["c2", "c3"]
    assert names(field_selector="metadata.name=c2") == ["c2"]
    page = core.list_namespaced_config_map(namespace, limit=2)
    assert len(page.items) == 2 and page.metadata._continue
    rest = core.list_namespaced_config_map(namespace, limit=10, _continue=page.metadata._continue)
    assert len(rest.items) == 3
    with pytest.raises(client.ApiException) as err:
        core.list_namespaced_config_map(namespace, field_selector="data.x=1")
    assert err.value.status == 400
    assert '"data.x" is not a known field selector' in _status(err.value)["message"]
    with pytest.raises(client.ApiException) as err:
        core.list_namespaced_config_map(namespace, label_selector="a in b")
    assert err.value.status == 400


def test_dry_run_stores_nothing(api_env: ApiEnv, namespace: str) -> None:
    core = api_env.core
    out = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="dry")), dry_run="All"
    )
    assert out.metadata.name == "dry"
    with pytest.raises(client.ApiException) as err:
        core.read_namespaced_config_map("dry", namespace)
    assert err.value.status == 404


def test_secret_values_never_echoed_and_state_file_private(api_env: ApiEnv, namespace: str) -> None:
    core = api_env.core
    core.create_namespaced_secret(
        namespace, client.V1Secret(metadata=client.V1ObjectMeta(name="pw"), data={})
    )
    code, body = api_env.request(
        "PATCH",
        f"/api/v1/namespaces/{namespace}/secrets/pw",
        {"stringData": {"password": 12345}},
        "application/merge-patch+json",
    )
    assert code == 422 and "12345" not in json.dumps(body) and "<redacted>" in body["message"]
    api_env.server.store.flush()  # type: ignore[union-attr]
    state = api_env.server.state_dir / "objects.json"
    assert state.stat().st_mode & 0o077 == 0


def test_put_creates_only_where_the_real_server_allows_it(api_env: ApiEnv, namespace: str) -> None:
    ep = {
        "metadata": {"name": "ext"},
        "subsets": [{"addresses": [{"ip": "127.0.0.9"}], "ports": [{"port": 80}]}],
    }
    code, body = api_env.request("PUT", f"/api/v1/namespaces/{namespace}/endpoints/ext", ep)
    assert code == 201 and body["metadata"]["uid"]
    code, body = api_env.request(
        "PUT", f"/api/v1/namespaces/{namespace}/configmaps/nope", {"metadata": {"name": "nope"}}
    )
    assert code == 404 and body["reason"] == "NotFound"


def test_list_items_carry_no_type_meta_like_a_real_server(api_env: ApiEnv, namespace: str) -> None:
    code, listing = api_env.request("GET", f"/api/v1/namespaces/{namespace}/configmaps")
    assert code == 200 and listing["kind"] == "ConfigMapList" and listing["apiVersion"] == "v1"
    assert listing["items"] and all("kind" not in i and "apiVersion" not in i for i in listing["items"])
    code, single = api_env.request("GET", f"/api/v1/namespaces/{namespace}/configmaps/kube-root-ca.crt")
    assert single["kind"] == "ConfigMap" and single["apiVersion"] == "v1"
