"""Names, labels, annotations and owner references of any object (the rules of
apimachinery's ObjectMeta validation)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from sandbox.apiserver.errors import FieldError, RawValue

Obj = dict[str, Any]
Errors = list[FieldError]


_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1035_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_QUALIFIED_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")

LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
    "and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
DNS1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic "
    "character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for "
    "validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)


def dns_label(value: str, field: str) -> Errors:
    """RFC 1123 label (namespaces, container names, port names)."""
    errs: Errors = []
    if len(value) > 63:
        errs.append(FieldError(field, "Invalid", value, "must be no more than 63 characters"))
    if not _LABEL_RE.match(value):
        errs.append(FieldError(field, "Invalid", value, LABEL_MSG))
    return errs


def dns_subdomain(value: str, field: str) -> Errors:
    """RFC 1123 subdomain (most object names)."""
    errs: Errors = []
    if len(value) > 253:
        errs.append(FieldError(field, "Invalid", value, "must be no more than 253 characters"))
    if not _SUBDOMAIN_RE.match(value):
        errs.append(FieldError(field, "Invalid", value, SUBDOMAIN_MSG))
    return errs


def dns1035(value: str, field: str) -> Errors:
    """RFC 1035 label (Service names)."""
    errs: Errors = []
    if len(value) > 63:
        errs.append(FieldError(field, "Invalid", value, "must be no more than 63 characters"))
    if not _DNS1035_RE.match(value):
        errs.append(FieldError(field, "Invalid", value, DNS1035_MSG))
    return errs


def path_segment(value: str, field: str) -> Errors:
    """Names of RBAC objects: anything that can be a URL path segment."""
    if value in (".", "..") or "/" in value or "%" in value:
        return [FieldError(field, "Invalid", value, "may not contain '/' or '%'")]
    return []


NAME_RULES: dict[tuple[str, str], Callable[[str, str], Errors]] = {
    ("", "namespaces"): dns_label,
    ("", "services"): dns1035,
    ("rbac.authorization.k8s.io", "roles"): path_segment,
    ("rbac.authorization.k8s.io", "rolebindings"): path_segment,
    ("rbac.authorization.k8s.io", "clusterroles"): path_segment,
    ("rbac.authorization.k8s.io", "clusterrolebindings"): path_segment,
}


def qualified_key(key: str, field: str) -> Errors:
    """A qualified name (label / annotation key): an optional DNS subdomain prefix and a name."""
    prefix, _, name = key.rpartition("/")
    errs: Errors = []
    if prefix and not _SUBDOMAIN_RE.match(prefix):
        errs.append(FieldError(field, "Invalid", key, "prefix part " + SUBDOMAIN_MSG))
    if not name or len(name) > 63 or not _QUALIFIED_NAME_RE.match(name):
        errs.append(
            FieldError(
                field,
                "Invalid",
                key,
                "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
                "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
                "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
            )
        )
    return errs


def labels(values: Any, field: str) -> Errors:
    """Label keys (qualified names) and values."""
    errs: Errors = []
    if not isinstance(values, dict):
        return errs
    for k, v in values.items():
        errs += qualified_key(str(k), field)
        v = str(v)
        if len(v) > 63 or not _LABEL_VALUE_RE.match(v):
            errs.append(
                FieldError(
                    field,
                    "Invalid",
                    v,
                    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "  # noqa: E501
                    "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',"  # noqa: E501
                    "  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",  # noqa: E501
                )
            )
    return errs


def metadata(obj: Obj, key: tuple[str, str], custom: bool) -> Errors:
    """Name and labels/annotations of any object."""
    meta = obj.get("metadata") or {}
    name = meta.get("name") or ""
    errs: Errors = []
    if not name:
        errs.append(FieldError("metadata.name", "Required", None, "name or generateName is required"))
    else:
        rule = NAME_RULES.get(key, dns_subdomain)
        errs += rule(name, "metadata.name")
    errs += labels(meta.get("labels"), "metadata.labels")
    controllers = []
    for ref in meta.get("ownerReferences") or []:
        if not isinstance(ref, dict):
            continue
        for field, what in (("apiVersion", "version"), ("kind", "kind"), ("name", "name"), ("uid", "uid")):
            if not ref.get(field):
                errs.append(
                    FieldError(
                        f"metadata.ownerReferences.{field}", "Invalid", "", f"{what} must not be empty"
                    )
                )
        if ref.get("controller"):
            controllers.append(f"{ref.get('kind')}/{ref.get('name')}")
    if len(controllers) > 1:
        errs.append(
            FieldError(
                "metadata.ownerReferences",
                "Invalid",
                RawValue("[]v1.OwnerReference{...}"),
                'Only one reference can have Controller set to true. Found "true" in references for '
                + " and ".join(controllers),
            )
        )
    for k in meta.get("annotations") or {}:
        errs += qualified_key(str(k), "metadata.annotations")
    return errs
