"""Peer and client TLS of the etcd stretch migration (issue 13): read the source's, issue the new members'.

The source members' TLS flags, the Secrets they mount and the names their certificate covers are
read in the preflight (:func:`read_source_tls`, nothing is changed). Once the LoadBalancer addresses
are known, :func:`ensure_member_secrets` issues one certificate for the new StatefulSet's pods from
the CA Secret the user names and writes the new Secrets in the target (the source Secrets' keys, with
the new certificate and key; CA bundles gain the issuing CA). No key or certificate is ever logged,
returned or put into an error.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from planning.etcd_layout import MANAGED_BY, MIGRATION_LABEL, Layout
from planning.etcd_manifests import etcd_container
from planning.etcd_tls import (
    EtcdTlsFlags,
    SecretMount,
    check_ca_source,
    check_peer_san_verification,
    etcd_command_text,
    member_cert_sans,
    new_secret_data,
    new_secret_name,
    parse_tls_flags,
    secret_file_keys,
    secret_keys,
    tls_secret_mounts,
    tls_server_name,
)
from stateferry.errors import InputError, PreconditionFailed
from tasks.etcd_certs import issue_member_cert, load_ca
from tasks.kube_dynamic import dynamic_client, resource_for
from tasks.kube_objects import apply_object, get_object

__all__ = ["SourceTls", "ensure_member_secrets", "read_source_tls"]


@dataclass
class SourceTls:
    """What the migration knows about the source members' TLS (no key material).

    Attributes:
        flags: Their TLS flags.
        mounts: The Secret volumes holding the files those flags name.
        ca_secret: The CA Secret (target namespace) the new members' certificate comes from.
        dns_sans: The DNS names of the source members' certificate.
        server_name: The TLS name the flow verifies every member against.
        renames: Source Secret -> the new members' Secret.
    """

    flags: EtcdTlsFlags
    mounts: list[SecretMount]
    ca_secret: str
    dns_sans: list[str]
    server_name: str
    renames: dict[str, str] = field(default_factory=dict)


def _secret_data(secret: Mapping[str, Any] | None) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in ((secret or {}).get("data") or {}).items()}


def _issuer_api_served(api: Any) -> bool:
    """Whether the cluster serves cert-manager's ``cert-manager.io/v1`` ``Issuer``."""
    return resource_for(dynamic_client(api), "cert-manager.io/v1", "Issuer") is not None


def read_source_tls(
    src: Any,
    tgt: Any,
    sts: Mapping[str, Any],
    *,
    source_namespace: str,
    new_statefulset: str,
    tls_ca_secret: str | None,
    tls_issuer: str | None,
) -> tuple[SourceTls | None, dict[str, str | None]]:
    """Read the source members' TLS set-up (nothing is changed).

    Returns:
        The set-up (None for a plain-text etcd) and the client credentials the source Secrets offer
        (``ca_cert``, ``client_cert``, ``client_key``, ``server_name``) for what the flow's
        ``etcd_cluster`` block leaves empty.

    Raises:
        InputError: ``tls_ca_secret``/``tls_issuer`` wrong or given for a plain-text etcd.
        PreconditionFailed: TLS files outside Secret volumes, per-member file names, auto-TLS, or a
            peer SAN check the LoadBalancers would fail.
    """
    pod_spec = ((sts.get("spec") or {}).get("template") or {}).get("spec") or {}
    container = etcd_container(pod_spec) or {}
    flags = parse_tls_flags(etcd_command_text(container))
    if not (flags.peer_tls or flags.client_tls):
        if tls_ca_secret or tls_issuer:
            raise InputError(
                "tls_ca_secret" if tls_ca_secret else "tls_issuer",
                "the source etcd uses no TLS (no --cert-file/--peer-cert-file)",
                "leave it unset",
            )
        return None, {}
    check_peer_san_verification(flags)
    mounts = tls_secret_mounts(pod_spec, str(container.get("name", "")), flags)
    ca_secret = check_ca_source(tls_ca_secret, tls_issuer, _issuer_api_served(tgt) if tls_issuer else False)
    secrets = {m.secret: _secret_data(get_object(src, "secret", source_namespace, m.secret)) for m in mounts}
    files: dict[str, bytes] = {}
    for mount in mounts:
        if not secrets[mount.secret]:
            raise PreconditionFailed(
                f"Secret {source_namespace}/{mount.secret} (mounted at {mount.mount_path}) is missing or "
                "empty in the source cluster"
            )
        for flag, key in secret_file_keys(flags, mount).items():
            if key not in secrets[mount.secret]:
                raise PreconditionFailed(
                    f"Secret {source_namespace}/{mount.secret} has no key {key!r} (the file of --{flag})"
                )
            files[flag] = secrets[mount.secret][key]
    cert_pem = files.get("cert-file") or files.get("peer-cert-file") or b""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_sans = [str(n) for n in sans.get_values_for_type(x509.DNSName)]
    except (ValueError, x509.ExtensionNotFound):
        raise PreconditionFailed(
            "the source members' certificate cannot be read or has no subjectAltName: reissue it with "
            "the members' DNS names"
        ) from None
    tls = SourceTls(
        flags=flags,
        mounts=mounts,
        ca_secret=ca_secret,
        dns_sans=sorted(set(dns_sans)),
        server_name=tls_server_name(dns_sans, f"{sts['metadata']['name']}-0"),
        renames={m.secret: new_secret_name(new_statefulset, m.secret) for m in mounts},
    )
    client_ca = files.get("trusted-ca-file") or files.get("peer-trusted-ca-file")
    offered: dict[str, str | None] = {
        "server_name": tls.server_name,
        "ca_cert": client_ca.decode() if client_ca else None,
        "client_cert": files["cert-file"].decode() if "cert-file" in files else None,
        "client_key": files["key-file"].decode() if "key-file" in files else None,
    }
    return tls, offered


