"""List parameters given as a list of maps or as its JSON text (``transforms``, ``hooks``): the checks
that come before each entry's own.

Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from stateferry.errors import InputError

__all__ = ["entry_maps", "json_list"]


def json_list(value: Any, param: str, shape: str) -> list[Any]:
    """The list parameter ``param``, given as a list or as its JSON text (``None``, ``""``: no entries).

    Args:
        value: The parameter's value.
        param: Its name, for errors.
        shape: Its entries as the fix shows them (``"{kind, path, op, value}"``).

    Raises:
        InputError: Text that is not JSON, or a value that is not a list.
    """
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except ValueError as exc:
            raise InputError(param, f"is not JSON ({exc})", f"give a list of {shape}") from None
    value = value or []
    if not isinstance(value, list):
        raise InputError(param, f"is a {type(value).__name__}", f"give a list of {shape}")
    return value


def entry_maps(
    entries: list[Any], param: str, keys: frozenset[str], shape: str
) -> Iterator[tuple[int, str, Mapping[str, Any]]]:
    """Each entry of a list parameter, with its index and name (``hooks[2]``), once it is checked.

    Args:
        entries: The list (from :func:`json_list`).
        param: Its name, for errors.
        keys: The keys an entry may have.
        shape: An entry as the fix shows it (``"{kind, path, op, value}"``).

    Raises:
        InputError: An entry that is not a map, or has a key not in ``keys`` (raised when reached,
            so the entries before it are checked completely first).
    """
    for i, entry in enumerate(entries):
        fld = f"{param}[{i}]"
        if not isinstance(entry, Mapping):
            raise InputError(fld, f"is {entry!r}", f"give a map {shape}")
        unknown = sorted(set(entry) - keys)
        if unknown:
            raise InputError(fld, f"has unknown keys {unknown}", f"use only {sorted(keys)}")
        yield i, fld, entry
