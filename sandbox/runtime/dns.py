"""Cluster DNS as hosts files: what a pod of the cluster can resolve.

The sandbox has no DNS server. Each pod's ``/etc/hosts`` (a bind mount) holds every name the
cluster's CoreDNS would answer for that pod: the static entries of the Corefile ``hosts { ... }``
block(s) (CoreDNS runs ``hosts`` before ``kubernetes``, so they come first), Service names, the
pod names of headless Services, and the short forms that the pod's resolv.conf search path
(``<ns>.svc.cluster.local svc.cluster.local cluster.local``) would make resolvable. Names outside
this list do not resolve, because the pod's ``/etc/resolv.conf`` lists no reachable nameserver.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

CLUSTER_DOMAIN = "cluster.local"

DEFAULT_COREFILE = """.:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30
    loop
    reload
    loadbalance
}
"""

_HOSTS_OPTIONS = {"fallthrough", "ttl", "reload", "no_reverse", "no_autoptr"}
_IP_RE = re.compile(r"^(\d{1,3}\.){3}\d{1,3}$|^[0-9a-fA-F:]+:[0-9a-fA-F:.]*$")


@dataclass(frozen=True)
class StaticHost:
    """One static entry: an IP and the names that resolve to it."""

    ip: str
    names: tuple[str, ...]


def parse_corefile_hosts(corefile: str) -> list[StaticHost]:
    """Return the inline entries of every ``hosts { ... }`` block of a Corefile, in order.

    Options (``fallthrough``, ``ttl`` ...) and comments are ignored; names are lower-cased and a
    trailing dot is removed, as CoreDNS normalises them.
    """
    entries: list[StaticHost] = []
    lines = [line.split("#", 1)[0].strip() for line in corefile.splitlines()]
    depth_in_hosts = 0
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if depth_in_hosts == 0:
            tokens = line.split()
            if tokens and tokens[0] == "hosts" and line.endswith("{"):
                depth_in_hosts = 1
            continue
        if line.endswith("{"):
            depth_in_hosts += 1
            continue
        if line == "}":
            depth_in_hosts -= 1
            continue
        tokens = line.split()
        if depth_in_hosts != 1 or not tokens or tokens[0] in _HOSTS_OPTIONS:
            continue
        if _IP_RE.match(tokens[0]) and len(tokens) > 1:
            names = tuple(n.lower().rstrip(".") for n in tokens[1:])
            entries.append(StaticHost(ip=tokens[0], names=names))
    return entries


def module_config_hosts(spec: Mapping[str, object]) -> list[StaticHost]:
    """Entries of a Deckhouse ``ModuleConfig kube-dns`` ``spec.settings.hosts`` list."""
    settings = spec.get("settings") if isinstance(spec, Mapping) else None
    hosts = settings.get("hosts") if isinstance(settings, Mapping) else None
    out: list[StaticHost] = []
    if isinstance(hosts, list):
        for item in hosts:
            if isinstance(item, Mapping) and item.get("domain") and item.get("ip"):
                out.append(StaticHost(ip=str(item["ip"]), names=(str(item["domain"]).lower().rstrip("."),)))
    return out


@dataclass(frozen=True)
class ServiceRecord:
    """A Service as DNS sees it.

    Attributes:
        name: Service name.
        namespace: its namespace.
        cluster_ip: the cluster IP, or None for a headless Service.
        endpoint_ips: addresses published for the Service (ready ones, plus not-ready ones when
            ``publishNotReadyAddresses`` is set), used for headless Services.
        pod_hosts: ``(hostname, ip)`` of published pods whose ``subdomain`` is this Service.
    """

    name: str
    namespace: str
    cluster_ip: str | None
    endpoint_ips: tuple[str, ...] = ()
    pod_hosts: tuple[tuple[str, str], ...] = ()


@dataclass
class ClusterDns:
    """Every record of one cluster's DNS; renders per-namespace and per-pod hosts files."""

    static_hosts: list[StaticHost] = field(default_factory=list)
    services: list[ServiceRecord] = field(default_factory=list)
    domain: str = CLUSTER_DOMAIN

    def entries_for(self, namespace: str | None) -> list[tuple[str, list[str]]]:
        """Return ``(ip, names)`` lines for a pod in ``namespace`` (None: FQDN-like forms only)."""
        out: list[tuple[str, list[str]]] = [(h.ip, list(h.names)) for h in self.static_hosts]
        for svc in sorted(self.services, key=lambda s: (s.namespace, s.name)):
            base = [
                f"{svc.name}.{svc.namespace}.svc.{self.domain}",
                f"{svc.name}.{svc.namespace}.svc",
                f"{svc.name}.{svc.namespace}",
            ]
            if svc.namespace == namespace:
                base.append(svc.name)
            if svc.cluster_ip:
                out.append((svc.cluster_ip, base))
            else:
                out.extend((ip, base) for ip in svc.endpoint_ips)
            for hostname, ip in svc.pod_hosts:
                names = [f"{hostname}.{n}" for n in base]
                out.append((ip, names))
        return out

    def render(self, namespace: str | None, own: tuple[str, list[str]] | None = None) -> str:
        """Render a hosts file for a pod in ``namespace``; ``own`` = the pod's own (ip, names) line."""
        lines = [
            "# Kubernetes-managed hosts file (stateferry sandbox: cluster DNS rendered as hosts).",
            "127.0.0.1\tlocalhost",
            "::1\tlocalhost ip6-localhost ip6-loopback",
            "fe00::0\tip6-localnet",
            "fe00::1\tip6-allnodes",
            "fe00::2\tip6-allrouters",
        ]
        if own is not None:
            lines.append(f"{own[0]}\t{' '.join(own[1])}")
        lines.extend(f"{ip}\t{' '.join(names)}" for ip, names in self.entries_for(namespace))
        return "\n".join(lines) + "\n"


