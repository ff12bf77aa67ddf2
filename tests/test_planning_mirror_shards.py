"""Table tests of planning/mirror_shards.py (key ranges, bounded sample, merged outcomes)."""

from __future__ import annotations

import pytest

from planning.mirror_shards import KeyRange, ShardOutcome, StrideSample, key_ranges, merge_outcomes


@pytest.mark.parametrize(
    ("sample", "shards", "bounds"),
    [
        ([], 4, []),
        (["a"], 4, []),
        (["a", "b", "c", "d"], 2, ["b"]),
        (["d", "c", "b", "a", "a"], 4, ["a", "b", "c"]),
        ([f"{i:03d}" for i in range(100)], 4, ["024", "049", "074"]),
        (["a", "b", "c"], 1, []),
    ],
)
def test_key_ranges_cover_every_key_exactly_once(sample: list[str], shards: int, bounds: list[str]) -> None:
    ranges = key_ranges(sample, shards)
    assert [r.upto for r in ranges[:-1]] == bounds
    assert ranges[0].after is None and ranges[-1].upto is None
    for key in ["", "0", "024", "025", "a", "a/b", "b", "zz", "\uffff", *sample]:
        assert sum(key in r for r in ranges) == 1, key


def test_key_range_bounds_and_early_stop() -> None:
    r = KeyRange("b", "d")
    assert [k in r for k in ("b", "ba", "d", "d0")] == [False, True, True, False]
    assert r.beyond("d0") and not r.beyond("d") and not KeyRange("b", None).beyond("zzz")
    with pytest.raises(ValueError, match="shards"):
        key_ranges(["a"], 0)


def test_stride_sample_is_bounded_and_evenly_spread() -> None:
    sample = StrideSample(size=64).extend(f"{i:07d}" for i in range(100_000))
    assert len(sample.keys) < 128 and sample.seen == 100_000
    gaps = {int(b) - int(a) for a, b in zip(sample.keys, sample.keys[1:], strict=False)}
    assert gaps == {sample.stride}
    ranges = key_ranges(sample.keys, 4)
    sizes = [sum(f"{i:07d}" in r for i in range(0, 100_000, 97)) for r in ranges]
    assert max(sizes) - min(sizes) < 0.05 * sum(sizes)


def test_merge_outcomes_sums_and_verifies_only_when_every_shard_did() -> None:
    ok = ShardOutcome("(-inf, m]", counts={"copied": 3, "bytes": 30}, verified=True, detail="ok", seconds=2)
    bad = ShardOutcome("(m, +inf]", counts={"copied": 1}, failures=["copy x: boom"], detail="1 left")
    merged = merge_outcomes([ok, bad])
    assert merged["counts"] == {"copied": 4, "bytes": 30}
    assert merged["verified"] is False and "(m, +inf]" in str(merged["verification"])
    assert merged["failures"] == ["copy x: boom"] and merged["slowest_shard_seconds"] == 2
    assert merge_outcomes([ok])["verified"] is True
    assert merge_outcomes([])["verified"] is False
