"""Pure TLS decisions for the etcd stretch migration (issue 13): SANs, flags, mounts, CA source.

No I/O: the callers read the source StatefulSet and the CA Secret and hand the parsed values in.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from planning.etcd_layout import Layout, dns_names
from stateferry.errors import InputError, PreconditionFailed

#: etcd 3.4 flags that name a TLS file (``--flag=/path`` or ``--flag /path``).
TLS_FILE_FLAGS = (
    "cert-file",
    "key-file",
    "trusted-ca-file",
    "peer-cert-file",
    "peer-key-file",
    "peer-trusted-ca-file",
)
#: etcd 3.4 boolean TLS flags.
TLS_BOOL_FLAGS = (
    "client-cert-auth",
    "peer-client-cert-auth",
    "auto-tls",
    "peer-auto-tls",
    "experimental-peer-skip-client-san-verification",
)
_FLAG_RE = re.compile(r"--(?P<name>[a-z][a-z-]*)(?:(?:=|[ \t]+)(?P<value>[^\s\"';&|<>()-][^\s\"';&|<>()]*))?")
_SECRET_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


@dataclass(frozen=True)
class EtcdTlsFlags:
    """The TLS-relevant part of an etcd command line (paths as written, unchecked)."""

    files: Mapping[str, str]
    bools: Mapping[str, bool]

    @property
    def peer_tls(self) -> bool:
        """True when the members talk TLS to each other."""
        return "peer-cert-file" in self.files

    @property
    def client_tls(self) -> bool:
        """True when the client port serves TLS."""
        return "cert-file" in self.files


def parse_tls_flags(command: str) -> EtcdTlsFlags:
    """Read the TLS flags from an etcd command line (the joined command/args of the etcd container).

    Args:
        command: The command text.

    Returns:
        Files by flag name and the boolean flags (``--flag``, ``--flag=true``/``false``).

    Raises:
        PreconditionFailed: The members use ``--auto-tls``/``--peer-auto-tls`` (self-signed; the new
            members could not be given matching certificates) or name a key without its cert.
    """
    files: dict[str, str] = {}
    bools: dict[str, bool] = {}
    for match in _FLAG_RE.finditer(command):
        name, value = match["name"], match["value"]
        if name in TLS_FILE_FLAGS and value:
            files[name] = value
        elif name in TLS_BOOL_FLAGS:
            bools[name] = value is None or value.lower() == "true"
    for flag in ("auto-tls", "peer-auto-tls"):
        if bools.get(flag):
            raise PreconditionFailed(
                f"the source members run with --{flag} (self-signed certificates); give them certificates "
                "from a CA first, then migrate"
            )
    for flag, path in sorted(files.items()):
        if "$" in path:
            raise PreconditionFailed(
                f"--{flag}={path} picks a file per member through a variable; the new members share one pod "
                "template and one certificate: give every member the same file names, then migrate"
            )
    for prefix in ("", "peer-"):
        if (f"{prefix}cert-file" in files) != (f"{prefix}key-file" in files):
            raise PreconditionFailed(
                f"the source members set only one of --{prefix}cert-file/--{prefix}key-file"
            )
    return EtcdTlsFlags(files=files, bools=bools)


def peer_sans(layout: Layout, pod: str, lb_address: str | None) -> tuple[list[str], list[str]]:
    """Subject alternative names of a new member's peer (and server) certificate.

    Every name form a peer may dial (``pod`` ... ``pod.svc.ns.svc.<domain>``, whatever depth the
    layout uses) plus the member's LoadBalancer address, if any.

    Returns:
        ``(dns_names, ip_addresses)``, both sorted and without duplicates.
    """
    names = set(dns_names(pod, layout.new_service, layout.target_namespace, layout.cluster_domain))
    names.add(layout.host(pod, new=True))
    ips: set[str] = set()
    if lb_address:
        try:
            ips.add(str(ipaddress.ip_address(lb_address)))
        except ValueError:
            names.add(lb_address)
    return sorted(names), sorted(ips)


@dataclass(frozen=True)
class SecretMount:
    """A Secret volume of the etcd container that holds TLS files."""

    volume: str
    secret: str
    mount_path: str


def tls_secret_mounts(pod_spec: Mapping[str, Any], container: str, flags: EtcdTlsFlags) -> list[SecretMount]:
    """The Secret volumes of ``container`` that hold a file named by a TLS flag.

    Raises:
        PreconditionFailed: A TLS file is not under any Secret mount (hostPath, baked into the image):
            the migration cannot give the new members their own certificates there.
    """
    volumes = {
        v.get("name"): (v.get("secret") or {}).get("secretName")
        for v in pod_spec.get("volumes") or []
        if isinstance(v, Mapping)
    }
    mounts: list[SecretMount] = []
    containers = [c for c in pod_spec.get("containers") or [] if c.get("name") == container]
    for vm in (containers[0].get("volumeMounts") or []) if containers else []:
        secret = volumes.get(vm.get("name"))
        if secret:
            mounts.append(SecretMount(str(vm["name"]), str(secret), str(vm.get("mountPath", "")).rstrip("/")))
    used: list[SecretMount] = []
    for flag, path in sorted(flags.files.items()):
        owner = [m for m in mounts if m.mount_path and path.startswith(m.mount_path + "/")]
        if not owner:
            raise PreconditionFailed(
                f"--{flag} names a file that is not in a Secret volume of the {container!r} container; "
                "mount the etcd TLS files from a Secret, then migrate"
            )
        best = max(owner, key=lambda m: len(m.mount_path))
        if best not in used:
            used.append(best)
    return used


def shared_peer_sans(layout: Layout, lb_addresses: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """SANs of the one certificate the new StatefulSet's pods share.

    A StatefulSet's pods share one pod template, hence one Secret: its certificate must cover every
    new member's names and LoadBalancer address (``lb_addresses``: pod -> address).

    Returns:
        ``(dns_names, ip_addresses)``, sorted, without duplicates.
    """
    names: set[str] = set()
    ips: set[str] = set()
    for pod in layout.new_pods():
        pod_names, pod_ips = peer_sans(layout, pod, lb_addresses.get(pod))
        names.update(pod_names)
        ips.update(pod_ips)
    return sorted(names), sorted(ips)


def new_secret_name(new_sts: str, source_secret: str) -> str:
    """Name of the target Secret replacing ``source_secret`` for the new StatefulSet."""
    return f"{new_sts}-{source_secret}"[:253].rstrip("-.")


def secret_file_keys(flags: EtcdTlsFlags, mount: SecretMount) -> dict[str, str]:
    """Keys (file names inside the Secret) of each TLS flag served by ``mount``."""
    return {
        flag: path[len(mount.mount_path) + 1 :]
        for flag, path in flags.files.items()
        if path.startswith(mount.mount_path + "/")
    }


def check_ca_source(ca_secret: str | None, issuer: str | None, issuer_api_served: bool) -> str:
    """Validate where the new members' certificates come from.

    Args:
        ca_secret: Name of a Secret in the target namespace with ``tls.crt``/``tls.key`` (the CA).
        issuer: A cert-manager Issuer name (flow parameter ``tls_issuer``).
        issuer_api_served: Whether the target serves ``cert-manager.io/v1``.

    Returns:
        The CA Secret name.

    Raises:
        InputError: Naming ``tls_issuer`` or ``tls_ca_secret`` and the fix.
    """
    if issuer is not None:
        if not issuer_api_served:
            raise InputError(
                "tls_issuer",
                "the target cluster does not serve cert-manager.io/v1 (no Issuer API)",
                "unset tls_issuer and name a Secret holding the CA certificate and key in tls_ca_secret",
            )
        raise InputError(
            "tls_issuer", "cert-manager issuers are not supported yet", "use tls_ca_secret instead"
        )
    if not ca_secret:
        raise InputError(
            "tls_ca_secret",
            "the source members use peer TLS but no CA was named",
            "give the name of a Secret in the target namespace with the CA's tls.crt and tls.key",
        )
    if not _SECRET_NAME.fullmatch(ca_secret):
        raise InputError(
            "tls_ca_secret", f"{ca_secret[:80]!r} is not a Secret name", "give a Kubernetes name"
        )
    return ca_secret


def redact_pems(text: str, secrets: Sequence[str]) -> str:
    """Replace every secret value (PEM, password) found in ``text`` by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return re.sub(
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", "***", text, flags=re.S
    )


