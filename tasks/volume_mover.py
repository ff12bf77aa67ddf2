"""Move PVC data between clusters with data-mover Jobs (image ``stateferry/worker``).

For each PVC: a Job in the source cluster mounts the claim and runs
``python -m stateferry.worker.volume pack`` (tar.gz streamed to the object store plus a result
record with the tree checksum); a Job in the target cluster mounts the new, still unused claim and
runs ``... unpack`` with the expected checksum, before any workload starts. The checksums of both
sides are compared here and reported per volume.

The S3 credentials reach the pods through a Secret (``stateferry-mover-s3``) created in the
namespace for the duration of the move and deleted afterwards; they never appear in Job specs,
logs or reports.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from blocks.kube import KubeCluster
from blocks.object_store import ObjectStore
from planning.resources import FLOW_RUN_LABEL, MANAGED_BY_LABEL
from stateferry.errors import PermanentError, StateferryError, TransientError
from tasks.archive_store import ensure_bucket, get_json
from tasks.kube_export import KubeRest

__all__ = ["VolumeResult", "fill_volumes", "pack_volumes", "volume_key", "wait_pvcs_bound"]

WORKER_IMAGE = "stateferry/worker:latest"
SECRET_NAME = "stateferry-mover-s3"
MOUNT = "/stateferry-volume"


@dataclass
class VolumeResult:
    """One volume's journey.

    Attributes:
        namespace / pvc: the source claim; target_namespace / target_pvc: where it was restored.
        key: object key of the volume's tarball.
        status: ``packed`` / ``migrated successfully`` / ``failed``.
        reason: what went wrong (or ``already-present`` for a re-run).
        source_sha256 / target_sha256: tree checksums on both sides.
        files / bytes: size of the tree.
    """

    namespace: str
    pvc: str
    key: str
    status: str = "pending"
    reason: str = ""
    source_sha256: str = ""
    target_sha256: str = ""
    files: int = 0
    bytes: int = 0
    target_namespace: str = ""
    target_pvc: str = ""
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (manifest ``volumes`` entry and report rows)."""
        return {
            "namespace": self.namespace,
            "pvc": self.pvc,
            "key": self.key,
            "status": self.status,
            "reason": self.reason,
            "sha256_tree": self.source_sha256,
            "target_sha256": self.target_sha256,
            "files": self.files,
            "bytes": self.bytes,
            "target_namespace": self.target_namespace,
            "target_pvc": self.target_pvc,
            "seconds": self.seconds,
        }


def volume_key(prefix: str, name: str, namespace: str, pvc: str) -> str:
    """Object key of one volume's tarball: ``<prefix>/<name>/volumes/<namespace>/<pvc>.tar.gz``."""
    p = prefix.strip("/")
    return f"{p + '/' if p else ''}{name}/volumes/{namespace}/{pvc}.tar.gz"


def _job_name(kind: str, pvc: str, run: str) -> str:
    base = re.sub(r"[^a-z0-9-]", "-", f"sf-{kind}-{pvc}".lower())[:46].strip("-")
    return f"{base}-{run[:8]}".strip("-")


def _ensure_secret(rest: KubeRest, ns: str, store: ObjectStore) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET_NAME, "namespace": ns, "labels": {MANAGED_BY_LABEL: "stateferry"}},
        "type": "Opaque",
        "stringData": {
            "access_key": store.access_key,
            "secret_key": store.secret_key.get_secret_value(),
        },
    }
    path = f"/api/v1/namespaces/{ns}/secrets"
    try:
        rest.request("POST", path, body=body)
    except StateferryError as exc:
        if "HTTP 409" not in str(exc):
            raise
        rest.request("PUT", f"{path}/{SECRET_NAME}", body=body)


def _delete(rest: KubeRest, path: str) -> None:
    try:
        rest.request("DELETE", path, body={"propagationPolicy": "Background"})
    except StateferryError:
        pass


