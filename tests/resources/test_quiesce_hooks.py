"""quiesce="hooks": pre/post exec hooks around the delta copy, against the sandbox (pods/exec)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from blocks.kube import KubeCluster
from flows.app_migration import app_migration
from planning.app_migration import SOURCE_REPLICAS_ANNOTATION
from tasks.archive_store import _s3
from tasks.exec_hooks import HookFailed
from tasks.kube_export import KubeRest
from tasks.volume_mover import volume_key

from .conftest import create_all, pv_dir, read_tree

pytestmark = pytest.mark.timeout(300)
NS = "hooks"


def _app(ns: str) -> list[dict[str, Any]]:
    labels = {"app": "db"}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "namespace": ns},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "db", "namespace": ns},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "securityContext": {"fsGroup": 10001},
                        "terminationGracePeriodSeconds": 1,
                        "containers": [
                            {
                                "name": "db",
                                "image": "stateferry/app:dev",
                                "command": ["sh", "-c", "echo base > /data/base.txt; exec sleep 3600"],
                                "volumeMounts": [{"name": "d", "mountPath": "/data"}],
                            }
                        ],
                        "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}],
                    },
                },
            },
        },
    ]


def test_quiesce_hooks_pre_before_delta_post_after_a_failing_hook_stops_first_and_rerun_resumes(
    prefect_server: Any,
    object_store_a: Any,
    bucket: str,
    source_kube: KubeCluster,
    target_kube: KubeCluster,
    source_rest: KubeRest,
    target_rest: KubeRest,
) -> None:
    create_all(source_rest, _app(NS))
    src_root = pv_dir(source_rest, NS, "data")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not (src_root / "base.txt").exists():
        time.sleep(0.2)
    assert (src_root / "base.txt").exists()
    common: dict[str, Any] = {
        "source": source_kube,
        "target": target_kube,
        "namespaces": [NS],
        "object_store": object_store_a,
        "bucket": bucket,
        "start_applications": False,
        "quiesce": "hooks",
        "auto_approve": True,
    }
    hook = {"selector": "app=db", "container": "db"}

    # a failing pre hook: the later pre command never runs, the post hook undoes the first one,
    # nothing is scaled down
    with pytest.raises(HookFailed) as e:
        app_migration(
            **common,
            migration_name="hooks-move",
            namespace_mapping={NS: "hooks-t"},
            hooks=[
                {**hook, "pre": [["sh", "-c", "echo 1 > /data/frozen"]], "post": [["rm", "/data/frozen"]]},
                {**hook, "pre": [["sh", "-c", "echo cannot lock >&2; exit 5"], ["touch", "/data/never"]]},
            ],
        )
    msg = str(e.value)
    assert "hooks[1] pre command 'sh' in pod hooks/db-" in msg and "exited with 5: cannot lock" in msg
    assert "nothing was scaled down" in msg
    assert [(r.hook, r.phase, r.exit_code) for r in e.value.runs] == [(0, "pre", 0), (1, "pre", 5)]
    assert not (src_root / "never").exists() and not (src_root / "frozen").exists()
    dep = source_rest.request("GET", f"/apis/apps/v1/namespaces/{NS}/deployments/db")
    assert dep["spec"]["replicas"] == 1
    assert SOURCE_REPLICAS_ANNOTATION not in (dep["metadata"].get("annotations") or {})

    # the re-run resumes after the bulk copy (the level-0 archive is not written again)
    key = volume_key("migrations", "hooks-move", NS, "data")
    bulk = _s3(object_store_a).stat_object(bucket, key)
    report = app_migration(
        **common,
        migration_name="hooks-move",
        namespace_mapping={NS: "hooks-t"},
        hooks=[
            {
                **hook,
                "pre": [["sh", "-c", "id -u > /data/pre-ran"]],
                "post": [["sh", "-c", "echo post > /data/post-ran"]],
            }
        ],
    )
    [vol] = report["volumes"]
    assert (vol["level"], vol["status"]) == (1, "migrated successfully"), vol
    again = _s3(object_store_a).stat_object(bucket, key)
    assert (again.etag, again.last_modified) == (bulk.etag, bulk.last_modified)
    assert report["volumes"][0]["key"] == key
    target = read_tree(pv_dir(target_rest, "hooks-t", "data"))
    assert target["pre-ran"] == b"10001\n"  # ran as the container's user, before the delta
    assert "post-ran" not in target and (src_root / "post-ran").read_text() == "post\n"
    assert [(r["phase"], r["exit_code"]) for r in report["source_stopped"]] == [("pre", 0), ("post", 0)]
    dep = source_rest.request("GET", f"/apis/apps/v1/namespaces/{NS}/deployments/db")
    assert dep["spec"]["replicas"] == 1  # hooks quiesce without scaling
