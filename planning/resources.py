"""Pure decisions of the Kubernetes resource backup / restore / migration engine.

Nothing here does I/O, reads a clock or imports a client library: the export and apply tasks
(``tasks/kube_export.py``, ``tasks/kube_apply.py``) call these functions with plain dicts (the JSON
form of Kubernetes objects) and act on what they return.

What lives here:

* **Resource types** (:class:`ResourceType`, ``planning/resource_types.py``) and **label selectors**
  (:class:`LabelSelector`, ``planning/label_selector.py``), re-exported here.
* **Selection** (:class:`Selection`): include/exclude namespaces, a label selector, include/exclude
  kinds, cluster-scoped resources on request; which discovered resource types are exported at all
  (:func:`select_resource_types`) and why a single object is left out (:func:`skip_reason`): what
  controllers own (pods of ReplicaSets/StatefulSets/Jobs/DaemonSets, ReplicaSets of Deployments,
  Jobs of CronJobs, Endpoints/EndpointSlices of Services, ControllerRevisions) and what must not
  travel (service-account token secrets, events, ``kube-root-ca.crt``, the ``default``
  ServiceAccount the namespace controller creates, leases, nodes).
* **Sanitising** (:func:`sanitize`, ``planning/sanitize.py``): uid, resourceVersion,
  creationTimestamp, managedFields, generation, status, ownerReferences, system finalizers and annotations
  (``kubectl.kubernetes.io/last-applied-configuration``, ``pv.kubernetes.io/*``), Service
  clusterIP(s) and nodePorts (unless asked), PVC volume names, Job controller-uid selectors, pod
  node names and token volumes; namespace and storage-class mapping; provenance labels.
* **Restore order as data** (:data:`RESTORE_ORDER`, :func:`restore_rank`).
* **Existing-resource policy** (:class:`ExistingPolicy`; the decision from the server's dry-run
  answer, :func:`planning.apply_decision.decide_existing`).
* **Zero-replica migration** (:func:`zero_replicas`, :func:`activation_replicas`).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from planning.apply_decision import (
    BACKUP_NAME_LABEL,
    FLOW_RUN_LABEL,
    MANAGED_BY_LABEL,
    RESTORE_NAME_LABEL,
    ExistingPolicy,
)
from planning.label_selector import LabelSelector
from planning.resource_types import BUILTIN_GROUPS, NEVER_EXPORTED, ResourceType, is_custom_resource
from planning.sanitize import SanitizeOptions, sanitize
from stateferry.errors import InputError

__all__ = [
    "BACKUP_NAME_LABEL",
    "BUILTIN_GROUPS",
    "DEFAULT_EXCLUDED_NAMESPACES",
    "FLOW_RUN_LABEL",
    "MANAGED_BY_LABEL",
    "MIGRATION_REPLICAS_ANNOTATION",
    "NEVER_EXPORTED",
    "RESTORE_NAME_LABEL",
    "RESTORE_ORDER",
    "ExistingPolicy",
    "LabelSelector",
    "ResourceType",
    "SanitizeOptions",
    "Selection",
    "activation_patch",
    "activation_replicas",
    "is_custom_resource",
    "object_key",
    "parse_mapping",
    "restore_rank",
    "sanitize",
    "select_resource_types",
    "skip_reason",
    "sort_for_restore",
    "zero_replicas",
]

MIGRATION_REPLICAS_ANNOTATION = "stateferry.io/migration-replicas"

#: Namespaces left out when no include list is given (the seed's ``--exclude-namespaces kube-system``).
DEFAULT_EXCLUDED_NAMESPACES: tuple[str, ...] = ("kube-system", "kube-public", "kube-node-lease")

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


# --------------------------------------------------------------------------------------------------
# selection


def _names(value: Iterable[str] | str | None, field_name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [v for v in value.split(",")]
    out = tuple(v.strip() for v in value if v and v.strip())
    return out


@dataclass(frozen=True)
class Selection:
    """What a backup (or migration) takes from the source cluster.

    Attributes:
        include_namespaces: namespaces to take; empty = every namespace except
            :data:`DEFAULT_EXCLUDED_NAMESPACES` and ``exclude_namespaces``. ``*`` = every namespace.
        exclude_namespaces: namespaces never taken.
        label_selector: only objects whose labels match (namespaced objects; cluster-scoped ones
            too when ``include_cluster_resources`` is True).
        include_kinds: only these kinds (``ConfigMap``, ``configmaps``, ``deployments.apps``, ...);
            empty = all.
        exclude_kinds: never these kinds.
        include_cluster_resources: ``True`` = every cluster-scoped resource (StorageClasses,
            ClusterRoles, PVs, ...); ``False`` = none at all; ``None`` (default) = only what the
            selected namespaces need: their Namespace objects and the CRDs of their custom resources.
    """

    include_namespaces: tuple[str, ...] = ()
    exclude_namespaces: tuple[str, ...] = ()
    label_selector: str = ""
    include_kinds: tuple[str, ...] = ()
    exclude_kinds: tuple[str, ...] = ()
    include_cluster_resources: bool | None = None

    @classmethod
    def build(
        cls,
        *,
        include_namespaces: Iterable[str] | str | None = None,
        exclude_namespaces: Iterable[str] | str | None = None,
        label_selector: str | None = None,
        include_kinds: Iterable[str] | str | None = None,
        exclude_kinds: Iterable[str] | str | None = None,
        include_cluster_resources: bool | None = None,
    ) -> Selection:
        """Validate user parameters (lists or comma-separated strings) into a :class:`Selection`.

        Raises:
            InputError: naming the parameter when a namespace name or label selector is malformed,
                or a namespace is both included and excluded.
        """
        inc = _names(include_namespaces, "include_namespaces")
        exc = _names(exclude_namespaces, "exclude_namespaces")
        for fname, names in (("include_namespaces", inc), ("exclude_namespaces", exc)):
            for n in names:
                if n != "*" and not _DNS1123_LABEL.match(n):
                    raise InputError(
                        fname,
                        f"{n!r} is not a valid namespace name",
                        "use lower-case RFC 1123 labels such as `cms` or `team-a`",
                    )
        both = sorted(set(inc) & set(exc))
        if both:
            raise InputError(
                "exclude_namespaces",
                f"{', '.join(both)} is both included and excluded",
                "remove it from one of the two lists",
            )
        sel = LabelSelector.parse(label_selector)
        return cls(
            include_namespaces=inc,
            exclude_namespaces=exc,
            label_selector=sel.text,
            include_kinds=_names(include_kinds, "include_kinds"),
            exclude_kinds=_names(exclude_kinds, "exclude_kinds"),
            include_cluster_resources=include_cluster_resources,
        )

    @property
    def selector(self) -> LabelSelector:
        """The parsed label selector."""
        return LabelSelector.parse(self.label_selector)

    @property
    def all_namespaces(self) -> bool:
        """True if no explicit namespace list restricts the selection."""
        return not self.include_namespaces or "*" in self.include_namespaces

    def namespace_selected(self, namespace: str) -> bool:
        """True if objects of ``namespace`` are taken."""
        if namespace in self.exclude_namespaces:
            return False
        if "*" in self.include_namespaces:
            return True
        if self.include_namespaces:
            return namespace in self.include_namespaces
        return namespace not in DEFAULT_EXCLUDED_NAMESPACES

    def kind_selected(self, rtype: ResourceType) -> bool:
        """True if objects of ``rtype`` are taken according to include/exclude kinds."""
        if self.exclude_kinds and _kind_matches(rtype, self.exclude_kinds):
            return False
        if self.include_kinds:
            return _kind_matches(rtype, self.include_kinds)
        return True

    def to_dict(self) -> dict[str, Any]:
        """JSON form (recorded in the archive manifest)."""
        return {
            "include_namespaces": list(self.include_namespaces),
            "exclude_namespaces": list(self.exclude_namespaces),
            "label_selector": self.label_selector,
            "include_kinds": list(self.include_kinds),
            "exclude_kinds": list(self.exclude_kinds),
            "include_cluster_resources": self.include_cluster_resources,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Selection:
        """Inverse of :meth:`to_dict`."""
        return cls.build(
            include_namespaces=data.get("include_namespaces") or (),
            exclude_namespaces=data.get("exclude_namespaces") or (),
            label_selector=data.get("label_selector") or "",
            include_kinds=data.get("include_kinds") or (),
            exclude_kinds=data.get("exclude_kinds") or (),
            include_cluster_resources=data.get("include_cluster_resources"),
        )


def _kind_matches(rtype: ResourceType, names: Sequence[str]) -> bool:
    spellings = {
        rtype.kind.lower(),
        rtype.plural.lower(),
        f"{rtype.plural}.{rtype.group}".lower() if rtype.group else rtype.plural.lower(),
        f"{rtype.kind}.{rtype.group}".lower() if rtype.group else rtype.kind.lower(),
    }
    return any(n.lower() in spellings for n in names)


def select_resource_types(types: Iterable[ResourceType], selection: Selection) -> list[ResourceType]:
    """The discovered resource types a backup lists, in restore order.

    One version per group/resource (the first one discovery reports, i.e. the preferred version),
    never the types in :data:`NEVER_EXPORTED`, only the kinds the selection asks for, and
    cluster-scoped types only if cluster resources are requested (``True``) or needed (``None``:
    Namespaces and CRDs).
    """
    seen: set[tuple[str, str]] = set()
    out: list[ResourceType] = []
    for t in types:
        key = (t.group, t.plural)
        if key in seen or "/" in t.plural:
            continue
        seen.add(key)
        if key in NEVER_EXPORTED:
            continue
        is_needed_cluster_type = t.kind in ("Namespace", "CustomResourceDefinition")
        if not t.namespaced:
            if selection.include_cluster_resources is False and t.kind != "Namespace":
                continue
            if selection.include_cluster_resources is None and not is_needed_cluster_type:
                continue
        if not selection.kind_selected(t) and t.kind != "Namespace":
            continue
        out.append(t)
    return sort_types_for_restore(out)


# --------------------------------------------------------------------------------------------------
# per-object skip rules

#: Owner kinds whose controllers recreate the owned object on the target.
_CONTROLLER_OWNERS: dict[str, frozenset[str]] = {
    "Pod": frozenset({"ReplicaSet", "StatefulSet", "Job", "DaemonSet", "ReplicationController"}),
    "ReplicaSet": frozenset({"Deployment"}),
    "Job": frozenset({"CronJob"}),
    "PersistentVolumeClaim": frozenset(),  # PVCs of StatefulSets have no owner; they travel
}


def skip_reason(obj: Mapping[str, Any]) -> str | None:
    """Why ``obj`` is left out of a backup even though its type is selected, or None to keep it.

    Args:
        obj: the object as the API returns it (``kind`` and ``apiVersion`` set).
    """
    kind = obj.get("kind", "")
    meta = obj.get("metadata") or {}
    name = meta.get("name", "")
    owners = meta.get("ownerReferences") or []
    for ref in owners:
        if ref.get("controller") and ref.get("kind") in _CONTROLLER_OWNERS.get(kind, frozenset()):
            return f"owned by {ref['kind']} {ref.get('name', '')}: its controller recreates it"
    if "stateferry.io/mover" in (meta.get("labels") or {}) or (
        kind == "Secret" and name == "stateferry-mover-s3"
    ):
        return "stateferry's own temporary data mover"
    if kind in ("Endpoints", "EndpointSlice"):
        return "recreated by the endpoints controller for its Service"
    if kind == "ControllerRevision":
        return "history of its StatefulSet/DaemonSet: recreated by the controller"
    if kind == "Event":
        return "events do not travel"
    if kind == "Secret" and obj.get("type") == "kubernetes.io/service-account-token":
        return "service-account token: the target cluster issues its own"
    if kind == "ConfigMap" and name == "kube-root-ca.crt":
        return "the target cluster publishes its own CA bundle"
    if kind == "ServiceAccount" and name == "default" and not obj.get("imagePullSecrets"):
        return "the default ServiceAccount is created by the target's namespace controller"
    if kind == "Pod" and (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return "a finished pod"
    if kind == "Service" and name == "kubernetes" and meta.get("namespace") == "default":
        return "the API server's own Service exists in every cluster"
    if kind == "Namespace" and name in (*DEFAULT_EXCLUDED_NAMESPACES, "default"):
        return "a system namespace that exists in every cluster"
    if meta.get("deletionTimestamp"):
        return "being deleted"
    return None


# --------------------------------------------------------------------------------------------------
# restore order

#: Restore order as data: kinds earlier in this list are applied first. Custom resources go where
#: ``"*custom*"`` stands (after their CRDs and everything they may reference, before workloads);
#: built-in kinds not listed go where ``"*other*"`` stands. Workloads come last, so their pods
#: start only when their volumes, secrets and config exist.
RESTORE_ORDER: tuple[str, ...] = (
    "CustomResourceDefinition",
    "Namespace",
    "StorageClass",
    "PriorityClass",
    "ClusterRole",
    "ClusterRoleBinding",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "LimitRange",
    "ResourceQuota",
    "Role",
    "RoleBinding",
    "NetworkPolicy",
    "Service",
    "Ingress",
    "PodDisruptionBudget",
    "*other*",
    "*custom*",
    "HorizontalPodAutoscaler",
    "PodTemplate",
    "ReplicationController",
    "DaemonSet",
    "StatefulSet",
    "Deployment",
    "ReplicaSet",
    "CronJob",
    "Job",
    "Pod",
)
_RANK = {k: i for i, k in enumerate(RESTORE_ORDER)}


def restore_rank(kind: str, group: str = "") -> int:
    """Position of ``kind`` in :data:`RESTORE_ORDER` (custom resources share the ``*custom*`` rank)."""
    if is_custom_resource(group):
        return _RANK["*custom*"]
    return _RANK.get(kind, _RANK["*other*"])


def sort_types_for_restore(types: Iterable[ResourceType]) -> list[ResourceType]:
    """Resource types sorted by :func:`restore_rank`, then by group and plural (stable)."""
    return sorted(types, key=lambda t: (restore_rank(t.kind, t.group), t.group, t.plural))


def _group_of(api_version: str) -> str:
    return api_version.split("/", 1)[0] if "/" in api_version else ""


def sort_for_restore(objs: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Objects in restore order (by kind rank, then namespace, then name)."""
    return sorted(
        objs,
        key=lambda o: (
            restore_rank(o.get("kind", ""), _group_of(o.get("apiVersion", ""))),
            _group_of(o.get("apiVersion", "")),
            o.get("kind", ""),
            (o.get("metadata") or {}).get("namespace", ""),
            (o.get("metadata") or {}).get("name", ""),
        ),
    )


