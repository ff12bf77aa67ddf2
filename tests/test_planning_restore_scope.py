"""Table tests of the restore scope (archive vs manifest, what a restore takes) and Secret redaction."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from planning.apply_decision import dry_run_diff
from planning.archive_layout import ArchiveRefused, Manifest, MemberPath, parse_object_path
from planning.kube_redaction import REDACTED, Redactor, redact_object
from planning.restore_scope import check_archive, plan_scope, privilege_reason
from stateferry.errors import InputError


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def _obj(api: str, kind: str, name: str, ns: str | None = None, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if ns:
        meta["namespace"] = ns
    return {"apiVersion": api, "kind": kind, "metadata": meta, **extra}


PLURALS = {
    "ConfigMap": "configmaps",
    "Namespace": "namespaces",
    "ClusterRoleBinding": "clusterrolebindings",
    "RoleBinding": "rolebindings",
    "StorageClass": "storageclasses",
    "ValidatingWebhookConfiguration": "validatingwebhookconfigurations",
}


def _member(o: dict[str, Any]) -> tuple[MemberPath, dict[str, Any]]:
    api = o["apiVersion"]
    group, version = api.split("/") if "/" in api else ("", api)
    ns = o["metadata"].get("namespace")
    name = o["metadata"]["name"]
    return parse_object_path(
        f"resources/{group or 'core'}/{version}/{PLURALS[o['kind']]}/{ns or '_cluster'}/{name}.json"
    ), o


def _manifest(members: list[tuple[MemberPath, dict[str, Any]]], **selection: Any) -> Manifest:
    types: dict[tuple[str, str, str], dict[str, Any]] = {}
    counts: dict[str, int] = {}
    for p, o in members:
        types[(p.group, p.version, p.plural)] = {
            "group": p.group,
            "version": p.version,
            "kind": o["kind"],
            "plural": p.plural,
            "namespaced": p.namespace is not None,
        }
        gk = f"{o['kind']}.{p.group}" if p.group else o["kind"]
        counts[gk] = counts.get(gk, 0) + 1
    return Manifest(
        backup_name="b1",
        created_at="2026-11-22T00:00:00Z",
        selection={"include_namespaces": ["cms"], **selection},
        resource_types=list(types.values()),
        counts=counts,
        total_objects=sum(counts.values()),
        tarball={"key": "resources.tar.gz", "sha256": "", "size": 0},
        namespaces=["cms"],
    )


NS = _obj("v1", "Namespace", "cms")
CM = _obj("v1", "ConfigMap", "c", "cms", data={"k": "v"})
CRB = _obj(
    "rbac.authorization.k8s.io/v1",
    "ClusterRoleBinding",
    "evil",
    roleRef={"kind": "ClusterRole", "name": "cluster-admin"},
    subjects=[{"kind": "ServiceAccount", "name": "default", "namespace": "cms"}],
)
SC = _obj("storage.k8s.io/v1", "StorageClass", "fast", provisioner="x")


def test_check_archive_accepts_what_the_manifest_selected() -> None:
    members = [_member(NS), _member(CM)]
    check_archive(_manifest(members), members, prefix="resource-backups")


@pytest.mark.parametrize(
    ("members", "manifest_members", "selection", "match"),
    [
        # a cluster-scoped object the default selection never takes
        ([NS, CM, CRB], None, {}, "cluster-scoped but the manifest's selection took no such objects"),
        # an object of a namespace outside the selection
        ([NS, _obj("v1", "ConfigMap", "c", "kube-system")], None, {}, "did not select"),
        # a kind the selection excluded
        ([NS, CM], None, {"exclude_kinds": ["configmaps"]}, "excludes"),
        # a label the selection did not match
        ([NS, CM], None, {"label_selector": "app=web"}, "label selector"),
        # counts that disagree with the manifest
        ([NS, CM], [NS], {}, "does not match its path or the manifest|manifest records"),
    ],
)
def test_check_archive_refuses_objects_outside_the_selection(
    members: list[dict[str, Any]],
    manifest_members: list[dict[str, Any]] | None,
    selection: dict[str, Any],
    match: str,
) -> None:
    pairs = [_member(o) for o in members]
    m = _manifest([_member(o) for o in (manifest_members or members)], **selection)
    with pytest.raises(ArchiveRefused, match=match) as err:
        check_archive(m, pairs, prefix="resource-backups")
    assert isinstance(err.value, InputError) and err.value.field == "backup_name"


SCOPES = {
    ("", "Namespace"): False,
    ("", "ConfigMap"): True,
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): False,
    ("storage.k8s.io", "StorageClass"): False,
    ("rbac.authorization.k8s.io", "RoleBinding"): True,
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"): False,
}


@pytest.mark.parametrize(
    ("kwargs", "selected", "left_out"),
    [
        (
            {},
            ["Namespace cms", "ConfigMap cms/c"],
            {"cluster-scoped kind not named in include_cluster_kinds": 2},
        ),
        (
            {"include_cluster_kinds": ["storageclasses.storage.k8s.io"]},
            ["Namespace cms", "ConfigMap cms/c", "StorageClass.storage.k8s.io fast"],
            {"cluster-scoped kind not named in include_cluster_kinds": 1},
        ),
        (
            {
                "include_cluster_kinds": ["ClusterRoleBinding", "StorageClass"],
                "allow_rbac_and_admission": True,
            },
            [
                "Namespace cms",
                "ConfigMap cms/c",
                "ClusterRoleBinding.rbac.authorization.k8s.io evil",
                "StorageClass.storage.k8s.io fast",
            ],
            {},
        ),
        (
            {"include_namespaces": ["other"]},
            [],
            {"namespace not selected": 2, "cluster-scoped kind not named in include_cluster_kinds": 2},
        ),
    ],
)
def test_plan_scope(kwargs: dict[str, Any], selected: list[str], left_out: dict[str, int]) -> None:
    from planning.resources import object_key

    plan = plan_scope([_member(o) for o in (NS, CM, CRB, SC)], namespaced=SCOPES, **kwargs)
    assert [object_key(o) for o in plan.selected] == selected
    assert plan.left_out == left_out
    assert plan.needs_approval == any(" " in k and "." in k.split()[0] for k in selected)


def test_plan_scope_refuses_privileged_without_opt_in() -> None:
    with pytest.raises(
        InputError, match=r"allow_rbac_and_admission.*ClusterRoleBinding.*nothing was changed"
    ):
        plan_scope([_member(CRB)], namespaced=SCOPES, include_cluster_kinds=["ClusterRoleBinding"])
    outsider = _obj(
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        "rb",
        "cms",
        roleRef={"kind": "ClusterRole", "name": "admin"},
        subjects=[{"kind": "Group", "name": "system:authenticated"}],
    )
    with pytest.raises(InputError, match="allow_rbac_and_admission"):
        plan_scope([_member(outsider)], namespaced=SCOPES)
    # the archive claims a cluster-scoped kind is namespaced: the target's discovery decides
    liar = _obj("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "x", "cms")
    with pytest.raises(ArchiveRefused, match="cluster-scoped in the target"):
        PLURALS["ClusterRoleBinding"] = "clusterrolebindings"
        plan_scope([_member(liar)], namespaced=SCOPES)


@pytest.mark.parametrize(
    ("obj", "privileged"),
    [
        (CRB, True),
        (_obj("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration", "w"), True),
        (
            _obj(
                "rbac.authorization.k8s.io/v1",
                "RoleBinding",
                "rb",
                "cms",
                subjects=[{"kind": "ServiceAccount", "name": "app"}],
            ),
            False,
        ),
        (
            _obj(
                "rbac.authorization.k8s.io/v1",
                "RoleBinding",
                "rb",
                "cms",
                subjects=[{"kind": "ServiceAccount", "name": "app", "namespace": "kube-system"}],
            ),
            True,
        ),
        (_obj("rbac.authorization.k8s.io/v1", "Role", "r", "cms", rules=[{"verbs": ["*"]}]), False),
        (
            _obj(
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                "a.b",
                spec={"conversion": {"strategy": "Webhook"}},
            ),
            True,
        ),
        (_obj("v1", "PersistentVolume", "pv", spec={"hostPath": {"path": "/"}}), True),
        (SC, False),
    ],
)
def test_privilege_reason(obj: dict[str, Any], privileged: bool) -> None:
    assert (privilege_reason(obj) is not None) == privileged


def test_secret_diff_and_redaction_never_show_values() -> None:
    live = _obj("v1", "Secret", "s", "cms", data={"password": _b64("live-pw-123"), "old": _b64("gone-456")})
    want = _obj(
        "v1",
        "Secret",
        "s",
        "cms",
        data={"password": _b64("backup-pw-789"), "new": _b64("x")},
        stringData={"token": "plain-token"},
    )
    # the server's answer to applying ``want``: stringData merged into data, never returned
    after = _obj(
        "v1",
        "Secret",
        "s",
        "cms",
        data={"password": _b64("backup-pw-789"), "new": _b64("x"), "token": _b64("plain-token")},
    )
    diff = dry_run_diff(live, after)
    assert diff == [
        f"+ data.new: added (value {REDACTED})",
        f"~ data.password: changed (value {REDACTED})",
        f"+ data.token: added (value {REDACTED})",
        f"- data.old: removed (value {REDACTED})",
    ]
    text = " ".join(diff) + str(redact_object(want))
    for value in ("live-pw-123", "backup-pw-789", "plain-token", _b64("live-pw-123"), _b64("backup-pw-789")):
        assert value not in text
    r = Redactor([live, want])
    assert r.scrub(f"error: {_b64('backup-pw-789')} and plain-token and live-pw-123") == (
        f"error: {REDACTED} and {REDACTED} and {REDACTED}"
    )
    # ConfigMaps are not secrets
    assert dry_run_diff({**CM, "data": {"k": "a"}}, CM) == ['~ data.k: "a" -> "v"']


def test_dry_run_diff_reports_both_directions_without_secret_values() -> None:
    live = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "namespace": "n", "resourceVersion": "7", "labels": {"a": "1"}},
        "spec": {"replicas": 5, "minReadySeconds": 7},
        "status": {"replicas": 5},
    }
    after = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "namespace": "n", "resourceVersion": "8", "labels": {"a": "1", "b": "2"}},
        "spec": {"replicas": 2},
    }
    assert dry_run_diff(live, after) == [
        '+ metadata.labels.b: "2"',
        "- spec.minReadySeconds: 7",
        "~ spec.replicas: 5 -> 2",
    ]
    s_live = _obj("v1", "Secret", "s", "n", data={"k": _b64("old-value")})
    s_live["metadata"]["annotations"] = {"kubectl.kubernetes.io/last-applied-configuration": '{"data": "x"}'}
    s_after = _obj("v1", "Secret", "s", "n", data={"k": _b64("new-value")})
    assert dry_run_diff(s_live, s_after) == [f"~ data.k: changed (value {REDACTED})"]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda m: m.selection.update(include_namespaces=[7]),
        lambda m: m.namespaces.append("Bad_NS"),
        lambda m: m.resource_types.append({"version": "v1", "kind": "X", "plural": "xs"}),
        lambda m: m.volumes.append("not-a-dict"),
        lambda m: m.volumes.append({"namespace": "cms", "pvc": "p", "key": "x", "files": "many"}),
    ],
)
def test_check_archive_refuses_malformed_manifests(mutate: Any) -> None:
    members = [_member(NS), _member(CM)]
    m = _manifest(members)
    mutate(m)
    with pytest.raises(ArchiveRefused, match="backup_name"):
        check_archive(m, members, prefix="resource-backups")


def test_auto_approve_cannot_stand_in_for_the_approval_of_privileged_objects() -> None:
    """RBAC/admission objects need the opt-in and a person's approval: auto_approve is refused for
    them, accepted for plans without them."""
    from planning.restore_scope import check_auto_approve

    plan = plan_scope(
        [_member(o) for o in (NS, CM, CRB)],
        namespaced=SCOPES,
        include_cluster_kinds=["ClusterRoleBinding"],
        allow_rbac_and_admission=True,
    )
    with pytest.raises(InputError, match=r"ClusterRoleBinding.*always wait for an approval") as err:
        check_auto_approve(plan, auto_approve=True)
    assert err.value.field == "auto_approve"
    check_auto_approve(plan, auto_approve=False)
    check_auto_approve(plan_scope([_member(o) for o in (NS, CM)], namespaced=SCOPES), auto_approve=True)
