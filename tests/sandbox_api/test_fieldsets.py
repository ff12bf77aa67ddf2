"""Table tests of the sandbox's field sets (structured-merge-diff semantics, no server)."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox.apiserver.fieldsets import (
    Schema,
    compare,
    decode,
    encode,
    merge,
    path_string,
    remove_items,
    to_field_set,
)

POD = Schema("Pod", custom=False, status_reset=True)
SVC = Schema("Service", custom=False, status_reset=True)


@pytest.mark.parametrize(
    ("path", "text"),
    [
        (("f:spec", "f:replicas"), ".spec.replicas"),
        (("f:spec", "f:containers", 'k:{"name":"c"}', "f:image"), '.spec.containers[name="c"].image'),
        (("f:spec", "f:ports", 'k:{"port":80,"protocol":"TCP"}'), '.spec.ports[port=80,protocol="TCP"]'),
        (("f:metadata", "f:finalizers", 'v:"x"'), '.metadata.finalizers[="x"]'),
    ],
)
def test_path_string(path: tuple[str, ...], text: str) -> None:
    assert path_string(path) == text


def test_to_field_set_keys_sets_atomic_and_encoding() -> None:
    pod = {
        "metadata": {"finalizers": ["a"], "labels": {"app": "x"}},
        "spec": {
            "nodeSelector": {"disk": "ssd"},
            "containers": [{"name": "c", "args": ["-v"], "ports": [{"containerPort": 80}]}],
        },
    }
    fields = to_field_set(pod, POD)
    assert encode(fields) == {
        "f:metadata": {"f:finalizers": {'v:"a"': {}}, "f:labels": {"f:app": {}}},
        "f:spec": {
            "f:containers": {
                'k:{"name":"c"}': {
                    ".": {},
                    "f:args": {},
                    "f:name": {},
                    "f:ports": {'k:{"containerPort":80,"protocol":"TCP"}': {".": {}, "f:containerPort": {}}},
                }
            },
            "f:nodeSelector": {},
        },
    }
    assert decode(encode(fields)) == fields


def test_compare_marks_new_maps_and_items() -> None:
    old = {"data": {"a": "1", "b": "2"}}
    new = {"data": {"a": "9", "c": "3"}, "metadata": {"labels": {"l": "v"}}}
    added, modified, removed = compare(old, new, Schema("ConfigMap", False, False))
    assert added == {
        ("f:data", "f:c"),
        ("f:metadata",),
        ("f:metadata", "f:labels"),
        ("f:metadata", "f:labels", "f:l"),
    }
    assert modified == {("f:data", "f:a")}
    assert removed == {("f:data", "f:b")}


@pytest.mark.parametrize(
    ("live", "config", "expected"),
    [
        (["a", "b"], ["c"], ["a", "b", "c"]),  # new items after the live ones
        # shared items in the applied order; a live-only item stays where the walk meets it
        (["a", "b", "c"], ["c", "a"], ["b", "c", "a"]),
        (["a", "b"], ["x", "b"], ["a", "x", "b"]),  # a new item placed before the shared one it precedes
    ],
)
def test_merge_keyed_list_order(live: list[str], config: list[str], expected: list[str]) -> None:
    def containers(names: list[str]) -> dict[str, Any]:
        return {"spec": {"containers": [{"name": n} for n in names]}}

    out = merge(containers(live), containers(config), POD)
    assert [c["name"] for c in out["spec"]["containers"]] == expected


def test_merge_atomic_list_and_selector_replace() -> None:
    live = {"spec": {"selector": {"a": "1", "b": "2"}, "ports": [{"port": 80, "name": "x"}], "x": 1}}
    config = {"spec": {"selector": {"a": "1"}, "ports": [{"port": 80, "protocol": "TCP"}]}}
    out = merge(live, config, SVC)
    assert out["spec"]["selector"] == {"a": "1"}  # atomic
    assert out["spec"]["ports"] == [{"port": 80, "name": "x", "protocol": "TCP"}]  # keyed by port+protocol
    assert out["spec"]["x"] == 1


def test_remove_items_drops_emptied_maps() -> None:
    obj = {"metadata": {"labels": {"a": "1"}, "name": "n"}, "data": {"k": "v", "j": "w"}}
    out = remove_items(
        obj, {("f:metadata", "f:labels", "f:a"), ("f:data", "f:k")}, Schema("ConfigMap", False, False)
    )
    assert out == {"metadata": {"name": "n"}, "data": {"j": "w"}}


def test_applied_item_without_its_key_is_a_bad_request() -> None:
    from sandbox.apiserver.errors import ApiError

    with pytest.raises(ApiError) as err:
        to_field_set({"spec": {"containers": [{"image": "busybox"}]}}, POD)
    assert err.value.code == 400
    assert (
        '.spec.containers: element 0: associative list with keys has an element that omits key field "name"'
        in (err.value.message)
    )


def test_custom_resource_lists_follow_the_crd_schema() -> None:
    crd = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "members": {
                        "type": "array",
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["id"],
                        "items": {"type": "object", "properties": {"tags": {"type": "array"}}},
                    },
                    "zones": {"type": "array", "x-kubernetes-list-type": "set"},
                    "args": {"type": "array"},
                    "sel": {"type": "object", "x-kubernetes-map-type": "atomic"},
                },
            }
        },
    }
    cr = Schema("Widget", custom=True, status_reset=True, crd_schema=crd)
    fields = to_field_set(
        {"spec": {"members": [{"id": 1, "tags": ["a"]}], "zones": ["z"], "args": ["x"], "sel": {"a": "b"}}},
        cr,
    )
    assert encode(fields) == {
        "f:spec": {
            "f:args": {},
            "f:members": {'k:{"id":1}': {".": {}, "f:id": {}, "f:tags": {}}},
            "f:sel": {},
            "f:zones": {'v:"z"': {}},
        }
    }
    assert Schema("Widget", custom=True, status_reset=True).list_type(("spec", "members")) == ("atomic", ())
