"""planning.tree_compare: what a verified inc_files chain may differ from its source by (table-driven)."""

from __future__ import annotations

import pytest

from planning.tree_compare import TreeEntry, excluded, summarize, tree_differences

T0 = 1000.0  # the dump started
OLD, NEW = T0 - 50, T0 + 5
D_OLD, D_NEW = TreeEntry("d", "", OLD), TreeEntry("d", "", NEW)


def f(digest: str, changed: float = OLD) -> TreeEntry:
    return TreeEntry("f", digest, changed)


@pytest.mark.parametrize(
    ("source", "restored", "problems", "drift"),
    [
        ({"w": D_OLD, "w/a": f("1")}, {"w": D_NEW, "w/a": f("1", NEW)}, [], []),  # restore times differ: same
        ({"w": D_OLD, "w/a": f("2")}, {"w": D_OLD, "w/a": f("1")}, ["w/a: differs from the source"], []),
        ({"w": D_OLD, "w/a": f("2", NEW)}, {"w": D_OLD, "w/a": f("1")}, [], ["w/a: differs from the source"]),
        ({"w": D_OLD, "w/a": f("1")}, {"w": D_OLD}, ["w/a: missing from the restored chain"], []),
        ({"w": D_OLD, "w/a": f("1", NEW)}, {"w": D_OLD}, [], ["w/a: missing from the restored chain"]),
        # a file restored that the source deleted before the dump: a missed deletion
        ({"w": D_OLD}, {"w": D_OLD, "w/x": f("1")}, ["w/x: restored, but not in the source"], []),
        # ... or deleted after the dump started (its directory changed since): drift
        ({"w": D_NEW}, {"w": D_OLD, "w/x": f("1")}, [], ["w/x: restored, but not in the source"]),
        (
            {"w": D_OLD, "w/l": TreeEntry("l", "../a")},
            {"w": D_OLD, "w/l": TreeEntry("l", "/etc")},
            ["w/l: differs from the source"],
            [],
        ),
        ({"w": D_OLD, "w/k": D_OLD}, {"w": D_OLD, "w/k": f("1")}, ["w/k: differs from the source"], []),
    ],
)
def test_tree_differences(
    source: dict[str, TreeEntry], restored: dict[str, TreeEntry], problems: list[str], drift: list[str]
) -> None:
    assert tree_differences(source, restored, started=T0) == (problems, drift)


@pytest.mark.parametrize(
    ("rel", "patterns", "out"),
    [
        ("www/a/x.tmp", ["*.tmp"], True),
        ("www/cache", ["cache"], True),
        ("www/cache/f", ["cache"], False),  # the directory itself is excluded (and not walked)
        ("www/a.txt", ["*.tmp"], False),
        ("www/a/b", ["a/b"], True),
        ("www/xa/b", ["a/b"], False),
        ("www/a.txt", [], False),
    ],
)
def test_excluded_like_gnu_tar_unanchored(rel: str, patterns: list[str], out: bool) -> None:
    assert excluded(rel, patterns) is out


def test_summarize_caps_the_list() -> None:
    text = summarize([f"f{i}" for i in range(25)], "differences")
    assert text.startswith("25 differences: f0; f1") and text.endswith("(and 5 more)")
