"""What a restore does with an object that exists in the target, and how it differs (pure).

``skip`` | ``update`` (:class:`ExistingPolicy`, :func:`decide_apply`), the client-side subset diff
(:func:`diff_objects`), the diff of a server-side dry run (:func:`dry_run_diff`) and the replacement
body of an update (:func:`carry_over_immutable`). Secret values never appear in a diff
(:mod:`planning.kube_redaction`). Re-exported by :mod:`planning.resources`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from planning.kube_redaction import SECRET_FIELDS, is_secret, secret_diff
from stateferry.errors import InputError

__all__ = [
    "BACKUP_NAME_LABEL",
    "FLOW_RUN_LABEL",
    "MANAGED_BY_LABEL",
    "RESTORE_NAME_LABEL",
    "ApplyAction",
    "ApplyDecision",
    "ExistingPolicy",
    "carry_over_immutable",
    "decide_apply",
    "diff_objects",
    "dry_run_diff",
]

BACKUP_NAME_LABEL = "stateferry.io/backup-name"
RESTORE_NAME_LABEL = "stateferry.io/restore-name"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
FLOW_RUN_LABEL = "stateferry.io/flow-run-id"

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

_CONTROLLER_ANNOTATIONS = frozenset(_STRIP_ANNOTATIONS) - {"kubectl.kubernetes.io/last-applied-configuration"}


class ExistingPolicy(StrEnum):
    """What a restore does with an object that already exists in the target."""

    SKIP = "skip"
    UPDATE = "update"

    @classmethod
    def parse(
        cls, value: str | ExistingPolicy, field_name: str = "existing_resource_policy"
    ) -> ExistingPolicy:
        """Validate a user-given policy."""
        try:
            return cls(str(value).lower())
        except ValueError:
            raise InputError(field_name, f"{value!r} is not a policy", "use `skip` or `update`") from None


class ApplyAction(StrEnum):
    """What the apply step does with one object."""

    CREATE = "create"
    UPDATE = "update"
    UNCHANGED = "unchanged"
    SKIP_EXISTING = "skip-existing"


@dataclass(frozen=True)
class ApplyDecision:
    """The decision for one object.

    Attributes:
        action: create / update / unchanged / skip-existing.
        diff: lines describing how the target differs from the backup (``path: target -> backup``).
        body: what to send (for create: the sanitised object; for update: the replacement with the
            fields the target owns carried over); None when nothing is sent.
    """

    action: ApplyAction
    diff: tuple[str, ...] = ()
    body: dict[str, Any] | None = None


#: Labels that change on every restore and never count as a difference.
_VOLATILE_LABELS = (RESTORE_NAME_LABEL, FLOW_RUN_LABEL)


def _comparable(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A shallow view of ``obj`` without server-assigned and volatile fields (nested values shared)."""
    o = dict(obj)
    o.pop("status", None)
    meta = dict(o.get("metadata") or {})
    o["metadata"] = meta
    for k in _STRIP_META:
        meta.pop(k, None)
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k not in _VOLATILE_LABELS}
    if labels:
        meta["labels"] = labels
    else:
        meta.pop("labels", None)
    ann = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in _STRIP_ANNOTATIONS}
    if ann:
        meta["annotations"] = ann
    else:
        meta.pop("annotations", None)
    meta.pop("finalizers", None)
    return o


def _fmt(v: Any) -> str:
    s = json.dumps(v, sort_keys=True, default=str)
    return s if len(s) <= 120 else s[:117] + "..."


