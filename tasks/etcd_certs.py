"""Issue peer/server certificates for new etcd members from a user-named CA (``cryptography``).

The CA comes from a Secret (``tls.crt``/``tls.key``) the caller has read; nothing here logs or
returns key material except in the returned PEM bundle meant for the member's Secret.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from stateferry.errors import InputError


@dataclass(frozen=True)
class IssuedCert:
    """A member's certificate and key (PEM) and the CA certificate that signed it."""

    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes

    def __repr__(self) -> str:
        return "IssuedCert(<redacted>)"


def load_ca(
    ca_cert_pem: bytes, ca_key_pem: bytes, *, field: str = "tls_ca_secret"
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey | object]:
    """Parse and check a CA certificate and key.

    Raises:
        InputError: Naming ``field``: unparsable PEM, not a CA, or key not matching the certificate.
            The message never contains the PEM.
    """
    try:
        cert = x509.load_pem_x509_certificate(ca_cert_pem)
        key = serialization.load_pem_private_key(ca_key_pem, password=None)
    except (ValueError, TypeError):
        raise InputError(
            field,
            "tls.crt/tls.key are not a PEM certificate and unencrypted key",
            "store the CA as a kubernetes.io/tls Secret",
        ) from None
    try:
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca = basic.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise InputError(
            field,
            "tls.crt is not a CA certificate (basicConstraints CA:FALSE)",
            "name the Secret of the CA that signs the etcd certificates",
        )
    pub = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if pub != cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise InputError(
            field, "tls.key does not belong to tls.crt", "store the CA's own key with its certificate"
        )
    return cert, key


def issue_member_cert(
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    common_name: str,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str],
    *,
    now: datetime.datetime,
    days: int = 365,
) -> IssuedCert:
    """Issue a server+client certificate (etcd uses one cert for both peer directions).

    Args:
        ca_cert_pem / ca_key_pem: The CA (from the user's Secret).
        common_name: The member name.
        dns_names / ip_addresses: Subject alternative names (see ``planning.etcd_tls.peer_sans``).
        now: Issue time (passed in: tasks keep the clock at the edge).
        days: Validity.

    Returns:
        The PEM certificate, key and CA certificate.
    """
    ca_cert, ca_key = load_ca(ca_cert_pem, ca_key_pem)
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=True,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    return IssuedCert(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        ca_pem=ca_cert.public_bytes(serialization.Encoding.PEM),
    )


def make_ca(common_name: str, *, now: datetime.datetime, days: int = 3650) -> tuple[bytes, bytes]:
    """A self-signed CA (tests and seeds): ``(cert_pem, key_pem)``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return (
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
