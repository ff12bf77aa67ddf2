"""The StatefulSet controller: ordered pods, PVCs from volumeClaimTemplates, revisions, rolling updates."""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

from sandbox.runtime.events import emit
from sandbox.runtime.kube import Kube, Obj
from sandbox.runtime.objects import (
    as_int,
    meta,
    name_of,
    ns_of,
    owner_ref,
    pod_phase,
    pod_running_ready,
    template_hash,
    terminating,
    uid_of,
)
from sandbox.runtime.world import World

log = logging.getLogger(__name__)

REVISION_LABEL = "controller-revision-hash"
POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"


def _ordinal(sts_name: str, pod_name: str) -> int | None:
    m = re.fullmatch(re.escape(sts_name) + r"-(\d+)", pod_name)
    return int(m.group(1)) if m else None


def _revision_name(sts: Obj) -> str:
    template = (sts.get("spec") or {}).get("template") or {}
    collision = int((sts.get("status") or {}).get("collisionCount") or 0)
    return f"{name_of(sts)}-{template_hash(template, collision)}"


def _ensure_revision(kube: Kube, world: World, sts: Obj, rev_name: str) -> int:
    revs = world.owned("controllerrevisions", uid_of(sts))
    for r in revs:
        if name_of(r) == rev_name:
            return int(r.get("revision") or 1)
    number = max((int(r.get("revision") or 0) for r in revs), default=0) + 1
    spec = sts.get("spec") or {}
    labels = dict(((spec.get("selector") or {}).get("matchLabels")) or {})
    labels["controller.kubernetes.io/hash"] = rev_name.rsplit("-", 1)[1]
    template = copy.deepcopy(spec.get("template") or {})
    template["$patch"] = "replace"
    body = {
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": {
            "name": rev_name,
            "namespace": ns_of(sts),
            "labels": labels,
            "ownerReferences": [owner_ref(sts, "apps/v1", "StatefulSet")],
        },
        "data": {"spec": {"template": template}},
        "revision": number,
    }
    kube.create("controllerrevisions", ns_of(sts), body, exist_ok=True)
    return number


def _claim_name(vct: Obj, sts: Obj, ordinal: int) -> str:
    return f"{name_of(vct)}-{name_of(sts)}-{ordinal}"


def _ensure_claims(kube: Kube, world: World, sts: Obj, ordinal: int) -> None:
    spec = sts.get("spec") or {}
    existing = world.by_name("persistentvolumeclaims")
    labels = dict(((spec.get("selector") or {}).get("matchLabels")) or {})
    for vct in spec.get("volumeClaimTemplates") or []:
        claim = _claim_name(vct, sts, ordinal)
        if (ns_of(sts), claim) in existing:
            continue
        vmeta = meta(vct)
        body = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {
                "name": claim,
                "namespace": ns_of(sts),
                "labels": {**(vmeta.get("labels") or {}), **labels},
                **({"annotations": vmeta["annotations"]} if vmeta.get("annotations") else {}),
            },
            "spec": copy.deepcopy(vct.get("spec") or {}),
        }
        if kube.create("persistentvolumeclaims", ns_of(sts), body, exist_ok=True):
            _event(
                kube,
                sts,
                "SuccessfulCreate",
                f"create Claim {claim} Pod {name_of(sts)}-{ordinal} in StatefulSet {name_of(sts)} success",
            )


def _new_pod(sts: Obj, ordinal: int, rev_name: str) -> Obj:
    spec = sts.get("spec") or {}
    template = copy.deepcopy(spec.get("template") or {})
    tmeta = template.get("metadata") or {}
    pod_name = f"{name_of(sts)}-{ordinal}"
    labels = {**(tmeta.get("labels") or {}), REVISION_LABEL: rev_name, POD_NAME_LABEL: pod_name}
    pspec = template.get("spec") or {}
    pspec["hostname"] = pod_name
    if spec.get("serviceName"):
        pspec["subdomain"] = spec["serviceName"]
    volumes = pspec.setdefault("volumes", [])
    names = {v.get("name") for v in volumes}
    for vct in spec.get("volumeClaimTemplates") or []:
        if name_of(vct) in names:
            volumes[:] = [v for v in volumes if v.get("name") != name_of(vct)]
        volumes.append(
            {"name": name_of(vct), "persistentVolumeClaim": {"claimName": _claim_name(vct, sts, ordinal)}}
        )
    if not volumes:
        pspec.pop("volumes")
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name,
            "namespace": ns_of(sts),
            "labels": labels,
            **({"annotations": tmeta["annotations"]} if tmeta.get("annotations") else {}),
            "ownerReferences": [owner_ref(sts, "apps/v1", "StatefulSet")],
        },
        "spec": pspec,
    }


def _event(kube: Kube, sts: Obj, reason: str, message: str) -> None:
    emit(
        kube,
        sts,
        reason,
        message,
        component="statefulset-controller",
        kind="StatefulSet",
        api_version="apps/v1",
    )


def _delete_pod(kube: Kube, sts: Obj, pod: Obj) -> None:
    if kube.delete("pods", ns_of(pod), name_of(pod), uid=uid_of(pod)):
        _event(
            kube,
            sts,
            "SuccessfulDelete",
            f"delete Pod {name_of(pod)} in StatefulSet {name_of(sts)} successful",
        )


