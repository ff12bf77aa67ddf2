"""Pure decisions of the etcd stretch migration between two Kubernetes clusters.

Everything the flow ``etcd_stretch_migration`` decides from observed data lives here: member names
and URLs on both sides, the per-member LoadBalancer Services, the new StatefulSet (the source one
with names rewritten and the ``--initial-cluster`` of each step), the CoreDNS ``hosts`` section and
the Deckhouse ``ModuleConfig kube-dns`` hosts, the preflight verdicts and the reconcile decision
"what is the next step, given the observed member list and objects".

No I/O, no clock, no Prefect, no client libraries. Membership primitives (quorum, the
``--initial-cluster`` string, safety checks) come from :mod:`planning.etcd`.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from planning.etcd import (
    ChangeKind,
    CurrentMember,
    MembershipChange,
    PlannedMember,
    check_membership_change,
    initial_cluster,
    initial_cluster_for_join,
    quorum,
    split_members,
)
from stateferry.errors import InputError, PreconditionFailed

__all__ = [
    "MANAGED_BY",
    "MEMBER_OF_LABEL",
    "MIGRATION_LABEL",
    "POD_NAME_LABEL",
    "RUN_ID_LABEL",
    "Layout",
    "NameForm",
    "NextStep",
    "Observed",
    "StepKind",
    "check_versions",
    "coredns_with_hosts",
    "derive_name_form",
    "dns_names",
    "foreign_host_names",
    "host_entries",
    "image_version",
    "lb_service_manifest",
    "module_config_hosts",
    "new_headless_service_manifest",
    "new_statefulset_manifest",
    "next_step",
    "plan_markdown",
    "rewrite_etcd_command",
    "rewrite_host_refs",
]

MANAGED_BY = {"app.kubernetes.io/managed-by": "stateferry"}
RUN_ID_LABEL = "stateferry.io/flow-run-id"
MIGRATION_LABEL = "stateferry.io/etcd-migration"
MEMBER_OF_LABEL = "stateferry.io/etcd-statefulset"  # only where the selector must stay distinct
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_NAME = re.compile(r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
CLUSTER_DOMAIN = "cluster.local"


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
            if not (_DNS_LABEL.fullmatch(value) and len(value) + room <= 63):
                raise InputError(
                    param,
                    f"{value[:80]!r} is not a Kubernetes name (a DNS label of lowercase letters, digits "
                    f"and '-'{', with room for the pod ordinal' if room else ''}, at most 63 characters)",
                    "give the name of the object as Kubernetes shows it",
                )
        if not _DNS_NAME.fullmatch(self.cluster_domain):
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


# ------------------------------------------------------------------------------------------- manifests


def _labels(run_id: str, layout: Layout, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    labels = dict(extra or {})
    labels.update(MANAGED_BY)
    labels[MIGRATION_LABEL] = layout.migration_id
    if run_id:
        labels[RUN_ID_LABEL] = run_id
    return labels


def lb_service_manifest(
    pod: str,
    namespace: str,
    layout: Layout,
    *,
    run_id: str,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The LoadBalancer Service that exposes one member's peer and client ports (seed step 2).

    ``publishNotReadyAddresses`` is set: a joining learner is not Ready (its health check needs a
    linearizable read) yet the leader must reach its peer port to replicate to it.
    """
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": pod,
            "namespace": namespace,
            "labels": _labels(run_id, layout),
            "annotations": dict(annotations or {}),
        },
        "spec": {
            "type": "LoadBalancer",
            "publishNotReadyAddresses": True,
            "ports": [
                {"name": "etcd-server", "port": layout.peer_port, "targetPort": layout.peer_port},
                {"name": "etcd-client", "port": layout.client_port, "targetPort": layout.client_port},
            ],
            "selector": {POD_NAME_LABEL: pod},
        },
    }


_KEEP_META = ("labels", "annotations")
_STRIP_SPEC = ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy", "internalTrafficPolicy")


def _rename_values(mapping: Mapping[str, Any] | None, old: str, new: str) -> dict[str, Any]:
    return {k: (new if v == old else v) for k, v in (mapping or {}).items()}


def _pod_labels(labels: Mapping[str, Any] | None, layout: Layout) -> dict[str, Any]:
    """Source pod labels (or a selector) for the new side: kept, renamed, or made distinct per the layout."""
    out = dict(labels or {})
    if layout.rename_labels:
        out = _rename_values(out, layout.source_sts, layout.new_sts)
    if layout.distinct_selector:
        out[MEMBER_OF_LABEL] = layout.new_sts
    return out


