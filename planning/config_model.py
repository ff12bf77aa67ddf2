"""The base of every job/config model in planning/: unknown keys refused, aliases accepted, frozen."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigModel(BaseModel):
    """A frozen pydantic model that refuses unknown keys (a typo is an error, never ignored)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)
