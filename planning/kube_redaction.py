"""Redaction of Secret values in everything the Kubernetes flows render (pure, no I/O).

One mechanism for ``resource_backup``, ``resource_restore`` and ``app_migration``: diffs say that
a Secret key was added, removed or changed, never its value (:func:`secret_diff`); objects shown to
a person go through :func:`redact_object`; and free text that may echo an object (API server error
messages, exceptions, log lines) goes through :class:`Redactor`, which knows every Secret value
(base64 and decoded) the run has seen and replaces it with :data:`REDACTED`.

Secret-like fields are ``data`` and ``stringData`` of a ``Secret`` (and its
``kubectl.kubernetes.io/last-applied-configuration`` annotation, which repeats them). ConfigMaps
are not secrets: their values stay visible.
"""

from __future__ import annotations

import base64
import binascii
import copy
import threading
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "REDACTED",
    "SECRET_FIELDS",
    "Redactor",
    "is_secret",
    "redact_object",
    "secret_diff",
    "secret_values",
]

REDACTED = "<redacted>"
#: Fields of a Secret whose values are never rendered.
SECRET_FIELDS: tuple[str, ...] = ("data", "stringData")
_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
#: Values shorter than this are not scrubbed from free text (they would mangle every message);
#: diffs and redacted objects never show a value whatever its length.
MIN_SCRUB_LENGTH = 4


def is_secret(obj: Mapping[str, Any]) -> bool:
    """True for a ``Secret`` (any apiVersion: a hostile archive may spell it oddly)."""
    return obj.get("kind") == "Secret"


def redact_object(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``obj`` fit to show: a Secret's ``data``/``stringData`` values and its
    last-applied annotation replaced by :data:`REDACTED` (keys kept). Other kinds are copied as is."""
    out: dict[str, Any] = copy.deepcopy(dict(obj))
    if not is_secret(out):
        return out
    for f in SECRET_FIELDS:
        if isinstance(out.get(f), dict):
            out[f] = {k: REDACTED for k in out[f]}
        elif f in out:
            out[f] = REDACTED
    ann = (out.get("metadata") or {}).get("annotations")
    if isinstance(ann, dict) and _LAST_APPLIED in ann:
        ann[_LAST_APPLIED] = REDACTED
    return out


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _decoded(value: str) -> str | None:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text


def secret_values(obj: Mapping[str, Any]) -> set[str]:
    """Every value of ``obj``'s secret fields as it could appear in text: the base64 form, the
    decoded text, each line of the decoded text, and the last-applied annotation."""
    if not is_secret(obj):
        return set()
    out: set[str] = set()
    for f in SECRET_FIELDS:
        fields = obj.get(f)
        if not isinstance(fields, dict):
            continue
        for v in fields.values():
            if not isinstance(v, str):
                v = str(v)
            out.add(v)
            plain = _decoded(v) if f == "data" else None
            for text in (plain,) if plain is not None else ():
                out.add(text)
                out.update(line.strip() for line in text.splitlines())
            if f == "stringData":
                out.update(line.strip() for line in v.splitlines())
    ann = ((obj.get("metadata") or {}).get("annotations") or {}).get(_LAST_APPLIED)
    if isinstance(ann, str):
        out.add(ann)
    return {v for v in out if len(v) >= MIN_SCRUB_LENGTH}


class Redactor:
    """Scrubs known Secret values out of free text (thread-safe).

    Args:
        objects: objects whose Secret values are registered at once.
    """

    def __init__(self, objects: Iterable[Mapping[str, Any]] = ()) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._ordered: list[str] = []
        for o in objects:
            self.add(o)

    def add(self, obj: Mapping[str, Any]) -> None:
        """Register the Secret values of ``obj`` (no-op for other kinds)."""
        new = secret_values(obj) - self._values
        if new:
            with self._lock:
                self._values |= new
                self._ordered = sorted(self._values, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        """``text`` with every registered value replaced by :data:`REDACTED`."""
        for v in self._ordered:
            if v in text:
                text = text.replace(v, REDACTED)
        return text


def secret_diff(live: Mapping[str, Any], desired: Mapping[str, Any]) -> list[str]:
    """Key-level differences of two Secrets' ``data``/``stringData``: which keys would be added
    (``+``), removed (``-``) or changed (``~``), never a value.

    ``stringData`` keys of ``desired`` are compared against ``data`` of ``live`` (the server merges
    them into ``data`` on write), so a key given as plain text that equals the stored value is not
    reported.
    """
    out: list[str] = []
    ldata = _dict(live.get("data"))
    for f in SECRET_FIELDS:
        if not isinstance(desired.get(f), dict):
            continue
        want, have = _dict(desired.get(f)), _dict(live.get(f))
        for k in sorted(want):
            if f == "stringData" and k in ldata:
                same = _decoded(str(ldata[k])) == str(want[k])
                if not same:
                    out.append(f"~ {f}.{k}: changed (value {REDACTED})")
                continue
            if k not in have:
                out.append(f"+ {f}.{k}: added (value {REDACTED})")
            elif have[k] != want[k]:
                out.append(f"~ {f}.{k}: changed (value {REDACTED})")
        if f == "data":
            string_keys = set(_dict(desired.get("stringData")))
            out.extend(
                f"- {f}.{k}: removed (value {REDACTED})" for k in sorted(set(have) - set(want) - string_keys)
            )
    return out
