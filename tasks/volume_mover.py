"""Move PVC data between clusters with data-mover Jobs (image ``stateferry/worker``).

For each PVC: a Job in the source cluster mounts the claim read-only and runs
``python -m stateferry.worker.volume pack`` (GNU tar stream to the object store plus a result record
with the tree checksum); a Job in the target cluster mounts the new claim and runs ``... unpack``
with the expected checksum. ``level`` 0 is the bulk copy, level N a delta since level N-1 (changed
files and deletions only). The checksums of both sides are compared here and reported per volume.

Mover pods a real cluster accepts (:mod:`planning.mover_pod`): by default root with only the
capabilities the copy needs, or the workload's own ``runAsUser``/``fsGroup``; a ReadWriteOnce claim
is read on the node of the pod that has it attached.

Credentials: each Job gets its own Secret (unique name) created *after* the Job, with an
ownerReference to it, while the Job is suspended; the Job is then started. The Secret is removed
with the Job (and the Job by ``ttlSecondsAfterFinished`` if the run is killed), never overwrites
an application's Secret, and never appears in Job specs, logs or reports.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from blocks.kube import KubeCluster
from blocks.object_store import ObjectStore
from planning.mover_pod import (
    MOUNT,
    WORKER_IMAGE,
    MoverSecurity,
    Placement,
    mover_job_body,
    mover_secret_name,
    pod_placement,
)
from stateferry.errors import Conflict, PermanentError, StateferryError, TransientError
from stateferry.waiting import wait_until
from tasks.archive_store import ensure_bucket, get_json
from tasks.kube_dynamic import (
    create,
    delete,
    dynamic_client,
    get_or_none,
    list_objects,
    merge_patch,
    served_resource,
)

__all__ = [
    "VolumeResult",
    "fill_volumes",
    "launch_mover_job",
    "pack_volumes",
    "volume_key",
    "wait_pvcs_bound",
]


@dataclass
class VolumeResult:
    """One volume's journey.

    Attributes:
        namespace / pvc: the source claim; target_namespace / target_pvc: where it was restored.
        key: object key of the volume's level-0 archive.
        status: ``packed`` / ``migrated successfully`` / ``failed``.
        reason: what went wrong (or ``data already present`` for a re-run).
        source_sha256 / target_sha256: tree checksums on both sides (of the latest level).
        previous_sha256: source checksum of the level before (what a delta applies to).
        level: 0 = bulk copy, N = N-th delta.
        files / bytes: size of the tree.
        extra: ``skipped`` = ``[[path, kind], ...]`` the special files the copy left out (in the
            report and the volume table), ``live``, ``identity`` (the mover pod's: ``root`` or the
            workload's runAsUser/fsGroup).
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
    level: int = 0
    previous_sha256: str = ""
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
            "level": self.level,
            "skipped": [list(s) for s in self.extra.get("skipped") or []],
        }

    @staticmethod
    def skipped_from(value: Any) -> list[list[str]]:
        """The ``skipped`` list of a manifest entry read back from storage (untrusted): only
        ``[path, kind]`` string pairs, bounded, the rest dropped."""
        if not isinstance(value, list):
            return []
        pairs = [v for v in value[:1000] if isinstance(v, list) and len(v) == 2]
        return [[p[:4096], k[:32]] for p, k in pairs if isinstance(p, str) and isinstance(k, str)]

    def not_copied(self) -> str:
        """The special files the copy left out (sockets, device nodes), e.g. ``a.sock (socket)``."""
        return ", ".join(f"{path} ({kind})" for path, kind in self.extra.get("skipped") or [])


def volume_key(prefix: str, name: str, namespace: str, pvc: str) -> str:
    """Object key of one volume's tarball: ``<prefix>/<name>/volumes/<namespace>/<pvc>.tar.gz``."""
    p = prefix.strip("/")
    return f"{p + '/' if p else ''}{name}/volumes/{namespace}/{pvc}.tar.gz"


