"""Encryption at rest of a backup job (pure): the ``encryption:`` block and what a manifest says of it.

A job names only **public** keys (age X25519 recipients, ``age1...``); the private key (the age
identity, ``AGE-SECRET-KEY-1...``) lives in a Prefect ``Secret`` block that the user names
(``identity_secret``), needed only to verify and to restore::

    encryption:
      recipients: [age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p]
      identity_secret: backups-age-key    # optional: a saved Secret block holding the identity

Each part is encrypted after compression (``mysql.sql.gz.age``); the manifest records
``encryption: age`` and the recipients' fingerprints (:func:`recipient_fingerprint`), never a key.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from pydantic import Field, field_validator, model_validator

from planning.config_model import ConfigModel as _Model
from stateferry.errors import InputError

#: an age X25519 recipient: ``age1`` + 58 characters of the bech32 alphabet (lowercase).
AGE_RECIPIENT_RE = re.compile(r"^age1[qpzry9x8gf2tvdw0s3jn54khce6mua7l]{58}$")
#: a saved block's name (Prefect block names: lowercase letters, digits, dashes).
_BLOCK_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
#: suffix of an encrypted part, after the compression's (``files.tar.gz.age``).
AGE_SUFFIX = ".age"
#: the manifest's ``encryption`` values (absent or ``None``: not encrypted).
ENCRYPTIONS = ("age",)


def check_secret_block_name(value: str, field: str) -> str:
    """Return ``value`` when it can name a saved block, else refuse it without echoing it (a user may
    have pasted the key itself).

    Raises:
        InputError: naming ``field``.
    """
    if not _BLOCK_NAME_RE.match(value):
        raise InputError(
            field,
            "is not a block name",
            "name a saved Secret block (lowercase letters, digits and dashes), not the key itself",
        )
    return value


def recipient_fingerprint(recipient: str) -> str:
    """A short, stable, non-secret name of a recipient for the manifest: ``sha256:<16 hex>``."""
    return "sha256:" + hashlib.sha256(recipient.strip().encode()).hexdigest()[:16]


class EncryptionConfig(_Model):
    """``encryption:`` of a job: age recipients (public keys) and where the identity is kept."""

    recipients: list[str] = Field(min_length=1, description="age X25519 public keys (age1...)")
    identity_secret: str | None = Field(
        default=None,
        description="name of a Prefect Secret block holding the age identity (verify and restore)",
    )

    @model_validator(mode="before")
    @classmethod
    def _check_recipients(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("recipients"), list):
            data = {**data, "recipients": cls._recipients(data["recipients"])}
        return data

    @staticmethod
    def _recipients(v: list[Any]) -> list[str]:
        out: list[str] = []
        for i, raw in enumerate(v):
            key = raw.strip() if isinstance(raw, str) else ""
            if key.upper().startswith("AGE-SECRET-KEY-"):  # never echo it back
                raise InputError(
                    f"recipients[{i}]",
                    "is an age identity (a private key), not a recipient; it must not be in a job config",
                    "put the public key (age-keygen -y <identity file>) here and the identity in a"
                    " Prefect Secret block named by identity_secret; replace the leaked key",
                )
            if not AGE_RECIPIENT_RE.match(key):
                raise InputError(
                    f"recipients[{i}]",
                    f"{key[:12]!r}... is not an age X25519 recipient",
                    "give public keys as printed by age-keygen (age1 followed by 58 characters)",
                )
            if key not in out:
                out.append(key)
        return out

    @field_validator("identity_secret")
    @classmethod
    def _block_name(cls, v: str | None) -> str | None:
        return None if v is None else check_secret_block_name(v, "identity_secret")

    @property
    def fingerprints(self) -> list[str]:
        """The recipients' fingerprints, as the manifest records them."""
        return [recipient_fingerprint(r) for r in self.recipients]


def manifest_encryption(manifest: dict[str, Any]) -> str | None:
    """``"age"`` or ``None`` for a (checked) manifest; anything else is refused.

    Raises:
        InputError: field ``backup``: an ``encryption`` stateferry does not write, or malformed
            recipient fingerprints.
    """
    value = manifest.get("encryption")
    if value is None:
        return None
    if value not in ENCRYPTIONS:
        raise InputError(
            "backup",
            f"manifest field 'encryption' is {str(value)[:20]!r}, not age",
            "restore another backup (this manifest was not written by stateferry, or was altered)",
        )
    fps = manifest.get("age_recipients")
    if (
        not isinstance(fps, list)
        or not fps
        or not all(isinstance(f, str) and re.fullmatch(r"sha256:[0-9a-f]{16}", f) for f in fps)
    ):
        raise InputError(
            "backup",
            "manifest field 'age_recipients' does not list recipient fingerprints",
            "restore another backup (this manifest was not written by stateferry, or was altered)",
        )
    return str(value)


def encrypted_suffix(encryption: str | None) -> str:
    """What encryption adds to a part's name (``.age`` or nothing)."""
    return AGE_SUFFIX if encryption == "age" else ""


__all__ = [
    "AGE_RECIPIENT_RE",
    "AGE_SUFFIX",
    "EncryptionConfig",
    "check_secret_block_name",
    "encrypted_suffix",
    "manifest_encryption",
    "recipient_fingerprint",
]
