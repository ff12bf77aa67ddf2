"""Resource types as discovery reports them (pure): :class:`ResourceType`, the built-in API groups,
the types never exported. Re-exported by :mod:`planning.resources`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["BUILTIN_GROUPS", "NEVER_EXPORTED", "ResourceType", "is_custom_resource"]


@dataclass(frozen=True, order=True)
class ResourceType:
    """One API resource found by discovery.

    Attributes:
        group: API group (``""`` for the core group).
        version: API version within the group (``v1``).
        kind: the object kind (``ConfigMap``).
        plural: the resource name in URLs (``configmaps``).
        namespaced: whether objects live in namespaces.
    """

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        """``v1`` or ``group/version`` as objects carry it."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_kind(self) -> str:
        """``Kind`` for the core group, else ``Kind.group`` (the spelling kubectl accepts)."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    def to_dict(self) -> dict[str, Any]:
        """JSON form (used by the archive manifest)."""
        return {
            "group": self.group,
            "version": self.version,
            "kind": self.kind,
            "plural": self.plural,
            "namespaced": self.namespaced,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResourceType:
        """Inverse of :meth:`to_dict`."""
        return cls(
            group=str(data.get("group", "")),
            version=str(data["version"]),
            kind=str(data["kind"]),
            plural=str(data["plural"]),
            namespaced=bool(data["namespaced"]),
        )


#: Built-in API groups; anything else found by discovery is a custom resource (or an aggregated API).
BUILTIN_GROUPS: frozenset[str] = frozenset(
    {
        "",
        "admissionregistration.k8s.io",
        "apiextensions.k8s.io",
        "apiregistration.k8s.io",
        "apps",
        "authentication.k8s.io",
        "authorization.k8s.io",
        "autoscaling",
        "batch",
        "certificates.k8s.io",
        "coordination.k8s.io",
        "discovery.k8s.io",
        "events.k8s.io",
        "flowcontrol.apiserver.k8s.io",
        "networking.k8s.io",
        "node.k8s.io",
        "policy",
        "rbac.authorization.k8s.io",
        "scheduling.k8s.io",
        "storage.k8s.io",
        "metrics.k8s.io",
    }
)

#: Resource types never exported: runtime state that the target cluster makes itself, or that is
#: meaningless elsewhere. (group, plural) pairs.
NEVER_EXPORTED: frozenset[tuple[str, str]] = frozenset(
    {
        ("", "events"),
        ("events.k8s.io", "events"),
        ("", "nodes"),
        ("", "componentstatuses"),
        ("", "bindings"),
        ("", "endpoints"),  # recreated by the endpoints controller for every Service
        ("discovery.k8s.io", "endpointslices"),
        ("apps", "controllerrevisions"),  # history of the owning StatefulSet/DaemonSet
        ("coordination.k8s.io", "leases"),  # leader election / node heartbeats
        ("authentication.k8s.io", "tokenreviews"),
        ("authorization.k8s.io", "subjectaccessreviews"),
        ("authorization.k8s.io", "selfsubjectaccessreviews"),
        ("authorization.k8s.io", "selfsubjectrulesreviews"),
        ("authorization.k8s.io", "localsubjectaccessreviews"),
        ("certificates.k8s.io", "certificatesigningrequests"),
        ("apiregistration.k8s.io", "apiservices"),
        ("metrics.k8s.io", "pods"),
        ("metrics.k8s.io", "nodes"),
        ("storage.k8s.io", "volumeattachments"),
        ("storage.k8s.io", "csinodes"),
        ("flowcontrol.apiserver.k8s.io", "flowschemas"),
        ("flowcontrol.apiserver.k8s.io", "prioritylevelconfigurations"),
    }
)


def is_custom_resource(group: str) -> bool:
    """True if ``group`` is not one of Kubernetes' built-in API groups."""
    return group not in BUILTIN_GROUPS
