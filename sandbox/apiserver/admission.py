"""Admission on create: the namespace must exist and not be terminating, a pod's service account
must exist; the initial status of new objects; access reviews (everything is allowed)."""

from __future__ import annotations

from sandbox.apiserver import errors
from sandbox.apiserver.resources import ResourceType
from sandbox.apiserver.store import Obj, Store


def admit_namespace(store: Store, rt: ResourceType, ns: str, name: str) -> None:
    """Refuse content in a missing (404) or terminating (403) namespace (events excepted)."""
    nsobj = store.get(("", "namespaces"), "", ns)
    if nsobj is None:
        raise errors.not_found("namespaces", "", ns)
    if nsobj["metadata"].get("deletionTimestamp") and rt.key not in (("", "events"),):
        raise errors.forbidden(
            rt.plural,
            rt.group,
            name,
            f'{rt.plural} "{name}" is forbidden: unable to create new content in namespace {ns} because it '
            "is being terminated",
            [
                errors.cause(
                    "metadata.namespace", "NamespaceTerminating", f"namespace {ns} is being terminated"
                )
            ],
        )


def admit_pod(store: Store, obj: Obj) -> None:
    """Refuse a pod whose service account does not exist (403), as the ServiceAccount admission does."""
    ns = obj["metadata"]["namespace"]
    sa = obj["spec"].get("serviceAccountName") or "default"
    if store.get(("", "serviceaccounts"), ns, sa) is None:
        name = obj["metadata"].get("name") or ""
        raise errors.forbidden(
            "pods",
            "",
            name,
            f'pods "{name}" is forbidden: error looking up service account {ns}/{sa}: serviceaccount "{sa}" '
            "not found",
        )


# What a zero-valued Go status struct serialises to (fields without omitempty).
INITIAL_STATUS: dict[tuple[str, str], Obj] = {
    ("apps", "statefulsets"): {"replicas": 0, "availableReplicas": 0},
    ("apps", "replicasets"): {"replicas": 0},
    ("", "replicationcontrollers"): {"replicas": 0},
    ("", "services"): {"loadBalancer": {}},
    ("apps", "daemonsets"): {
        "currentNumberScheduled": 0,
        "numberMisscheduled": 0,
        "desiredNumberScheduled": 0,
        "numberReady": 0,
    },
    ("policy", "poddisruptionbudgets"): {
        "disruptionsAllowed": 0,
        "currentHealthy": 0,
        "desiredHealthy": 0,
        "expectedPods": 0,
    },
}


def review(rt: ResourceType, body: Obj) -> Obj:
    """Answer an access/rules/self review: everything is allowed for the sandbox's single admin user."""
    out: Obj = {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": {"creationTimestamp": None}}
    out["spec"] = body.get("spec") or {}
    if rt.plural == "selfsubjectreviews":
        out.pop("spec")
        out["status"] = {
            "userInfo": {"username": "admin", "groups": ["system:masters", "system:authenticated"]}
        }
    elif rt.plural == "selfsubjectrulesreviews":
        out["status"] = {
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": False,
        }
    else:
        out["status"] = {"allowed": True, "reason": "the stateferry sandbox authorizes every request"}
    return out
