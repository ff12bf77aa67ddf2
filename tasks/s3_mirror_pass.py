"""One mirror pass over one or more bucket pairs: preflight, plan, act, verify.

Plain functions (usable from a background thread while the flow run is paused for the cutover
approval) plus thin Prefect task wrappers used by the flow for its normal passes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from minio import Minio
from prefect import task
from prefect.cache_policies import NONE as NO_CACHE

from planning.mirror import (
    ActionKind,
    MirrorOptions,
    MirrorPlan,
    Verdict,
)
from planning.mirror_inputs import check_bucket_name, normalize_prefix
from planning.mirror_report import render_plan_markdown
from stateferry.errors import InputError, StateferryError, TransientError, translate
from tasks.mirror_progress import PassProgress
from tasks.s3_clients import mirror_client, same_store
from tasks.s3_listing import list_bucket_names, plan_bucket
from tasks.s3_transfer import TransferReport, Transferrer

if TYPE_CHECKING:
    from blocks.object_store import ObjectStore

__all__ = [
    "BucketPair",
    "MirrorSession",
    "PassProgress",
    "PassResult",
    "ensure_bucket",
    "open_session",
    "plan_pass",
    "preflight_mirror",
    "refresh_pairs",
    "run_pass",
    "sync_pass",
    "verify_mirror",
    "verify_pass",
    "withheld_summary",
]

_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "AuthorizationHeaderMalformed"}


@dataclass(frozen=True)
class BucketPair:
    """One bucket (and prefix) mirrored to one destination bucket (and prefix)."""

    source_bucket: str
    destination_bucket: str
    source_prefix: str = ""
    destination_prefix: str = ""

    @property
    def label(self) -> str:
        """``src/prefix -> dst/prefix`` for reports."""
        src = f"{self.source_bucket}/{self.source_prefix}"
        return f"{src} -> {self.destination_bucket}/{self.destination_prefix}"


@dataclass
class MirrorSession:
    """Clients and resolved bucket pairs of one flow run."""

    source: Minio
    destination: Minio
    pairs: list[BucketPair]
    server_side: bool
    workers: int
    source_url: str
    destination_url: str
    missing_destination_buckets: set[str] = field(default_factory=set)
    whole_store: bool = False


@dataclass
class PassResult:
    """Plan and outcome of one pass (all bucket pairs)."""

    number: int
    plans: dict[str, MirrorPlan]
    report: TransferReport
    dry_run: bool
    started: datetime
    buckets_created: list[str] = field(default_factory=list)

    @property
    def changes_planned(self) -> int:
        """copy + overwrite + delete actions planned."""
        return sum(p.changes for p in self.plans.values())

    @property
    def withheld_deletes(self) -> int:
        """Deletes withheld by the safety verdicts."""
        return sum(len(p.withheld_deletes) for p in self.plans.values())

    def counts(self) -> dict[str, int]:
        """Planned objects per action kind, summed over pairs."""
        total: dict[str, int] = {}
        for plan in self.plans.values():
            for kind, n in plan.counts.items():
                total[kind] = total.get(kind, 0) + n
        return total

    def bytes(self) -> dict[str, int]:
        """Planned bytes per action kind, summed over pairs."""
        total: dict[str, int] = {}
        for plan in self.plans.values():
            for kind, n in plan.bytes.items():
                total[kind] = total.get(kind, 0) + n
        return total

    def markdown(self, title: str) -> str:
        """The plan of every pair as Markdown."""
        return "\n".join(
            render_plan_markdown(p, title=f"{title}: {label}") for label, p in self.plans.items()
        )


def _side_error(exc: BaseException, side: str, store_url: str, bucket: str | None) -> StateferryError:
    """Translate a preflight failure into an error naming the parameter to fix."""
    code = str(getattr(exc, "code", "") or "")
    if code in _AUTH_CODES:
        return InputError(
            side,
            f"the {side} store {store_url} rejected the credentials ({code})",
            f"check {side}.access_key and {side}.secret_key (and {side}.region) of the ObjectStore block",
        )
    err = translate(exc, context=f"checking the {side} store {store_url}")
    if isinstance(err, TransientError):
        return TransientError(
            f"the {side} store {store_url} is unreachable ({err}). Nothing was copied or deleted; "
            f"check {side}.endpoint and that the server is up, then run again"
        )
    return err


def _bucket_exists(client: Minio, bucket: str, side: str, url: str) -> bool:
    try:
        return bool(client.bucket_exists(bucket))
    except Exception as exc:
        raise _side_error(exc, side, url, bucket) from exc


def open_session(
    source: ObjectStore,
    destination: ObjectStore,
    bucket: str | None,
    destination_bucket: str | None,
    prefix: str,
    destination_prefix: str | None,
    workers: int,
) -> MirrorSession:
    """Validate the input against both stores and resolve the bucket pairs (writes nothing).

    Args:
        source: Source store block.
        destination: Destination store block.
        bucket: Source bucket; ``None`` mirrors every bucket of the source store.
        destination_bucket: Destination bucket (default: same name as ``bucket``).
        prefix: Source key prefix: a folder (``"logs"`` = ``"logs/"``), or a string prefix when
            it ends with ``*`` (see :func:`planning.mirror_inputs.normalize_prefix`).
        destination_prefix: Destination key prefix, same rule (default: ``prefix``).
        workers: Parallel transfers (also the connection pool size).

    Returns:
        The session.

    Raises:
        InputError: Unknown source bucket, rejected credentials, identical source and destination,
            bad parameter values.
        TransientError: A store is unreachable (nothing was written).
    """
    if workers < 1 or workers > 256:
        raise InputError("workers", f"must be between 1 and 256, got {workers}", "use e.g. workers=16")
    if bucket is None and (destination_bucket or prefix or destination_prefix):
        raise InputError(
            "bucket",
            "destination_bucket/prefix need a source bucket",
            "give bucket=... or drop destination_bucket and the prefixes to mirror the whole store",
        )
    if bucket is not None:
        check_bucket_name(bucket, field_name="bucket")
    if destination_bucket:
        check_bucket_name(destination_bucket, field_name="destination_bucket")
    try:
        prefix = normalize_prefix(prefix, field_name="prefix")
        dst_prefix = (
            prefix
            if destination_prefix is None
            else normalize_prefix(destination_prefix, field_name="destination_prefix")
        )
    except ValueError as exc:
        field_name = str(exc).split("=", 1)[0]
        raise InputError(
            field_name, str(exc), "write a folder such as 'logs' or 'logs/', or 'logs*' for a string prefix"
        ) from exc
    src_client = mirror_client(source, workers)
    dst_client = mirror_client(destination, workers)
    src_url, dst_url = str(source.url), str(destination.url)
    same = same_store(source, destination)
    if bucket is None:
        if same:
            raise InputError(
                "destination",
                f"source and destination are the same store ({src_url}) and no bucket was given",
                "mirror into another store, or give bucket= and destination_bucket=",
            )
        try:
            names = list_bucket_names(src_client, side="source")
        except StateferryError as exc:
            raise _side_error(exc.__cause__ or exc, "source", src_url, None) from exc
        pairs = [BucketPair(name, name, "", "") for name in names]
    else:
        dst_bucket = destination_bucket or bucket
        pairs = [BucketPair(bucket, dst_bucket, prefix, dst_prefix)]
        if same and bucket == dst_bucket and (prefix.startswith(dst_prefix) or dst_prefix.startswith(prefix)):
            raise InputError(
                "destination",
                f"source and destination are the same location ({src_url}/{bucket}/{prefix}) or overlap "
                f"({dst_url}/{dst_bucket}/{dst_prefix}): mirroring would copy onto itself",
                "give a different destination store, destination_bucket or non-overlapping prefixes",
            )
        if not _bucket_exists(src_client, bucket, "source", src_url):
            raise InputError(
                "bucket",
                f"bucket {bucket!r} does not exist on the source store {src_url}",
                "check the bucket name (or pass bucket=None to mirror every bucket)",
            )
    missing: set[str] = set()
    for pair in pairs:
        if not _bucket_exists(dst_client, pair.destination_bucket, "destination", dst_url):
            missing.add(pair.destination_bucket)
    return MirrorSession(
        source=src_client,
        destination=dst_client,
        pairs=pairs,
        server_side=same and source.access_key == destination.access_key,
        workers=workers,
        source_url=src_url,
        destination_url=dst_url,
        missing_destination_buckets=missing,
        whole_store=bucket is None,
    )


def refresh_pairs(session: MirrorSession) -> list[str]:
    """Whole-store mode: pick up buckets created on the source since the last pass.

    Returns:
        The names of newly found source buckets (their destination buckets are created by the pass).

    Raises:
        StateferryError: Listing the source buckets failed (nothing is changed).
    """
    if not session.whole_store:
        return []
    known = {p.source_bucket for p in session.pairs}
    new = [n for n in list_bucket_names(session.source, side="source") if n not in known]
    for name in new:
        session.pairs.append(BucketPair(name, name, "", ""))
        if not _bucket_exists(session.destination, name, "destination", session.destination_url):
            session.missing_destination_buckets.add(name)
    return new


def ensure_bucket(session: MirrorSession, bucket: str) -> str:
    """Create a destination bucket if missing; return ``"created"`` or ``"unchanged"``."""
    if bucket not in session.missing_destination_buckets:
        return "unchanged"
    try:
        if not session.destination.bucket_exists(bucket):
            session.destination.make_bucket(bucket)
            session.missing_destination_buckets.discard(bucket)
            return "created"
    except Exception as exc:
        if str(getattr(exc, "code", "")) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise translate(exc, context=f"creating destination bucket {bucket!r}") from exc
    session.missing_destination_buckets.discard(bucket)
    return "unchanged"


def plan_pass(session: MirrorSession, options: MirrorOptions, now: datetime) -> dict[str, MirrorPlan]:
    """Plan every bucket pair (listing failures raise; nothing is changed).

    Raises:
        StateferryError: A listing failed (the message names the side and bucket).
    """
    refresh_pairs(session)
    plans: dict[str, MirrorPlan] = {}
    for pair in session.pairs:
        plans[pair.label] = plan_bucket(
            session.source,
            session.destination,
            pair.source_bucket,
            pair.destination_bucket,
            pair.source_prefix,
            pair.destination_prefix,
            options,
            now,
            destination_exists=pair.destination_bucket not in session.missing_destination_buckets,
            workers=session.workers,
        )
    return plans


def run_pass(
    session: MirrorSession,
    options: MirrorOptions,
    *,
    number: int = 1,
    dry_run: bool = False,
    stop: threading.Event | None = None,
    progress: Callable[[int, int], None] | None = None,
    plans: dict[str, MirrorPlan] | None = None,
) -> PassResult:
    """Plan and (unless ``dry_run``) execute one pass over all bucket pairs.

    Args:
        session: The session from :func:`open_session`.
        options: Planner options.
        number: Pass number (for reports).
        dry_run: Only plan.
        stop: Stop starting new transfers when set.
        progress: ``progress(done, total)`` callback.
        plans: Already computed plans to execute (e.g. after an approval); planned afresh if None.

    Returns:
        The pass result; per-object failures are in ``result.report.failures``.
    """
    started = datetime.now(UTC)
    if plans is None:
        plans = plan_pass(session, options, started)
    result = PassResult(number, plans, TransferReport(), dry_run, started)
    if dry_run:
        return result
    total = sum(p.changes for p in plans.values())
    done_before = 0
    for pair in list(session.pairs):
        plan = plans.get(pair.label)
        if plan is None:  # bucket found after this plan was made: the next pass covers it
            continue
        if ensure_bucket(session, pair.destination_bucket) == "created":
            result.buckets_created.append(pair.destination_bucket)
        if not plan.changes:
            continue
        base = done_before

        def relay(done: int, _total: int, base: int = base) -> None:
            if progress is not None:
                progress(base + done, total)

        transferrer = Transferrer(
            session.source,
            session.destination,
            server_side=session.server_side,
            workers=session.workers,
            progress=relay,
        )
        actions = [a for a in plan.actions if a.kind is not ActionKind.INSPECT]
        report = transferrer.run(
            actions,
            pair.source_bucket,
            pair.destination_bucket,
            pair.source_prefix,
            pair.destination_prefix,
            stop=stop,
        )
        result.report.merge(report)
        done_before += plan.changes
    result.report.seconds = (datetime.now(UTC) - started).total_seconds()
    return result


def verify_pass(session: MirrorSession, options: MirrorOptions) -> dict[str, MirrorPlan]:
    """Re-list both sides and plan again: the mirror is verified when no change is left.

    Returns:
        The verification plans per pair (``changes == 0`` and no withheld deletes means identical).
    """
    return plan_pass(session, options, datetime.now(UTC))


def withheld_summary(plans: dict[str, MirrorPlan]) -> tuple[bool, str]:
    """Return (needs approval?, notes) for plans with withheld deletes."""
    needs = any(p.verdict is Verdict.NEEDS_APPROVAL for p in plans.values())
    notes = "; ".join(n for p in plans.values() for n in p.notes)
    return needs, notes


# ------------------------------------------------------------------------------------------------
# Prefect tasks (thin wrappers)


#: Prefect task: validate input and both stores, resolve the bucket pairs (:func:`open_session`).
preflight_mirror = task(name="preflight_mirror", cache_policy=NO_CACHE)(open_session)


@task(name="sync_pass", cache_policy=NO_CACHE)
def sync_pass(
    session: MirrorSession,
    options: MirrorOptions,
    number: int = 1,
    dry_run: bool = False,
    plans: dict[str, MirrorPlan] | None = None,
) -> PassResult:
    """Prefect task: one pass with a progress artifact (see :func:`run_pass`)."""
    progress = PassProgress(f"Mirror pass {number}")
    try:
        return run_pass(session, options, number=number, dry_run=dry_run, progress=progress, plans=plans)
    finally:
        progress.finish()


@task(name="verify_mirror", cache_policy=NO_CACHE)
def verify_mirror(session: MirrorSession, options: MirrorOptions) -> dict[str, MirrorPlan]:
    """Prefect task: verification pass (see :func:`verify_pass`)."""
    return verify_pass(session, options)
