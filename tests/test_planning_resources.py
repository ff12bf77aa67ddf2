"""Table-driven tests of the pure resource planners and the archive layout."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from planning.archive_layout import (
    ArchiveError,
    Manifest,
    object_path,
    parse_manifest,
    parse_object_path,
    plan_archive_retention,
    validate_backup_name,
)
from planning.resources import (
    MIGRATION_REPLICAS_ANNOTATION,
    LabelSelector,
    ResourceType,
    SanitizeOptions,
    Selection,
    activation_patch,
    activation_replicas,
    object_key,
    parse_mapping,
    restore_rank,
    sanitize,
    select_resource_types,
    skip_reason,
    sort_for_restore,
    zero_replicas,
)
from stateferry.errors import InputError


def obj(kind: str, name: str, ns: str | None = "cms", api: str = "v1", **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if ns:
        meta["namespace"] = ns
    meta.update(extra.pop("meta", {}))
    return {"apiVersion": api, "kind": kind, "metadata": meta, **extra}


def owner(kind: str, name: str = "x") -> dict[str, Any]:
    return {"meta": {"ownerReferences": [{"kind": kind, "name": name, "controller": True, "uid": "u"}]}}


@pytest.mark.parametrize(
    ("o", "reason"),
    [
        (obj("Pod", "web-abc-12345", **owner("ReplicaSet")), "owned by ReplicaSet"),
        (obj("Pod", "db-0", **owner("StatefulSet")), "owned by StatefulSet"),
        (obj("Pod", "j-1", **owner("Job")), "owned by Job"),
        (obj("ReplicaSet", "web-abc", api="apps/v1", **owner("Deployment")), "owned by Deployment"),
        (obj("Job", "cron-1", api="batch/v1", **owner("CronJob")), "owned by CronJob"),
        (obj("Endpoints", "web"), "endpoints controller"),
        (obj("EndpointSlice", "web-x", api="discovery.k8s.io/v1"), "endpoints controller"),
        (obj("ControllerRevision", "db-1", api="apps/v1"), "history"),
        (obj("Event", "e1"), "events"),
        (obj("Secret", "default-token-x", type="kubernetes.io/service-account-token"), "token"),
        (obj("ConfigMap", "kube-root-ca.crt"), "CA bundle"),
        (obj("ServiceAccount", "default"), "namespace controller"),
        (obj("Namespace", "kube-system", ns=None), "system namespace"),
        (obj("Pod", "done", status={"phase": "Succeeded"}), "finished"),
        (obj("Service", "kubernetes", ns="default"), "API server's own Service"),
        (obj("Service", "kubernetes", ns="cms"), None),
        (obj("Secret", "stateferry-mover-s3"), "data mover"),
        (
            obj("Job", "sf-pack-x", api="batch/v1", meta={"labels": {"stateferry.io/mover": "volume"}}),
            "data mover",
        ),
        # kept
        (obj("Pod", "bare"), None),
        (obj("ReplicaSet", "standalone", api="apps/v1"), None),
        (obj("Secret", "mysql-pass", type="Opaque"), None),
        (obj("ServiceAccount", "default", imagePullSecrets=[{"name": "reg"}]), None),
        (obj("ServiceAccount", "app"), None),
        (obj("ConfigMap", "cfg"), None),
        (obj("PersistentVolumeClaim", "data-db-0"), None),
        (obj("Pod", "weird", meta={"ownerReferences": [{"kind": "Foo", "controller": True}]}), None),
    ],
)
def test_skip_reason(o: dict[str, Any], reason: str | None) -> None:
    got = skip_reason(o)
    if reason is None:
        assert got is None
    else:
        assert got is not None and reason in got


RT = {
    "cm": ResourceType("", "v1", "ConfigMap", "configmaps", True),
    "ns": ResourceType("", "v1", "Namespace", "namespaces", False),
    "ev": ResourceType("", "v1", "Event", "events", True),
    "ep": ResourceType("", "v1", "Endpoints", "endpoints", True),
    "deploy": ResourceType("apps", "v1", "Deployment", "deployments", True),
    "sc": ResourceType("storage.k8s.io", "v1", "StorageClass", "storageclasses", False),
    "crd": ResourceType(
        "apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", False
    ),
    "cr": ResourceType("example.com", "v1", "Widget", "widgets", True),
    "pv": ResourceType("", "v1", "PersistentVolume", "persistentvolumes", False),
    "scale": ResourceType("apps", "v1", "Scale", "deployments/scale", True),
}


@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        (Selection(), ["crd", "ns", "cm", "cr", "deploy"]),
        (Selection(include_cluster_resources=True), ["crd", "ns", "sc", "pv", "cm", "cr", "deploy"]),
        (Selection(include_cluster_resources=False), ["ns", "cm", "cr", "deploy"]),
        (Selection(include_kinds=("configmaps",)), ["ns", "cm"]),
        (Selection(include_kinds=("Deployment",)), ["ns", "deploy"]),
        (Selection(include_kinds=("deployments.apps", "widgets.example.com")), ["ns", "cr", "deploy"]),
        (Selection(exclude_kinds=("ConfigMap", "widget")), ["crd", "ns", "deploy"]),
    ],
)
def test_select_resource_types(selection: Selection, expected: list[str]) -> None:
    got = select_resource_types(RT.values(), selection)
    assert got == [RT[k] for k in expected]


@pytest.mark.parametrize(
    ("kwargs", "namespace", "selected"),
    [
        ({}, "cms", True),
        ({}, "kube-system", False),
        ({"include_namespaces": "cms"}, "cms", True),
        ({"include_namespaces": "cms"}, "other", False),
        ({"include_namespaces": ["*"]}, "kube-system", True),
        ({"exclude_namespaces": "cms,dev"}, "dev", False),
        ({"include_namespaces": ["a", "b"]}, "b", True),
    ],
)
def test_namespace_selection(kwargs: dict[str, Any], namespace: str, selected: bool) -> None:
    assert Selection.build(**kwargs).namespace_selected(namespace) is selected


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"include_namespaces": ["Bad_NS"]}, "include_namespaces"),
        ({"exclude_namespaces": ["x y"]}, "exclude_namespaces"),
        ({"include_namespaces": ["a"], "exclude_namespaces": ["a"]}, "exclude_namespaces"),
        ({"label_selector": "app in (a"}, "label_selector"),
        ({"label_selector": "a=b=c"}, "label_selector"),
    ],
)
def test_selection_bad_input(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError) as ei:
        Selection.build(**kwargs)
    assert ei.value.field == field
    assert "Fix:" in str(ei.value)


@pytest.mark.parametrize(
    ("selector", "labels", "match"),
    [
        ("", {}, True),
        ("app=web", {"app": "web"}, True),
        ("app==web", {"app": "db"}, False),
        ("app!=web", {}, True),
        ("app in (web,db)", {"app": "db"}, True),
        ("app notin (web,db)", {"app": "x"}, True),
        ("app notin (web,db)", {}, True),
        ("app", {"app": ""}, True),
        ("!app", {"app": "x"}, False),
        ("app=web,tier=fe", {"app": "web"}, False),
        ("app=web, tier in (fe, be)", {"app": "web", "tier": "be"}, True),
    ],
)
def test_label_selector(selector: str, labels: dict[str, str], match: bool) -> None:
    assert LabelSelector.parse(selector).matches(labels) is match


SERVER_META = {
    "uid": "u1",
    "resourceVersion": "42",
    "creationTimestamp": "2026-01-01T00:00:00Z",
    "managedFields": [{"manager": "kubectl"}],
    "generation": 3,
    "ownerReferences": [{"kind": "X", "name": "y"}],
    "finalizers": ["kubernetes.io/pvc-protection", "example.com/keep"],
    "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}", "team": "a"},
}
OPTS = SanitizeOptions(
    namespace_mapping={"cms": "cms-dr"},
    storage_class_mapping={"fast": "standard"},
    labels={"stateferry.io/restore-name": "r1"},
)


@pytest.mark.parametrize(
    ("o", "opts", "checks"),
    [
        (
            obj("ConfigMap", "c", meta=dict(SERVER_META), data={"a": "1"}, status={"x": 1}),
            OPTS,
            {
                "metadata": {
                    "name": "c",
                    "namespace": "cms-dr",
                    "finalizers": ["example.com/keep"],
                    "annotations": {"team": "a"},
                    "labels": {"stateferry.io/restore-name": "r1"},
                },
                "data": {"a": "1"},
            },
        ),
        (
            obj(
                "Service",
                "web",
                spec={
                    "type": "NodePort",
                    "clusterIP": "10.0.0.5",
                    "clusterIPs": ["10.0.0.5"],
                    "ports": [{"port": 80, "nodePort": 30080}],
                },
            ),
            SanitizeOptions(),
            {"spec": {"type": "NodePort", "ports": [{"port": 80}]}},
        ),
        (
            obj("Service", "web", spec={"clusterIP": "10.0.0.5", "ports": [{"port": 80, "nodePort": 30080}]}),
            SanitizeOptions(keep_node_ports=True),
            {"spec": {"ports": [{"port": 80, "nodePort": 30080}]}},
        ),
        (
            obj("Service", "db", spec={"clusterIP": "None", "clusterIPs": ["None"], "ports": []}),
            SanitizeOptions(),
            {"spec": {"clusterIP": "None", "clusterIPs": ["None"], "ports": []}},
        ),
        (
            obj(
                "PersistentVolumeClaim",
                "data",
                meta={"annotations": {"pv.kubernetes.io/bind-completed": "yes"}},
                spec={"volumeName": "pvc-1", "storageClassName": "fast"},
            ),
            OPTS,
            {
                "metadata": {
                    "name": "data",
                    "namespace": "cms-dr",
                    "labels": {"stateferry.io/restore-name": "r1"},
                },
                "spec": {"storageClassName": "standard"},
            },
        ),
        (
            obj(
                "Namespace",
                "cms",
                ns=None,
                meta={"labels": {"kubernetes.io/metadata.name": "cms"}},
                spec={"finalizers": ["kubernetes"]},
            ),
            OPTS,
            {
                "metadata": {
                    "name": "cms-dr",
                    "labels": {"kubernetes.io/metadata.name": "cms-dr", "stateferry.io/restore-name": "r1"},
                }
            },
        ),
        (
            obj(
                "Job",
                "j",
                api="batch/v1",
                meta={"labels": {"job-name": "j", "app": "x"}},
                spec={
                    "selector": {"matchLabels": {"controller-uid": "u"}},
                    "template": {
                        "metadata": {"labels": {"controller-uid": "u", "job-name": "j", "app": "x"}}
                    },
                },
            ),
            SanitizeOptions(),
            {
                "spec": {"template": {"metadata": {"labels": {"app": "x"}}}},
                "metadata": {"name": "j", "namespace": "cms", "labels": {"app": "x"}},
            },
        ),
        (
            obj(
                "StatefulSet",
                "db",
                api="apps/v1",
                spec={
                    "volumeClaimTemplates": [
                        {
                            "metadata": {"name": "d"},
                            "spec": {"storageClassName": "fast"},
                            "status": {"phase": "Pending"},
                        }
                    ]
                },
            ),
            OPTS,
            {
                "spec": {
                    "volumeClaimTemplates": [
                        {"metadata": {"name": "d"}, "spec": {"storageClassName": "standard"}}
                    ]
                }
            },
        ),
        (
            obj(
                "Pod",
                "p",
                spec={
                    "nodeName": "n1",
                    "volumes": [{"name": "kube-api-access-abcde"}, {"name": "data"}],
                    "containers": [
                        {"name": "c", "volumeMounts": [{"name": "kube-api-access-abcde"}, {"name": "data"}]}
                    ],
                },
            ),
            SanitizeOptions(),
            {
                "spec": {
                    "volumes": [{"name": "data"}],
                    "containers": [{"name": "c", "volumeMounts": [{"name": "data"}]}],
                }
            },
        ),
        (
            obj(
                "RoleBinding",
                "rb",
                api="rbac.authorization.k8s.io/v1",
                subjects=[{"kind": "ServiceAccount", "name": "a", "namespace": "cms"}],
            ),
            OPTS,
            {"subjects": [{"kind": "ServiceAccount", "name": "a", "namespace": "cms-dr"}]},
        ),
    ],
)
def test_sanitize(o: dict[str, Any], opts: SanitizeOptions, checks: dict[str, Any]) -> None:
    got = sanitize(o, opts)
    assert "status" not in got
    for key, value in checks.items():
        if key == "metadata":
            assert got["metadata"] == value
        else:
            assert got[key] == value
    assert not {"uid", "resourceVersion", "creationTimestamp", "managedFields", "ownerReferences"} & set(
        got["metadata"]
    )
    assert o["metadata"]["name"]  # input not mutated
    if "status" in o:
        assert o["status"]


@pytest.mark.parametrize(
    ("kinds", "expected"),
    [
        (
            [
                ("Deployment", "apps/v1"),
                ("Widget", "example.com/v1"),
                ("Service", "v1"),
                ("ConfigMap", "v1"),
                ("Secret", "v1"),
                ("ServiceAccount", "v1"),
                ("PersistentVolumeClaim", "v1"),
                ("PersistentVolume", "v1"),
                ("StorageClass", "storage.k8s.io/v1"),
                ("Namespace", "v1"),
                ("CustomResourceDefinition", "apiextensions.k8s.io/v1"),
                ("Pod", "v1"),
                ("StatefulSet", "apps/v1"),
            ],
            [
                "CustomResourceDefinition",
                "Namespace",
                "StorageClass",
                "PersistentVolume",
                "PersistentVolumeClaim",
                "ServiceAccount",
                "Secret",
                "ConfigMap",
                "Service",
                "Widget",
                "StatefulSet",
                "Deployment",
                "Pod",
            ],
        ),
    ],
)
def test_restore_order(kinds: list[tuple[str, str]], expected: list[str]) -> None:
    objs = [obj(k, "x", api=a) for k, a in kinds]
    assert [o["kind"] for o in sort_for_restore(objs)] == expected
    assert restore_rank("Widget", "example.com") > restore_rank(
        "CustomResourceDefinition", "apiextensions.k8s.io"
    )


@pytest.mark.parametrize(
    ("o", "replicas_after", "annotation"),
    [
        (obj("Deployment", "web", api="apps/v1", spec={"replicas": 3}), 0, "3"),
        (obj("StatefulSet", "db", api="apps/v1", spec={}), 0, "1"),
        (obj("StatefulSet", "db", api="apps/v1", spec={"replicas": 0}), 0, "0"),
        (
            obj(
                "Deployment",
                "web",
                api="apps/v1",
                spec={"replicas": 0},
                meta={"annotations": {MIGRATION_REPLICAS_ANNOTATION: "5"}},
            ),
            0,
            "5",
        ),
        (obj("ConfigMap", "c"), None, None),
    ],
)
def test_zero_replicas_and_back(
    o: dict[str, Any], replicas_after: int | None, annotation: str | None
) -> None:
    z = zero_replicas(o)
    assert (z.get("spec") or {}).get("replicas") == replicas_after
    assert ((z["metadata"].get("annotations") or {}).get(MIGRATION_REPLICAS_ANNOTATION)) == annotation
    if annotation is not None:
        assert activation_replicas(z) == int(annotation)
        patch = activation_patch(z)
        assert patch == {
            "spec": {"replicas": int(annotation)},
            "metadata": {"annotations": {MIGRATION_REPLICAS_ANNOTATION: None}},
        }
    else:
        assert activation_patch(z) is None


def test_activation_bad_annotation() -> None:
    o = obj(
        "Deployment", "web", api="apps/v1", meta={"annotations": {MIGRATION_REPLICAS_ANNOTATION: "three"}}
    )
    with pytest.raises(InputError, match="not a replica count"):
        activation_replicas(o)


@pytest.mark.parametrize(
    ("value", "expected", "error"),
    [
        ("cms:cms-dr", {"cms": "cms-dr"}, None),
        ({"a": "b", "c": "d"}, {"a": "b", "c": "d"}, None),
        ("", {}, None),
        ("cms", None, "has no ':'"),
        ("cms:Bad_Name", None, "not a valid name"),
        ("a:x,b:x", None, "several namespaces"),
        (":x", None, "empty side"),
    ],
)
def test_parse_mapping(value: Any, expected: dict[str, str] | None, error: str | None) -> None:
    if error:
        with pytest.raises(InputError, match=error):
            parse_mapping(value, "namespace_mapping")
    else:
        assert parse_mapping(value, "namespace_mapping") == expected


def test_storage_class_mapping_default_class() -> None:
    assert parse_mapping({"": "fast", "slow": "fast"}, "storage_class_mapping") == {
        "": "fast",
        "slow": "fast",
    }
    pvc = sanitize(
        obj("PersistentVolumeClaim", "p", spec={}), SanitizeOptions(storage_class_mapping={"": "fast"})
    )
    assert pvc["spec"]["storageClassName"] == "fast"


def test_object_key() -> None:
    assert object_key(obj("Deployment", "web", api="apps/v1")) == "Deployment.apps cms/web"
    assert object_key(obj("Namespace", "cms", ns=None)) == "Namespace cms"


# ---------------------------------------------------------------------------------------------- archive


def good_manifest() -> dict[str, Any]:
    return Manifest(
        backup_name="b1",
        created_at="2026-11-22T00:00:00Z",
        selection=Selection().to_dict(),
        resource_types=[{**RT["cm"].to_dict(), "count": 2}],
        counts={"ConfigMap": 2},
        total_objects=2,
        tarball={"key": "resources.tar.gz", "sha256": "0" * 64, "size": 10},
    ).to_dict()


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda m: None, None),
        (lambda m: m.update(layout_version=99), "layout version 99 is not supported"),
        (lambda m: m.pop("layout_version"), "layout version None is not supported"),
        (lambda m: m.update(kind="other"), "not a stateferry resource backup"),
        (lambda m: m.pop("tarball"), "'tarball' is missing"),
        (lambda m: m.update(total_objects=3), "add up to 2"),
        (lambda m: m.update(counts={"ConfigMap": "2"}), "integers"),
        (lambda m: m["tarball"].update(size="x"), "'size' must be int"),
    ],
)
def test_parse_manifest(mutate: Any, error: str | None) -> None:
    m = good_manifest()
    mutate(m)
    raw = json.dumps(m).encode()
    if error:
        with pytest.raises(ArchiveError, match=error):
            parse_manifest(raw)
    else:
        assert parse_manifest(raw).total_objects == 2


@pytest.mark.parametrize("raw", [b"", b"{not json", b"[1,2]", b"\xff\xfe"])
def test_parse_manifest_garbage(raw: bytes) -> None:
    with pytest.raises(ArchiveError, match="corrupt"):
        parse_manifest(raw)


@pytest.mark.parametrize(
    ("parts", "path"),
    [
        (("", "v1", "configmaps", "cms", "c"), "resources/core/v1/configmaps/cms/c.json"),
        (("apps", "v1", "deployments", "cms", "web"), "resources/apps/v1/deployments/cms/web.json"),
        (("", "v1", "namespaces", None, "cms"), "resources/core/v1/namespaces/_cluster/cms.json"),
        (
            ("rbac.authorization.k8s.io", "v1", "clusterroles", None, "system:aggregate-to-view"),
            "resources/rbac.authorization.k8s.io/v1/clusterroles/_cluster/system:aggregate-to-view.json",
        ),
    ],
)
def test_object_path_roundtrip(parts: tuple[Any, ...], path: str) -> None:
    assert object_path(*parts) == path
    p = parse_object_path(path)
    assert (p.group, p.version, p.plural, p.namespace, p.name) == parts


@pytest.mark.parametrize(
    "path",
    [
        "etc/passwd",
        "resources/core/v1/cm.json",
        "resources/a/b/c/d/e.txt",
        "/resources/core/v1/configmaps/cms/c.json",
        "resources/core/v1/../cms/c.json",
        "resources/core/v1/configmaps/../c.json",
        "resources/core/v1/configmaps/cms/...json",
        "resources/core/v1/configmaps/Cms/c.json",
        "resources/core/v1/configmaps/cms/a\\b.json",
        "resources/core/v1/configmaps/cms/a\nb.json",
        "resources/core/x1/configmaps/cms/c.json",
    ],
)
def test_parse_object_path_foreign(path: str) -> None:
    with pytest.raises(ArchiveError, match="corrupt"):
        parse_object_path(path)


@pytest.mark.parametrize(
    ("name", "ok"), [("nightly-1", True), ("Bad", False), ("-x", False), ("a" * 64, False)]
)
def test_backup_name(name: str, ok: bool) -> None:
    if ok:
        assert validate_backup_name(name) == name
    else:
        with pytest.raises(InputError, match="backup_name"):
            validate_backup_name(name)


NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
ARCHIVES = [(f"b{i}", f"2026-11-{15 + i:02d}T12:00:00Z") for i in range(1, 8)]  # b1 (16th) .. b7 (22nd)


@pytest.mark.parametrize(
    ("keep_last", "ttl_days", "deleted"),
    [
        (None, None, []),
        (3, None, ["b4", "b3", "b2", "b1"]),
        (1, None, ["b6", "b5", "b4", "b3", "b2", "b1"]),
        (None, 2, ["b4", "b3", "b2", "b1"]),
        (5, 2, ["b4", "b3", "b2", "b1"]),
        (2, 30, ["b5", "b4", "b3", "b2", "b1"]),
        (None, 1, ["b5", "b4", "b3", "b2", "b1"]),  # b6 is exactly one day old: kept
    ],
)
def test_archive_retention(keep_last: int | None, ttl_days: float | None, deleted: list[str]) -> None:
    ttl = dt.timedelta(days=ttl_days) if ttl_days else None
    keep, delete = plan_archive_retention(ARCHIVES, keep_last=keep_last, ttl=ttl, now=NOW)
    assert delete == deleted
    assert sorted(keep + delete) == sorted(n for n, _ in ARCHIVES)


def test_archive_retention_bad_count() -> None:
    with pytest.raises(InputError, match="keep_last"):
        plan_archive_retention(ARCHIVES, keep_last=0, ttl=None, now=NOW)
    with pytest.raises(InputError, match="ttl_days"):
        plan_archive_retention(ARCHIVES, keep_last=None, ttl=dt.timedelta(hours=1), now=NOW)


@pytest.mark.parametrize(
    ("archives", "protect", "deleted"),
    [
        # the run's own backup is never deleted, even when a future-dated one sorts first
        (
            [("b1", "2026-11-20T12:00:00Z"), ("mine", "2026-11-22T12:00:00Z"), ("x", "2099-01-01T00:00:00Z")],
            ["mine"],
            ["b1"],
        ),
        # names outside the layout's pattern and unreadable dates are left alone
        (
            [
                ("", "2026-11-01T00:00:00Z"),
                ("Bad_Name", "2026-11-01T00:00:00Z"),
                ("b2", "yesterday"),
                ("b3", "2026-11-21T12:00:00Z"),
                ("b4", "2026-11-22T12:00:00Z"),
            ],
            [],
            ["b3"],
        ),
    ],
)
def test_archive_retention_refuses_foreign_ids(
    archives: list[tuple[str, str]], protect: list[str], deleted: list[str]
) -> None:
    keep, delete = plan_archive_retention(archives, keep_last=1, ttl=None, now=NOW, protect=protect)
    assert delete == deleted
    assert sorted(keep + delete) == sorted(n for n, _ in archives)