def resolv_conf(namespace: str, nameserver: str, domain: str = CLUSTER_DOMAIN) -> str:
    """The pod's ``/etc/resolv.conf``: the real search path, no reachable nameserver.

    ``nameserver`` should be a loopback address of the cluster on which nothing listens on port 53
    (the sandbox uses ``127.<c>.0.53``), so lookups that miss the hosts file fail fast instead of
    leaking to the host's resolver.
    """
    return (
        "# stateferry sandbox: cluster DNS is served from /etc/hosts; no upstream resolver.\n"
        f"search {namespace}.svc.{domain} svc.{domain} {domain}\n"
        f"nameserver {nameserver}\n"
        "options ndots:5 timeout:1 attempts:1\n"
    )


def write_in_place(path: Path, content: str, *, create: bool = True) -> bool:
    """Write ``content`` into ``path`` keeping its inode (bind mounts see it). True if it changed.

    With ``create=False`` a missing file (e.g. of a pod that just ended) is left alone.
    """
    try:
        if path.read_text() == content:
            return False
    except FileNotFoundError:
        if not create:
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:  # O_TRUNC on the same inode, never a rename
        fh.write(content)
        fh.flush()
        os.fsync(fh.fileno())
    return True


def hosts_names(content: str) -> dict[str, list[str]]:
    """Parse a hosts file into name -> IPs (for tests and diagnostics)."""
    out: dict[str, list[str]] = {}
    for line in content.splitlines():
        tokens = line.split("#", 1)[0].split()
        for name in tokens[1:]:
            out.setdefault(name, []).append(tokens[0])
    return out


def corefile_with_hosts(corefile: str, entries: Iterable[StaticHost]) -> str:
    """Return ``corefile`` with a ``hosts { ... fallthrough }`` block holding ``entries`` (for tests)."""
    block = "    hosts {\n" + "".join(f"       {e.ip} {' '.join(e.names)}\n" for e in entries)
    block += "       fallthrough\n    }\n"
    head, sep, tail = corefile.partition("    kubernetes ")
    return head + block + sep + tail if sep else corefile