def _job_body(
    name: str, ns: str, pvc: str, args: list[str], endpoint: str, region: str, image: str, run_id: str
) -> dict[str, Any]:
    def secret_env(var: str, key: str) -> dict[str, Any]:
        return {"name": var, "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": key}}}

    labels = {
        MANAGED_BY_LABEL: "stateferry",
        FLOW_RUN_LABEL: run_id[:63],
        "stateferry.io/mover": "volume",
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "mover",
                            "image": image,
                            "command": ["python", "-m", "stateferry.worker.volume", *args],
                            "env": [
                                {"name": "STATEFERRY_S3_ENDPOINT", "value": endpoint},
                                {"name": "STATEFERRY_S3_REGION", "value": region},
                                secret_env("STATEFERRY_S3_ACCESS_KEY", "access_key"),
                                secret_env("STATEFERRY_S3_SECRET_KEY", "secret_key"),
                            ],
                            "volumeMounts": [{"name": "data", "mountPath": MOUNT}],
                        }
                    ],
                    "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": pvc}}],
                },
            },
        },
    }


def _run_job(rest: KubeRest, body: dict[str, Any], timeout: float) -> tuple[bool, str]:
    ns = body["metadata"]["namespace"]
    name = body["metadata"]["name"]
    path = f"/apis/batch/v1/namespaces/{ns}/jobs"
    _delete(rest, f"{path}/{name}")
    for _ in range(50):  # a previous run's Job of the same name may still be terminating
        try:
            rest.request("POST", path, body=body)
            break
        except StateferryError as exc:
            if "HTTP 409" not in str(exc):
                raise
            time.sleep(0.2)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            job = rest.get_or_none(f"{path}/{name}") or {}
            for c in (job.get("status") or {}).get("conditions") or []:
                if c.get("status") == "True" and c.get("type") in ("Complete", "Failed"):
                    return c["type"] == "Complete", str(c.get("message") or c.get("reason") or "")
            time.sleep(0.3)
        raise TransientError(f"data-mover Job {ns}/{name} did not finish within {timeout:.0f}s")
    finally:
        _delete(rest, f"{path}/{name}")


def wait_pvcs_bound(rest: KubeRest, claims: list[tuple[str, str]], timeout: float = 60.0) -> None:
    """Wait until every ``(namespace, name)`` claim is Bound.

    Raises:
        PreconditionFailed-like PermanentError naming the claims still pending.
    """
    deadline = time.monotonic() + timeout
    pending = list(claims)
    while pending and time.monotonic() < deadline:
        pending = [
            (ns, n)
            for ns, n in pending
            if (
                (rest.get_or_none(f"/api/v1/namespaces/{ns}/persistentvolumeclaims/{n}") or {}).get("status")
                or {}
            ).get("phase")
            != "Bound"
        ]
        if pending:
            time.sleep(0.3)
    if pending:
        raise PermanentError(
            f"PVCs {', '.join(f'{ns}/{n}' for ns, n in pending)} are not Bound after {timeout:.0f}s in "
            f"{rest.name}: check the storage class (storage_class_mapping) and the provisioner"
        )


