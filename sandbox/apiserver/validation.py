"""Validation rules users hit on a real API server (422 Invalid with causes naming the field).

Object metadata: meta_rules.py; per kind: pod_rules.py, workload_rules.py, service_rules.py,
config_rules.py, storage_rules.py and CustomResourceDefinitions here; :data:`VALIDATORS` maps each
kind to its rules."""

from __future__ import annotations

from collections.abc import Callable

from sandbox.apiserver import storage_rules
from sandbox.apiserver.config_rules import configmap, secret
from sandbox.apiserver.errors import FieldError
from sandbox.apiserver.meta_rules import Errors, Obj
from sandbox.apiserver.pod_rules import pod
from sandbox.apiserver.quantity import quantity
from sandbox.apiserver.service_rules import service
from sandbox.apiserver.workload_rules import cronjob, deployment, job, replicaset, statefulset


def pvc(obj: Obj, old: Obj | None) -> Errors:
    """PersistentVolumeClaim rules (storage_rules.py)."""
    return storage_rules.pvc(obj, old, quantity)


def crd(obj: Obj, old: Obj | None) -> Errors:
    """CustomResourceDefinition rules: name = plural.group, versions, scope."""
    spec = obj.get("spec") or {}
    names = spec.get("names") or {}
    errs: Errors = []
    group = spec.get("group") or ""
    plural = names.get("plural") or ""
    if not group:
        errs.append(FieldError("spec.group", "Required", None, ""))
    if not plural:
        errs.append(FieldError("spec.names.plural", "Required", None, ""))
    if not names.get("kind"):
        errs.append(FieldError("spec.names.kind", "Required", None, ""))
    if group and plural and obj["metadata"].get("name") != f"{plural}.{group}":
        errs.append(
            FieldError(
                "metadata.name",
                "Invalid",
                obj["metadata"].get("name"),
                'must be spec.names.plural+"."+spec.group',
            )
        )
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        errs.append(
            FieldError(
                "spec.scope", "NotSupported", spec.get("scope"), 'supported values: "Cluster", "Namespaced"'
            )
        )
    versions = spec.get("versions") or []
    if not versions or sum(1 for v in versions if v.get("storage")) != 1:
        errs.append(
            FieldError(
                "spec.versions", "Invalid", None, "must have exactly one version marked as storage version"
            )
        )
    return errs


VALIDATORS: dict[tuple[str, str], Callable[[Obj, Obj | None], Errors]] = {
    ("", "pods"): pod,
    ("", "services"): service,
    ("", "secrets"): secret,
    ("", "configmaps"): configmap,
    ("", "persistentvolumeclaims"): pvc,
    ("apps", "statefulsets"): statefulset,
    ("apps", "deployments"): deployment,
    ("apps", "replicasets"): replicaset,
    ("apps", "daemonsets"): replicaset,
    ("batch", "jobs"): job,
    ("batch", "cronjobs"): cronjob,
    ("apiextensions.k8s.io", "customresourcedefinitions"): crd,
}