def _diff(path: str, live: Any, want: Any, out: list[str]) -> None:
    """Compare ``want`` (the backup) against ``live`` (the target), only on fields ``want`` sets.

    Fields the server defaults (present only in ``live``) are not differences; lists are compared
    element by element when their lengths agree.
    """
    if isinstance(want, dict) and isinstance(live, dict):
        for k in sorted(want):
            sub = f"{path}.{k}" if path else str(k)
            if k not in live:
                if want[k] not in (None, {}, [], ""):
                    out.append(f"+ {sub}: {_fmt(want[k])}")
                continue
            _diff(sub, live[k], want[k], out)
        return
    if isinstance(want, list) and isinstance(live, list) and len(want) == len(live):
        for i, (lv, wv) in enumerate(zip(live, want, strict=True)):
            _diff(f"{path}[{i}]", lv, wv, out)
        return
    if want != live:
        out.append(f"~ {path}: {_fmt(live)} -> {_fmt(want)}")


def diff_objects(live: Mapping[str, Any], desired: Mapping[str, Any]) -> list[str]:
    """Per-field differences between the live target object and the desired (sanitised) one.

    Server-assigned and volatile fields are ignored; data keys present only in the live object of a
    ConfigMap/Secret are reported as removals. A Secret's ``data``/``stringData`` are compared key
    by key and reported without their values (:func:`planning.kube_redaction.secret_diff`).

    Returns:
        Lines ``~ path: live -> desired``, ``+ path: desired`` and ``- path: live``; empty if equal.
    """
    a, b = _comparable(live), _comparable(desired)
    out: list[str] = []
    secret_lines: list[str] = []
    if is_secret(live) or is_secret(desired):  # key-level only: never a Secret value
        secret_lines = secret_diff(a, b)
        for f in SECRET_FIELDS:
            a.pop(f, None)
            b.pop(f, None)
    _diff("", a, b, out)
    out.extend(secret_lines)
    for top in ("data", "stringData", "binaryData"):
        la, lb = a.get(top) or {}, b.get(top) or {}
        if isinstance(la, dict) and isinstance(lb, dict) and top in b:
            out.extend(f"- {top}.{k}: {_fmt(la[k])}" for k in sorted(set(la) - set(lb)))
    for key in ("labels", "annotations"):
        la = (a.get("metadata") or {}).get(key) or {}
        lb = (b.get("metadata") or {}).get(key) or {}
        out.extend(f"- metadata.{key}.{k}: {_fmt(la[k])}" for k in sorted(set(la) - set(lb)))
    return out


#: Metadata a server rewrites on every write: never a difference of a dry-run answer.
_SERVER_META = ("resourceVersion", "generation", "managedFields", "creationTimestamp", "uid", "selfLink")
_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def _full_view(obj: Mapping[str, Any]) -> dict[str, Any]:
    o = dict(obj)
    o.pop("status", None)
    meta = dict(o.get("metadata") or {})
    o["metadata"] = meta
    for k in _SERVER_META:
        meta.pop(k, None)
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k not in _VOLATILE_LABELS}
    meta["labels"] = labels
    meta["annotations"] = {k: v for k, v in (meta.get("annotations") or {}).items() if k != _LAST_APPLIED}
    return o


def _diff_both(path: str, live: Any, after: Any, out: list[str]) -> None:
    """Like :func:`_diff`, but fields only ``live`` has are removals (an update replaces them)."""
    if isinstance(after, dict) and isinstance(live, dict):
        for k in sorted(set(after) | set(live), key=str):
            sub = f"{path}.{k}" if path else str(k)
            if k not in live:
                if after[k] not in (None, {}, [], ""):
                    out.append(f"+ {sub}: {_fmt(after[k])}")
            elif k not in after:
                if live[k] not in (None, {}, [], ""):
                    out.append(f"- {sub}: {_fmt(live[k])}")
            else:
                _diff_both(sub, live[k], after[k], out)
        return
    if isinstance(after, list) and isinstance(live, list) and len(after) == len(live):
        for i, (lv, av) in enumerate(zip(live, after, strict=True)):
            _diff_both(f"{path}[{i}]", lv, av, out)
        return
    if after != live:
        out.append(f"~ {path}: {_fmt(live)} -> {_fmt(after)}")


