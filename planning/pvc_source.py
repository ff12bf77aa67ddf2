"""A PersistentVolumeClaim as a backup source or restore target (pure: names and paths checked).

``pvc: <namespace>/<claim>``: the namespace is a DNS-1123 label, the claim a DNS-1123 subdomain (what
the API server accepts), so neither can become a path, an option or another object's name.
``paths``: directories or files inside the volume, relative to its root (``.`` = all of it), plain
components only (no ``..``, no empty or ``.`` component, no control characters), none inside another.
"""

from __future__ import annotations

import re

from stateferry.errors import InputError

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_SUBDOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def parse_claim(value: object, field: str = "pvc") -> tuple[str, str]:
    """``"ns/name"`` -> ``("ns", "name")``.

    Raises:
        InputError: not ``<namespace>/<claim>`` with Kubernetes names.
    """
    text = value if isinstance(value, str) else ""
    ns, _, name = text.partition("/")
    if not _LABEL.match(ns) or not _SUBDOMAIN.match(name) or "/" in name:
        raise InputError(
            field,
            f"{str(value)[:80]!r} is not <namespace>/<claim>",
            "give e.g. redmine/redmine-app-files (lowercase DNS-1123 names)",
        )
    return ns, name


def check_paths(value: list[str] | None, field: str = "paths") -> list[str]:
    """Normalise the paths inside a volume; ``["."]`` (or empty) means the whole volume.

    Raises:
        InputError: a path leaves the volume, is not plain, or lies inside another listed path.
    """
    out: list[str] = []
    for raw in value or ["."]:
        if not isinstance(raw, str) or _CONTROL.search(raw) or not raw.strip():
            raise InputError(field, f"{str(raw)[:80]!r} is not a path", "give paths relative to the volume")
        rel = raw.strip().removeprefix("./").rstrip("/") or "."
        parts = rel.split("/")
        if rel.startswith("/") or (rel != "." and any(p in ("", ".", "..") for p in parts)):
            raise InputError(
                field,
                f"{raw[:80]!r} is not a plain path inside the volume",
                "give paths relative to the volume's root without '..' (e.g. files/uploads), or '.'",
            )
        out.append(rel)
    if "." in out:
        if len(out) > 1:
            raise InputError(field, "'.' (the whole volume) is listed with other paths", "keep one")
        return ["."]
    for a in out:
        for b in out:
            if a != b and (b + "/").startswith(a + "/"):
                raise InputError(field, f"{b!r} lies inside {a!r}", f"list {a!r} only")
    if len(set(out)) != len(out):
        raise InputError(field, "a path is listed twice", "list each path once")
    return sorted(out)
