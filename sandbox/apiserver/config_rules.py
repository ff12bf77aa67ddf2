"""Secret and ConfigMap rules: base64 data, key names, TLS keys, size, immutability."""

from __future__ import annotations

import base64
import binascii
import re

from sandbox.apiserver.errors import FieldError, bad_request
from sandbox.apiserver.meta_rules import Errors, Obj

_CONFIG_KEY_RE = re.compile(r"^[-._a-zA-Z0-9]+$")


def secret_data(obj: Obj, kind: str = "Secret") -> None:
    """Raise 400 like the real decoder when Secret ``data`` is not base64."""
    for value in (obj.get("data") or {}).values():
        if not isinstance(value, str):
            continue
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            pos = next((i for i, ch in enumerate(value) if not (ch.isalnum() or ch in "+/=")), 0)
            raise bad_request(
                f'{kind} in version "v1" cannot be handled as a {kind}: illegal base64 data at input byte {pos}'  # noqa: E501
            ) from None


def secret(obj: Obj, old: Obj | None) -> Errors:
    """Secret rules: key names, tls keys, immutable type/data."""
    errs: Errors = []
    data = obj.get("data") or {}
    for k in data:
        if not _CONFIG_KEY_RE.match(k):
            errs.append(
                FieldError(
                    f"data[{k}]",
                    "Invalid",
                    k,
                    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',"  # noqa: E501
                    "  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                )
            )
    stype = obj.get("type", "Opaque")
    if stype == "kubernetes.io/tls":
        for k in ("tls.crt", "tls.key"):
            if k not in data:
                errs.append(FieldError(f"data[{k}]", "Required", None, ""))
    if old is not None:
        if old.get("type", "Opaque") != stype:
            errs.append(FieldError("type", "Invalid", stype, "field is immutable"))
        if old.get("immutable") and (old.get("data") != obj.get("data")):
            errs.append(FieldError("data", "Forbidden", None, "field is immutable when `immutable` is set"))
    return errs


def configmap(obj: Obj, old: Obj | None) -> Errors:
    """ConfigMap rules: keys, 1 MiB total, immutable."""
    errs: Errors = []
    total = 0
    for field in ("data", "binaryData"):
        for k, v in (obj.get(field) or {}).items():
            total += len(str(v))
            if not _CONFIG_KEY_RE.match(k):
                errs.append(
                    FieldError(
                        f"{field}[{k}]",
                        "Invalid",
                        k,
                        "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. "
                        "'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",  # noqa: E501
                    )
                )
    if total > 1024 * 1024:
        errs.append(FieldError("[]", "TooLong", None, "must have at most 1048576 bytes"))
    if old is not None and old.get("immutable"):
        for field in ("data", "binaryData"):
            if old.get(field) != obj.get(field):
                errs.append(
                    FieldError(field, "Forbidden", None, "field is immutable when `immutable` is set")
                )
    return errs
