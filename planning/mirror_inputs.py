"""Parsing of the mirror's user-given inputs: ``mc``-style durations, folder prefixes, bucket names.

Pure: no I/O, no clock. Errors are ``ValueError`` naming the parameter; the flow turns them into
``InputError`` (bucket names raise ``InputError`` directly).
"""

from __future__ import annotations

import re
from datetime import timedelta

from stateferry.errors import InputError

__all__ = ["check_bucket_name", "normalize_prefix", "parse_duration"]

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(w|d|h|m|s)")
_DURATION_UNITS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str, *, field_name: str = "duration") -> timedelta:
    """Parse an ``mc``-style duration such as ``"7d"``, ``"1h30m"``, ``"90s"`` or ``"2w"``.

    Args:
        text: The duration text.
        field_name: Name used in the error message.

    Returns:
        The duration.

    Raises:
        ValueError: When the text is not a positive sequence of ``<number><w|d|h|m|s>``.
    """
    cleaned = text.strip().lower().replace(" ", "")
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(cleaned):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if not cleaned or pos != len(cleaned):
        raise ValueError(
            f"{field_name}={text!r} is not a duration; use numbers with units w/d/h/m/s, e.g. '7d' or '1h30m'"
        )
    return timedelta(seconds=total)


def normalize_prefix(prefix: str, *, field_name: str = "prefix") -> str:
    """Return the S3 listing prefix for a user-given mirror prefix (folder semantics).

    A prefix names a folder: ``"logs"`` and ``"logs/"`` both mean the keys under ``logs/`` (never
    ``logs-2024/...``, which a plain string prefix would match and ``remove`` would delete). Only a
    trailing ``*`` asks for a plain string prefix: ``"logs*"`` matches ``logs/...`` and
    ``logs-2024/...``. ``""`` is the whole bucket.

    Args:
        prefix: The prefix as the user wrote it.
        field_name: Parameter name used in the error message.

    Returns:
        The prefix to list with and to strip from keys (``""``, ``"a/b/"`` or, with ``*``, ``"a/b"``).

    Raises:
        ValueError: The prefix holds control characters, a ``*`` that is not the last character,
            or is only ``/`` characters.
    """
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in prefix):
        raise ValueError(f"{field_name}={prefix!r} holds control characters; remove them")
    if prefix.endswith("*"):
        literal = prefix[:-1]
        if "*" in literal:
            raise ValueError(
                f"{field_name}={prefix!r}: only a trailing '*' is allowed (string-prefix match); "
                "use exclude= patterns for anything else"
            )
        return literal
    if "*" in prefix:
        raise ValueError(
            f"{field_name}={prefix!r}: only a trailing '*' is allowed (string-prefix match); "
            "use exclude= patterns for anything else"
        )
    if not prefix:
        return ""
    if not prefix.strip("/"):
        raise ValueError(f"{field_name}={prefix!r} is not a folder; use '' for the whole bucket")
    return prefix if prefix.endswith("/") else prefix + "/"


#: S3 bucket names (AWS rules, also what MinIO and SeaweedFS accept): 3-63 characters, lower-case
#: letters, digits, dots and hyphens, starting and ending with a letter or digit.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def check_bucket_name(name: str, *, field_name: str = "bucket") -> str:
    """Return ``name`` if it is a valid S3 bucket name.

    Raises:
        InputError: Naming ``field_name`` and the rule.
    """
    if not isinstance(name, str) or not _BUCKET.fullmatch(name) or ".." in name:
        raise InputError(
            field_name,
            f"{str(name)[:80]!r} is not a valid S3 bucket name",
            "use 3-63 characters a-z 0-9 . - (lower case), starting and ending with a letter or digit",
        )
    return name