def _covers(
    secret: Mapping[str, bytes],
    key: str,
    ca_cert: x509.Certificate,
    names: list[str],
    ips: list[str],
    now: datetime.datetime,
) -> bool:
    """True when ``secret[key]`` is a certificate of ``ca_cert`` for every name and IP, valid for a day."""
    try:
        cert = x509.load_pem_x509_certificate(secret.get(key, b""))
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    have_names = set(sans.get_values_for_type(x509.DNSName))
    have_ips = {str(i) for i in sans.get_values_for_type(x509.IPAddress)}
    return (
        cert.issuer == ca_cert.subject
        and set(names) <= have_names
        and {str(ipaddress.ip_address(i)) for i in ips} <= have_ips
        and cert.not_valid_after_utc > now + datetime.timedelta(days=1)
    )


def ensure_member_secrets(
    src: Any, tgt: Any, layout: Layout, tls: SourceTls, lb_ips: Mapping[str, str], *, now: datetime.datetime
) -> dict[str, str]:
    """Write the new members' TLS Secrets in the target (kept when they already cover every name).

    Args:
        src / tgt: API clients of the source and target clusters.
        layout: The migration's names.
        tls: What the preflight read.
        lb_ips: Pod -> LoadBalancer address (the new members' addresses go into the certificate).
        now: The issue time.

    Returns:
        New Secret name -> ``kept`` / ``created`` / ``replaced``.

    Raises:
        InputError: The CA Secret is missing, not a CA, or its key does not match (``tls_ca_secret``).
    """
    ca = _secret_data(get_object(tgt, "secret", layout.target_namespace, tls.ca_secret))
    if not ca.get("tls.crt") or not ca.get("tls.key"):
        raise InputError(
            "tls_ca_secret",
            f"Secret {layout.target_namespace}/{tls.ca_secret} with tls.crt and tls.key was not found in the "
            "target cluster",
            "create it there (kubectl create secret tls <name> --cert=ca.crt --key=ca.key)",
        )
    ca_cert, _ = load_ca(ca["tls.crt"], ca["tls.key"])
    names, ips = member_cert_sans(
        layout, {p: lb_ips[p] for p in layout.new_pods() if p in lb_ips}, tls.dns_sans
    )
    issued = None
    out: dict[str, str] = {}
    for mount in tls.mounts:
        name = tls.renames[mount.secret]
        keys = secret_keys(tls.flags, mount)
        current = get_object(tgt, "secret", layout.target_namespace, name)
        labels = ((current or {}).get("metadata") or {}).get("labels") or {}
        if current is not None and labels.get(MIGRATION_LABEL) != layout.migration_id:
            raise PreconditionFailed(
                f"Secret {layout.target_namespace}/{name} exists and was not created by this migration: "
                "delete or rename it (the flow names the new members' TLS Secret after the source one)"
            )
        data = _secret_data(current)
        if current is not None and all(_covers(data, k, ca_cert, names, ips, now) for k in keys.certs):
            out[name] = "kept"
            continue
        issued = issued or issue_member_cert(
            ca["tls.crt"], ca["tls.key"], layout.new_sts, names, ips, now=now
        )
        source = get_object(src, "secret", layout.source_namespace, mount.secret) or {}
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": name,
                "namespace": layout.target_namespace,
                "labels": {**MANAGED_BY, MIGRATION_LABEL: layout.migration_id},
            },
            "type": source.get("type") or "Opaque",
            "data": {
                k: base64.b64encode(v).decode()
                for k, v in new_secret_data(
                    _secret_data(source),
                    keys,
                    cert_pem=issued.cert_pem,
                    key_pem=issued.key_pem,
                    ca_pem=issued.ca_pem,
                ).items()
            },
        }
        apply_object.fn(tgt, body)  # no task run: the body holds key material
        out[name] = "created" if current is None else "replaced"
    return out