@task(cache_policy=NO_CACHE)
def pack_volumes(
    cluster: KubeCluster,
    cluster_name: str,
    store: ObjectStore,
    bucket: str,
    prefix: str,
    name: str,
    claims: list[tuple[str, str]],
    run_id: str,
    endpoint: str | None = None,
    image: str = WORKER_IMAGE,
    timeout: float = 600.0,
) -> list[VolumeResult]:
    """Run one pack Job per claim in the source cluster; return each volume's checksum record."""
    log = get_run_logger()
    rest = KubeRest(cluster.api_client(), cluster_name)
    ensure_bucket(store, bucket)
    out: list[VolumeResult] = []
    for ns in sorted({ns for ns, _ in claims}):
        _ensure_secret(rest, ns, store)
    try:
        for ns, pvc in claims:
            key = volume_key(prefix, name, ns, pvc)
            vr = VolumeResult(ns, pvc, key)
            out.append(vr)
            t0 = time.monotonic()
            body = _job_body(
                _job_name("pack", pvc, run_id),
                ns,
                pvc,
                ["pack", "--dir", MOUNT, "--bucket", bucket, "--key", key],
                endpoint or store.url,
                store.region,
                image,
                run_id,
            )
            try:
                ok, msg = _run_job(rest, body, timeout)
                rec = get_json(store, bucket, key + ".result.json") if ok else None
                if not ok or not rec:
                    vr.status, vr.reason = "failed", f"pack Job failed: {msg or 'no result record'}"
                else:
                    vr.status = "packed"
                    vr.source_sha256 = rec["sha256_tree"]
                    vr.files, vr.bytes = int(rec["files"]), int(rec["bytes"])
            except StateferryError as exc:
                vr.status, vr.reason = "failed", str(exc)
            vr.seconds = round(time.monotonic() - t0, 3)
            log.info(
                "volume %s/%s: %s %s (%d files, %d bytes)", ns, pvc, vr.status, vr.reason, vr.files, vr.bytes
            )
    finally:
        for ns in sorted({ns for ns, _ in claims}):
            _delete(rest, f"/api/v1/namespaces/{ns}/secrets/{SECRET_NAME}")
    return out


@task(cache_policy=NO_CACHE)
def fill_volumes(
    cluster: KubeCluster,
    cluster_name: str,
    store: ObjectStore,
    bucket: str,
    volumes: list[VolumeResult],
    namespace_mapping: dict[str, str],
    run_id: str,
    endpoint: str | None = None,
    image: str = WORKER_IMAGE,
    timeout: float = 600.0,
) -> list[VolumeResult]:
    """Run one unpack Job per packed volume into the (already created) target claim and compare the
    tree checksums; ``status`` becomes ``migrated successfully`` or ``failed`` with the reason."""
    log = get_run_logger()
    rest = KubeRest(cluster.api_client(), cluster_name)
    todo = [v for v in volumes if v.status == "packed"]
    for v in volumes:
        v.target_namespace = namespace_mapping.get(v.namespace, v.namespace)
        v.target_pvc = v.pvc
    wait_pvcs_bound(rest, [(v.target_namespace, v.target_pvc) for v in todo])
    namespaces = sorted({v.target_namespace for v in todo})
    for ns in namespaces:
        _ensure_secret(rest, ns, store)
    try:
        for v in todo:
            t0 = time.monotonic()
            result_key = f"{v.key}.fill-{cluster_name}-{v.target_namespace}-{run_id[:8]}.json"
            body = _job_body(
                _job_name("fill", v.pvc, run_id),
                v.target_namespace,
                v.target_pvc,
                [
                    "unpack",
                    "--dir",
                    MOUNT,
                    "--bucket",
                    bucket,
                    "--key",
                    v.key,
                    "--expect-sha256",
                    v.source_sha256,
                    "--result-key",
                    result_key,
                ],
                endpoint or store.url,
                store.region,
                image,
                run_id,
            )
            try:
                ok, msg = _run_job(rest, body, timeout)
                rec = get_json(store, bucket, result_key) or {}
                v.target_sha256 = str(rec.get("sha256_tree", ""))
                if ok and rec.get("ok") and v.target_sha256 == v.source_sha256:
                    v.status = "migrated successfully"
                    v.reason = "" if rec.get("status") != "already-present" else "data already present"
                else:
                    v.status = "failed"
                    v.reason = (
                        f"checksum mismatch: source {v.source_sha256[:12]}, target {v.target_sha256[:12]}"
                        if rec
                        else f"fill Job failed: {msg or 'no result record'} (is the target PVC empty?)"
                    )
            except StateferryError as exc:
                v.status, v.reason = "failed", str(exc)
            v.seconds = round(v.seconds + time.monotonic() - t0, 3)
            log.info(
                "volume %s/%s -> %s/%s: %s %s",
                v.namespace,
                v.pvc,
                v.target_namespace,
                v.target_pvc,
                v.status,
                v.reason,
            )
    finally:
        for ns in namespaces:
            _delete(rest, f"/api/v1/namespaces/{ns}/secrets/{SECRET_NAME}")
    return volumes
