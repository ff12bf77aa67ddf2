"""``bucket_mirror``'s options as one pydantic model (the flow's ``options`` parameter).

Pure: the checks the flow ran on its parameters before touching a store, as validators raising
:class:`~stateferry.errors.InputError` named after the field.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from planning.flow_options import FlowOptions
from planning.mirror import MirrorOptions
from planning.mirror_inputs import normalize_prefix, parse_duration
from planning.mirror_shards import DASK_ADDRESS, check_sharding
from planning.option_fields import checked
from stateferry.errors import InputError

__all__ = ["BucketMirrorOptions"]

DOCS = "docs/bucket_mirror.md (parameters)"

_Prefix = Annotated[
    str, checked(normalize_prefix, "write a folder such as 'logs' or 'logs/', or 'logs*' for a string prefix")
]
_Duration = Annotated[str, checked(parse_duration, "use numbers with units w/d/h/m/s, e.g. '7d'")]


class BucketMirrorOptions(FlowOptions):
    """What ``bucket_mirror`` mirrors and how (``mc mirror`` flag names where they exist)."""

    bucket: str | None = Field(
        default=None,
        description="Source bucket; empty mirrors every bucket of the store, creating missing ones "
        "(`mc mirror old new`).",
    )
    destination_bucket: str | None = Field(
        default=None,
        description="Destination bucket (default: the source bucket's name); created when missing.",
    )
    prefix: _Prefix = Field(
        default="",
        description="Source key prefix. A folder: `logs` means `logs/...`, never `logs-2024/...`; a "
        "trailing `*` (`logs*`) asks for a plain string prefix.",
    )
    destination_prefix: _Prefix | None = Field(
        default=None, description="Destination key prefix, same rule (default: the source prefix)."
    )
    overwrite: bool = Field(
        default=True, description="Replace differing destination objects (`mc --overwrite`)."
    )
    remove: bool = Field(
        default=False, description="Delete destination objects missing on the source (`mc --remove`)."
    )
    exclude: list[str] = Field(
        default_factory=list, description="Glob patterns of keys to ignore on both sides (`mc --exclude`)."
    )
    newer_than: _Duration | None = Field(
        default=None,
        description="Only mirror source objects younger than this duration, e.g. `7d` or `1h30m`.",
    )
    older_than: _Duration | None = Field(
        default=None, description="Only mirror source objects older than this duration."
    )
    verify: Literal["etag", "checksum"] = Field(
        default="etag",
        description="`checksum` compares SHA-256 of the contents when ETags are not comparable.",
    )
    dry_run: bool = Field(
        default=False, description="Plan only (`mc --fake`): plan artifacts, nothing written."
    )
    watch: bool = Field(
        default=False,
        description='Keep mirroring until the approval "DNS cutover done", then a final pass and a '
        "verification.",
    )
    watch_interval_seconds: float = Field(
        default=10.0, gt=0, description="Polling interval of watch mode (without bucket notifications)."
    )
    max_delete_ratio: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Largest fraction of destination objects deleted per pass without approval.",
    )
    allow_empty_source: bool = Field(
        default=False, description="Allow deletes when the source listing is empty."
    )
    workers: int = Field(default=16, ge=1, le=256, description="Parallel transfers.")
    max_passes: int = Field(
        default=3,
        ge=1,
        description="One-shot mode: passes until verified (failed objects are retried next pass).",
    )
    approval_timeout_seconds: int = Field(
        default=7 * 24 * 3600, ge=1, description="How long the flow waits for an approval."
    )
    direction: Literal["one-way", "two-way"] = Field(
        default="one-way",
        description="`two-way`: changes on either side are copied to the other until the cutover; deletes "
        "propagate only for keys the journal knows both sides had.",
    )
    conflict: Literal["newest", "source", "destination"] = Field(
        default="newest",
        description="Rule when both sides changed a key since the last pass (`newest`: a write "
        "beats a delete).",
    )
    journal: bool | None = Field(
        default=None,
        description="Keep a mirror journal on the destination (`.stateferry-mirror/`) and never lose a "
        "client write; default: on with watch or two-way, off for one-shot one-way syncs.",
    )
    shards: int = Field(
        default=1,
        ge=1,
        le=4096,
        description="Split a one-shot one-way pass of one bucket into this many key ranges on Dask.",
    )
    dask_address: str | None = Field(
        default=None,
        description="Dask scheduler for the shards (`tcp://host:port`); default: a local cluster.",
    )
    dask_workers: int = Field(
        default=2, ge=1, le=64, description="Worker processes of the local Dask cluster."
    )

    @field_validator("dask_address")
    @classmethod
    def _dask_address(cls, value: str | None) -> str | None:
        if value is not None and not DASK_ADDRESS.match(value):
            raise InputError(
                "dask_address",
                "not a Dask scheduler address",
                "use tcp://host:port or tls://host:port (e.g. the scheduler Service of a Dask cluster)",
            )
        return value

    @model_validator(mode="after")
    def _combinations(self) -> BucketMirrorOptions:
        if self.watch and self.dry_run:
            raise InputError(
                "watch", "watch and dry_run exclude each other", "use dry_run alone to see the plan"
            )
        # A bucket may come from an S3Bucket block (known only at the flow edge): the checks that
        # need it (prefixes and shards without a bucket) run there, after the blocks are resolved.
        if self.direction == "two-way" and self.journal is False:
            raise InputError("journal", "two-way mirroring needs the journal", "leave journal unset")
        if self.use_journal and (self.dry_run or self.newer_than or self.older_than):
            raise InputError(
                "dry_run" if self.dry_run else "newer_than",
                "journal mode (watch / two-way) has no dry run and no age filters",
                "run a one-shot dry_run first, or drop newer_than/older_than",
            )
        bucket = self.bucket or "(from an S3Bucket block: checked again once known)"
        check_sharding(self.shards, bucket, self.watch, self.dry_run, self.use_journal)
        return self

    @property
    def use_journal(self) -> bool:
        """Journal mode as asked (``journal``) or implied (watch or two-way)."""
        return (self.watch or self.direction == "two-way") if self.journal is None else self.journal

    def pass_options(self) -> MirrorOptions:
        """The options of one mirror pass (:class:`planning.mirror.MirrorOptions`)."""
        return MirrorOptions(
            overwrite=self.overwrite,
            remove=self.remove,
            exclude=tuple(self.exclude),
            newer_than=self.newer_than,
            older_than=self.older_than,
            verify=self.verify,
            max_delete_ratio=self.max_delete_ratio,
            allow_empty_source=self.allow_empty_source,
        )
