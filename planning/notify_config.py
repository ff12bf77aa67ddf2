"""Where a backup job's notifications go (pure: the model and its validation, no I/O).

Either a saved Prefect notification block (``block: custom-webhook/ops``, Slack, ...) or e-mail
through a saved ``prefect-email`` ``EmailServerCredentials`` block::

    notify:
      email: {credentials: ops-smtp, to: [oncall@example.org]}
      on_failure: true
      on_success: false

Addresses are single plain ``local@domain`` addresses: no display names, no commas, no line breaks,
so a job's text can never add a recipient or a mail header.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from planning.config_model import ConfigModel as _Model
from stateferry.errors import InputError

_BLOCK_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}"
_ADDRESS_RE = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)


def check_address(value: str, field: str) -> str:
    """Return ``value`` if it is one plain e-mail address.

    Raises:
        InputError: anything else (display names, lists, line breaks, over 254 characters).
    """
    if len(value) > 254 or not _ADDRESS_RE.fullmatch(value):
        raise InputError(field, f"{value!r} is not one plain e-mail address", "write it as name@example.org")
    return value


class EmailNotifyConfig(_Model):
    """E-mail through a saved ``EmailServerCredentials`` block (prefect-email)."""

    credentials: str = Field(description="name of a saved EmailServerCredentials block")
    to: list[str] = Field(min_length=1, max_length=50, description="recipient addresses")
    sender: str | None = Field(
        default=None, alias="from", description="From address (default: the block's username)"
    )

    @field_validator("credentials")
    @classmethod
    def _credentials(cls, v: str) -> str:
        if not re.fullmatch(_BLOCK_NAME, v):
            raise InputError(
                "credentials",
                f"{v!r} is not a block name",
                "name a saved EmailServerCredentials block, e.g. ops-smtp",
            )
        return v

    @field_validator("to")
    @classmethod
    def _to(cls, v: list[str]) -> list[str]:
        return [check_address(a, "to") for a in v]

    @field_validator("sender")
    @classmethod
    def _sender(cls, v: str | None) -> str | None:
        return None if v is None else check_address(v, "from")


class NotifyConfig(_Model):
    """Where notifications go (a notification block or e-mail), and when."""

    block: str | None = Field(
        default=None, description="<block-type-slug>/<name>, e.g. custom-webhook/ops or slack-webhook/ops"
    )
    email: EmailNotifyConfig | None = None
    on_failure: bool = True
    on_success: bool = False

    @field_validator("block")
    @classmethod
    def _slug(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(rf"[a-z0-9-]+/{_BLOCK_NAME}", v):
            raise InputError(
                "block",
                f"{v!r} is not <block-type-slug>/<block-name>",
                "name a saved notification block, e.g. custom-webhook/ops or slack-webhook/ops",
            )
        return v

    @model_validator(mode="after")
    def _one_target(self) -> NotifyConfig:
        if (self.block is None) == (self.email is None):
            raise InputError(
                "notify",
                "give exactly one of notify.block and notify.email",
                "e.g. notify: {block: custom-webhook/ops} or"
                " notify: {email: {credentials: ops-smtp, to: [oncall@example.org]}}",
            )
        return self

    @property
    def label(self) -> str:
        """What the notification goes through, for logs (block slug or ``email/<credentials>``)."""
        return self.block or f"email/{self.email.credentials if self.email else ''}"
