"""The resource types one emulated cluster serves (built-in kinds plus custom resources)."""

from __future__ import annotations

from dataclasses import dataclass, field

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ResourceType:
    """One REST resource: where it is served, its Kind and what it supports."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: frozenset[str] = frozenset()
    has_generation: bool = False
    model: str | None = None  # kubernetes client model class used for decode checks
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    custom: bool = False
    crd_schemas: dict[str, object] | None = field(default=None, compare=False, hash=False)
    scale_paths: tuple[str, str, str | None] | None = field(default=None, compare=False, hash=False)

    @property
    def key(self) -> tuple[str, str]:
        """Storage key: (group, plural) — the same objects whatever version is asked."""
        return (self.group, self.plural)

    @property
    def api_version(self) -> str:
        """``v1`` or ``apps/v1``."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        """Lower-case Kind, as discovery reports it."""
        return self.kind.lower()

    @property
    def has_status(self) -> bool:
        """Whether writes to the main resource ignore ``status`` (a ``/status`` subresource exists)."""
        return "status" in self.subresources


_SS = frozenset({"status"})
_SSC = frozenset({"status", "scale"})


def _r(
    group: str,
    version: str,
    plural: str,
    kind: str,
    namespaced: bool,
    short: tuple[str, ...] = (),
    sub: frozenset[str] = frozenset(),
    gen: bool = False,
    model: str | None = None,
    cats: tuple[str, ...] = (),
) -> ResourceType:
    return ResourceType(group, version, plural, kind, namespaced, short, sub, gen, model, cats)


BUILTIN: tuple[ResourceType, ...] = (
    _r("", "v1", "namespaces", "Namespace", False, ("ns",), _SS, model="V1Namespace"),
    _r("", "v1", "configmaps", "ConfigMap", True, ("cm",), model="V1ConfigMap"),
    _r("", "v1", "secrets", "Secret", True, model="V1Secret"),
    _r("", "v1", "services", "Service", True, ("svc",), _SS, model="V1Service", cats=("all",)),
    _r("", "v1", "endpoints", "Endpoints", True, ("ep",), model="V1Endpoints"),
    _r("", "v1", "pods", "Pod", True, ("po",), _SS, model="V1Pod", cats=("all",)),
    _r(
        "",
        "v1",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        True,
        ("pvc",),
        _SS,
        model="V1PersistentVolumeClaim",
    ),
    _r("", "v1", "persistentvolumes", "PersistentVolume", False, ("pv",), _SS, model="V1PersistentVolume"),
    _r("", "v1", "serviceaccounts", "ServiceAccount", True, ("sa",), model="V1ServiceAccount"),
    _r("", "v1", "events", "Event", True, ("ev",), model="CoreV1Event"),
    _r("", "v1", "nodes", "Node", False, ("no",), _SS, model="V1Node"),
    _r("", "v1", "limitranges", "LimitRange", True, ("limits",), model="V1LimitRange"),
    _r("", "v1", "resourcequotas", "ResourceQuota", True, ("quota",), _SS, model="V1ResourceQuota"),
    _r("", "v1", "podtemplates", "PodTemplate", True, model="V1PodTemplate"),
    _r(
        "",
        "v1",
        "replicationcontrollers",
        "ReplicationController",
        True,
        ("rc",),
        _SSC,
        gen=True,
        model="V1ReplicationController",
        cats=("all",),
    ),
    _r("apps", "v1", "statefulsets", "StatefulSet", True, ("sts",), _SSC, True, "V1StatefulSet", ("all",)),
    _r("apps", "v1", "deployments", "Deployment", True, ("deploy",), _SSC, True, "V1Deployment", ("all",)),
    _r("apps", "v1", "replicasets", "ReplicaSet", True, ("rs",), _SSC, True, "V1ReplicaSet", ("all",)),
    _r("apps", "v1", "daemonsets", "DaemonSet", True, ("ds",), _SS, True, "V1DaemonSet", ("all",)),
    _r("apps", "v1", "controllerrevisions", "ControllerRevision", True, model="V1ControllerRevision"),
    _r("batch", "v1", "jobs", "Job", True, (), _SS, True, "V1Job", ("all",)),
    _r("batch", "v1", "cronjobs", "CronJob", True, ("cj",), _SS, True, "V1CronJob", ("all",)),
    _r("networking.k8s.io", "v1", "ingresses", "Ingress", True, ("ing",), _SS, True, "V1Ingress"),
    _r(
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "NetworkPolicy",
        True,
        ("netpol",),
        gen=True,
        model="V1NetworkPolicy",
    ),
    _r("networking.k8s.io", "v1", "ingressclasses", "IngressClass", False, model="V1IngressClass"),
    _r("storage.k8s.io", "v1", "storageclasses", "StorageClass", False, ("sc",), model="V1StorageClass"),
    _r("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True, model="V1EndpointSlice"),
    _r("coordination.k8s.io", "v1", "leases", "Lease", True, model="V1Lease"),
    _r(
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        True,
        ("pdb",),
        _SS,
        True,
        "V1PodDisruptionBudget",
    ),
    _r("rbac.authorization.k8s.io", "v1", "roles", "Role", True, model="V1Role"),
    _r("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True, model="V1RoleBinding"),
    _r("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False, model="V1ClusterRole"),
    _r(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        False,
        model="V1ClusterRoleBinding",
    ),
    _r(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        ("crd", "crds"),
        _SS,
        True,
        "V1CustomResourceDefinition",
        ("api-extensions",),
    ),
    _r(
        "scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", False, ("pc",), model="V1PriorityClass"
    ),
    _r(
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        True,
        ("hpa",),
        _SS,
        model="V2HorizontalPodAutoscaler",
        cats=("all",),
    ),
    # reviews: create-only, answered and never stored (the sandbox has no authentication/authorization)
    ResourceType(
        "authorization.k8s.io",
        "v1",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        False,
        model="V1SelfSubjectAccessReview",
        verbs=("create",),
    ),
    ResourceType(
        "authorization.k8s.io",
        "v1",
        "selfsubjectrulesreviews",
        "SelfSubjectRulesReview",
        True,
        model="V1SelfSubjectRulesReview",
        verbs=("create",),
    ),
    ResourceType(
        "authorization.k8s.io",
        "v1",
        "subjectaccessreviews",
        "SubjectAccessReview",
        False,
        model="V1SubjectAccessReview",
        verbs=("create",),
    ),
    ResourceType(
        "authentication.k8s.io",
        "v1",
        "selfsubjectreviews",
        "SelfSubjectReview",
        False,
        model="V1SelfSubjectReview",
        verbs=("create",),
    ),
)

REVIEWS = {
    ("authorization.k8s.io", "selfsubjectaccessreviews"),
    ("authorization.k8s.io", "selfsubjectrulesreviews"),
    ("authorization.k8s.io", "subjectaccessreviews"),
    ("authentication.k8s.io", "selfsubjectreviews"),
}

# Groups listed by /apis even though they serve nothing the sandbox stores (kubectl only needs them listed).
PREFERRED_ORDER = (
    "apps",
    "events.k8s.io",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "networking.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "storage.k8s.io",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "scheduling.k8s.io",
    "coordination.k8s.io",
    "node.k8s.io",
    "discovery.k8s.io",
    "flowcontrol.apiserver.k8s.io",
)
