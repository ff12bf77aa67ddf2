"""Table-driven tests of the pure mirror planner (planning/mirror.py)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from planning.mirror import (
    ActionKind,
    MirrorOptions,
    ObjectEntry,
    Verdict,
    approve_withheld_deletes,
    etags_comparable,
    normalize_metadata,
    plan_mirror,
)
from planning.mirror_inputs import check_bucket_name, normalize_prefix, parse_duration
from planning.mirror_report import render_plan_markdown

NOW = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
T0 = NOW - timedelta(days=2)  # "old" time
T1 = NOW - timedelta(hours=1)  # "recent" time
MD5_A = "a" * 32
MD5_B = "b" * 32
META_1 = (("content-type", "text/plain"),)
META_2 = (("content-type", "text/plain"), ("x-amz-meta-owner", "ops"))


def e(key: str, size: int = 10, etag: str = MD5_A, at: datetime = T0, **kw: object) -> ObjectEntry:
    return ObjectEntry(key=key, size=size, etag=etag, last_modified=at, **kw)  # type: ignore[arg-type]


# (name, source, destination, options, expected {key: (kind, reason fragment)})
CASES = [
    ("missing on destination -> copy", [e("a")], [], MirrorOptions(), {"a": ("copy", "missing")}),
    ("identical -> skip", [e("a")], [e("a", at=T1)], MirrorOptions(), {}),
    (
        "size differs -> overwrite",
        [e("a", 11)],
        [e("a", at=T1)],
        MirrorOptions(),
        {"a": ("overwrite", "size")},
    ),
    (
        "same size, different md5 etag -> overwrite (same-size edit, mc #2187)",
        [e("a", etag=MD5_B, at=T0)],
        [e("a", at=T1)],
        MirrorOptions(),
        {"a": ("overwrite", "etag differs")},
    ),
    (
        "overwrite=False keeps differing objects",
        [e("a", 11)],
        [e("a")],
        MirrorOptions(overwrite=False),
        {},
    ),
    (
        "extra on destination kept without remove",
        [],
        [e("x")],
        MirrorOptions(),
        {},
    ),
    (
        "extra on destination deleted with remove",
        [e("a"), e("b")],
        [e("a", at=T1), e("b", at=T1), e("x")],
        MirrorOptions(remove=True),
        {"x": ("delete", "not on source")},
    ),
    (
        "multipart etags, same part count -> compared",
        [e("m", etag=MD5_B + "-3")],
        [e("m", etag=MD5_A + "-3", at=T1)],
        MirrorOptions(),
        {"m": ("overwrite", "etag differs")},
    ),
    (
        "multipart etags, different part size -> mtime: destination newer -> skip",
        [e("m", etag=MD5_B + "-3", part_size=5)],
        [e("m", etag=MD5_A + "-3", at=T1, part_size=8)],
        MirrorOptions(),
        {},
    ),
    (
        "multipart vs single part, source newer -> overwrite",
        [e("m", etag=MD5_B + "-2", at=T1)],
        [e("m", etag=MD5_A, at=T0)],
        MirrorOptions(),
        {"m": ("overwrite", "source newer")},
    ),
    (
        "not comparable, destination newer, verify=checksum without checksums -> inspect",
        [e("m", etag=MD5_B + "-2")],
        [e("m", etag=MD5_A, at=T1)],
        MirrorOptions(verify="checksum"),
        {"m": ("inspect", "checksum")},
    ),
    (
        "not comparable, checksums differ -> overwrite",
        [e("m", etag=MD5_B + "-2", checksum="c1")],
        [e("m", etag=MD5_A, at=T1, checksum="c2")],
        MirrorOptions(verify="checksum"),
        {"m": ("overwrite", "checksum differs")},
    ),
    (
        "not comparable, checksums equal -> skip",
        [e("m", etag=MD5_B + "-2", checksum="c1")],
        [e("m", etag=MD5_A, at=T1, checksum="c1")],
        MirrorOptions(verify="checksum"),
        {},
    ),
    (
        "same etag, source newer, metadata unknown -> inspect",
        [e("a", at=T1)],
        [e("a", at=T0)],
        MirrorOptions(),
        {"a": ("inspect", "metadata")},
    ),
    (
        "same etag, source newer, metadata differs -> metadata-only overwrite",
        [e("a", at=T1, metadata=META_2)],
        [e("a", at=T0, metadata=META_1)],
        MirrorOptions(),
        {"a": ("overwrite", "metadata differs")},
    ),
    (
        "same etag, source newer, metadata equal -> skip",
        [e("a", at=T1, metadata=META_1)],
        [e("a", at=T0, metadata=META_1)],
        MirrorOptions(),
        {},
    ),
    (
        "exclude patterns: neither copied nor deleted",
        [e("logs/a.tmp"), e("b.txt")],
        [e("c.tmp")],
        MirrorOptions(remove=True, exclude=("*.tmp",), max_delete_ratio=1.0),
        {"b.txt": ("copy", "missing")},
    ),
    (
        "exclude with a slash matches the whole key",
        [e("logs/a"), e("data/a")],
        [],
        MirrorOptions(exclude=("logs/*",)),
        {"data/a": ("copy", "missing")},
    ),
    (
        "newer_than keeps only young source objects",
        [e("old", at=T0), e("young", at=T1)],
        [],
        MirrorOptions(newer_than="1d"),
        {"young": ("copy", "missing")},
    ),
    (
        "older_than keeps only old source objects, does not delete filtered ones",
        [e("old", at=T0), e("young", at=T1)],
        [e("young", size=1, at=T0)],
        MirrorOptions(older_than="1d", remove=True),
        {"old": ("copy", "missing")},
    ),
]


@pytest.mark.parametrize(
    ("name", "source", "destination", "options", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_plan_cases(
    name: str,
    source: list[ObjectEntry],
    destination: list[ObjectEntry],
    options: MirrorOptions,
    expected: dict[str, tuple[str, str]],
) -> None:
    by_key = lambda x: x.key  # noqa: E731
    plan = plan_mirror(sorted(source, key=by_key), sorted(destination, key=by_key), options, now=NOW)
    got = {a.key: (a.kind.value, a.reason) for a in plan.actions}
    assert set(got) == set(expected), name
    for key, (kind, fragment) in expected.items():
        assert got[key][0] == kind, (name, got[key])
        assert fragment in got[key][1], (name, got[key])
    assert plan.verdict is Verdict.OK
    assert sum(plan.counts.values()) == len(
        {x.key for x in source} | {x.key for x in destination}
    ) - _excluded_count(source, destination, options)


def _excluded_count(source: list[ObjectEntry], destination: list[ObjectEntry], options: MirrorOptions) -> int:
    import fnmatch

    keys = {x.key for x in source} | {x.key for x in destination}
    return sum(
        1
        for k in keys
        if any(
            fnmatch.fnmatchcase(k, p) or ("/" not in p and fnmatch.fnmatchcase(k.rsplit("/", 1)[-1], p))
            for p in options.exclude
        )
    )


@pytest.mark.parametrize(
    ("n_dest", "n_deleted", "ratio", "approved", "verdict", "planned"),
    [
        (10, 5, 0.5, False, Verdict.OK, 5),
        (10, 6, 0.5, False, Verdict.NEEDS_APPROVAL, 0),
        (10, 6, 0.5, True, Verdict.OK, 6),
        (10, 1, 0.0, False, Verdict.NEEDS_APPROVAL, 0),
        (10, 10, 1.0, False, Verdict.OK, 10),
    ],
)
def test_delete_cap(
    n_dest: int, n_deleted: int, ratio: float, approved: bool, verdict: Verdict, planned: int
) -> None:
    dest = [e(f"k{i:03d}") for i in range(n_dest)]
    src = [x for x in dest[n_deleted:]] or [e("zzz")]
    plan = plan_mirror(
        src, dest, MirrorOptions(remove=True, max_delete_ratio=ratio, deletes_approved=approved), now=NOW
    )
    assert plan.verdict is verdict
    assert plan.counts["delete"] == planned
    assert len(plan.withheld_deletes) == (n_deleted - planned)
    assert all(a.kind is not ActionKind.DELETE for a in plan.actions) or planned > 0


@pytest.mark.parametrize(
    ("allow", "verdict", "deletes"), [(False, Verdict.DELETES_BLOCKED, 0), (True, Verdict.OK, 3)]
)
def test_empty_source_never_wipes_destination(allow: bool, verdict: Verdict, deletes: int) -> None:
    dest = [e("a"), e("b"), e("c")]
    opts = MirrorOptions(remove=True, max_delete_ratio=1.0, allow_empty_source=allow)
    plan = plan_mirror([], dest, opts, now=NOW)
    assert plan.verdict is verdict
    assert plan.counts["delete"] == deletes
    if not allow:
        assert "allow_empty_source" in plan.notes[0]


def test_failed_source_listing_propagates_and_plans_nothing() -> None:
    def broken() -> object:
        yield e("a")
        raise ConnectionError("source went away")

    with pytest.raises(ConnectionError):
        plan_mirror(broken(), [e("a"), e("b")], MirrorOptions(remove=True))  # type: ignore[arg-type]


@pytest.mark.parametrize("side", ["source", "destination"])
def test_unsorted_listing_is_rejected(side: str) -> None:
    bad = [e("b"), e("a")]
    args = (bad, []) if side == "source" else ([], bad)
    with pytest.raises(ValueError, match=f"{side} listing is not sorted"):
        plan_mirror(*args)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("7d", 7 * 86400), ("1h30m", 5400), ("90s", 90), ("2w", 14 * 86400), ("1d10h31s", 86400 + 36000 + 31)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "7", "d7", "1x", "1h foo"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="newer_than"):
        parse_duration(text, field_name="newer_than")


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"verify": "md5"}, "verify"),
        ({"max_delete_ratio": 2.0}, "max_delete_ratio"),
        ({"older_than": "x"}, "older_than"),
    ],
)
def test_options_validation(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        MirrorOptions(**kwargs)  # type: ignore[arg-type]


def test_age_filter_needs_now() -> None:
    with pytest.raises(ValueError, match="now"):
        plan_mirror([e("a")], [], MirrorOptions(newer_than="1d"))


@pytest.mark.parametrize(
    ("a", "b", "comparable"),
    [
        (MD5_A, MD5_B, True),
        (MD5_A + "-2", MD5_B + "-2", True),
        (MD5_A + "-2", MD5_B + "-3", False),
        (MD5_A, MD5_B + "-1", False),
        ("not-an-md5", MD5_A, False),
    ],
)
def test_etags_comparable(a: str, b: str, comparable: bool) -> None:
    assert etags_comparable(e("k", etag=a), e("k", etag=b)) is comparable


def test_normalize_metadata_keeps_preserved_headers_only() -> None:
    headers = {
        "Content-Type": "text/plain",
        "Cache-Control": "max-age=60",
        "X-Amz-Meta-Owner": " ops ",
        "ETag": '"abc"',
        "Date": "now",
        "Content-Length": "3",
    }
    assert normalize_metadata(headers) == (
        ("cache-control", "max-age=60"),
        ("content-type", "text/plain"),
        ("x-amz-meta-owner", "ops"),
    )


def test_markdown_lists_counts_and_withheld() -> None:
    dest = [e(f"k{i}") for i in range(4)]
    plan = plan_mirror([e("new")], dest, MirrorOptions(remove=True))
    md = render_plan_markdown(plan, title="Mirror plan")
    assert "| copy | 1 |" in md
    assert "delete (withheld) | 4" in md
    assert "max_delete_ratio" in md


def test_100k_objects_with_1_percent_changes_is_fast() -> None:
    n = 100_000
    src = [e(f"obj/{i:07d}", size=4096, etag=MD5_A) for i in range(n)]
    dst = [
        e(f"obj/{i:07d}", size=4096, etag=MD5_B if i % 100 == 0 else MD5_A, at=T1)
        for i in range(n)
        if i % 1000 != 1
    ]
    started = time.perf_counter()
    plan = plan_mirror(iter(src), iter(dst), MirrorOptions(remove=True))
    elapsed = time.perf_counter() - started
    assert plan.counts["overwrite"] == 1000
    assert plan.counts["copy"] == 100
    assert plan.counts["skip"] == n - 1100
    assert elapsed < 5.0


def test_approving_withheld_deletes_plans_exactly_them() -> None:
    dest = [e(f"k{i}") for i in range(4)]
    plan = plan_mirror([e("k0"), e("new")], dest, MirrorOptions(remove=True))
    assert plan.verdict is Verdict.NEEDS_APPROVAL
    approved = approve_withheld_deletes(plan)
    assert approved.verdict is Verdict.OK
    assert [a.key for a in approved.of_kind(ActionKind.DELETE)] == ["k1", "k2", "k3"]
    assert approved.counts["delete"] == 3
    assert approved.counts["copy"] == 1
    blocked = plan_mirror([], dest, MirrorOptions(remove=True))
    with pytest.raises(ValueError, match="allow_empty_source"):
        approve_withheld_deletes(blocked)


@pytest.mark.parametrize(
    ("given", "listed"),
    [
        ("", ""),
        ("logs", "logs/"),
        ("logs/", "logs/"),
        ("a/b", "a/b/"),
        ("logs*", "logs"),
        ("logs/*", "logs/"),
        ("*", ""),
    ],
)
def test_normalize_prefix_is_a_folder_unless_star(given: str, listed: str) -> None:
    assert normalize_prefix(given) == listed


@pytest.mark.parametrize("given", ["lo*gs", "a*b*", "/", "//", "a\nb", "a\x00"])
def test_normalize_prefix_rejects(given: str) -> None:
    with pytest.raises(ValueError, match="destination_prefix"):
        normalize_prefix(given, field_name="destination_prefix")


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("backups", True),
        ("my.bucket-2", True),
        ("abc", True),
        ("ab", False),
        ("a" * 64, False),
        ("Backups", False),
        ("-backups", False),
        ("backups-", False),
        ("my..bucket", False),
        ("my_bucket", False),
        ("../etc", False),
        ("--endpoint-url=x", False),
    ],
)
def test_check_bucket_name(name: str, ok: bool) -> None:
    from stateferry.errors import InputError

    if ok:
        assert check_bucket_name(name, field_name="destination_bucket") == name
    else:
        with pytest.raises(InputError) as err:
            check_bucket_name(name, field_name="destination_bucket")
        assert err.value.field == "destination_bucket"
