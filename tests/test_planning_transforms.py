"""Table tests of planning/transforms.py: exclude_kinds and per-kind transforms of migrated objects."""

from __future__ import annotations

from typing import Any

import pytest

from planning.resources import ResourceType
from planning.transforms import apply_transforms, parse_path, parse_transform_spec, resolve_kinds
from stateferry.errors import InputError

TYPES = [
    ResourceType("", "v1", "ConfigMap", "configmaps", True),
    ResourceType("", "v1", "Secret", "secrets", True),
    ResourceType("", "v1", "Namespace", "namespaces", False),
    ResourceType("apps", "v1", "Deployment", "deployments", True),
    ResourceType("batch", "v1", "CronJob", "cronjobs", True),
    ResourceType("example.com", "v1", "Deployment", "deployments", True),  # same kind, other group
]


def _dep(name: str = "web", ns: str = "cms", api: str = "apps/v1") -> dict[str, Any]:
    return {
        "apiVersion": api,
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "annotations": {"a": "1"}},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:1.0"}]}}},
    }


def _cm(name: str = "cfg", ns: str = "cms") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns},
        "data": {"k": "v"},
    }


def _run(objs: list[dict[str, Any]], exclude: Any = None, transforms: Any = None) -> Any:
    return apply_transforms(objs, resolve_kinds(parse_transform_spec(exclude, transforms), TYPES))


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("spec.template.spec.containers[0].image", ("spec", "template", "spec", "containers", 0, "image")),
        ("$.spec.replicas", ("spec", "replicas")),
        ('metadata.annotations["example.com/owner"]', ("metadata", "annotations", "example.com/owner")),
        ("metadata.labels['app.kubernetes.io/name']", ("metadata", "labels", "app.kubernetes.io/name")),
        ("/metadata/annotations/example.com~1owner", ("metadata", "annotations", "example.com/owner")),
        ("/spec/containers/0/args/-", ("spec", "containers", 0, "args", "-")),
        ("data.k", ("data", "k")),
    ],
)
def test_parse_path(text: str, parts: tuple[Any, ...]) -> None:
    assert parse_path(text, "p") == parts


@pytest.mark.parametrize(
    "text",
    [
        "",
        "kind",
        "apiVersion",
        "/apiVersion",
        "metadata",
        "metadata.name",
        "/metadata/namespace",  # deleting it would make the object cluster-scoped
        "metadata.generateName",
        ".spec",
        "spec..x",
        "spec[x]",
        "containers[0]image",
        "[0].a",
        "/spec//x",
        "spec.a b",
    ],
)
def test_parse_path_refuses(text: str) -> None:
    with pytest.raises(InputError) as e:
        parse_path(text, "transforms[0].path")
    assert "transforms[0].path" in str(e.value)


@pytest.mark.parametrize(
    ("exclude", "transforms", "field"),
    [
        (None, [{"path": "data.k", "value": 1}], "transforms[0].kind"),
        (None, [{"kind": "ConfigMap", "path": "data.k"}], "transforms[0].value"),
        (None, [{"kind": "ConfigMap", "path": "data.k", "op": "replace", "value": 1}], "transforms[0].op"),
        (None, [{"kind": "ConfigMap", "path": "data.k", "op": "delete", "value": 1}], "transforms[0].value"),
        (None, [{"kind": "ConfigMap", "path": "metadata.name", "value": "x"}], "transforms[0].path"),
        (None, [{"kind": "ConfigMap", "path": "data.k", "value": "v", "where": 1}], "transforms[0]"),
        (None, [{"kind": "ConfigMap", "path": "data.k", "value": {1: 2}}], "transforms[0].value"),
        (None, [{"kind": "ConfigMap", "path": "data.k", "value": "v", "name": 3}], "transforms[0].name"),
        (None, {"kind": "ConfigMap"}, "transforms"),
        (None, "[not json", "transforms"),
        (["Secret", 3], None, "exclude_kinds"),
    ],
)
def test_spec_refuses(exclude: Any, transforms: Any, field: str) -> None:
    with pytest.raises(InputError) as e:
        parse_transform_spec(exclude, transforms)
    assert e.value.field == field


@pytest.mark.parametrize(
    ("exclude", "transforms", "field"),
    [
        (["Widget"], None, "exclude_kinds"),
        (None, [{"kind": "Gadget", "path": "spec.x", "value": 1}], "transforms[0].kind"),
        (None, [{"kind": "CronJob", "group": "apps", "path": "spec.x", "value": 1}], "transforms[0].kind"),
    ],
)
def test_unknown_kinds_are_named(exclude: Any, transforms: Any, field: str) -> None:
    with pytest.raises(InputError) as e:
        resolve_kinds(parse_transform_spec(exclude, transforms), TYPES)
    assert e.value.field == field
    assert "Widget" in str(e.value) or "Gadget" in str(e.value) or "CronJob" in str(e.value)