def new_headless_service_manifest(
    source_service: Mapping[str, Any], layout: Layout, *, run_id: str
) -> dict[str, Any]:
    """The headless Service of the new StatefulSet: the source one renamed, with not-ready pods published."""
    spec = copy.deepcopy(dict(source_service.get("spec") or {}))
    for key in _STRIP_SPEC:
        spec.pop(key, None)
    spec["clusterIP"] = "None"
    spec["publishNotReadyAddresses"] = True
    spec["selector"] = _pod_labels(spec.get("selector"), layout)
    meta = source_service.get("metadata") or {}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": layout.new_service,
            "namespace": layout.target_namespace,
            "labels": _labels(
                run_id, layout, _rename_values(meta.get("labels"), layout.source_sts, layout.new_sts)
            ),
        },
        "spec": spec,
    }


_IC_RE = re.compile(r"--initial-cluster(?=[ =])([ =]+)(\S+)")
_ICS_RE = re.compile(r"--initial-cluster-state(?=[ =])[ =]+\S+")


_VAR_REF = r"(?:\$\{?[A-Za-z_][A-Za-z0-9_]*\}?|\$\([A-Za-z_][A-Za-z0-9_]*\))"


def _host_ref_re(layout: Layout) -> re.Pattern[str]:
    """``$HOSTNAME.<svc>[.<ns>]``, ``${HOSTNAME}.…``, ``$(POD_NAME).…``: a pod's own name in a template."""
    return re.compile(
        "("
        + _VAR_REF
        + r"\.)"
        + re.escape(layout.source_service)
        + r"(\."
        + re.escape(layout.source_namespace)
        + r")?(?![\w-])"
    )


def rewrite_host_refs(text: str, layout: Layout) -> str:
    """Point the pod's own name references (any variable, any depth) at the new Service and namespace.

    ``$(POD_NAMESPACE)``-style references to the namespace are left alone: they resolve in the target.
    """

    def repl(m: re.Match[str]) -> str:
        return m.group(1) + layout.new_service + (f".{layout.target_namespace}" if m.group(2) else "")

    return _host_ref_re(layout).sub(repl, text)


def rewrite_etcd_command(text: str, layout: Layout, initial_cluster_value: str) -> str:
    """Rewrite one command/args string of the source etcd container for the new StatefulSet.

    ``$HOSTNAME.<source-service>`` becomes ``$HOSTNAME.<new-service>``, ``--initial-cluster`` gets
    ``initial_cluster_value`` and ``--initial-cluster-state`` becomes ``existing`` (added after
    ``--initial-cluster`` when missing). Strings without these flags are returned unchanged.
    """
    text = rewrite_host_refs(text, layout)
    if not _IC_RE.search(text):
        return text
    text = _IC_RE.sub(lambda m: f"--initial-cluster{m.group(1)}{initial_cluster_value}", text, count=1)
    if _ICS_RE.search(text):
        return _ICS_RE.sub("--initial-cluster-state=existing", text)
    return _IC_RE.sub(lambda m: f"{m.group(0)} --initial-cluster-state=existing", text, count=1)


def _etcd_container(pod_spec: Mapping[str, Any]) -> dict[str, Any] | None:
    for container in pod_spec.get("containers") or []:
        if "etcd" in str(container.get("image", "")):
            return container
    containers = pod_spec.get("containers") or []
    return containers[0] if containers else None


def command_initial_cluster(source_sts: Mapping[str, Any]) -> str | None:
    """The ``--initial-cluster`` value of the source StatefulSet's etcd container, or None."""
    container = _etcd_container(((source_sts.get("spec") or {}).get("template") or {}).get("spec") or {})
    if container is None:
        return None
    for text in [*(container.get("command") or []), *(container.get("args") or [])]:
        match = _IC_RE.search(str(text))
        if match:
            return match.group(2)
    for env in container.get("env") or []:
        if env.get("name") == "ETCD_INITIAL_CLUSTER":
            return str(env.get("value", ""))
    return None


def _rewrite_affinity(node: Any, old: str, new: str) -> Any:
    if isinstance(node, dict):
        return {k: _rewrite_affinity(v, old, new) for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite_affinity(v, old, new) for v in node]
    return new if node == old else node


