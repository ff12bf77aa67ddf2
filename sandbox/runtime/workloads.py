"""Deployment -> ReplicaSet -> Pod controllers and the Job controller."""

from __future__ import annotations

import copy
import logging
from typing import Any

from sandbox.runtime.events import emit
from sandbox.runtime.kube import Kube, Obj
from sandbox.runtime.objects import (
    as_int,
    meta,
    name_of,
    now_iso,
    ns_of,
    owner_ref,
    pod_phase,
    pod_ready,
    pod_running_ready,
    selector_matches,
    template_hash,
    terminating,
    uid_of,
)
from sandbox.runtime.world import World

log = logging.getLogger(__name__)

HASH_LABEL = "pod-template-hash"
REVISION_ANN = "deployment.kubernetes.io/revision"


def _pod_from_template(owner: Obj, template: Obj, api_version: str, kind: str) -> Obj:
    """A pod of ``owner``, named by the server from ``generateName: <owner>-`` as controllers do."""
    template = copy.deepcopy(template)
    tmeta = template.get("metadata") or {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": f"{name_of(owner)}-",
            "namespace": ns_of(owner),
            "labels": tmeta.get("labels") or {},
            **({"annotations": tmeta["annotations"]} if tmeta.get("annotations") else {}),
            "ownerReferences": [owner_ref(owner, api_version, kind)],
        },
        "spec": template.get("spec") or {},
    }