def test_exclude_and_transform_in_order() -> None:
    objs = [
        _dep(),
        _dep("api", "other"),
        _cm(),
        {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "j", "namespace": "cms"}},
    ]
    out, rows = _run(
        objs,
        exclude="cronjobs.batch",
        transforms=[
            {
                "kind": "deployments.apps",
                "namespace": "cms",
                "path": "spec.template.spec.containers[0].image",
                "value": "nginx:2.0",
            },
            {"kind": "Deployment", "path": 'metadata.annotations["example.com/moved"]', "value": "yes"},
            {"kind": "Deployment", "path": "/metadata/annotations/a", "op": "delete"},
            {"kind": "ConfigMap", "name": "cfg", "path": "data.k", "value": "changed"},
            {"kind": "ConfigMap", "path": "data.gone", "op": "delete"},
            {"kind": "Secret", "path": "data.x", "value": "c2VjcmV0"},
        ],
    )
    assert [o["kind"] for o in out] == ["Deployment", "Deployment", "ConfigMap"]
    web, api, cm = out
    assert web["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:2.0"
    assert api["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.0"  # other namespace
    assert web["metadata"]["annotations"] == {"example.com/moved": "yes"}
    assert api["metadata"]["annotations"] == {"example.com/moved": "yes"}
    assert cm["data"] == {"k": "changed"}
    assert objs[0]["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.0"  # input untouched
    changes = [(r["object"], r["change"]) for r in rows]
    assert ("CronJob cms/j", "excluded (exclude_kinds)") in changes
    assert ("ConfigMap cms/cfg", "transforms[4]: delete data.gone (absent, nothing to do)") in changes
    assert (
        "Deployment cms/web",
        'transforms[0]: set spec.template.spec.containers[0].image = "nginx:2.0"',
    ) in changes
    assert ("-", "transforms[5]: matched no object (Secret data.x)") in changes


def test_group_distinguishes_same_kind() -> None:
    objs = [_dep(), _dep("crd", api="example.com/v1")]
    out, _ = _run(
        objs, transforms=[{"kind": "Deployment", "group": "example.com", "path": "spec.x", "value": 1}]
    )
    assert "x" not in out[0]["spec"] and out[1]["spec"]["x"] == 1
    out, _ = _run(objs, exclude=["deployments.example.com"])
    assert [o["metadata"]["name"] for o in out] == ["web"]


def test_secret_values_never_shown() -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "cms"}, "data": {}}
    out, rows = _run(
        [secret], transforms=[{"kind": "Secret", "path": "data.password", "value": "aHVudGVyMg=="}]
    )
    assert out[0]["data"]["password"] == "aHVudGVyMg=="
    assert "aHVudGVyMg" not in repr(rows) and "hidden" in rows[0]["change"]


@pytest.mark.parametrize(
    ("path", "value", "expect"),
    [
        ("/spec/template/spec/containers/0/args/-", "x", None),  # no args list: cannot append
        ("spec.template.spec.containers[3].image", "x", None),
        ("spec.template.spec.containers[0].image.tag", "x", None),
        ("/spec/template/spec/containers/1", {"name": "side", "image": "busybox"}, 2),  # append at end
        ("/spec/template/spec/containers/-", {"name": "side", "image": "busybox"}, 2),
    ],
)
def test_paths_that_do_not_fit_name_the_object(path: str, value: Any, expect: int | None) -> None:
    t = [{"kind": "Deployment", "path": path, "value": value}]
    if expect is None:
        with pytest.raises(InputError) as e:
            _run([_dep()], transforms=t)
        assert str(e.value).startswith("transforms[0].path") and "Deployment cms/web" in str(e.value)
    else:
        out, _ = _run([_dep()], transforms=t)
        assert len(out[0]["spec"]["template"]["spec"]["containers"]) == expect


def test_delete_list_item_and_missing_parent() -> None:
    d = _dep()
    d["spec"]["template"]["spec"]["containers"].append({"name": "side"})
    out, rows = _run(
        [d],
        transforms=[
            {"kind": "Deployment", "path": "spec.template.spec.containers[1]", "op": "delete"},
            {"kind": "Deployment", "path": "spec.nothing.here", "op": "delete"},
        ],
    )
    assert [c["name"] for c in out[0]["spec"]["template"]["spec"]["containers"]] == ["c"]
    assert rows[1]["change"].endswith("(absent, nothing to do)")


def test_empty_spec_is_falsy_and_changes_nothing() -> None:
    spec = parse_transform_spec(None, None)
    assert not spec
    out, rows = apply_transforms([_cm()], resolve_kinds(spec, TYPES))
    assert out == [_cm()] and rows == []


@pytest.mark.parametrize(
    ("transforms", "field", "fix"),
    [
        ("[not json", "transforms", "give a list of {kind, path, op, value}"),
        ({"kind": "ConfigMap"}, "transforms", "give a list of {kind, path, op, value}"),
        (["ConfigMap"], "transforms[0]", "give a map {kind, path, op, value}"),
    ],
)
def test_list_and_entry_shape_fixes(transforms: Any, field: str, fix: str) -> None:
    with pytest.raises(InputError) as e:
        parse_transform_spec(None, transforms)
    assert (e.value.field, e.value.fix) == (field, fix)