def new_statefulset_manifest(
    source_sts: Mapping[str, Any],
    layout: Layout,
    *,
    replicas: int,
    initial_cluster_value: str,
    partition: int,
    run_id: str,
) -> dict[str, Any]:
    """The new StatefulSet: the source one renamed, ``replicas`` pods, and the given ``--initial-cluster``.

    ``partition`` keeps pods below that ordinal on their revision, so growing the set does not restart
    members that already joined; the final rewrite sets it to 0 for a one-pod-at-a-time rollout.

    Raises:
        PreconditionFailed: The source etcd container carries no ``--initial-cluster`` to rewrite.
    """
    src_spec = copy.deepcopy(dict(source_sts.get("spec") or {}))
    template = src_spec.get("template") or {}
    pod_spec = template.get("spec") or {}
    container = _etcd_container(pod_spec)
    if container is None or command_initial_cluster(source_sts) is None:
        raise PreconditionFailed(
            f"StatefulSet {layout.source_sts}: no etcd container with --initial-cluster (in command, args or "
            "ETCD_INITIAL_CLUSTER) was found, so the joining members' flags cannot be derived: give the etcd "
            "container an explicit --initial-cluster"
        )
    for key in ("command", "args"):
        if container.get(key):
            container[key] = [
                rewrite_etcd_command(str(t), layout, initial_cluster_value) for t in container[key]
            ]
    for env in container.get("env") or []:
        if env.get("name") == "ETCD_INITIAL_CLUSTER":
            env["value"] = initial_cluster_value
        elif env.get("name") == "ETCD_INITIAL_CLUSTER_STATE":
            env["value"] = "existing"
        elif isinstance(env.get("value"), str):
            env["value"] = rewrite_host_refs(env["value"], layout)
    old, new = layout.source_sts, layout.new_sts
    tmeta = template.setdefault("metadata", {})
    # the source pods' labels (a managed-by of theirs wins over ours), plus the migration's own
    tmeta["labels"] = {**MANAGED_BY, **_pod_labels(tmeta.get("labels"), layout)}
    tmeta["labels"][MIGRATION_LABEL] = layout.migration_id
    if "affinity" in pod_spec and layout.rename_labels:
        pod_spec["affinity"] = _rewrite_affinity(pod_spec["affinity"], old, new)
    selector = src_spec.get("selector") or {}
    selector["matchLabels"] = _pod_labels(selector.get("matchLabels"), layout)
    claims = []
    for claim in src_spec.get("volumeClaimTemplates") or []:
        claim = {k: v for k, v in claim.items() if k != "status"}
        claim["metadata"] = {
            k: v for k, v in (claim.get("metadata") or {}).items() if k in ("name", "labels")
        }
        claims.append(claim)
    spec: dict[str, Any] = {
        **{k: v for k, v in src_spec.items() if k not in ("volumeClaimTemplates", "updateStrategy")},
        "replicas": replicas,
        "serviceName": layout.new_service,
        "selector": selector,
        "template": template,
        "podManagementPolicy": "OrderedReady",
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": partition}},
    }
    if claims:
        spec["volumeClaimTemplates"] = claims
    meta = source_sts.get("metadata") or {}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "name": new,
            "namespace": layout.target_namespace,
            "labels": _labels(run_id, layout, _rename_values(meta.get("labels"), old, new)),
        },
        "spec": spec,
    }


# ------------------------------------------------------------------------------------------------- DNS


def dns_names(pod: str, service: str, namespace: str, domain: str = CLUSTER_DOMAIN) -> list[str]:
    """Every form a peer may use for a member: ``pod``, ``pod.svc``, ``pod.svc.ns``, ``...svc[.domain]``."""
    base = f"{pod}.{service}"
    return [pod, base, f"{base}.{namespace}", f"{base}.{namespace}.svc", f"{base}.{namespace}.svc.{domain}"]


def host_entries(
    pods_ips: Mapping[str, str], service: str, namespace: str, domain: str = CLUSTER_DOMAIN
) -> list[tuple[str, list[str]]]:
    """``(ip, names)`` for each member pod (sorted by pod name), for a hosts block."""
    return [(ip, dns_names(pod, service, namespace, domain)) for pod, ip in sorted(pods_ips.items())]


def _markers(key: str) -> tuple[str, str]:
    return f"# stateferry:begin {key}", f"# stateferry:end {key}"


