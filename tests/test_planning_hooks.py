"""Table tests of planning/hooks.py: quiesce exec hooks are argv lists, validated up front."""

from __future__ import annotations

from typing import Any

import pytest

from planning.app_migration import parse_quiesce
from planning.hooks import parse_hooks
from stateferry.errors import InputError

OK = {"selector": "app=db", "container": "db", "pre": [["fsfreeze", "-f", "/data"]]}


def test_valid_hooks() -> None:
    [h] = parse_hooks([{**OK, "post": [["fsfreeze", "-u", "/data"]], "timeout_seconds": 5}], ["cms"])
    assert (h.namespace, h.selector, h.container, h.timeout_seconds) == ("cms", "app=db", "db", 5)
    assert h.pre == (("fsfreeze", "-f", "/data"),) and h.post == (("fsfreeze", "-u", "/data"),)
    [h] = parse_hooks(
        '[{"namespace": "b", "selector": "x in (1,2)", "container": "c", "pre": [["true"]]}]', ["a", "b"]
    )
    assert h.namespace == "b"
    assert parse_quiesce("Hooks") == "hooks"


@pytest.mark.parametrize(
    ("hooks", "field"),
    [
        (None, "hooks"),
        ([], "hooks"),
        ("not json", "hooks"),
        ([{**OK, "pre": "fsfreeze -f /data"}], "hooks[0].pre"),  # a shell string is refused
        ([{**OK, "pre": ["fsfreeze -f /data; rm -rf /"]}], "hooks[0].pre[0]"),
        ([{**OK, "pre": [[]]}], "hooks[0].pre[0]"),
        ([{**OK, "pre": [["fsfreeze", 3]]}], "hooks[0].pre[0]"),
        ([{**OK, "pre": [["a\x00b"]]}], "hooks[0].pre[0]"),
        ([{**OK, "pre": [[" "]]}], "hooks[0].pre[0]"),
        ([{**OK, "selector": ""}], "hooks[0].selector"),
        ([{**OK, "selector": "app=(x"}], "hooks[0].selector"),
        ([{**OK, "container": "Bad_Name"}], "hooks[0].container"),
        ([{**OK, "namespace": "other"}], "hooks[0].namespace"),
        ([{**OK, "timeout_seconds": 0}], "hooks[0].timeout_seconds"),
        ([{**OK, "timeout_seconds": True}], "hooks[0].timeout_seconds"),
        ([{**OK, "shell": True}], "hooks[0]"),
        ([{**OK, "pre": None}], "hooks[0]"),
        ([{**OK, "pre": None, "post": [["true"]]}], "hooks"),  # nothing quiesces
    ],
)
def test_refused(hooks: Any, field: str) -> None:
    with pytest.raises(InputError) as e:
        parse_hooks(hooks, ["cms"])
    assert e.value.field == field


def test_namespace_required_with_several() -> None:
    with pytest.raises(InputError) as e:
        parse_hooks([OK], ["a", "b"])
    assert e.value.field == "hooks[0].namespace"


@pytest.mark.parametrize(
    ("hooks", "field", "fix"),
    [
        ("[not json", "hooks", "give a list of {selector, container, pre, post}"),
        ({"selector": "app=x"}, "hooks", "give a list of {selector, container, pre, post}"),
        (["app=x"], "hooks[0]", "give a map {namespace, selector, container, pre, post}"),
    ],
)
def test_list_and_entry_shape_fixes(hooks: Any, field: str, fix: str) -> None:
    with pytest.raises(InputError) as e:
        parse_hooks(hooks, ["cms"])
    assert (e.value.field, e.value.fix) == (field, fix)
