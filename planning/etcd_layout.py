"""Names of both sides of an etcd stretch migration: the layout, the members' URL form, DNS name forms.

Pure (no I/O, no clock): derived from the source members' peer URLs and the flow's parameters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from planning.etcd import PlannedMember
from stateferry.errors import InputError, PreconditionFailed

MANAGED_BY = {"app.kubernetes.io/managed-by": "stateferry"}
RUN_ID_LABEL = "stateferry.io/flow-run-id"
MIGRATION_LABEL = "stateferry.io/etcd-migration"
MEMBER_OF_LABEL = "stateferry.io/etcd-statefulset"  # only where the selector must stay distinct
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS_NAME = re.compile(r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
CLUSTER_DOMAIN = "cluster.local"


def check_kube_name(param: str, value: str, room: int = 0) -> str:
    """Refuse a name that is not a Kubernetes name (a DNS label), leaving ``room`` characters free.

    Args:
        param: The flow parameter named in the error.
        value: The name.
        room: Characters appended later (the pod ordinal ``-N`` of a StatefulSet's pods).

    Returns:
        The name.

    Raises:
        InputError: Naming ``param`` and the fix.
    """
    if not (_DNS_LABEL.fullmatch(value) and len(value) + room <= 63):
        raise InputError(
            param,
            f"{value[:80]!r} is not a Kubernetes name (a DNS label of lowercase letters, digits "
            f"and '-'{', with room for the pod ordinal' if room else ''}, at most 63 characters)",
            "give the name of the object as Kubernetes shows it",
        )
    return value


# ----------------------------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Layout:
    """Names and URLs of both sides of one migration.

    Attributes:
        source_namespace / target_namespace: Namespaces in the source / target cluster.
        source_sts / source_service: The source StatefulSet and its headless Service.
        new_sts / new_service: The new StatefulSet in the target and its headless Service.
        source_replicas: Members of the source StatefulSet (at the start of the migration).
        target_replicas: Members wanted in the target.
        scheme: ``http`` or ``https`` of the peer URLs.
        peer_port / client_port: etcd peer and client ports.
        name_depth: How many labels of ``<pod>.<service>.<namespace>.svc.<cluster_domain>`` the peer
            and client URLs use (1 = ``<pod>``, 2 = ``<pod>.<svc>`` as in the seed, ... 5 = the full
            name); derived from the source members by :func:`derive_name_form`.
        cluster_domain: The cluster domain of the full names (``cluster.local``).
        rename_labels: Rename the source StatefulSet's name to the new one in the pod labels, the
            selector and the affinity (the old behaviour); default: the new pods keep the source pods'
            labels, as in the seed, so Services, NetworkPolicies and monitors that select them keep
            working.
        distinct_selector: Add ``stateferry.io/etcd-statefulset: <new-sts>`` to the new StatefulSet's
            selector and pod labels and to the new headless Service's selector. Needed only when the
            new StatefulSet lives next to the source one (same cluster and namespace): two controllers
            whose selectors match the same pods fight over them.
    """

    source_namespace: str
    target_namespace: str
    source_sts: str
    source_service: str
    new_sts: str
    new_service: str
    source_replicas: int
    target_replicas: int
    scheme: str = "http"
    peer_port: int = 2380
    client_port: int = 2379
    name_depth: int = 2
    cluster_domain: str = CLUSTER_DOMAIN
    rename_labels: bool = False
    distinct_selector: bool = False

    def __post_init__(self) -> None:
        """Refuse names that are not Kubernetes names (they end up in object names and DNS hosts).

        Raises:
            InputError: Naming the flow parameter (``new_service``, ``new_statefulset``, ...).
        """
        widest = max(self.source_replicas, self.target_replicas, 1) - 1
        for param, value, room in (
            ("source_namespace", self.source_namespace, 0),
            ("target_namespace", self.target_namespace, 0),
            ("statefulset", self.source_sts, len(f"-{widest}")),
            ("service", self.source_service, 0),
            ("new_statefulset", self.new_sts, len(f"-{widest}")),
            ("new_service", self.new_service, 0),
        ):
            check_kube_name(param, value, room)
        if not DNS_NAME.fullmatch(self.cluster_domain):
            raise PreconditionFailed(
                f"the cluster domain {self.cluster_domain[:80]!r} in the members' peer URLs is not a DNS name"
            )

    def host(self, pod: str, *, new: bool) -> str:
        """The host name of a member in the URLs, in the source's form (``etcd-0.etcd``, ...)."""
        service, namespace = (
            (self.new_service, self.target_namespace) if new else (self.source_service, self.source_namespace)
        )
        return ".".join([pod, service, namespace, "svc", self.cluster_domain][: self.name_depth])

    @property
    def migration_id(self) -> str:
        """Label value naming this migration (``<source-ns>.<source-sts>``)."""
        return f"{self.source_namespace}.{self.source_sts}"[:63]

    def old_pods(self) -> list[str]:
        """Pod (= member) names of the source StatefulSet."""
        return [f"{self.source_sts}-{i}" for i in range(self.source_replicas)]

    def new_pods(self) -> list[str]:
        """Pod (= member) names of the new StatefulSet."""
        return [f"{self.new_sts}-{i}" for i in range(self.target_replicas)]

    def old_peer_url(self, pod: str) -> str:
        """Peer URL of an old member."""
        return f"{self.scheme}://{self.host(pod, new=False)}:{self.peer_port}"

    def new_peer_url(self, pod: str) -> str:
        """Peer URL of a new member."""
        return f"{self.scheme}://{self.host(pod, new=True)}:{self.peer_port}"

    def new_client_url(self, pod: str) -> str:
        """Advertised client URL of a new member."""
        return f"{self.scheme}://{self.host(pod, new=True)}:{self.client_port}"

    def planned_new(self) -> list[PlannedMember]:
        """The new members in the order they are added."""
        return [PlannedMember(p, self.new_peer_url(p), self.new_client_url(p)) for p in self.new_pods()]

    def ordinal(self, pod: str) -> int:
        """Ordinal of a pod name (``etcd-2`` -> 2)."""
        return int(pod.rsplit("-", 1)[1])


@dataclass(frozen=True)
class NameForm:
    """How the source members name themselves in their peer URLs (see :func:`derive_name_form`)."""

    scheme: str
    peer_port: int
    name_depth: int
    cluster_domain: str = CLUSTER_DOMAIN


def derive_name_form(peer_urls: Mapping[str, Sequence[str]], service: str, namespace: str) -> NameForm:
    """Derive the peer URL layout from the source members (``{pod: peer URLs}``).

    Accepted hosts: ``<pod>``, ``<pod>.<svc>``, ``<pod>.<svc>.<ns>``, ``<pod>.<svc>.<ns>.svc`` and
    ``<pod>.<svc>.<ns>.svc.<cluster-domain>``, the same form, scheme and port for every member.

    Raises:
        PreconditionFailed: Naming the member and its peer URL when it cannot be migrated (an IP
            address or a name not derived from the pod name, or members in different forms).
    """
    forms: set[NameForm] = set()
    for pod, urls in sorted(peer_urls.items()):
        for url in urls:
            parts = urlsplit(url)
            host, labels = parts.hostname or "", (parts.hostname or "").split(".")
            prefix = [pod, service, namespace, "svc"]
            depth = next(
                (d for d in range(1, 5) if labels == prefix[:d]),
                5 if len(labels) > 4 and labels[:4] == prefix else 0,
            )
            if not depth:
                raise PreconditionFailed(
                    f"member {pod} advertises the peer URL {url!r} (--initial-advertise-peer-urls / "
                    f"ETCD_INITIAL_ADVERTISE_PEER_URLS): its host {host!r} is not a name of the pod "
                    f"(<pod>[.{service}[.{namespace}[.svc[.<cluster-domain>]]]]), so the new members' "
                    "names cannot be derived: advertise a pod DNS name first (a rolling restart)"
                )
            domain = ".".join(labels[4:]) if depth == 5 else CLUSTER_DOMAIN
            forms.add(NameForm(parts.scheme or "http", parts.port or 2380, depth, domain))
    if len(forms) != 1:
        raise PreconditionFailed(
            f"the source members' peer URLs use {len(forms)} different forms ({sorted(map(str, forms))}): "
            "give every member the same form (one StatefulSet template) before migrating"
            if forms
            else "no member advertises a peer URL"
        )
    return forms.pop()


def dns_names(pod: str, service: str, namespace: str, domain: str = CLUSTER_DOMAIN) -> list[str]:
    """Every form a peer may use for a member: ``pod``, ``pod.svc``, ``pod.svc.ns``, ``...svc[.domain]``."""
    base = f"{pod}.{service}"
    return [pod, base, f"{base}.{namespace}", f"{base}.{namespace}.svc", f"{base}.{namespace}.svc.{domain}"]
