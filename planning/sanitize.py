"""Sanitising an exported object for another cluster (pure): :func:`sanitize` with
:class:`SanitizeOptions`. Re-exported by :mod:`planning.resources`."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SanitizeOptions", "sanitize"]

_STRIP_META = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "managedFields",
    "generation",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "ownerReferences",
    "generateName",
)
_STRIP_ANNOTATIONS = (
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "pv.kubernetes.io/bind-completed",
    "pv.kubernetes.io/bound-by-controller",
    "pv.kubernetes.io/provisioned-by",
    "volume.beta.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/selected-node",
    "batch.kubernetes.io/job-tracking",
    "control-plane.alpha.kubernetes.io/leader",
)


_SYSTEM_FINALIZERS = (
    "kubernetes.io/pvc-protection",
    "kubernetes.io/pv-protection",
    "foregroundDeletion",
    "orphan",
    "batch.kubernetes.io/job-tracking",
    "customresourcecleanup.apiextensions.k8s.io",
)
_JOB_LABELS = (
    "controller-uid",
    "batch.kubernetes.io/controller-uid",
    "job-name",
    "batch.kubernetes.io/job-name",
)


@dataclass(frozen=True)
class SanitizeOptions:
    """How :func:`sanitize` rewrites an object for the target cluster.

    Attributes:
        namespace_mapping: source namespace -> target namespace.
        storage_class_mapping: source storage class -> target storage class.
        keep_node_ports: keep Service ``nodePort`` values (default: let the target allocate).
        keep_volume_names: keep PVC ``spec.volumeName`` (only when the PVs travel too).
        labels: labels added to every object (provenance, managed-by).
    """

    namespace_mapping: Mapping[str, str] = field(default_factory=dict)
    storage_class_mapping: Mapping[str, str] = field(default_factory=dict)
    keep_node_ports: bool = False
    keep_volume_names: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)


def _map_ns(ns: str | None, mapping: Mapping[str, str]) -> str | None:
    return mapping.get(ns, ns) if ns else ns


def _map_sc(spec: dict[str, Any], mapping: Mapping[str, str]) -> None:
    sc = spec.get("storageClassName")
    if sc is not None and sc in mapping:
        spec["storageClassName"] = mapping[sc]
    elif sc is None and "" in mapping:  # "" = the source's default class
        spec["storageClassName"] = mapping[""]


def _strip_token_volumes(pod_spec: dict[str, Any]) -> None:
    vols = pod_spec.get("volumes") or []
    drop = {v.get("name") for v in vols if str(v.get("name", "")).startswith("kube-api-access-")}
    if drop:
        pod_spec["volumes"] = [v for v in vols if v.get("name") not in drop]
        for c in (pod_spec.get("containers") or []) + (pod_spec.get("initContainers") or []):
            c["volumeMounts"] = [m for m in c.get("volumeMounts") or [] if m.get("name") not in drop]


def sanitize(obj: Mapping[str, Any], options: SanitizeOptions | None = None) -> dict[str, Any]:
    """A copy of ``obj`` fit to create in another cluster.

    Removes what the source server assigned (uid, resourceVersion, creationTimestamp, managedFields,
    generation, status, ownerReferences, system finalizers and annotations), what the target must
    allocate itself (Service clusterIP(s), nodePorts unless ``keep_node_ports``, PVC volumeName unless
    ``keep_volume_names``, Job controller-uid selectors, pod nodeName and token volumes), maps
    namespaces and storage classes, and adds ``options.labels``.
    """
    opts = options or SanitizeOptions()
    o: dict[str, Any] = copy.deepcopy(dict(obj))
    kind = o.get("kind", "")
    o.pop("status", None)
    meta = o.setdefault("metadata", {})
    for k in _STRIP_META:
        meta.pop(k, None)
    ann = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in _STRIP_ANNOTATIONS}
    if ann:
        meta["annotations"] = ann
    else:
        meta.pop("annotations", None)
    fins = [f for f in meta.get("finalizers") or [] if f not in _SYSTEM_FINALIZERS]
    if fins:
        meta["finalizers"] = fins
    else:
        meta.pop("finalizers", None)
    if meta.get("namespace"):
        meta["namespace"] = _map_ns(meta["namespace"], opts.namespace_mapping)
    labels = dict(meta.get("labels") or {})
    labels.update(opts.labels)
    spec = o.get("spec") if isinstance(o.get("spec"), dict) else None

    if kind == "Namespace":
        new = opts.namespace_mapping.get(meta.get("name", ""), meta.get("name", ""))
        meta["name"] = new
        if "kubernetes.io/metadata.name" in labels:
            labels["kubernetes.io/metadata.name"] = new
        o.pop("spec", None)  # spec.finalizers is set by the server
    elif kind == "Service" and spec is not None:
        if spec.get("clusterIP") not in ("None",):
            spec.pop("clusterIP", None)
            spec.pop("clusterIPs", None)
        else:
            spec["clusterIPs"] = ["None"]
        spec.pop("healthCheckNodePort", None)
        if not opts.keep_node_ports:
            for p in spec.get("ports") or []:
                p.pop("nodePort", None)
    elif kind == "PersistentVolumeClaim" and spec is not None:
        if not opts.keep_volume_names:
            spec.pop("volumeName", None)
        _map_sc(spec, opts.storage_class_mapping)
    elif kind == "PersistentVolume" and spec is not None:
        _map_sc(spec, opts.storage_class_mapping)
        ref = spec.get("claimRef")
        if ref:
            spec["claimRef"] = {
                k: v for k, v in ref.items() if k in ("apiVersion", "kind", "name", "namespace")
            }
            if ref.get("namespace"):
                spec["claimRef"]["namespace"] = _map_ns(ref["namespace"], opts.namespace_mapping)
    elif kind == "StatefulSet" and spec is not None:
        for vct in spec.get("volumeClaimTemplates") or []:
            vct.pop("status", None)
            vmeta = vct.get("metadata") or {}
            for k in ("creationTimestamp", "uid", "resourceVersion"):
                vmeta.pop(k, None)
            _map_sc(vct.setdefault("spec", {}), opts.storage_class_mapping)
    elif kind == "Job" and spec is not None:
        spec.pop("selector", None)
        tmeta = (spec.get("template") or {}).get("metadata") or {}
        tl = {k: v for k, v in (tmeta.get("labels") or {}).items() if k not in _JOB_LABELS}
        if tl:
            tmeta["labels"] = tl
        else:
            tmeta.pop("labels", None)
        labels = {k: v for k, v in labels.items() if k not in _JOB_LABELS}
    elif kind == "Pod" and spec is not None:
        spec.pop("nodeName", None)
        _strip_token_volumes(spec)
    elif kind == "ServiceAccount":
        secrets = [s for s in o.get("secrets") or [] if "-token-" not in str(s.get("name", ""))]
        if secrets:
            o["secrets"] = secrets
        else:
            o.pop("secrets", None)
    elif kind in ("RoleBinding", "ClusterRoleBinding"):
        for s in o.get("subjects") or []:
            if s.get("namespace"):
                s["namespace"] = _map_ns(s["namespace"], opts.namespace_mapping)
    if labels:
        meta["labels"] = labels
    return o