def rewrite_secret_volumes(pod_spec: Mapping[str, Any], renames: Mapping[str, str]) -> dict[str, Any]:
    """A copy of ``pod_spec`` whose Secret volumes use the new Secret names (same volume names and
    mount paths, so the etcd flags keep pointing at the same files).

    Args:
        pod_spec: The source pod template's ``spec``.
        renames: Source Secret name -> target Secret name.
    """
    spec = dict(pod_spec)
    volumes = []
    for volume in pod_spec.get("volumes") or []:
        secret = volume.get("secret") if isinstance(volume, Mapping) else None
        if isinstance(secret, Mapping) and secret.get("secretName") in renames:
            volume = {**volume, "secret": {**secret, "secretName": renames[str(secret["secretName"])]}}
        volumes.append(volume)
    if "volumes" in pod_spec:
        spec["volumes"] = volumes
    return spec


def etcd_command_text(container: Mapping[str, Any]) -> str:
    """The etcd container's flags as one command line: ``command``, ``args`` and ``ETCD_*`` env values.

    ``ETCD_PEER_CERT_FILE=/x`` is read as ``--peer-cert-file=/x`` (etcd reads its flags from both).
    """
    parts = [str(t) for t in [*(container.get("command") or []), *(container.get("args") or [])]]
    for env in container.get("env") or []:
        name = str(env.get("name", ""))
        if name.startswith("ETCD_") and isinstance(env.get("value"), str):
            parts.append(f"--{name[5:].lower().replace('_', '-')}={env['value']}")
    return " ".join(parts)


