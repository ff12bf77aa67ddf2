"""The decision for an object that exists in the target, from the live object and the server's
forced dry-run answer (pure; the sandbox tests in tests/resources/test_restore_ssa.py send real ones)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from planning.apply_decision import (
    ExistingPolicy,
    decide_existing,
    field_paths,
    flow_owns,
    path_text,
    taken_fields,
)
from planning.kube_redaction import REDACTED


def _entry(manager: str, fields: dict[str, Any], op: str = "Update", sub: str = "") -> dict[str, Any]:
    e = {
        "manager": manager,
        "operation": op,
        "apiVersion": "v1",
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
    }
    if sub:
        e["subresource"] = sub
    return e


def _cm(
    data: dict[str, str], managers: list[dict[str, Any]], labels: dict[str, str] | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "c", "namespace": "n", "resourceVersion": "7", "managedFields": managers}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


OURS = _entry("stateferry", {"f:data": {"f:a": {}}}, op="Apply")
HELM_K = _entry("helm", {"f:data": {".": {}, "f:k": {}}})


def test_field_paths_and_their_text() -> None:
    fields = {
        "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
        "f:spec": {
            "f:containers": {'k:{"name":"c"}': {".": {}, "f:image": {}}},
            "f:ports": {'k:{"port":80,"protocol":"TCP"}': {}},
        },
        "f:finalizers": {'v:"x"': {}},
    }
    assert {path_text(p) for p in field_paths(fields)} == {
        ".metadata.labels",
        ".metadata.labels.app",
        '.spec.containers[name="c"]',
        '.spec.containers[name="c"].image',
        '.spec.ports[port=80,protocol="TCP"]',
        '.finalizers[="x"]',
    }
    assert field_paths(None) == set() and field_paths({}) == set()


def test_taken_fields_are_what_other_managers_lose() -> None:
    live = _cm({"a": "1", "k": "theirs"}, [OURS, HELM_K, _entry("kubectl", {"f:data": {"f:z": {}}})])
    # forced: helm loses data.k; kubectl keeps data.z (the apply does not touch it)
    after = _cm(
        {"a": "1", "k": "ours"},
        [
            _entry("stateferry", {"f:data": {"f:a": {}, "f:k": {}}}, op="Apply"),
            _entry("helm", {"f:data": {}}),
            _entry("kubectl", {"f:data": {"f:z": {}}}),
        ],
    )
    assert taken_fields(live, after) == {'"helm"': [".data.k"]}
    # a manager that loses everything disappears from managedFields: all of it was taken
    gone = _cm({"a": "1", "k": "ours"}, [after["metadata"]["managedFields"][0]])
    assert taken_fields(live, gone) == {'"helm"': [".data.k"], '"kubectl"': [".data.z"]}
    assert taken_fields(live, live) == {}


def test_flow_owns_by_its_apply_entry_or_its_label() -> None:
    assert flow_owns(_cm({}, [OURS]))
    assert flow_owns(_cm({}, [HELM_K], labels={"app.kubernetes.io/managed-by": "stateferry"}))
    assert not flow_owns(_cm({}, [HELM_K], labels={"app.kubernetes.io/managed-by": "Helm"}))
    assert not flow_owns(_cm({}, [_entry("stateferry", {"f:data": {}})]))  # an Update, not its apply


def _after(live: dict[str, Any], data: dict[str, str], managers: list[dict[str, Any]]) -> dict[str, Any]:
    out = json.loads(json.dumps(live))
    out["data"] = data
    out["metadata"]["managedFields"] = managers
    out["metadata"]["resourceVersion"] = "8"
    return out


@pytest.mark.parametrize(
    ("labels", "policy", "dry_run", "result", "force"),
    [
        (None, "skip", False, "skipped-existing", False),
        (None, "update", False, "conflict", False),  # helm's object: reported, not forced
        (None, "update", True, "conflict", False),
        ({"app.kubernetes.io/managed-by": "stateferry"}, "update", False, "update", True),
        ({"app.kubernetes.io/managed-by": "stateferry"}, "update", True, "would-update", False),
    ],
)
def test_decide_existing(
    labels: dict[str, str] | None, policy: str, dry_run: bool, result: str, force: bool
) -> None:
    live = _cm({"k": "theirs"}, [HELM_K], labels=labels)
    after = _after(live, {"k": "ours"}, [_entry("stateferry", {"f:data": {"f:k": {}}}, op="Apply")])
    d = decide_existing(live, after, ExistingPolicy.parse(policy), dry_run=dry_run)
    assert (d.result, d.force) == (result, force)
    assert d.diff == ('~ data.k: "theirs" -> "ours"',)
    if result == "conflict":
        assert '"helm": .data.k' in d.message and "nothing was written" in d.message
    if result in ("update", "would-update"):
        assert 'takes over fields last written by "helm": .data.k' in d.message


def test_unchanged_when_only_volatile_labels_or_server_metadata_differ() -> None:
    live = _cm({"k": "v"}, [OURS], labels={"stateferry.io/restore-name": "r1", "app": "x"})
    after = _after(live, {"k": "v"}, [OURS])
    after["metadata"]["labels"]["stateferry.io/restore-name"] = "r2"
    after["metadata"]["generation"] = 3
    after["status"] = {"whatever": 1}
    assert decide_existing(live, after, ExistingPolicy.UPDATE, dry_run=False).result == "unchanged"


def test_provenance_labels_alone_are_forced_on_a_foreign_object() -> None:
    live = _cm(
        {"k": "v"}, [_entry("helm", {"f:metadata": {"f:labels": {"f:stateferry.io/backup-name": {}}}})]
    )
    live["metadata"]["labels"] = {"stateferry.io/backup-name": "b1"}
    after = _after(live, {"k": "v"}, [_entry("stateferry", {"f:metadata": {"f:labels": {}}}, op="Apply")])
    after["metadata"]["labels"] = {"stateferry.io/backup-name": "b2"}
    d = decide_existing(live, after, ExistingPolicy.UPDATE, dry_run=False)
    assert (d.result, d.force) == ("update", True)


def test_secret_values_never_in_the_decision() -> None:
    def b64(s: str) -> str:
        return base64.b64encode(s.encode()).decode()

    live = {**_cm({"pw": b64("old-secret-1")}, [HELM_K]), "kind": "Secret"}
    after = _after(
        live, {"pw": b64("new-secret-2")}, [_entry("stateferry", {"f:data": {"f:pw": {}}}, op="Apply")]
    )
    d = decide_existing(live, after, ExistingPolicy.UPDATE, dry_run=True)
    assert d.diff == (f"~ data.pw: changed (value {REDACTED})",)
    text = d.message + " ".join(d.diff)
    for value in ("old-secret-1", "new-secret-2", b64("old-secret-1"), b64("new-secret-2")):
        assert value not in text


def test_the_managed_by_label_is_never_taken_from_another_tool() -> None:
    """Taking it would make the object look like stateferry's (and every later update forced)."""
    owner = _entry("helm", {"f:metadata": {"f:labels": {"f:app.kubernetes.io/managed-by": {}}}})
    live = _cm({"k": "v"}, [owner], labels={"app.kubernetes.io/managed-by": "Helm"})
    after = _after(live, {"k": "v"}, [_entry("stateferry", {"f:metadata": {"f:labels": {}}}, op="Apply")])
    after["metadata"]["labels"] = {"app.kubernetes.io/managed-by": "stateferry"}
    d = decide_existing(live, after, ExistingPolicy.UPDATE, dry_run=False)
    assert (d.result, d.force) == ("conflict", False)
    assert '"helm": .metadata.labels.app.kubernetes.io/managed-by' in d.message