_OWN_BLOCK = "# stateferry:hosts-block"


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def coredns_with_hosts(corefile: str, key: str, entries: Sequence[tuple[str, Sequence[str]]]) -> str:
    """Return ``corefile`` with stateferry's marked section (keyed by ``key``) set to ``entries``.

    Idempotent: the section between ``# stateferry:begin <key>`` and ``# stateferry:end <key>`` is
    replaced, anything else is kept. An existing ``hosts`` block of the first server block is reused
    (CoreDNS allows one per server block); otherwise a block with ``fallthrough`` is added before the
    ``kubernetes`` plugin and marked as stateferry's, so it is removed again when it becomes empty.
    Empty ``entries`` remove the section.
    """
    begin, end = _markers(key)
    for ip, names in entries:  # every token of our lines: nothing else can reach the Corefile
        if not _is_ip(ip) or not names or not all(_DNS_NAME.fullmatch(n) for n in names):
            raise PreconditionFailed(
                f"refusing to write the DNS hosts entry {ip[:60]!r} {[n[:80] for n in names]!r}: not an IP "
                "address and DNS names (names from the flow parameters or the etcd members' peer URLs?)"
            )
    if not _DNS_NAME.fullmatch(key.replace(" ", "-")):
        raise PreconditionFailed(f"refusing the DNS section key {key[:80]!r}")
    lines = corefile.splitlines()
    # drop our old section
    out: list[str] = []
    skipping = False
    for line in lines:
        stripped = line.strip()
        if stripped == begin:
            skipping = True
            continue
        if skipping:
            if stripped == end:
                skipping = False
            continue
        out.append(line)
    lines = out
    hosts_at = next(
        (i for i, line in enumerate(lines) if line.split("#", 1)[0].split()[:1] == ["hosts"]),
        None,
    )
    if not entries:
        if hosts_at is not None and _OWN_BLOCK in lines[hosts_at]:
            close = next(i for i in range(hosts_at + 1, len(lines)) if lines[i].strip() == "}")
            body = [x.strip() for x in lines[hosts_at + 1 : close]]
            if all(x in ("fallthrough", "") or x.startswith("#") for x in body):
                del lines[hosts_at : close + 1]
        return "\n".join(lines) + "\n"
    section = [f"       {begin}"]
    section += [f"       {ip} {' '.join(names)}" for ip, names in entries]
    section.append(f"       {end}")
    if hosts_at is not None:
        lines[hosts_at + 1 : hosts_at + 1] = section
        return "\n".join(lines) + "\n"
    kube_at = next(
        (i for i, line in enumerate(lines) if line.strip().startswith("kubernetes ")),
        None,
    )
    if kube_at is None:
        open_at = next((i for i, line in enumerate(lines) if line.rstrip().endswith("{")), None)
        if open_at is None:
            raise PreconditionFailed(
                "the CoreDNS Corefile has no server block: check ConfigMap kube-system/coredns"
            )
        kube_at = open_at + 1
    block = [f"    hosts {{  {_OWN_BLOCK}", *section, "       fallthrough", "    }"]
    lines[kube_at:kube_at] = block
    return "\n".join(lines) + "\n"


def foreign_host_names(corefile: str, key: str, names: Iterable[str]) -> list[str]:
    """Names among ``names`` that the Corefile's hosts entries already define outside ``key``'s section.

    Such an entry would shadow (or be shadowed by) the one the migration adds: another migration of
    an etcd with the same names, or a hand-written entry. Returns them sorted.
    """
    begin, end = _markers(key)
    wanted = {n.lower() for n in names}
    found: set[str] = set()
    inside_ours = False
    depth = 0
    for raw in corefile.splitlines():
        stripped = raw.strip()
        if stripped == begin:
            inside_ours = True
            continue
        if stripped == end:
            inside_ours = False
            continue
        line = stripped.split("#", 1)[0].strip()
        tokens = line.split()
        if depth == 0:
            if tokens[:1] == ["hosts"] and line.endswith("{"):
                depth = 1
            continue
        if line.endswith("{"):
            depth += 1
            continue
        if line == "}":
            depth -= 1
            continue
        if inside_ours or depth != 1 or len(tokens) < 2 or not tokens[0][0].isdigit():
            continue
        found |= {t.lower().rstrip(".") for t in tokens[1:]} & wanted
    return sorted(found)


def module_config_hosts(
    current: Sequence[Mapping[str, str]],
    remove_names: Iterable[str],
    entries: Sequence[tuple[str, Sequence[str]]],
) -> list[dict[str, str]]:
    """Deckhouse ``ModuleConfig kube-dns`` ``spec.settings.hosts``: ``current`` minus ``remove_names``
    (stateferry's earlier entries) plus one ``{domain, ip}`` per name of ``entries``. Idempotent."""
    drop = {n.lower() for n in remove_names}
    wanted = [{"domain": name, "ip": ip} for ip, names in entries for name in names]
    drop |= {w["domain"] for w in wanted}
    kept = [dict(h) for h in current if str(h.get("domain", "")).lower() not in drop]
    return kept + wanted


# ------------------------------------------------------------------------------------------- preflight

_VERSION_RE = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")


