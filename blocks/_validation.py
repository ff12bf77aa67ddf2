"""Field checks shared by the blocks: every failure names the field and the fix.

The checks raise :class:`stateferry.errors.InputError` (a ``ValueError``), so inside a pydantic
validator they surface as a ``ValidationError`` whose message carries ``field: problem. Fix: fix``.
Blocks set ``hide_input_in_errors`` so a rejected secret is never echoed back in the error.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from stateferry.errors import InputError

_HOSTNAME_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")


@dataclass(frozen=True)
class Endpoint:
    """A parsed network endpoint.

    Attributes:
        scheme: ``"http"`` / ``"https"`` when the user wrote one, else None.
        host: Host name or IP address (IPv6 without brackets).
        port: Port number, or None when the user gave none.
    """

    scheme: str | None
    host: str
    port: int | None

    @property
    def netloc(self) -> str:
        """``host:port`` (IPv6 in brackets), port omitted when unknown."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" if self.port is not None else host


def check_host(field: str, host: str) -> str:
    """Validate a host name or IP address and return it.

    Args:
        field: Field name for the error message.
        host: The host to check.

    Raises:
        InputError: When ``host`` is neither an IP address nor a DNS name.
    """
    host = host.strip()
    if not host:
        raise InputError(field, "the host is empty", "give a host name or IP address, e.g. 127.0.0.1")
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if len(host) > 253 or not all(_HOSTNAME_LABEL.match(label) for label in labels):
        raise InputError(
            field,
            f"{host!r} is not a valid host name or IP address",
            "use letters, digits, hyphens and dots only (e.g. etcd-0.etcd.default.svc or 10.0.0.5)",
        )
    return host


def check_port(field: str, port: int) -> int:
    """Validate a TCP port number.

    Raises:
        InputError: When ``port`` is outside 1..65535.
    """
    if not 1 <= int(port) <= 65535:
        raise InputError(field, f"port {port} is out of range", "use a port between 1 and 65535")
    return int(port)


def parse_endpoint(field: str, value: str, *, example: str) -> Endpoint:
    """Parse ``host[:port]`` or ``http(s)://host[:port]``.

    Args:
        field: Field name for the error message.
        value: What the user wrote.
        example: A correct value shown in the fix.

    Returns:
        The parsed endpoint.

    Raises:
        InputError: When the value is malformed (bad scheme, path, credentials, host or port).
    """
    text = value.strip()
    fix = f"write it as host:port or http(s)://host:port, e.g. {example}"
    if not text:
        raise InputError(field, "the endpoint is empty", fix)
    if "@" in text:  # user:password@host - never echo it (a bad port would otherwise show the secret)
        raise InputError(field, "the endpoint must not carry credentials", "put them in the secret fields")
    has_scheme = "://" in text
    try:
        parts = urlsplit(text if has_scheme else f"//{text}")
        port = parts.port
    except ValueError as exc:
        raise InputError(field, f"{value!r} is malformed ({exc})", fix) from None
    scheme = parts.scheme.lower() if has_scheme else None
    if scheme not in (None, "http", "https"):
        raise InputError(field, f"scheme {parts.scheme!r} in {value!r} is not supported", fix)
    if parts.username or parts.password:
        raise InputError(field, "the endpoint must not carry credentials", "put them in the secret fields")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InputError(field, f"{value!r} has a path or query", fix)
    if not parts.hostname:
        raise InputError(field, f"{value!r} has no host", fix)
    host = check_host(field, parts.hostname)
    if port is not None:
        check_port(field, port)
    return Endpoint(scheme=scheme, host=host, port=port)


def check_pem(field: str, text: str, *, kinds: tuple[str, ...]) -> str:
    """Check that ``text`` holds PEM blocks of one of ``kinds`` (e.g. ``("CERTIFICATE",)``).

    Raises:
        InputError: When no ``-----BEGIN <kind>-----`` block is present. The text is never echoed.
    """
    if not any(re.search(rf"-----BEGIN (?:[A-Z0-9]+ )*{kind}-----", text) for kind in kinds):
        wanted = " or ".join(kinds)
        raise InputError(
            field,
            f"does not contain a PEM {wanted} block",
            f"paste the PEM text (-----BEGIN {kinds[0]}-----...)",
        )
    return text


def check_nonempty(field: str, value: str, fix: str) -> str:
    """Strip ``value`` and reject it when empty.

    Raises:
        InputError: When the value is empty or only whitespace.
    """
    stripped = value.strip()
    if not stripped:
        raise InputError(field, "is empty", fix)
    return stripped


def closed_block_schema(schema: dict[str, Any], model: type[Any]) -> None:
    """JSON-schema hook for stateferry blocks: Prefect's block schema, never satisfiable by a reference.

    Prefect 3.8 validates a deployment's parameters twice: on create with required fields dropped,
    and on each run with ``oneOf: [block schema, {"$ref": ...}]``. A block whose fields are all optional
    (``KubeCluster``) would accept ``{"$ref": ...}`` under *both* alternatives, so a saved block could
    never be passed to a deployment. Requiring the always-serialised boolean fields keeps the reference
    form unambiguous at run time while the create-time check (which ignores ``required``) still passes.
    """
    from prefect.blocks.core import schema_extra

    schema_extra(schema, model)
    if not schema.get("required"):
        flags = [name for name, prop in schema.get("properties", {}).items() if prop.get("type") == "boolean"]
        if flags:
            schema["required"] = flags
