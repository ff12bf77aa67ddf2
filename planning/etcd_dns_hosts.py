"""Static DNS hosts of the etcd stretch migration: the CoreDNS ``hosts`` section and the Deckhouse
``ModuleConfig kube-dns`` hosts, one section per migration, never touching anyone else's entries. Pure."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence

from planning.etcd_layout import CLUSTER_DOMAIN, DNS_NAME, dns_names
from stateferry.errors import PreconditionFailed

# ------------------------------------------------------------------------------------------------- DNS


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
        if not _is_ip(ip) or not names or not all(DNS_NAME.fullmatch(n) for n in names):
            raise PreconditionFailed(
                f"refusing to write the DNS hosts entry {ip[:60]!r} {[n[:80] for n in names]!r}: not an IP "
                "address and DNS names (names from the flow parameters or the etcd members' peer URLs?)"
            )
    if not DNS_NAME.fullmatch(key.replace(" ", "-")):
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