def _level_key(key: str, level: int) -> str:
    return key if level == 0 else f"{key}.level{level}"


def _job_name(kind: str, pvc: str, run: str, level: int = 0) -> str:
    base = re.sub(r"[^a-z0-9-]", "-", f"sf-{kind}{level or ''}-{pvc}".lower())[:46].strip("-")
    return f"{base}-{run[:8]}".strip("-")


def _jobs(dyn: Any) -> Any:
    return served_resource(dyn, "batch/v1", "Job")


def _delete_job(dyn: Any, ns: str, name: str) -> None:
    try:
        delete(dyn, _jobs(dyn), name, ns)  # its pods and its Secret go with it
    except StateferryError:
        pass


def launch_mover_job(dyn: Any, body: dict[str, Any], store: ObjectStore) -> tuple[str, str]:
    """Create the (suspended) Job, its own credentials Secret owned by it, then start the Job.

    A killed run leaves at most a Job whose Secret goes with it (garbage collection), and the Job
    itself goes ``ttlSecondsAfterFinished`` after it ends (``activeDeadlineSeconds`` ends it).

    Args:
        dyn: the cluster's dynamic client (:func:`tasks.kube_dynamic.dynamic_client`).

    Returns:
        ``(job uid, secret name)``.
    """
    ns = body["metadata"]["namespace"]
    name = body["metadata"]["name"]
    jobs = _jobs(dyn)
    _delete_job(dyn, ns, name)

    def created() -> dict[str, Any] | None:
        try:
            return create(dyn, jobs, body, ns)
        except Conflict:  # a previous run's Job of the same name may still be terminating
            return None

    job = wait_until(
        created,
        timeout=20.0,
        interval=0.2,
        describe=lambda: f"data-mover Job {ns}/{name} still exists from an earlier run",
        error=TransientError,
    )
    uid = job["metadata"]["uid"]
    secret = mover_secret_name(body)
    create(
        dyn,
        served_resource(dyn, "v1", "Secret"),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": secret,
                "namespace": ns,
                "labels": dict(body["metadata"]["labels"]),
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": name,
                        "uid": uid,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "type": "Opaque",
            "stringData": {"access_key": store.access_key, "secret_key": store.secret_key.get_secret_value()},
        },
        ns,
    )
    merge_patch(dyn, jobs, name, ns, {"spec": {"suspend": False}})
    return uid, secret


def run_mover_job(dyn: Any, body: dict[str, Any], store: ObjectStore, timeout: float) -> tuple[bool, str]:
    """Run a mover Job to its end; ``(succeeded, message)``; the Job and its Secret are deleted after."""
    ns = body["metadata"]["namespace"]
    name = body["metadata"]["name"]
    jobs = _jobs(dyn)
    try:
        launch_mover_job(dyn, body, store)

        def finished() -> tuple[bool, str] | None:
            job = get_or_none(dyn, jobs, name, ns) or {}
            for c in (job.get("status") or {}).get("conditions") or []:
                if c.get("status") == "True" and c.get("type") in ("Complete", "Failed"):
                    return c["type"] == "Complete", str(c.get("message") or c.get("reason") or "")
            return None

        return wait_until(
            finished,
            timeout=timeout,
            interval=0.3,
            describe=lambda: f"data-mover Job {ns}/{name} did not finish within {timeout:.0f}s",
            error=TransientError,
        )
    finally:
        _delete_job(dyn, ns, name)


def _secret_name(job: str) -> str:
    return f"{job[:50]}-s3-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class _MoverJobs:
    """What every mover Job of one pass shares; ``kind`` ``pack`` reads the claims, ``fill`` writes them."""

    kind: str
    store: ObjectStore
    endpoint: str
    image: str
    run_id: str
    mode: MoverSecurity
    timeout: float

    def body(self, ns: str, pvc: str, args: list[str], level: int, placement: Placement) -> dict[str, Any]:
        """The Job running the worker with ``args`` on the claim ``ns/pvc``."""
        job = _job_name(self.kind, pvc, self.run_id, level)
        return mover_job_body(
            job,
            ns,
            pvc,
            args,
            self.endpoint,
            self.store.region,
            self.image,
            self.run_id,
            _secret_name(job),
            mode=self.mode,
            placement=placement,
            write=self.kind == "fill",
            timeout=self.timeout,
        )


