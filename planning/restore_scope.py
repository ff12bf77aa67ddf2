"""What a resource restore may apply (pure, no I/O): the archive checked against its manifest, the
restore's own selection, cluster-scoped kinds by name only, RBAC/admission kinds by opt-in only.

An archive read back from storage is untrusted (the manifest's sha256 is not a signature), so:

1. :func:`check_archive` refuses any object that its manifest's selection would not have exported
   (wrong namespace, kind, label, a cluster-scoped object the selection did not take, a type never
   exported, a member path that does not name the object it holds, counts that do not add up) and
   any volume entry that is not this backup's ``volumes/<ns>/<pvc>.tar.gz`` of an archived PVC.
2. :func:`plan_scope` takes from the archive what the restore asks for: objects of the selected
   namespaces (and those Namespace objects); other cluster-scoped objects only when their kind is
   named in ``include_cluster_kinds``; *privileged* objects (:func:`privilege_reason`) only with
   ``allow_rbac_and_admission=True``. Whether a kind is cluster-scoped comes from the target
   cluster's discovery (and the archive's CRDs for custom kinds the target does not serve yet),
   never from the archive's claims.

Privileged: ClusterRoles and ClusterRoleBindings, every kind of ``admissionregistration.k8s.io``
(mutating/validating webhooks, ValidatingAdmissionPolicy(Binding), MutatingAdmissionPolicy(Binding)),
APIServices, CRDs with a conversion webhook, hostPath PersistentVolumes, and RoleBindings whose
subjects are not ServiceAccounts of the binding's own namespace (a Role/RoleBinding that stays
inside its namespace grants nothing beyond what a restored pod of that namespace already has).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from planning.archive_layout import ArchiveRefused, Manifest, MemberPath
from planning.resources import (
    NEVER_EXPORTED,
    ResourceType,
    Selection,
    _kind_matches,
    object_key,
    skip_reason,
)
from stateferry.errors import InputError

__all__ = [
    "PRIVILEGED_GROUPS",
    "PRIVILEGED_KINDS",
    "ScopePlan",
    "check_archive",
    "plan_scope",
    "privilege_reason",
]

#: Every kind of these API groups is privileged (admission control, aggregated APIs).
PRIVILEGED_GROUPS: frozenset[str] = frozenset({"admissionregistration.k8s.io", "apiregistration.k8s.io"})
#: (group, kind) pairs that are privileged whatever their content.
PRIVILEGED_KINDS: frozenset[tuple[str, str]] = frozenset(
    {
        ("rbac.authorization.k8s.io", "ClusterRole"),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
        ("certificates.k8s.io", "CertificateSigningRequest"),
    }
)

_FIX_BACKUP = (
    "restore another backup; this archive was changed after it was written or not written by stateferry"
)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _group(obj: Mapping[str, Any]) -> str:
    api = str(obj.get("apiVersion", ""))
    return api.split("/", 1)[0] if "/" in api else ""


def _version(obj: Mapping[str, Any]) -> str:
    return str(obj.get("apiVersion", "")).rsplit("/", 1)[-1]


def privilege_reason(obj: Mapping[str, Any]) -> str | None:
    """Why restoring ``obj`` needs ``allow_rbac_and_admission`` (None if it does not)."""
    kind, group = str(obj.get("kind", "")), _group(obj)
    meta = obj.get("metadata") or {}
    spec = _dict(obj.get("spec"))
    if group in PRIVILEGED_GROUPS:
        return f"{kind} ({group}) intercepts or serves API requests"
    if (group, kind) in PRIVILEGED_KINDS:
        return f"{kind} grants permissions cluster-wide"
    conversion = (spec.get("conversion") or {}).get("strategy") or "None"
    if group == "apiextensions.k8s.io" and kind == "CustomResourceDefinition" and conversion != "None":
        return "CustomResourceDefinition with a conversion webhook"
    if group == "" and kind == "PersistentVolume" and "hostPath" in spec:
        return "hostPath PersistentVolume exposes a node's filesystem"
    if group == "rbac.authorization.k8s.io" and kind == "RoleBinding":
        ns = meta.get("namespace")
        for s in obj.get("subjects") or []:
            if not isinstance(s, dict):
                return "RoleBinding with a malformed subject"
            if s.get("kind") != "ServiceAccount" or (s.get("namespace") or ns) != ns:
                who = f"{s.get('kind')} {s.get('namespace', '') + '/' if s.get('namespace') else ''}"
                return f"RoleBinding grants {who}{s.get('name')} (outside namespace {ns})"
    return None


# --------------------------------------------------------------------------------------------------
# archive vs manifest


def _refuse(problem: str) -> ArchiveRefused:
    return ArchiveRefused("backup_name", problem, _FIX_BACKUP)


def check_archive(
    manifest: Manifest,
    members: Sequence[tuple[MemberPath, Mapping[str, Any]]],
    *,
    prefix: str,
) -> None:
    """Refuse an archive whose objects are not exactly what its manifest says it selected.

    Args:
        manifest: the parsed manifest.
        members: ``(member path, object)`` for every object of the tarball.
        prefix: the archive's key prefix (volume keys must lie under this backup's own folder).

    Raises:
        ArchiveRefused: naming the first offending object and what is wrong with it.
    """
    try:
        sel = Selection.from_dict(manifest.selection)
        for ns in manifest.namespaces:
            if not isinstance(ns, str) or ns == "*":
                raise InputError("namespaces", f"{ns!r} is not a namespace name", "-")
            Selection.build(include_namespaces=[ns])
        types: dict[tuple[str, str, str], ResourceType] = {}
        for rt in manifest.resource_types:
            t = ResourceType.from_dict(rt)
            types[(t.group, t.version, t.plural)] = t
    except InputError as exc:
        raise _refuse(f"its manifest's selection is invalid ({exc.problem})") from None
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise _refuse(
            f"its manifest's selection or resource types are malformed ({type(exc).__name__})"
        ) from None
    selector = sel.selector
    namespaces = set(manifest.namespaces)
    seen: Counter[str] = Counter()
    pvcs: set[tuple[str, str]] = set()
    for path, obj in members:
        meta = _dict(obj.get("metadata"))
        key = object_key(obj)[:200]
        found = types.get((path.group, path.version, path.plural))
        if (
            found is None
            or found.kind != obj.get("kind")
            or _group(obj) != path.group
            or _version(obj) != path.version
            or meta.get("name") != path.name
            or (meta.get("namespace") or None) != path.namespace
            or found.namespaced != (path.namespace is not None)
        ):
            raise _refuse(f"member for {key} does not match its path or the manifest's resource types")
        t = found
        if (t.group, t.plural) in NEVER_EXPORTED or skip_reason(obj):
            raise _refuse(f"{key} is of a kind or sort a backup never holds")
        is_ns = t.kind == "Namespace" and t.group == ""
        is_crd = t.kind == "CustomResourceDefinition" and t.group == "apiextensions.k8s.io"
        if not is_ns and not sel.kind_selected(t):
            raise _refuse(f"{key} is a kind the manifest's selection excludes")
        if not is_ns and not is_crd and selector and not selector.matches(meta.get("labels") or {}):
            raise _refuse(f"{key} does not match the manifest's label selector {sel.label_selector!r}")
        if t.namespaced:
            ns = str(path.namespace)
            if ns not in namespaces or not sel.namespace_selected(ns):
                raise _refuse(f"{key} lies in namespace {ns!r}, which the manifest did not select")
            if t.kind == "PersistentVolumeClaim" and t.group == "":
                pvcs.add((ns, path.name))
        elif is_ns:
            if path.name not in namespaces:
                raise _refuse(f"{key} is not one of the manifest's namespaces")
        elif sel.include_cluster_resources is not True and not (
            is_crd and sel.include_cluster_resources is None
        ):
            raise _refuse(f"{key} is cluster-scoped but the manifest's selection took no such objects")
        seen[t.group_kind] += 1
    if dict(seen) != {k: v for k, v in manifest.counts.items() if v}:
        raise _refuse(
            f"the tarball holds {dict(sorted(seen.items()))} but the manifest records {manifest.counts}"
        )
    base = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    for v in manifest.volumes:
        if not isinstance(v, dict) or not all(
            isinstance(v.get(k, 0), int) and not isinstance(v.get(k, 0), bool) for k in ("files", "bytes")
        ):
            raise _refuse(f"volume entry {str(v)[:100]} is malformed")
        ns, pvc = str(v.get("namespace", "")), str(v.get("pvc", ""))
        want = f"{base}{manifest.backup_name}/volumes/{ns}/{pvc}.tar.gz"
        if (ns, pvc) not in pvcs or v.get("key") != want:
            raise _refuse(f"volume entry {ns[:64]}/{pvc[:64]} is not a PVC of this backup at {want[:200]}")


# --------------------------------------------------------------------------------------------------
# restore scope


@dataclass
class ScopePlan:
    """What a restore takes from a (checked) archive.

    Attributes:
        selected: the objects to restore (unchanged, in archive order).
        left_out: reason -> count of archived objects the restore does not take.
        cluster_scoped: keys of selected cluster-scoped objects other than Namespaces.
        privileged: ``key: reason`` of selected privileged objects.
        cluster_kinds: group kinds of the selected cluster-scoped objects (Namespace included): the
            apply refuses any other cluster-scoped object.
    """

    selected: list[Mapping[str, Any]] = field(default_factory=list)
    left_out: dict[str, int] = field(default_factory=dict)
    cluster_scoped: list[str] = field(default_factory=list)
    privileged: list[str] = field(default_factory=list)
    cluster_kinds: frozenset[str] = frozenset()

    @property
    def needs_approval(self) -> bool:
        """True if cluster-scoped (other than Namespaces) or privileged objects will be applied."""
        return bool(self.cluster_scoped or self.privileged)


def _names(value: Iterable[str] | str | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(",")
    return [v.strip() for v in value if v and v.strip()]


def plan_scope(
    objects: Iterable[tuple[MemberPath, Mapping[str, Any]]],
    *,
    namespaced: Mapping[tuple[str, str], bool],
    include_namespaces: Iterable[str] | str | None = None,
    include_kinds: Iterable[str] | str | None = None,
    exclude_kinds: Iterable[str] | str | None = None,
    include_cluster_kinds: Iterable[str] | str | None = None,
    allow_rbac_and_admission: bool = False,
) -> ScopePlan:
    """Select what to restore and refuse privileged objects without the opt-in.

    Args:
        objects: ``(member path, object)`` pairs of a checked archive.
        namespaced: ``(group, kind)`` -> namespaced, as the target serves it (plus the archive's
            CRDs for kinds not served yet); for a kind missing here the archive's path decides (the
            apply refuses it if the target then serves it cluster-scoped).
        include_namespaces: source namespaces to restore (empty = all of the archive's).
        include_kinds / exclude_kinds: namespaced kinds to restore / never restore (exclude also
            applies to cluster-scoped kinds).
        include_cluster_kinds: cluster-scoped kinds to restore (``StorageClass``,
            ``customresourcedefinitions.apiextensions.k8s.io``, ...); Namespaces of the restored
            namespaces need not be named.
        allow_rbac_and_admission: restore privileged objects (:func:`privilege_reason`).

    Raises:
        InputError: a malformed parameter, or privileged objects are selected without the opt-in
            (naming ``allow_rbac_and_admission`` and listing them).
    """
    sel = Selection.build(
        include_namespaces=include_namespaces, include_kinds=include_kinds, exclude_kinds=exclude_kinds
    )
    cluster_kinds = _names(include_cluster_kinds)
    plan = ScopePlan()
    left: Counter[str] = Counter()
    privileged: list[tuple[str, str]] = []
    kinds: set[str] = set()
    for path, obj in objects:
        kind, group = str(obj.get("kind", "")), _group(obj)
        key = object_key(obj)
        rtype = ResourceType(group, _version(obj), kind, path.plural, True)
        known = namespaced.get((group, kind))
        is_namespaced = (path.namespace is not None) if known is None else known
        if is_namespaced != (path.namespace is not None):
            raise ArchiveRefused(
                "backup_name",
                f"{key[:200]} is {'namespaced' if is_namespaced else 'cluster-scoped'} in the target "
                "but not in the archive",
                _FIX_BACKUP,
            )
        if sel.exclude_kinds and _kind_matches(rtype, sel.exclude_kinds) and kind != "Namespace":
            left["excluded by exclude_kinds"] += 1
            continue
        if kind == "Namespace" and group == "":
            name = str((obj.get("metadata") or {}).get("name", ""))
            if sel.include_namespaces and not sel.namespace_selected(name):
                left["namespace not selected"] += 1
                continue
        elif is_namespaced:
            if sel.include_namespaces and not sel.namespace_selected(str(path.namespace)):
                left["namespace not selected"] += 1
                continue
            if not sel.kind_selected(rtype):
                left["kind not selected"] += 1
                continue
        elif not _kind_matches(rtype, cluster_kinds):
            left["cluster-scoped kind not named in include_cluster_kinds"] += 1
            continue
        else:
            plan.cluster_scoped.append(key)
        if not is_namespaced:
            kinds.add(rtype.group_kind)
        reason = privilege_reason(obj)
        if reason:
            privileged.append((key, reason))
        plan.selected.append(obj)
    plan.privileged = [f"{k}: {r}" for k, r in privileged]
    plan.left_out = dict(sorted(left.items()))
    plan.cluster_kinds = frozenset(kinds)
    if privileged and not allow_rbac_and_admission:
        shown = "; ".join(plan.privileged[:5]) + (" …" if len(privileged) > 5 else "")
        raise InputError(
            "allow_rbac_and_admission",
            f"the restore would apply {len(privileged)} RBAC/admission object(s) ({shown}); "
            "nothing was changed",
            "pass allow_rbac_and_admission=True to restore them (the run then asks for approval), or "
            "leave them out with exclude_kinds / include_namespaces / include_cluster_kinds",
        )
    return plan


def check_auto_approve(plan: ScopePlan, auto_approve: bool) -> None:
    """RBAC and admission objects need an explicit opt-in *and* a person's approval: ``auto_approve``
    (a flow parameter, set by whoever starts the run) cannot stand in for the second.

    Raises:
        InputError: naming ``auto_approve`` when the plan holds privileged objects (nothing changed).
    """
    if auto_approve and plan.privileged:
        shown = "; ".join(plan.privileged[:3]) + (" …" if len(plan.privileged) > 3 else "")
        raise InputError(
            "auto_approve",
            f"the restore would apply {len(plan.privileged)} RBAC/admission object(s) ({shown}), which"
            " always wait for an approval in the UI; nothing was changed",
            "remove auto_approve and approve the plan in the run's Resume form, or leave those objects"
            " out with exclude_kinds / include_namespaces",
        )