def image_version(image: str) -> tuple[int, int, int] | None:
    """The etcd version in an image tag (``quay.io/coreos/etcd:v3.4.18`` -> (3, 4, 18)), or None."""
    tag = image.rsplit("/", 1)[-1].partition(":")[2].partition("@")[0]
    match = _VERSION_RE.search(tag)
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def check_versions(running: Sequence[str], target_image: str, *, auth_enabled: bool = False) -> list[str]:
    """Check the running members' versions against the target image; returns warnings.

    Raises:
        PreconditionFailed: Running members differ in minor version, or the target image's minor
            differs from theirs.
    """
    warnings: list[str] = []
    parsed = {v: _VERSION_RE.search(v) for v in running}
    minors = {(int(m[1]), int(m[2])) for m in parsed.values() if m}
    if len(minors) > 1:
        raise PreconditionFailed(
            f"the source members run different minor versions {sorted(running)}: finish that upgrade first"
        )
    target = image_version(target_image)
    if target is None:
        warnings.append(f"the target image {target_image!r} carries no version tag; cannot compare versions")
    elif minors and (target[0], target[1]) not in minors:
        have = ".".join(map(str, next(iter(minors))))
        raise PreconditionFailed(
            f"the target image {target_image!r} is etcd {target[0]}.{target[1]} but the source runs {have}: "
            f"a stretch cluster needs the same minor version on both sides; use a {have}.x image"
        )
    for version in [*running, *([".".join(map(str, target))] if target else [])]:
        m = _VERSION_RE.search(version)
        if not m:
            continue
        v = (int(m[1]), int(m[2]), int(m[3]))
        if v[:2] == (3, 4) and v[2] in (20, 21):
            warnings.append(
                f"etcd {version}: 3.4.20-3.4.21 have known member-add bugs (learner promotion / "
                "data inconsistency); upgrade to 3.4.22+ first if you can"
            )
        if v == (3, 5, 5) and auth_enabled:
            warnings.append(
                f"etcd {version} with auth enabled: a new member may fail to apply auth changes; "
                "upgrade to 3.5.6+ first"
            )
    return sorted(set(warnings))


# ------------------------------------------------------------------------------------------ reconcile


class StepKind(StrEnum):
    """The next action of the migration."""

    ADD_MEMBER = "add_member"  # member add (learner), then deploy + catch up + promote
    DEPLOY_MEMBER = "deploy_member"  # the member is registered: deploy/finish it and promote
    MOVE_LEADER = "move_leader"
    REMOVE_OLD = "remove_old"  # member remove, then scale the old StatefulSet down by one
    STOP_OLD = "stop_old"  # scale the old StatefulSet down to the old members still in the cluster
    FINALIZE_STS = "finalize_sts"  # --initial-cluster of the new members only
    CLEANUP = "cleanup"  # delete old resources
    DONE = "done"


@dataclass(frozen=True)
class Observed:
    """What the flow observed, the input of :func:`next_step`.

    Attributes:
        members: The member list.
        leader_id: Current leader (0 when unknown).
        new_sts_replicas: ``spec.replicas`` of the new StatefulSet, None when absent.
        new_sts_initial_cluster: ``--initial-cluster`` in the new StatefulSet's template, "" when absent.
        new_sts_partition: Its rolling-update partition.
        new_sts_rolled_out: Every pod of the new StatefulSet runs the current template and is ready.
        old_sts_exists: The source StatefulSet still exists.
        old_sts_replicas: ``spec.replicas`` of the source StatefulSet (None when unknown or absent).
    """

    members: tuple[CurrentMember, ...]
    leader_id: int = 0
    new_sts_replicas: int | None = None
    new_sts_initial_cluster: str = ""
    new_sts_partition: int = 0
    new_sts_rolled_out: bool = True
    old_sts_exists: bool = True
    old_sts_replicas: int | None = None


@dataclass(frozen=True)
class NextStep:
    """The next step and what it needs.

    Attributes:
        kind: The action.
        member: Pod/member name concerned ("" when none).
        member_id: Member id when it exists (0 otherwise).
        peer_url: The member's peer URL.
        initial_cluster: For add/deploy: the ``--initial-cluster`` the joining member starts with; for
            finalize: the final one.
        replicas: For add/deploy/finalize: the new StatefulSet's replicas; for remove: the old one's.
        quorum_after: Quorum after the step.
        reason: Why.
    """

    kind: StepKind
    member: str = ""
    member_id: int = 0
    peer_url: str = ""
    initial_cluster: str = ""
    replicas: int = 0
    quorum_after: int = 0
    reason: str = ""


