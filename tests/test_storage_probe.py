"""Table tests of planning/storage_probe.py: a write-only bucket is writable (issue 15)."""

from __future__ import annotations

import pytest

from planning.storage_probe import judge_probe, must_create_bucket, probe_key


@pytest.mark.parametrize(
    ("bucket", "put", "delete", "rotation", "writable", "warns"),
    [
        ("ok", "ok", "ok", True, True, []),
        # write-only bucket: no delete, no list / head -> still writable
        ("denied", "ok", "denied", False, True, []),
        ("ok", "ok", "denied", False, True, []),
        ("ok", "ok", "denied", True, True, ["DeleteObject"]),
        ("denied", "ok", "denied", True, True, ["ListBucket", "DeleteObject"]),
        ("ok", "ok", "error", True, True, ["not possible"]),
        ("ok", "ok", None, True, True, []),
        # the write decides
        ("ok", "denied", None, False, False, []),
        ("missing", "missing", None, True, False, []),
        ("ok", "error", None, True, False, []),
    ],
)
def test_judge_probe(
    bucket: str, put: str, delete: str | None, rotation: bool, writable: bool, warns: list[str]
) -> None:
    v = judge_probe(bucket, put, delete, rotation=rotation)  # type: ignore[arg-type]
    assert v.writable is writable
    assert len(v.warnings) == len(warns) and all(w in text for w, text in zip(warns, v.warnings, strict=True))
    assert bool(v.problem) is not writable


def test_probe_key_and_bucket_creation() -> None:
    assert probe_key("/backups/db/", "job") == "backups/db/job/.stateferry-probe"
    assert probe_key("", "job") == "job/.stateferry-probe"
    assert must_create_bucket("missing") and not must_create_bucket("denied")
