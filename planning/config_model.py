"""The base of every job/config model in planning/: unknown keys refused, aliases accepted, frozen."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError

from stateferry.errors import InputError


class ConfigModel(BaseModel):
    """A frozen pydantic model that refuses unknown keys (a typo is an error, never ignored)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


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


def _fix_for(msg: str, field: str) -> str:
    if "extra inputs" in msg.lower():
        return f"remove {field.split('.')[-1]!r} (unknown key) or check its spelling"
    if "greater than or equal to 0" in msg:
        return "use a count >= 0"
    if "Field required" in msg or "missing" in msg:
        return f"add {field.split('.')[-1]!r}"
    if "tag" in msg and "storage" in msg:
        return "set storage: local or storage: s3"
    return "see docs/backups.md for the job format"


def input_error_from(exc: ValidationError, prefix: str = "") -> InputError:
    """A validation error as an InputError naming its field (``storages[1].store.days``) and a fix."""
    err = exc.errors()[0]
    field = prefix + _loc(tuple(err.get("loc", ())))
    msg = str(err.get("msg", "invalid"))
    ctx = err.get("ctx") or {}
    inner = ctx.get("error")
    if isinstance(inner, InputError):
        if field == "job":  # a whole-job check names its own field
            field = prefix + inner.field
        elif not field.endswith(inner.field):
            field = f"{field}.{inner.field}"
        return InputError(field, inner.problem, inner.fix)
    return InputError(field, f"{msg} (got {err.get('input')!r})", _fix_for(msg, field))