def _classify(members: Sequence[CurrentMember], layout: Layout) -> tuple[dict[str, CurrentMember], ...]:
    new_by_url = {layout.new_peer_url(p): p for p in layout.new_pods()}
    old_urls = {
        layout.old_peer_url(f"{layout.source_sts}-{i}"): f"{layout.source_sts}-{i}"
        for i in range(max(layout.source_replicas, 64))
    }
    new: dict[str, CurrentMember] = {}
    old: dict[str, CurrentMember] = {}
    unknown: dict[str, CurrentMember] = {}
    for m in members:
        url = next((u for u in m.peer_urls if u in new_by_url), None)
        if url is not None:
            new[new_by_url[url]] = m
            continue
        url = next((u for u in m.peer_urls if u in old_urls), None)
        if url is not None:
            old[old_urls[url]] = m
        else:
            unknown[m.name or m.peer_urls[0]] = m
    return new, old, unknown


def classify_members(
    members: Sequence[CurrentMember], layout: Layout
) -> tuple[dict[str, CurrentMember], dict[str, CurrentMember], dict[str, CurrentMember]]:
    """Split a member list into (new members by pod, old members by pod, unknown members by name)."""
    new, old, unknown = _classify(members, layout)
    return new, old, unknown


def _voters(members: Iterable[CurrentMember]) -> int:
    return sum(1 for m in members if not m.is_learner)


class RemovalAction(StrEnum):
    """One action of removing an old member."""

    MEMBER_REMOVE = "member_remove"  # etcdctl member remove (a raft configuration change)
    STOP_POD = "stop_pod"  # scale the old StatefulSet down by one


#: Remove the member first, then stop its pod: the configuration change commits while every voter is
#: alive, so it holds for any member count (the seed's "scale down, then member remove" needs
#: ``voters - 1 >= quorum(voters)`` and leaves 1 of 2 voters for the last removal of an N -> 1 migration).
#: A removed member stops itself (its peers answer it with "member removed"); the pod goes afterwards.
REMOVAL_ORDER: tuple[RemovalAction, ...] = (RemovalAction.MEMBER_REMOVE, RemovalAction.STOP_POD)


def removal_trace(
    voters: int, order: Sequence[RemovalAction] = REMOVAL_ORDER
) -> list[tuple[RemovalAction, int, int]]:
    """Simulate removing one healthy voter from ``voters`` healthy voters with the actions in ``order``.

    Returns:
        One row per action: (action, voters alive in the configuration afterwards, quorum needed by
        that configuration). A ``member_remove`` row also requires the quorum *before* it (to commit);
        see :func:`check_removal_order`.
    """
    total, alive, member, running = voters, voters, True, True
    rows: list[tuple[RemovalAction, int, int]] = []
    for action in order:
        if action is RemovalAction.STOP_POD and running:
            running = False
            if member:
                alive -= 1
        elif action is RemovalAction.MEMBER_REMOVE and member:
            member = False
            total -= 1
            if running:
                alive -= 1
        rows.append((action, alive, quorum(total) if total else 0))
    return rows


def check_removal_order(voters: int, order: Sequence[RemovalAction] = REMOVAL_ORDER) -> None:
    """Refuse an order of removal actions that loses quorum at any point for ``voters`` healthy voters.

    Raises:
        PreconditionFailed: The configuration change cannot commit, or the cluster is left without
            quorum between the actions, or ``voters`` < 2 (the last voter is never removed).
    """
    if voters < 2:
        raise PreconditionFailed(f"removing a member of {voters} voter(s) would leave no voter")
    if set(order) != set(RemovalAction) or len(order) != len(RemovalAction):
        raise PreconditionFailed(f"a removal needs each of {[a.value for a in RemovalAction]} once")
    total, alive = voters, voters
    for action, alive_after, needed in removal_trace(voters, order):
        if action is RemovalAction.MEMBER_REMOVE and alive < quorum(total):
            raise PreconditionFailed(
                f"member remove with {alive} of {total} voters alive cannot commit (quorum {quorum(total)})"
            )
        if action is RemovalAction.MEMBER_REMOVE:
            total -= 1
        alive = alive_after
        if alive < needed:
            raise PreconditionFailed(
                f"after {action.value} only {alive} of {total} voters are alive (quorum {needed})"
            )