def object_key(obj: Mapping[str, Any]) -> str:
    """``Kind[.group] namespace/name`` (or ``Kind name`` when cluster-scoped): names an object in reports."""
    meta = obj.get("metadata") or {}
    group = _group_of(obj.get("apiVersion", ""))
    kind = f"{obj.get('kind', '?')}.{group}" if group else str(obj.get("kind", "?"))
    ns = meta.get("namespace")
    return f"{kind} {ns}/{meta.get('name', '?')}" if ns else f"{kind} {meta.get('name', '?')}"


# --------------------------------------------------------------------------------------------------
# mappings


def parse_mapping(value: Mapping[str, str] | str | None, field_name: str) -> dict[str, str]:
    """Parse a ``{old: new}`` mapping given as a dict or as ``"old:new,old2:new2"``.

    Raises:
        InputError: naming ``field_name`` if an entry is malformed or a target name is invalid.
    """
    if not value:
        return {}
    items: list[tuple[str, str]] = []
    if isinstance(value, str):
        for part in value.split(","):
            if not part.strip():
                continue
            if ":" not in part:
                raise InputError(
                    field_name, f"entry {part.strip()!r} has no ':'", "write `old:new,old2:new2`"
                )
            a, b = part.split(":", 1)
            items.append((a.strip(), b.strip()))
    else:
        items = [(str(a).strip(), str(b).strip()) for a, b in value.items()]
    out: dict[str, str] = {}
    for a, b in items:
        if not b or (not a and field_name != "storage_class_mapping"):  # "" = claims without a class
            raise InputError(
                field_name, f"entry {a!r}: {b!r} has an empty side", "name both the old and the new name"
            )
        if not _DNS1123_SUBDOMAIN.match(b):
            raise InputError(
                field_name, f"{b!r} is not a valid name", "use lower-case RFC 1123 names such as `cms-dr`"
            )
        out[a] = b
    targets = list(out.values())
    dupes = sorted({t for t in targets if targets.count(t) > 1})
    if dupes and field_name == "namespace_mapping":
        raise InputError(
            field_name, f"several namespaces map to {', '.join(dupes)}", "map each to its own namespace"
        )
    return out