def wait_pvcs_bound(
    dyn: Any, cluster_name: str, claims: list[tuple[str, str]], timeout: float = 60.0
) -> None:
    """Wait until every ``(namespace, name)`` claim of the cluster ``cluster_name`` is Bound.

    Raises:
        PermanentError: naming the claims still pending.
    """
    pending = list(claims)
    pvcs = served_resource(dyn, "v1", "PersistentVolumeClaim")

    def phase(ns: str, name: str) -> str | None:
        return ((get_or_none(dyn, pvcs, name, ns) or {}).get("status") or {}).get("phase")

    def all_bound() -> bool:
        pending[:] = [(ns, n) for ns, n in pending if phase(ns, n) != "Bound"]
        return not pending

    wait_until(
        all_bound,
        timeout=timeout,
        interval=0.3,
        describe=lambda: (
            f"PVCs {', '.join(f'{ns}/{n}' for ns, n in pending)} are not Bound after {timeout:.0f}s in "
            f"{cluster_name}: check the storage class (storage_class_mapping) and the provisioner"
        ),
        error=PermanentError,
    )


def claim_users(dyn: Any, ns: str, pvc: str) -> list[dict[str, Any]]:
    """The pods of ``ns`` that mount the claim ``pvc`` (for placement next to a ReadWriteOnce volume)."""
    return [
        p
        for p in list_objects(dyn, served_resource(dyn, "v1", "Pod"), ns)
        if any(
            (v.get("persistentVolumeClaim") or {}).get("claimName") == pvc
            for v in (p.get("spec") or {}).get("volumes") or []
        )
    ]