def next_step(observed: Observed, layout: Layout) -> NextStep:
    """Decide the next step of the migration from the observed state (idempotent re-planning).

    Order: join the new members one at a time (an added member is finished -- deployed, caught up,
    promoted -- before the next is added), move the leader to a new member, remove the old members
    one at a time (highest ordinal first, never the leader; ``member remove`` before the pod stops, see
    :data:`REMOVAL_ORDER`), rewrite the new StatefulSet's
    ``--initial-cluster`` to the new members only, then clean up.

    Raises:
        PreconditionFailed: Members that belong to neither side, or a state the plan cannot continue
            from safely.
    """
    members = list(observed.members)
    new, old, unknown = classify_members(members, layout)
    if unknown:
        raise PreconditionFailed(
            f"the cluster has members that are neither {layout.source_sts}-N nor {layout.new_sts}-N: "
            f"{sorted(unknown)}; remove them (etcdctl member remove) or migrate them separately first"
        )
    started, unstarted, learners = split_members(members)
    new_pods = layout.new_pods()
    # 1. a registered new member not finished yet (learner, not started, or not deployed)
    for i, pod in enumerate(new_pods):
        m = new.get(pod)
        if m is None:
            continue
        deployed = (observed.new_sts_replicas or 0) > i
        if m.is_learner or not m.started or not deployed:
            joining = PlannedMember(pod, layout.new_peer_url(pod), layout.new_client_url(pod))
            return NextStep(
                StepKind.DEPLOY_MEMBER,
                member=pod,
                member_id=m.id,
                peer_url=joining.peer_url,
                initial_cluster=initial_cluster_for_join(members, joining),
                replicas=max(i + 1, observed.new_sts_replicas or 0),
                quorum_after=quorum(_voters(members) + (1 if m.is_learner else 0)),
                reason="registered but not yet running, caught up and voting",
            )
    # 2. add the next new member (only while every old member is still there: never re-add after cutover)
    for i, pod in enumerate(new_pods):
        if pod in new:
            continue
        joining = PlannedMember(pod, layout.new_peer_url(pod), layout.new_client_url(pod))
        check_membership_change(
            started,
            unstarted,
            MembershipChange(ChangeKind.ADD_LEARNER, joining.peer_url, pod),
            learners=learners,
        )
        return NextStep(
            StepKind.ADD_MEMBER,
            member=pod,
            peer_url=joining.peer_url,
            initial_cluster=initial_cluster_for_join(members, joining),
            replicas=i + 1,
            quorum_after=quorum(_voters(members) + 1),
            reason="next new member: a learner until caught up (quorum shown after its promotion)",
        )
    # 3. the leader must be a new member before old ones go
    if old and observed.leader_id and observed.leader_id not in {m.id for m in new.values()}:
        target = new[new_pods[0]]
        return NextStep(
            StepKind.MOVE_LEADER,
            member=new_pods[0],
            member_id=target.id,
            peer_url=layout.new_peer_url(new_pods[0]),
            quorum_after=quorum(_voters(members)),
            reason="hand leadership to the new side before the old members go",
        )
    # 4. stop old pods whose members are gone (a run that stopped between member remove and scale-down)
    kept_old = max((layout.ordinal(p) + 1 for p in old), default=0)
    if observed.old_sts_replicas is not None and observed.old_sts_replicas > kept_old:
        return NextStep(
            StepKind.STOP_OLD,
            member=f"{layout.source_sts}-{observed.old_sts_replicas - 1}",
            replicas=kept_old,
            quorum_after=quorum(max(_voters(members), 1)),
            reason="its member was removed: stop the pod",
        )
    # 5. remove old members, highest ordinal first, never the leader: member remove, then stop the pod
    if old:
        pod = max(old, key=layout.ordinal)
        m = old[pod]
        if m.id == observed.leader_id:
            raise PreconditionFailed(
                f"{pod} is the leader and would be removed next: move leadership to a new member first"
            )
        check_membership_change(
            started, unstarted, MembershipChange(ChangeKind.REMOVE, m.peer_urls[0], pod), learners=learners
        )
        check_removal_order(_voters(members))
        return NextStep(
            StepKind.REMOVE_OLD,
            member=pod,
            member_id=m.id,
            peer_url=m.peer_urls[0],
            replicas=layout.ordinal(pod),
            quorum_after=quorum(max(_voters(members) - 1, 1)),
            reason="old member (member remove, then its pod stops); the new side holds the leader",
        )
    # 6. final --initial-cluster of the new members only, rolled out one pod at a time
    final = initial_cluster(
        [PlannedMember(p, layout.new_peer_url(p), layout.new_client_url(p)) for p in new_pods]
    )
    if (
        observed.new_sts_initial_cluster != final
        or observed.new_sts_partition != 0
        or not observed.new_sts_rolled_out
    ):
        return NextStep(
            StepKind.FINALIZE_STS,
            initial_cluster=final,
            replicas=len(new_pods),
            quorum_after=quorum(len(new_pods)),
            reason="the StatefulSet must describe the new members only",
        )
    if observed.old_sts_exists:
        return NextStep(StepKind.CLEANUP, reason="delete the old StatefulSet, Services and DNS entries")
    return NextStep(StepKind.DONE, reason="every member is on the new side")