def sync_statefulsets(kube: Kube, world: World) -> None:
    """Reconcile every StatefulSet of the snapshot."""
    pods_by_owner = world.by_owner("pods")
    for sts in world["statefulsets"]:
        if terminating(sts):
            continue
        try:
            _sync_one(kube, world, sts, pods_by_owner.get(uid_of(sts), []))
        except Exception as exc:
            log.warning("statefulset %s/%s: %s", ns_of(sts), name_of(sts), exc)


def _sync_one(kube: Kube, world: World, sts: Obj, owned: list[Obj]) -> None:
    spec = sts.get("spec") or {}
    status = sts.get("status") or {}
    replicas = as_int(spec.get("replicas"), 1)
    parallel = spec.get("podManagementPolicy") == "Parallel"
    strategy = spec.get("updateStrategy") or {}
    rolling = (strategy.get("type") or "RollingUpdate") == "RollingUpdate"
    partition = int(((strategy.get("rollingUpdate") or {}).get("partition")) or 0)

    update_rev = _revision_name(sts)
    _ensure_revision(kube, world, sts, update_rev)
    current_rev = status.get("currentRevision") or update_rev

    # revisionHistoryLimit: drop the oldest revisions no pod and no status refers to
    limit = as_int(spec.get("revisionHistoryLimit"), 10)
    in_use = {update_rev, current_rev} | {(meta(p).get("labels") or {}).get(REVISION_LABEL) for p in owned}
    revs = sorted(world.owned("controllerrevisions", uid_of(sts)), key=lambda r: int(r.get("revision") or 0))
    spare = [r for r in revs if name_of(r) not in in_use]
    for r in spare[: max(0, len(spare) - limit)]:
        kube.delete("controllerrevisions", ns_of(r), name_of(r))

    pods: dict[int, Obj] = {}
    for pod in owned:
        ordinal = _ordinal(name_of(sts), name_of(pod))
        if ordinal is not None:
            pods[ordinal] = pod

    # Failed pods are deleted and recreated.
    for pod in list(pods.values()):
        if pod_phase(pod) in ("Failed", "Succeeded") and not terminating(pod):
            _delete_pod(kube, sts, pod)

    any_terminating = any(terminating(p) for p in pods.values())
    # Create missing pods.
    for ordinal in range(replicas):
        if ordinal in pods:
            pod = pods[ordinal]
            if not parallel and not pod_running_ready(pod):
                break  # OrderedReady: wait for this one before the next
            continue
        if not parallel and any_terminating:
            break
        _ensure_claims(kube, world, sts, ordinal)
        rev = update_rev if (ordinal >= partition or not rolling) else current_rev
        if kube.create("pods", ns_of(sts), _new_pod(sts, ordinal, rev), exist_ok=True):
            _event(
                kube,
                sts,
                "SuccessfulCreate",
                f"create Pod {name_of(sts)}-{ordinal} in StatefulSet {name_of(sts)} successful",
            )
        if not parallel:
            break

    # Scale down: highest ordinal first.
    condemned = sorted((o for o in pods if o >= replicas), reverse=True)
    for ordinal in condemned:
        pod = pods[ordinal]
        if terminating(pod):
            if not parallel:
                break
            continue
        if not parallel and not all(pod_running_ready(p) for o, p in pods.items() if o < replicas):
            break
        _delete_pod(kube, sts, pod)
        if not parallel:
            break

    # Rolling update: replace the highest outdated ordinal, one at a time, once all are healthy.
    live = {o: p for o, p in pods.items() if o < replicas}
    healthy = all(pod_running_ready(p) for p in live.values())
    if rolling and len(live) == replicas and not any_terminating and not condemned and healthy:
        for ordinal in sorted(live, reverse=True):
            if ordinal < partition:
                break
            pod = live[ordinal]
            if (meta(pod).get("labels") or {}).get(REVISION_LABEL) != update_rev:
                _delete_pod(kube, sts, pod)
                break

    # Status.
    counted = [p for p in pods.values()]
    ready = sum(1 for p in counted if pod_running_ready(p))
    updated = sum(1 for p in counted if (meta(p).get("labels") or {}).get(REVISION_LABEL) == update_rev)
    current = sum(1 for p in counted if (meta(p).get("labels") or {}).get(REVISION_LABEL) == current_rev)
    if updated == replicas and len(counted) == replicas and ready == replicas:
        current_rev, current = update_rev, updated
    new_status: dict[str, Any] = {
        "observedGeneration": meta(sts).get("generation"),
        "replicas": len(counted),
        "readyReplicas": ready or None,
        "currentReplicas": current or None,
        "updatedReplicas": updated or None,
        "availableReplicas": ready,
        "currentRevision": current_rev,
        "updateRevision": update_rev,
        "collisionCount": int(status.get("collisionCount") or 0),
    }
    changed = {k: v for k, v in new_status.items() if status.get(k) != v}
    if changed:
        kube.patch("statefulsets", ns_of(sts), name_of(sts), {"status": new_status}, sub="status")