def _failure(rec: dict[str, Any] | None, msg: str, what: str) -> str:
    if rec and rec.get("error"):
        return f"{what} failed: {rec['error']}"
    return f"{what} Job failed: {msg or 'no result record'}"


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
    level: int = 0,
    security: str = "root",
    previous: list[VolumeResult] | None = None,
    live: bool = False,
) -> list[VolumeResult]:
    """Run one pack Job per claim in the source cluster; return each volume's checksum record.

    Args:
        level: 0 = bulk copy; N = changes since level N-1 (``previous`` holds level N-1's records).
        security: ``root`` (capabilities DAC_READ_SEARCH only, claim mounted read-only),
            ``workload`` (the runAsUser/runAsGroup/fsGroup of the pod using the claim) or
            ``image`` (no securityContext: the image's unprivileged user).
        previous: level N-1's records (a delta applies over what the target then held).
        live: the application still writes (a bulk pass before quiesce): the target's copy is
            not compared with the moving source; the delta after quiesce is.
    """
    log = get_run_logger()
    mode = MoverSecurity.parse(security, "mover_security")
    dyn = dynamic_client(cluster.api_client())
    jobs = _MoverJobs("pack", store, endpoint or store.url, image, run_id, mode, timeout)
    ensure_bucket(store, bucket)
    before = {(v.namespace, v.pvc): v for v in previous or []}
    out: list[VolumeResult] = []
    for ns, pvc in claims:
        key = volume_key(prefix, name, ns, pvc)
        vr = VolumeResult(ns, pvc, key, level=level)
        if level and (ns, pvc) in before:
            prev = before[(ns, pvc)]
            vr.previous_sha256 = prev.target_sha256 or prev.source_sha256
        if live:
            vr.extra["live"] = True
        out.append(vr)
        t0 = time.monotonic()
        placement = pod_placement(claim_users(dyn, ns, pvc))
        args = ["pack", "--dir", MOUNT, "--bucket", bucket, "--key", key, "--level", str(level)]
        body = jobs.body(ns, pvc, args, level, placement)
        vr.extra["identity"] = placement.identity(mode)
        try:
            ok, msg = run_mover_job(dyn, body, store, timeout)
            rec = get_json(store, bucket, _level_key(key, level) + ".result.json")
            if not ok or not rec or not rec.get("ok", True):
                vr.status, vr.reason = "failed", _failure(rec, msg, "pack")
            else:
                vr.status = "packed"
                vr.source_sha256 = rec["sha256_tree"]
                vr.files, vr.bytes = int(rec["files"]), int(rec["bytes"])
                if rec.get("skipped"):
                    vr.extra["skipped"] = VolumeResult.skipped_from(rec["skipped"])
        except StateferryError as exc:
            vr.status, vr.reason = "failed", str(exc)
        vr.seconds = round(time.monotonic() - t0, 3)
        log.info(
            "volume %s/%s level %d: %s %s (%d files, %d bytes)",
            ns,
            pvc,
            level,
            vr.status,
            vr.reason,
            vr.files,
            vr.bytes,
        )
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
    security: str = "root",
) -> list[VolumeResult]:
    """Run one unpack Job per packed volume into the (already created) target claim and compare the
    tree checksums; ``status`` becomes ``migrated successfully`` or ``failed`` with the reason.

    A volume's ``level`` says which archive to apply: 0 into an empty claim, N over level N-1.
    """
    log = get_run_logger()
    mode = MoverSecurity.parse(security, "mover_security")
    dyn = dynamic_client(cluster.api_client())
    jobs = _MoverJobs("fill", store, endpoint or store.url, image, run_id, mode, timeout)
    todo = [v for v in volumes if v.status == "packed"]
    for v in volumes:
        v.target_namespace = namespace_mapping.get(v.namespace, v.namespace)
        v.target_pvc = v.pvc
    wait_pvcs_bound(dyn, cluster_name, [(v.target_namespace, v.target_pvc) for v in todo])
    for v in todo:
        t0 = time.monotonic()
        result_key = (
            f"{_level_key(v.key, v.level)}.fill-{cluster_name}-{v.target_namespace}-{run_id[:8]}.json"
        )
        args = ["unpack", "--dir", MOUNT, "--bucket", bucket, "--key", v.key, "--level", str(v.level)]
        live = bool(v.extra.get("live"))
        if not live:
            args += ["--expect-sha256", v.source_sha256]
        args += ["--result-key", result_key]
        if v.level:
            args += ["--expect-before", v.previous_sha256]
        placement = pod_placement(claim_users(dyn, v.target_namespace, v.target_pvc))
        if mode is MoverSecurity.WORKLOAD and not placement.pod_security:
            placement.pod_security = dict(v.extra.get("identity") or {})
        body = jobs.body(v.target_namespace, v.target_pvc, args, v.level, placement)
        try:
            ok, msg = run_mover_job(dyn, body, store, timeout)
            rec = get_json(store, bucket, result_key) or {}
            v.target_sha256 = str(rec.get("sha256_tree", ""))
            if ok and rec.get("ok") and live:
                v.status = "migrated successfully"
                v.reason = "bulk copy of the running application; the delta after quiesce is verified"
            elif ok and rec.get("ok") and v.target_sha256 == v.source_sha256:
                v.status = "migrated successfully"
                v.reason = "" if rec.get("status") != "already-present" else "data already present"
            else:
                v.status = "failed"
                v.reason = (
                    f"checksum mismatch: source {v.source_sha256[:12]}, target {v.target_sha256[:12]}"
                    if rec.get("sha256_tree")
                    else _failure(rec, msg, "fill")
                )
        except StateferryError as exc:
            v.status, v.reason = "failed", str(exc)
        v.seconds = round(v.seconds + time.monotonic() - t0, 3)
        log.info(
            "volume %s/%s -> %s/%s level %d: %s %s",
            v.namespace,
            v.pvc,
            v.target_namespace,
            v.target_pvc,
            v.level,
            v.status,
            v.reason,
        )
    return volumes