def dry_run_diff(live: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """What an update really changes: the live object against the server's ``dryRun=All`` answer
    to the update, field by field in both directions (server defaults included; ``status``,
    server-rewritten metadata and volatile labels ignored). Secret ``data``/``stringData`` are
    reported per key without values.
    """
    a, b = _full_view(live), _full_view(after)
    secret_lines: list[str] = []
    if is_secret(live) or is_secret(after):
        secret_lines = secret_diff(a, b)
        for f in SECRET_FIELDS:
            a.pop(f, None)
            b.pop(f, None)
    out: list[str] = []
    _diff_both("", a, b, out)
    return out + secret_lines


def carry_over_immutable(desired: Mapping[str, Any], live: Mapping[str, Any]) -> dict[str, Any]:
    """The replacement body for an update: ``desired`` plus what the target owns and must keep.

    Keeps the live ``resourceVersion`` (optimistic concurrency), the annotations the target's
    controllers write (``deployment.kubernetes.io/revision``...), Service clusterIP(s) and allocated
    nodePorts, the bound PVC spec (only ``resources.requests`` may change), the PV's claimRef,
    a Job's selector and controller labels, a pod's node, and ``spec`` of a Namespace.
    """
    body: dict[str, Any] = copy.deepcopy(dict(desired))
    lmeta = live.get("metadata") or {}
    meta = body.setdefault("metadata", {})
    if lmeta.get("resourceVersion"):
        meta["resourceVersion"] = lmeta["resourceVersion"]
    # annotations the target's controllers write (deployment.kubernetes.io/revision, pv.kubernetes.io/*):
    # the update must not strip them, the controllers own them
    owned = {k: v for k, v in (lmeta.get("annotations") or {}).items() if k in _CONTROLLER_ANNOTATIONS}
    if owned:
        meta["annotations"] = {**(meta.get("annotations") or {}), **owned}
    kind = body.get("kind")
    lspec = live.get("spec") or {}
    spec = body.get("spec")
    if kind == "Service" and isinstance(spec, dict):
        for k in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
            if k in lspec:
                spec[k] = copy.deepcopy(lspec[k])
        live_ports = {(p.get("port"), p.get("protocol", "TCP")): p for p in lspec.get("ports") or []}
        for p in spec.get("ports") or []:
            lp = live_ports.get((p.get("port"), p.get("protocol", "TCP")))
            if lp and "nodePort" in lp and "nodePort" not in p:
                p["nodePort"] = lp["nodePort"]
    elif kind == "PersistentVolumeClaim":
        new_spec = copy.deepcopy(lspec)
        req = ((spec or {}).get("resources") or {}).get("requests")
        if req:
            new_spec.setdefault("resources", {})["requests"] = req
        body["spec"] = new_spec
    elif kind == "Job" and isinstance(spec, dict):
        body["spec"] = copy.deepcopy(lspec)
    elif kind == "Namespace":
        body.pop("spec", None)
    elif kind == "Pod" and isinstance(spec, dict):
        body["spec"] = copy.deepcopy(lspec)
    return body


def decide_apply(
    desired: Mapping[str, Any], live: Mapping[str, Any] | None, policy: ExistingPolicy
) -> ApplyDecision:
    """Decide what to do with ``desired`` given the target's ``live`` object (None = absent).

    * absent -> ``create``;
    * present and equal on every field the backup sets -> ``unchanged``;
    * present and different: ``skip`` policy -> ``skip-existing`` (with the diff, so dry runs and
      reports show what was left alone); ``update`` -> ``update`` with the replacement body.
    """
    if live is None:
        return ApplyDecision(ApplyAction.CREATE, (), dict(desired))
    diff = tuple(diff_objects(live, desired))
    if not diff:
        return ApplyDecision(ApplyAction.UNCHANGED)
    if policy is ExistingPolicy.SKIP:
        return ApplyDecision(ApplyAction.SKIP_EXISTING, diff)
    return ApplyDecision(ApplyAction.UPDATE, diff, carry_over_immutable(desired, live))
