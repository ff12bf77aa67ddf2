"""Issue 11, resource backup/restore: hostile archives, Secret values, retention, tarball bombs.

Each test crafts what an attacker who can write the backup bucket (or set a flow parameter) would,
and checks that stateferry refuses it with an ``InputError`` naming the field, changing nothing.
Sandbox + real S3 (SeaweedFS) + a Prefect server; the sandbox fixtures are the resource tests'.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import resources.conftest as _resource_fixtures
from prefect_run import flow_run_texts

from blocks.kube import KubeCluster
from flows.resource_backup import resource_backup, resource_restore
from planning.archive_layout import manifest_key, tarball_key
from stateferry.errors import InputError
from tasks.archive_store import list_archives
from tasks.kube_export import KubeRest, read_tarball

# the resource tests' fixtures (sandbox, blocks, a bucket per test): tests/security has no conftest
rsandbox = _resource_fixtures.rsandbox
source_kube = _resource_fixtures.source_kube
target_kube = _resource_fixtures.target_kube
source_rest = _resource_fixtures.source_rest
target_rest = _resource_fixtures.target_rest
bucket = _resource_fixtures.bucket

pytestmark = pytest.mark.timeout(300)
PREFIX = "resource-backups"


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def _get_object(store: Any, bucket: str, key: str) -> bytes:
    resp = store.minio_client().get_object(bucket, key)
    try:
        return bytes(resp.read())
    finally:
        resp.close()
        resp.release_conn()


def _put_object(store: Any, bucket: str, key: str, data: bytes) -> None:
    store.minio_client().put_object(bucket, key, io.BytesIO(data), len(data))


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _rewrite_archive(
    store: Any,
    bucket: str,
    name: str,
    add: list[tuple[str, dict[str, Any], dict[str, Any]]],
    **manifest_changes: Any,
) -> None:
    """Add objects to a stored backup as an attacker with write access to the bucket would: new
    tarball members, and a manifest whose counts, types, size and sha256 agree with them."""
    manifest = json.loads(_get_object(store, bucket, manifest_key(PREFIX, name)))
    with tarfile.open(
        fileobj=io.BytesIO(_get_object(store, bucket, tarball_key(PREFIX, name))), mode="r:gz"
    ) as t:
        members = [(m, t.extractfile(m).read()) for m in t.getmembers()]  # type: ignore[union-attr]
    for path, obj, rtype in add:
        members.append(_member(path, json.dumps(obj).encode()))
        gk = f"{rtype['kind']}.{rtype['group']}" if rtype["group"] else rtype["kind"]
        manifest["counts"][gk] = manifest["counts"].get(gk, 0) + 1
        manifest["total_objects"] += 1
        manifest["resource_types"].append({**rtype, "count": 1})
    raw = _tar(members)
    manifest["tarball"].update(size=len(raw), sha256=hashlib.sha256(raw).hexdigest())
    for k, v in manifest_changes.items():
        if isinstance(v, dict):
            manifest[k].update(v)
        else:
            manifest[k] = v
    _put_object(store, bucket, tarball_key(PREFIX, name), raw)
    _put_object(store, bucket, manifest_key(PREFIX, name), json.dumps(manifest).encode())


def _make_ns(rest: KubeRest, ns: str, *objects: tuple[str, dict[str, Any]]) -> None:
    rest.request("POST", "/api/v1/namespaces", body={"metadata": {"name": ns}})
    for path, body in objects:
        rest.request("POST", f"/api/v1/namespaces/{ns}/{path}", body=body)


# --------------------------------------------------------------------------------------------------
# finding 4: cluster-scoped / RBAC / admission objects from the archive


CRB = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "ClusterRoleBinding",
    "metadata": {"name": "hostile-admin"},
    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
    "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "hx"}],
}
CRB_TYPE = {
    "group": "rbac.authorization.k8s.io",
    "version": "v1",
    "kind": "ClusterRoleBinding",
    "plural": "clusterrolebindings",
    "namespaced": False,
}
CRB_PATH = "resources/rbac.authorization.k8s.io/v1/clusterrolebindings/_cluster/hostile-admin.json"


def test_hostile_archive_cluster_role_binding_is_not_restored(
    prefect_server: Any,
    object_store_a: Any,
    bucket: str,
    source_kube: KubeCluster,
    target_kube: KubeCluster,
    source_rest: KubeRest,
    target_rest: KubeRest,
) -> None:
    _make_ns(source_rest, "hx", ("configmaps", {"metadata": {"name": "app"}, "data": {"a": "1"}}))
    resource_backup(
        source=source_kube,
        object_store=object_store_a,
        bucket=bucket,
        backup_name="hx-1",
        include_namespaces=["hx"],
    )
    # the attacker adds a ClusterRoleBinding to cluster-admin and says so in the manifest
    _rewrite_archive(
        object_store_a,
        bucket,
        "hx-1",
        [(CRB_PATH, CRB, CRB_TYPE)],
        selection={"include_cluster_resources": True},
    )
    crb_url = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/hostile-admin"
    restore: dict[str, Any] = {
        "target": target_kube,
        "object_store": object_store_a,
        "bucket": bucket,
        "backup_name": "hx-1",
    }
    # a namespace restore leaves every cluster-scoped object out
    report = resource_restore(**restore, include_namespaces=["hx"])
    assert target_rest.get_or_none(crb_url) is None
    assert target_rest.request("GET", "/api/v1/namespaces/hx/configmaps/app")["data"] == {"a": "1"}
    assert report["left_out"] == {"cluster-scoped kind not named in include_cluster_kinds": 1}
    # asked for by kind, RBAC still needs the explicit opt-in: refused, nothing changed
    with pytest.raises(InputError, match=r"allow_rbac_and_admission.*ClusterRoleBinding") as err:
        resource_restore(
            **restore, include_cluster_kinds=["ClusterRoleBinding"], namespace_mapping={"hx": "hx-2"}
        )
    assert err.value.field == "allow_rbac_and_admission"
    assert target_rest.get_or_none(crb_url) is None
    assert target_rest.get_or_none("/api/v1/namespaces/hx-2") is None
    # with the opt-in, whoever starts the run cannot also approve it by parameter
    with pytest.raises(InputError, match="always wait for an approval") as err:
        resource_restore(
            **restore,
            include_cluster_kinds=["ClusterRoleBinding"],
            allow_rbac_and_admission=True,
            auto_approve=True,
            namespace_mapping={"hx": "hx-2"},
        )
    assert err.value.field == "auto_approve"
    assert target_rest.get_or_none(crb_url) is None
    assert target_rest.get_or_none("/api/v1/namespaces/hx-2") is None

    # an object the manifest's selection never took (a second namespace, selection unchanged)
    evil_cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "kube-system"}}
    cm_type = {"group": "", "version": "v1", "kind": "ConfigMap", "plural": "configmaps", "namespaced": True}
    _rewrite_archive(
        object_store_a,
        bucket,
        "hx-1",
        [("resources/core/v1/configmaps/kube-system/x.json", evil_cm, cm_type)],
    )
    with pytest.raises(InputError, match="namespace 'kube-system', which the manifest did not select") as err:
        resource_restore(**restore, namespace_mapping={"hx": "hx-3"})
    assert err.value.field == "backup_name"
    assert target_rest.get_or_none("/api/v1/namespaces/hx-3") is None
    assert target_rest.get_or_none("/api/v1/namespaces/kube-system/configmaps/x") is None


# --------------------------------------------------------------------------------------------------
# finding 5: Secret values in diffs, results, artifacts, logs and the approval form


def test_hostile_secret_values_never_rendered(
    prefect_server: Any,
    object_store_a: Any,
    bucket: str,
    source_kube: KubeCluster,
    target_kube: KubeCluster,
    source_rest: KubeRest,
    target_rest: KubeRest,
) -> None:
    from prefect.flow_runs import resume_flow_run

    from devservers.prefect_runs import find_flow_run, wait_for_approval_form

    backup_pw, live_pw = "backup-only-pw-4711", "live-only-pw-0815"
    _make_ns(
        source_rest,
        "hs",
        ("secrets", {"metadata": {"name": "db"}, "type": "Opaque", "data": {"password": _b64(backup_pw)}}),
        ("configmaps", {"metadata": {"name": "cfg"}, "data": {"host": "db-backup"}}),
    )
    ours = {"app.kubernetes.io/managed-by": "stateferry"}  # restored there by stateferry before
    _make_ns(
        target_rest,
        "hs-t",
        (
            "secrets",
            {
                "metadata": {"name": "db", "labels": ours},
                "type": "Opaque",
                "data": {"password": _b64(live_pw)},
            },
        ),
        ("configmaps", {"metadata": {"name": "cfg", "labels": ours}, "data": {"host": "db-live"}}),
    )
    resource_backup(
        source=source_kube,
        object_store=object_store_a,
        bucket=bucket,
        backup_name="hs-1",
        include_namespaces=["hs"],
    )
    secrets = (backup_pw, live_pw, _b64(backup_pw), _b64(live_pw))
    common: dict[str, Any] = {
        "target": target_kube,
        "object_store": object_store_a,
        "bucket": bucket,
        "backup_name": "hs-1",
        "namespace_mapping": {"hs": "hs-t"},
        "existing_resource_policy": "update",
    }
    state = resource_restore(**common, dry_run=True, return_state=True)
    report = state.result()
    diffs = {r["key"]: r["diff"] for r in report["results"]}
    assert "~ data.password: changed (value <redacted>)" in diffs["Secret hs-t/db"]
    assert '~ data.host: "db-live" -> "db-backup"' in diffs["ConfigMap hs-t/cfg"]  # ConfigMaps stay visible
    texts = json.dumps(report) + flow_run_texts(state.state_details.flow_run_id)
    assert "db-live" in texts and not [s for s in secrets if s in texts]

    # the update pauses for approval (nothing applied yet); its plan shows no value either
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["report"] = resource_restore(**common, restore_name="hs-upd")
        except BaseException as exc:
            out["error"] = exc

    th = threading.Thread(target=run)
    th.start()
    try:
        run_id = find_flow_run("resource_restore", timeout=90, parameters={"restore_name": "hs-upd"})
        details = wait_for_approval_form(run_id, 90)
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as c:
            keyset = details["run_input_keyset"]
            form = [
                c.read_flow_run_input(run_id, keyset[k]) for k in ("schema", "description") if k in keyset
            ]
        plan = " ".join(str(f) for f in form) + flow_run_texts(run_id)
        assert "Secret hs-t/db" in plan and "would-update" in plan
        assert not [s for s in secrets if s in plan]
        assert target_rest.request("GET", "/api/v1/namespaces/hs-t/secrets/db")["data"]["password"] == _b64(
            live_pw
        )
        resume_flow_run(run_id, run_input={"approved": True})
    finally:
        th.join(120)
    assert "error" not in out, out.get("error")
    assert {r["key"]: r["result"] for r in out["report"]["results"]}["Secret hs-t/db"] == "updated"
    assert not [s for s in secrets if s in json.dumps(out["report"]) + flow_run_texts(run_id)]
    assert target_rest.request("GET", "/api/v1/namespaces/hs-t/secrets/db")["data"]["password"] == _b64(
        backup_pw
    )


# --------------------------------------------------------------------------------------------------
# finding 6: retention deletes only this schedule's archives


def test_hostile_retention_keeps_foreign_and_own_archives(
    prefect_server: Any, object_store_a: Any, bucket: str, source_kube: KubeCluster, source_rest: KubeRest
) -> None:
    _make_ns(source_rest, "hr", ("configmaps", {"metadata": {"name": "c"}}))
    _make_ns(source_rest, "hr-other", ("configmaps", {"metadata": {"name": "c"}}))
    common = {"source": source_kube, "object_store": object_store_a, "bucket": bucket}
    resource_backup(**common, backup_name="mine-1", include_namespaces=["hr"])
    resource_backup(**common, backup_name="other-1", include_namespaces=["hr-other"])  # another schedule
    # planted by someone who can write the bucket: a future-dated copy of this schedule's backup, and
    # a manifest one level deeper whose folder holds unrelated data
    manifest = json.loads(_get_object(object_store_a, bucket, manifest_key(PREFIX, "mine-1")))
    tarball = _get_object(object_store_a, bucket, tarball_key(PREFIX, "mine-1"))
    _put_object(object_store_a, bucket, tarball_key(PREFIX, "zz-future"), tarball)
    planted = {**manifest, "backup_name": "zz-future", "created_at": "2099-01-01T00:00:00Z"}
    _put_object(object_store_a, bucket, manifest_key(PREFIX, "zz-future"), json.dumps(planted).encode())
    _put_object(object_store_a, bucket, f"{PREFIX}/keep/important.bin", b"not a backup")
    deep = {**manifest, "backup_name": "keep", "created_at": "2000-01-01T00:00:00Z"}
    _put_object(object_store_a, bucket, f"{PREFIX}/keep/x/manifest.json", json.dumps(deep).encode())

    with pytest.raises(InputError, match="ttl_days") as err:
        resource_backup(**common, backup_name="mine-x", include_namespaces=["hr"], ttl_days=0.5)
    assert err.value.field == "ttl_days"
    time.sleep(1.1)  # manifests carry second-resolution timestamps
    out = resource_backup(**common, backup_name="mine-2", include_namespaces=["hr"], keep_last=1)
    assert out["deleted"] == ["mine-1"]
    names = {a.name for a in list_archives(object_store_a, bucket, PREFIX)}
    assert names == {"mine-2", "other-1", "zz-future"}
    assert _get_object(object_store_a, bucket, f"{PREFIX}/keep/important.bin") == b"not a backup"


# --------------------------------------------------------------------------------------------------
# finding 10: tarball bombs, links, devices, absolute and ../ members


def test_hostile_tarball_members_are_capped_and_checked(
    tmp_path: Path,
    prefect_server: Any,
    object_store_a: Any,
    bucket: str,
    source_kube: KubeCluster,
    target_kube: KubeCluster,
    source_rest: KubeRest,
    target_rest: KubeRest,
) -> None:
    ok = "resources/core/v1/configmaps/hb/c.json"

    def refused(members: list[tuple[tarfile.TarInfo, bytes | None]], match: str, **caps: Any) -> None:
        path = tmp_path / "a.tar.gz"
        path.write_bytes(_tar(members))
        with pytest.raises(InputError, match=match) as err:
            list(read_tarball(path, **caps))
        assert err.value.field == "backup_name"

    link = tarfile.TarInfo(ok)
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
    hard = tarfile.TarInfo(ok)
    hard.type, hard.linkname = tarfile.LNKTYPE, "../../../etc/passwd"
    dev = tarfile.TarInfo(ok)
    dev.type, dev.devmajor, dev.devminor = tarfile.CHRTYPE, 1, 3
    refused([(link, None)], "not a regular file")
    refused([(hard, None)], "not a regular file")
    refused([(dev, None)], "not a regular file")
    refused([_member("/resources/core/v1/configmaps/hb/c.json", b"{}")], "does not follow layout")
    refused([_member("resources/core/v1/../../../etc/c.json", b"{}")], "does not follow layout")
    bomb = b"{" + b" " * (64 << 20) + b"}"  # 64 MiB of JSON, ~64 KiB gzipped
    refused([_member(ok, bomb)], "more than the 4194304 bytes")
    three_mib = b"{" + b" " * (3 << 20) + b"}"
    refused(
        [_member(f"resources/core/v1/configmaps/hb/c{i}.json", three_mib) for i in range(4)],
        "unpacks to more than 10485760 bytes",
        max_total_bytes=10 << 20,
    )

    # through the flow: a backup whose stored tarball is a bomb is refused before anything is applied
    _make_ns(source_rest, "hb", ("configmaps", {"metadata": {"name": "c"}}))
    resource_backup(
        source=source_kube,
        object_store=object_store_a,
        bucket=bucket,
        backup_name="hb-1",
        include_namespaces=["hb"],
    )
    raw = _tar([_member(ok, bomb)])
    manifest = json.loads(_get_object(object_store_a, bucket, manifest_key(PREFIX, "hb-1")))
    manifest["tarball"].update(size=len(raw), sha256=hashlib.sha256(raw).hexdigest())
    _put_object(object_store_a, bucket, tarball_key(PREFIX, "hb-1"), raw)
    _put_object(object_store_a, bucket, manifest_key(PREFIX, "hb-1"), json.dumps(manifest).encode())
    with pytest.raises(InputError, match="more than the 4194304 bytes"):
        resource_restore(
            target=target_kube,
            object_store=object_store_a,
            bucket=bucket,
            backup_name="hb-1",
        )
    assert target_rest.get_or_none("/api/v1/namespaces/hb") is None
