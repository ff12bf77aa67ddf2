"""Is an S3 storage writable? Judged from what each probe step answered (pure).

The probe writes one small object under a fixed name (``<prefix>/<job>/.stateferry-probe``,
overwritten by every run, so a bucket that forbids deleting collects one object, not one per run)
and then tries to remove it. Only the write decides: a write-only bucket (``PutObject`` allowed,
``DeleteObject`` / ``ListBucket`` / ``HeadBucket`` denied) is writable. What the bucket refuses
besides is reported as a warning when the storage's retention would need it (``rotation`` on).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: what one step answered: done, the bucket does not exist, permission denied, anything else.
Answer = Literal["ok", "missing", "denied", "error"]

PROBE_NAME = ".stateferry-probe"


def probe_key(prefix: str, job: str) -> str:
    """The probe object's key (never a backup id, so listings and retention never see it)."""
    return "/".join(p for p in (prefix.strip("/"), job, PROBE_NAME) if p)


def must_create_bucket(bucket: Answer) -> bool:
    """Create the bucket only when it was reported missing (a denied check may hide an existing one)."""
    return bucket == "missing"


@dataclass(frozen=True)
class ProbeVerdict:
    """``writable`` decides; ``problem`` says why not; ``warnings`` what retention will miss."""

    writable: bool
    problem: str = ""
    warnings: tuple[str, ...] = ()


def judge_probe(bucket: Answer, put: Answer, delete: Answer | None, *, rotation: bool) -> ProbeVerdict:
    """Judge the probe.

    Args:
        bucket: the bucket-exists check (``denied`` when ``HeadBucket`` is not allowed).
        put: writing the probe object.
        delete: removing it (None when not tried).
        rotation: whether this storage's retention deletes old backups (needs list + delete).

    Returns:
        The verdict.
    """
    if put == "denied":
        return ProbeVerdict(False, "writing an object was denied (the credentials need s3:PutObject)")
    if put == "missing":
        return ProbeVerdict(False, "the bucket does not exist and could not be created")
    if put != "ok":
        return ProbeVerdict(False, "writing the probe object failed")
    warnings: list[str] = []
    if rotation and bucket == "denied":
        warnings.append(
            "the bucket cannot be checked or listed (s3:ListBucket denied): retention will fail;"
            " grant it or set store.rotation: false"
        )
    if rotation and delete in ("denied", "error"):
        warnings.append(
            "deleting the probe object was "
            + ("denied" if delete == "denied" else "not possible")
            + ": retention cannot delete old backups; grant s3:DeleteObject or set store.rotation: false"
        )
    return ProbeVerdict(True, "", tuple(warnings))