def _guard(kind: str, obj: Obj, fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except Exception as exc:
        log.warning("%s %s/%s: %s", kind, ns_of(obj), name_of(obj), exc)


# ---------------------------------------------------------------------------------------- Deployment
def sync_deployments(kube: Kube, world: World) -> None:
    """Reconcile every Deployment: one ReplicaSet per template, old ones scaled down once new is ready."""
    rs_by_owner = world.by_owner("replicasets")
    for dep in world["deployments"]:
        if not terminating(dep):
            _guard("deployment", dep, _sync_deployment, kube, dep, rs_by_owner.get(uid_of(dep), []))


def _sync_deployment(kube: Kube, dep: Obj, owned: list[Obj]) -> None:
    spec = dep.get("spec") or {}
    replicas = as_int(spec.get("replicas"), 1)
    template = copy.deepcopy(spec.get("template") or {})
    collision = int((dep.get("status") or {}).get("collisionCount") or 0)
    phash = template_hash(template, collision)
    rs_name = f"{name_of(dep)}-{phash}"
    new_rs = next((r for r in owned if name_of(r) == rs_name), None)
    revisions = [int((meta(r).get("annotations") or {}).get(REVISION_ANN) or 0) for r in owned]
    surge = replicas + max(1, -(-replicas // 4))
    if new_rs is None:
        revision = max(revisions, default=0) + 1
        tmpl = template
        tmpl.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = phash
        selector = copy.deepcopy(spec.get("selector") or {})
        selector.setdefault("matchLabels", {})[HASH_LABEL] = phash
        body = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": rs_name,
                "namespace": ns_of(dep),
                "labels": dict(tmpl["metadata"]["labels"]),
                "annotations": {
                    "deployment.kubernetes.io/desired-replicas": str(replicas),
                    "deployment.kubernetes.io/max-replicas": str(surge),
                    REVISION_ANN: str(revision),
                },
                "ownerReferences": [owner_ref(dep, "apps/v1", "Deployment")],
            },
            "spec": {"replicas": replicas, "selector": selector, "template": tmpl},
        }
        new_rs = kube.create("replicasets", ns_of(dep), body, exist_ok=True)
        if new_rs is None:
            return
        emit(
            kube,
            dep,
            "ScalingReplicaSet",
            f"Scaled up replica set {rs_name} to {replicas}",
            component="deployment-controller",
            kind="Deployment",
            api_version="apps/v1",
        )
        owned = [*owned, new_rs]
    elif int((new_rs.get("spec") or {}).get("replicas") or 0) != replicas:
        kube.patch(
            "replicasets",
            ns_of(dep),
            rs_name,
            {
                "metadata": {"annotations": {"deployment.kubernetes.io/desired-replicas": str(replicas)}},
                "spec": {"replicas": replicas},
            },
        )
    current_rev = (meta(new_rs).get("annotations") or {}).get(REVISION_ANN)
    if current_rev and (meta(dep).get("annotations") or {}).get(REVISION_ANN) != current_rev:
        # the Deployment carries the revision of its newest ReplicaSet (k8s-fidelity.md)
        patch = {"metadata": {"annotations": {REVISION_ANN: current_rev}}}
        kube.patch("deployments", ns_of(dep), name_of(dep), patch)
    new_ready = int((new_rs.get("status") or {}).get("readyReplicas") or 0)
    old = [r for r in owned if name_of(r) != rs_name]
    recreate = (spec.get("strategy") or {}).get("type") == "Recreate"
    for rs in old:
        if int((rs.get("spec") or {}).get("replicas") or 0) and (recreate or new_ready >= replicas):
            kube.patch("replicasets", ns_of(rs), name_of(rs), {"spec": {"replicas": 0}})
            emit(
                kube,
                dep,
                "ScalingReplicaSet",
                f"Scaled down replica set {name_of(rs)} to 0",
                component="deployment-controller",
                kind="Deployment",
                api_version="apps/v1",
            )
    # status
    total = sum(int((r.get("status") or {}).get("replicas") or 0) for r in owned)
    ready = sum(int((r.get("status") or {}).get("readyReplicas") or 0) for r in owned)
    updated = int((new_rs.get("status") or {}).get("replicas") or 0)
    status = dep.get("status") or {}
    available = ready >= replicas
    conds = {c.get("type"): c for c in status.get("conditions") or []}
    now = now_iso()

    def cond(ctype: str, ok: bool, reason: str, message: str) -> Obj:
        prev = conds.get(ctype) or {}
        st = "True" if ok else "False"
        same = prev.get("status") == st and prev.get("reason") == reason
        return {
            "type": ctype,
            "status": st,
            "reason": reason,
            "message": message,
            "lastUpdateTime": prev.get("lastUpdateTime") if same else now,
            "lastTransitionTime": prev.get("lastTransitionTime") if prev.get("status") == st else now,
        }

    progressing_done = updated >= replicas and new_ready >= replicas and total == replicas
    conditions = [
        cond(
            "Available",
            available,
            "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
            "Deployment has minimum availability."
            if available
            else "Deployment does not have minimum availability.",
        ),
        cond(
            "Progressing",
            True,
            "NewReplicaSetAvailable" if progressing_done else "ReplicaSetUpdated",
            f'ReplicaSet "{rs_name}" has successfully progressed.'
            if progressing_done
            else f'ReplicaSet "{rs_name}" is progressing.',
        ),
    ]
    new_status = {
        "observedGeneration": meta(dep).get("generation"),
        "replicas": total or None,
        "updatedReplicas": updated or None,
        "readyReplicas": ready or None,
        "availableReplicas": ready or None,
        "unavailableReplicas": max(0, replicas - ready) or None,
        "conditions": conditions,
    }
    old_cmp = {k: status.get(k) for k in new_status}
    if old_cmp != new_status:
        kube.patch("deployments", ns_of(dep), name_of(dep), {"status": new_status}, sub="status")


# ---------------------------------------------------------------------------------------- ReplicaSet
def sync_replicasets(kube: Kube, world: World) -> None:
    """Reconcile every ReplicaSet: create / delete pods ``<rs>-<5>`` to match ``spec.replicas``."""
    pods_by_owner = world.by_owner("pods")
    for rs in world["replicasets"]:
        if not terminating(rs):
            _guard("replicaset", rs, _sync_replicaset, kube, rs, pods_by_owner.get(uid_of(rs), []))


def _sync_replicaset(kube: Kube, rs: Obj, owned: list[Obj]) -> None:
    spec = rs.get("spec") or {}
    replicas = as_int(spec.get("replicas"), 1)
    active = [p for p in owned if not terminating(p) and pod_phase(p) not in ("Succeeded", "Failed")]
    for p in owned:
        if pod_phase(p) in ("Succeeded", "Failed") and not terminating(p):
            kube.delete("pods", ns_of(p), name_of(p), uid=uid_of(p))
    if len(active) < replicas:
        for _ in range(replicas - len(active)):
            pod = _pod_from_template(rs, spec.get("template") or {}, "apps/v1", "ReplicaSet")
            created = kube.create("pods", ns_of(rs), pod, exist_ok=True)
            if created:
                emit(
                    kube,
                    rs,
                    "SuccessfulCreate",
                    f"Created pod: {name_of(created)}",
                    component="replicaset-controller",
                    kind="ReplicaSet",
                    api_version="apps/v1",
                )
    elif len(active) > replicas:
        victims = sorted(active, key=lambda p: (pod_ready(p), meta(p).get("creationTimestamp") or ""))
        for p in victims[: len(active) - replicas]:
            if kube.delete("pods", ns_of(p), name_of(p), uid=uid_of(p)):
                emit(
                    kube,
                    rs,
                    "SuccessfulDelete",
                    f"Deleted pod: {name_of(p)}",
                    component="replicaset-controller",
                    kind="ReplicaSet",
                    api_version="apps/v1",
                )
    ready = sum(1 for p in active if pod_running_ready(p))
    labelled = sum(1 for p in active if selector_matches(spec.get("selector"), meta(p).get("labels")))
    status = rs.get("status") or {}
    new_status = {
        "observedGeneration": meta(rs).get("generation"),
        "replicas": len(active),
        "fullyLabeledReplicas": labelled or None,
        "readyReplicas": ready or None,
        "availableReplicas": ready or None,
    }
    if {k: status.get(k) for k in new_status} != new_status:
        kube.patch("replicasets", ns_of(rs), name_of(rs), {"status": new_status}, sub="status")


# ---------------------------------------------------------------------------------------- Job
def sync_jobs(kube: Kube, world: World) -> None:
    """Reconcile every Job: run pods to completion, count successes/failures, set conditions."""
    pods_by_owner = world.by_owner("pods")
    for job in world["jobs"]:
        if not terminating(job):
            _guard("job", job, _sync_job, kube, job, pods_by_owner.get(uid_of(job), []))


def _finished(job: Obj) -> str | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
            return str(c["type"])
    return None


def _sync_job(kube: Kube, job: Obj, owned: list[Obj]) -> None:
    spec = job.get("spec") or {}
    status = job.get("status") or {}
    done = _finished(job)
    if done:
        ttl = spec.get("ttlSecondsAfterFinished")
        if ttl is not None and _age_seconds(_finish_time(job)) >= float(ttl):
            kube.delete("jobs", ns_of(job), name_of(job), propagation="Background")
        return
    if spec.get("suspend"):
        return
    completions = as_int(spec.get("completions"), 1)
    parallelism = as_int(spec.get("parallelism"), 1)
    backoff_limit = as_int(spec.get("backoffLimit"), 6)
    succeeded = sum(1 for p in owned if pod_phase(p) == "Succeeded")
    failed_pods = sum(1 for p in owned if pod_phase(p) == "Failed")
    restarts = sum(
        int(cs.get("restartCount") or 0)
        for p in owned
        for cs in (p.get("status") or {}).get("containerStatuses") or []
    )
    failed = failed_pods + restarts
    active = [p for p in owned if pod_phase(p) in ("Pending", "Running") and not terminating(p)]
    now = now_iso()
    conditions = list(status.get("conditions") or [])
    completion_time = None
    if succeeded >= completions:
        conditions.append(
            {"type": "Complete", "status": "True", "lastProbeTime": now, "lastTransitionTime": now}
        )
        completion_time = now
    elif failed > backoff_limit:
        conditions.append(
            {
                "type": "Failed",
                "status": "True",
                "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit",
                "lastProbeTime": now,
                "lastTransitionTime": now,
            }
        )
        for p in active:
            kube.delete("pods", ns_of(p), name_of(p), uid=uid_of(p))
        active = []
        emit(
            kube,
            job,
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
            warning=True,
            component="job-controller",
            kind="Job",
            api_version="batch/v1",
        )
    else:
        want = min(parallelism, completions - succeeded)
        for _ in range(max(0, want - len(active))):
            template = copy.deepcopy(spec.get("template") or {})
            labels = template.setdefault("metadata", {}).setdefault("labels", {})
            labels.setdefault("controller-uid", uid_of(job))
            labels.setdefault("job-name", name_of(job))
            labels.setdefault("batch.kubernetes.io/controller-uid", uid_of(job))
            labels.setdefault("batch.kubernetes.io/job-name", name_of(job))
            pod = _pod_from_template(job, template, "batch/v1", "Job")
            created = kube.create("pods", ns_of(job), pod, exist_ok=True)
            if created:
                active.append(created)
                emit(
                    kube,
                    job,
                    "SuccessfulCreate",
                    f"Created pod: {name_of(created)}",
                    component="job-controller",
                    kind="Job",
                    api_version="batch/v1",
                )
    new_status: dict[str, Any] = {
        "startTime": status.get("startTime") or now,
        "active": len(active) or None,
        "succeeded": succeeded or None,
        "failed": failed or None,
        "ready": sum(1 for p in active if pod_ready(p)),
        "conditions": conditions or None,
    }
    if completion_time:
        new_status["completionTime"] = completion_time
    if {k: status.get(k) for k in new_status} != new_status:
        kube.patch("jobs", ns_of(job), name_of(job), {"status": new_status}, sub="status")


def _finish_time(job: Obj) -> str:
    status = job.get("status") or {}
    if status.get("completionTime"):
        return str(status["completionTime"])
    for c in status.get("conditions") or []:
        if c.get("lastTransitionTime"):
            return str(c["lastTransitionTime"])
    return now_iso()


def _age_seconds(ts: str) -> float:
    import datetime as dt

    t = dt.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    return (dt.datetime.now(dt.UTC) - t).total_seconds()


# ---------------------------------------------------------------------------------------- DaemonSet
def sync_daemonsets(kube: Kube, world: World, node_name: str) -> None:
    """Reconcile every DaemonSet: one pod on the cluster's single Node, replaced on template change."""
    pods_by_owner = world.by_owner("pods")
    for ds in world["daemonsets"]:
        if not terminating(ds):
            _guard("daemonset", ds, _sync_daemonset, kube, ds, pods_by_owner.get(uid_of(ds), []), node_name)


def _sync_daemonset(kube: Kube, ds: Obj, owned: list[Obj], node_name: str) -> None:
    spec = ds.get("spec") or {}
    template = copy.deepcopy(spec.get("template") or {})
    rev = template_hash(template, int((ds.get("status") or {}).get("collisionCount") or 0))
    active = [p for p in owned if not terminating(p)]
    for p in active:
        outdated = (meta(p).get("labels") or {}).get("controller-revision-hash") != rev
        rolling = ((spec.get("updateStrategy") or {}).get("type") or "RollingUpdate") == "RollingUpdate"
        if pod_phase(p) in ("Succeeded", "Failed") or (outdated and rolling):
            if kube.delete("pods", ns_of(p), name_of(p), uid=uid_of(p)):
                emit(
                    kube,
                    ds,
                    "SuccessfulDelete",
                    f"Deleted pod: {name_of(p)}",
                    component="daemonset-controller",
                    kind="DaemonSet",
                    api_version="apps/v1",
                )
            active.remove(p)
    if not active and not any(terminating(p) for p in owned):
        labels = template.setdefault("metadata", {}).setdefault("labels", {})
        labels["controller-revision-hash"] = rev
        labels["pod-template-generation"] = str(meta(ds).get("generation") or 1)
        pod = _pod_from_template(ds, template, "apps/v1", "DaemonSet")
        pod["spec"]["nodeName"] = node_name  # the DaemonSet controller binds its pods itself
        created = kube.create("pods", ns_of(ds), pod, exist_ok=True)
        if created:
            emit(
                kube,
                ds,
                "SuccessfulCreate",
                f"Created pod: {name_of(created)}",
                component="daemonset-controller",
                kind="DaemonSet",
                api_version="apps/v1",
            )
    ready = sum(1 for p in active if pod_running_ready(p))
    updated = sum(1 for p in active if (meta(p).get("labels") or {}).get("controller-revision-hash") == rev)
    status = ds.get("status") or {}
    new_status = {
        "observedGeneration": meta(ds).get("generation"),
        "desiredNumberScheduled": 1,
        "currentNumberScheduled": len(active),
        "numberMisscheduled": 0,
        "numberReady": ready,
        "updatedNumberScheduled": updated or None,
        "numberAvailable": ready or None,
        "numberUnavailable": (1 - ready) or None,
    }
    if {k: status.get(k) for k in new_status} != new_status:
        kube.patch("daemonsets", ns_of(ds), name_of(ds), {"status": new_status}, sub="status")