def check_peer_san_verification(flags: EtcdTlsFlags) -> None:
    """Refuse a peer-mTLS source whose members check a peer certificate's SANs against its address.

    etcd >= 3.2 with ``--peer-client-cert-auth`` accepts a peer only when the connection's remote
    address is an IP SAN of the peer's certificate, or one of its DNS SANs resolves to it. In a
    stretched cluster the members reach each other through LoadBalancers, so the remote address is a
    load balancer's or node's, never the member's: the old members would reject every new member.

    Raises:
        PreconditionFailed: Naming the flag that makes the check pass while keeping CA verification.
    """
    if (
        flags.peer_tls
        and flags.bools.get("peer-client-cert-auth")
        and not flags.bools.get("experimental-peer-skip-client-san-verification")
    ):
        raise PreconditionFailed(
            "the source members verify peer certificates against the connection's address "
            "(--peer-client-cert-auth without --experimental-peer-skip-client-san-verification): through "
            "the per-member LoadBalancers that address is a load balancer's, so the new members would be "
            "rejected. Add --experimental-peer-skip-client-san-verification=true to the etcd flags (peer "
            "certificates are still verified against the CA) with a rolling restart, then migrate"
        )


def tls_server_name(source_dns_sans: Sequence[str], first_pod: str) -> str:
    """The TLS server name the flow verifies every member's client certificate against.

    A name of the source certificate (the first non-wildcard DNS SAN, else the first wildcard with
    the first pod's name in place of ``*``). The new members' certificate carries every source SAN
    (:func:`member_cert_sans`), so the same name verifies old and new members alike.

    Raises:
        PreconditionFailed: The source certificate has no DNS name.
    """
    plain = [n for n in source_dns_sans if not n.startswith("*.")]
    if plain:
        return plain[0]
    wild = [n for n in source_dns_sans if n.startswith("*.")]
    if wild:
        return first_pod + wild[0][1:]
    raise PreconditionFailed(
        "the source members' certificate names no DNS name (subjectAltName): the new members' "
        "certificate could not be verified by the same clients; reissue it with the members' names"
    )


def member_cert_sans(
    layout: Layout, lb_addresses: Mapping[str, str], source_dns_sans: Sequence[str]
) -> tuple[list[str], list[str]]:
    """SANs of the new members' shared certificate: their names and LB addresses plus the source's names.

    The source certificate's DNS names are kept so that every client that verified the old members
    (by a client Service name, a wildcard, a member name) verifies the new ones; its IP addresses
    are pod addresses of the other cluster and are dropped.
    """
    names, ips = shared_peer_sans(layout, lb_addresses)
    return sorted(set(names) | set(source_dns_sans)), ips


@dataclass(frozen=True)
class SecretKeys:
    """Which keys of one TLS Secret hold the certificate, the key and the CA bundle."""

    certs: tuple[str, ...]
    keys: tuple[str, ...]
    cas: tuple[str, ...]


def secret_keys(flags: EtcdTlsFlags, mount: SecretMount) -> SecretKeys:
    """Sort the TLS files ``mount`` serves into certificate, key and CA keys of its Secret."""
    by_flag = secret_file_keys(flags, mount)

    def pick(*names: str) -> tuple[str, ...]:
        return tuple(sorted({by_flag[n] for n in names if n in by_flag}))

    return SecretKeys(
        certs=pick("cert-file", "peer-cert-file"),
        keys=pick("key-file", "peer-key-file"),
        cas=pick("trusted-ca-file", "peer-trusted-ca-file"),
    )


def new_secret_data(
    source_data: Mapping[str, bytes], keys: SecretKeys, *, cert_pem: bytes, key_pem: bytes, ca_pem: bytes
) -> dict[str, bytes]:
    """The data of a new members' TLS Secret: the source Secret's, with their certificate and key.

    CA bundles keep what they trusted and gain the issuing CA when it is not in them yet (old and new
    members must trust each other while the cluster is stretched).
    """
    out = dict(source_data)
    for key in keys.certs:
        out[key] = cert_pem
    for key in keys.keys:
        out[key] = key_pem
    for key in keys.cas:
        bundle = source_data.get(key, b"")
        if ca_pem.strip() not in bundle:
            bundle = (bundle.rstrip(b"\n") + b"\n" if bundle.strip() else b"") + ca_pem
        out[key] = bundle
    return out
