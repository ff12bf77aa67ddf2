"""A storage's ``store:`` block: retention counts / modes of one storage (pure, validated)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from planning.config_model import ConfigModel as _Model
from planning.config_model import with_aliases
from planning.retention import WEEKDAYS, RetentionPolicy
from stateferry.errors import InputError


class StoreConfig(_Model):
    """Retention counts of one storage (nxs-backup's ``store:``; ``month`` accepted as alias)."""

    days: int = Field(default=6, ge=0)
    weeks: int = Field(default=4, ge=0)
    months: int = Field(default=6, ge=0)
    weekly_weekday: int = Field(
        default=6, ge=0, le=6, description="0=Monday .. 6=Sunday, or the day's English name"
    )
    monthly_day: int = Field(default=1, ge=1, le=28)
    count: int | None = Field(default=None, ge=1, description="keep the N newest good backups instead")
    rotation: bool = Field(default=True, description="false: never delete on this storage")

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        data = with_aliases(data, {"month": "months"})
        if isinstance(data, dict):
            mixed = [k for k in ("days", "weeks", "month", "months") if k in data]
            if data.get("count") is not None and mixed:
                raise InputError(
                    mixed[0], "does not combine with count", "keep either count or days/weeks/months"
                )
            wd = data.get("weekly_weekday")
            if isinstance(wd, str):
                name = wd.strip().lower()
                matches = (
                    [i for i, d in enumerate(WEEKDAYS) if d.startswith(name[:3])] if len(name) >= 3 else []
                )
                if len(matches) != 1:
                    raise InputError(
                        "weekly_weekday", f"{wd!r} is not a weekday", "use e.g. 'sunday' or 0..6"
                    )
                data["weekly_weekday"] = matches[0]
        return data

    def policy(self) -> RetentionPolicy:
        """The planner's policy for these counts."""
        return RetentionPolicy(
            days=self.days,
            weeks=self.weeks,
            months=self.months,
            weekly_weekday=self.weekly_weekday,
            monthly_day=self.monthly_day,
            count=self.count,
            rotation=self.rotation,
        )


__all__ = ["StoreConfig"]
