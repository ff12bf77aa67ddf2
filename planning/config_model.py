"""The base of every job/config model in planning/: unknown keys refused, aliases accepted, frozen."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from stateferry.errors import InputError


class ConfigModel(BaseModel):
    """A frozen pydantic model that refuses unknown keys (a typo is an error, never ignored)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


def with_aliases(data: Any, aliases: Mapping[str, str]) -> Any:
    """A model's raw input with each alias key renamed to its field (for a ``mode="before"`` validator).

    Args:
        data: The input; anything but a dict is returned as it is (pydantic refuses it).
        aliases: Field name by alias (``{"month": "months"}``). An alias given together with its
            field stays, and is refused as an unknown key.

    Returns:
        A renamed copy of a dict input.
    """
    if not isinstance(data, dict):
        return data
    data = dict(data)
    for alias, name in aliases.items():
        if alias in data and name not in data:
            data[name] = data.pop(alias)
    return data


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("local", "s3", "sftp") or "[" in str(part):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "job"


_BOUNDS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


def _fix_for(msg: str, field: str, kind: str, ctx: dict[str, Any], docs: str) -> str:
    if "extra inputs" in msg.lower():
        return f"remove {field.split('.')[-1]!r} (unknown key) or check its spelling"
    if "greater than or equal to 0" in msg:
        return "use a count >= 0"
    if "Field required" in msg or "missing" in msg:
        return f"add {field.split('.')[-1]!r}"
    if "tag" in msg and "storage" in msg:
        return "set storage: local or storage: s3"
    if kind == "literal_error" and "expected" in ctx:
        return f"use {ctx['expected']}"
    if kind in _BOUNDS:
        return "give a value " + msg.removeprefix("Input should be ")
    return f"see {docs}"


def input_error_from(
    exc: ValidationError, prefix: str = "", docs: str = "docs/backups.md for the job format"
) -> InputError:
    """A validation error as an InputError naming its field (``storages[1].store.days``) and a fix.

    Args:
        exc: The pydantic error (its first problem is reported).
        prefix: Prepended to the field's location (``"sources[0]."``).
        docs: Where the format is described, for problems without a more precise fix.
    """
    err = exc.errors()[0]
    where = _loc(tuple(err.get("loc", ())))
    field = prefix + where
    msg = str(err.get("msg", "invalid"))
    ctx = err.get("ctx") or {}
    inner = ctx.get("error")
    if isinstance(inner, InputError):
        if where == "job":  # a whole-model check names its own field
            field = prefix + inner.field
        elif not field.endswith(inner.field):
            field = f"{field}.{inner.field}"
        return InputError(field, inner.problem, inner.fix)
    kind = str(err.get("type", ""))
    return InputError(field, f"{msg} (got {err.get('input')!r})", _fix_for(msg, field, kind, ctx, docs))