# --------------------------------------------------------------------------------------------------
# zero-replica migration

_SCALABLE = ("Deployment", "StatefulSet")


def zero_replicas(obj: Mapping[str, Any]) -> dict[str, Any]:
    """For Deployments and StatefulSets: ``replicas: 0`` and the original count in
    :data:`MIGRATION_REPLICAS_ANNOTATION`; other objects are returned unchanged (copied).

    An object already carrying the annotation keeps it (idempotent re-runs).
    """
    o: dict[str, Any] = copy.deepcopy(dict(obj))
    if o.get("kind") not in _SCALABLE:
        return o
    spec = o.setdefault("spec", {})
    ann = o.setdefault("metadata", {}).setdefault("annotations", {})
    if MIGRATION_REPLICAS_ANNOTATION not in ann:
        replicas = spec.get("replicas")
        ann[MIGRATION_REPLICAS_ANNOTATION] = str(1 if replicas is None else int(replicas))
    spec["replicas"] = 0
    return o


def activation_replicas(obj: Mapping[str, Any]) -> int | None:
    """The replica count to restore on activation (from the annotation), or None if not parked.

    Raises:
        InputError: if the annotation is present but not a non-negative integer.
    """
    ann = (obj.get("metadata") or {}).get("annotations") or {}
    raw = ann.get(MIGRATION_REPLICAS_ANNOTATION)
    if raw is None:
        return None
    try:
        n = int(raw)
    except (TypeError, ValueError):
        n = -1
    if n < 0:
        raise InputError(
            f"metadata.annotations[{MIGRATION_REPLICAS_ANNOTATION}]",
            f"{object_key(obj)} carries {raw!r}, not a replica count",
            "set it to the intended replica count or scale the object yourself",
        )
    return n


def activation_patch(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """Merge patch that scales a parked workload back and removes the annotation (None if not parked)."""
    n = activation_replicas(obj)
    if n is None:
        return None
    return {"spec": {"replicas": n}, "metadata": {"annotations": {MIGRATION_REPLICAS_ANNOTATION: None}}}