# ------------------------------------------------------------------------------------------ plan text


@dataclass
class PlanRow:
    """One row of the rendered plan."""

    step: str
    initial_cluster: str
    voters: int
    quorum: int


@dataclass
class PlanDoc:
    """The full plan (for the Markdown artifact)."""

    rows: list[PlanRow] = field(default_factory=list)


def simulate_plan(layout: Layout, members: Sequence[CurrentMember], leader_id: int) -> list[NextStep]:
    """Simulate :func:`next_step` from ``members`` to the end (for the plan artifact)."""
    state = list(members)
    leader = leader_id
    replicas = 0
    ic = ""
    steps: list[NextStep] = []
    fake_id = -1
    old_replicas = layout.source_replicas
    for _ in range(4 * (layout.source_replicas + layout.target_replicas) + 8):
        step = next_step(
            Observed(tuple(state), leader, replicas or None, ic, 0 if ic else 1, True, True, old_replicas),
            layout,
        )
        if step.kind in (StepKind.CLEANUP, StepKind.DONE):
            steps.append(step)
            break
        steps.append(step)
        if step.kind is StepKind.ADD_MEMBER:
            state.append(CurrentMember(fake_id, step.member, (step.peer_url,), is_learner=False))
            fake_id -= 1
            replicas = step.replicas
        elif step.kind is StepKind.DEPLOY_MEMBER:
            state = [
                CurrentMember(m.id, step.member, m.peer_urls, False) if m.id == step.member_id else m
                for m in state
            ]
            replicas = step.replicas
        elif step.kind is StepKind.MOVE_LEADER:
            leader = step.member_id
        elif step.kind is StepKind.REMOVE_OLD:
            state = [m for m in state if m.id != step.member_id]
            old_replicas = step.replicas
        elif step.kind is StepKind.STOP_OLD:
            old_replicas = step.replicas
        elif step.kind is StepKind.FINALIZE_STS:
            ic = step.initial_cluster
    return steps


def plan_markdown(
    layout: Layout,
    members: Sequence[CurrentMember],
    leader_id: int,
    *,
    source_lb: Mapping[str, str] | None = None,
    target_lb: Mapping[str, str] | None = None,
    warnings: Sequence[str] = (),
) -> str:
    """The migration plan as Markdown: every member add/remove with its ``--initial-cluster`` and quorum."""
    steps = simulate_plan(layout, members, leader_id)
    lines = [
        f"# etcd stretch migration: {layout.source_namespace}/{layout.source_sts} -> "
        f"{layout.target_namespace}/{layout.new_sts}",
        "",
        f"- source members: {', '.join(sorted(m.name or m.peer_urls[0] for m in members))}",
        f"- target members: {', '.join(layout.new_pods())} (headless Service `{layout.new_service}`)",
    ]
    if source_lb:
        lines.append(
            f"- source LoadBalancer IPs: {', '.join(f'{k}={v}' for k, v in sorted(source_lb.items()))}"
        )
    if target_lb:
        lines.append(
            f"- target LoadBalancer IPs: {', '.join(f'{k}={v}' for k, v in sorted(target_lb.items()))}"
        )
    for w in warnings:
        lines.append(f"- WARNING: {w}")
    lines += ["", "| # | step | member | --initial-cluster | quorum after |", "|---|---|---|---|---|"]
    for i, s in enumerate(steps, 1):
        ic = f"`{s.initial_cluster}`" if s.initial_cluster else ""
        q = str(s.quorum_after) if s.quorum_after else ""
        lines.append(f"| {i} | {s.kind.value} | {s.member} | {ic} | {q} |")
    return "\n".join(lines) + "\n"


def check_target_count(target_replicas: int, allow_even_size: bool) -> None:
    """Refuse 0 or an even target size without explicit consent.

    Raises:
        InputError: Naming ``target_replicas`` / ``allow_even_size``.
    """
    if target_replicas < 1:
        raise InputError("target_replicas", f"is {target_replicas}", "give at least 1 (3 or 5 are usual)")
    if target_replicas % 2 == 0 and not allow_even_size:
        raise InputError(
            "target_replicas",
            f"{target_replicas} is even: it tolerates no more failures than {target_replicas - 1} members",
            f"use {target_replicas - 1} or {target_replicas + 1}, or set allow_even_size=True",
        )
