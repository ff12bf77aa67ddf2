"""Table tests of the manifest check every restore runs first (tasks/restore_jobs.check_manifest)."""

from __future__ import annotations

from typing import Any

import pytest

from stateferry.errors import InputError
from tasks.restore_jobs import check_manifest

_SHA = "ab" * 32


def _pg(name: str, database: str = "app", fmt: str = "custom", **extra: Any) -> dict[str, Any]:
    part = {"name": name, "database": database, "format": fmt, "sha256": _SHA, "size": 10, **extra}
    return {"engine": "postgres", "parts": [part]}


@pytest.mark.parametrize(
    "manifest",
    [
        _pg("app.pgdump.gz"),
        _pg("my db.sql.gz", database="my db", fmt="plain"),
        {
            "engine": "mysql",
            "parts": [{"name": "mysql.sql.gz", "databases": ["a"], "sha256": _SHA, "size": 1}],
        },
        {"engine": "files", "parts": [{"name": "files.tar.gz", "sha256": _SHA, "size": 0}]},
        {"engine": "etcd", "parts": [{"name": "snapshot.db.gz", "sha256": _SHA, "size": 5}]},
        {**_pg("app.pgdump.gz"), "inventory": {"app": {"tables": {"public.t": 3}, "views": ["v"]}}},
        {
            "engine": "postgres",
            "parts": [
                _pg("app.pgdump.gz")["parts"][0],
                {"name": "globals.pgdumpall.gz", "extra": "globals", "sha256": _SHA, "size": 3},
            ],
        },
        {
            "engine": "mysql",
            "parts": [
                {"name": "mysql.sql.gz", "databases": ["a"], "sha256": _SHA, "size": 1},
                {"name": "users.sql.gz", "extra": "users", "sha256": _SHA, "size": 1},
            ],
        },
    ],
)
def test_layout_manifests_pass(manifest: dict[str, Any]) -> None:
    check_manifest(manifest)


@pytest.mark.parametrize(
    ("manifest", "what"),
    [
        (
            {"engine": "files", "parts": [{"name": "/etc/cron.d/x", "sha256": _SHA, "size": 1}]},
            r"parts\[0\].name",
        ),
        ({"engine": "files", "parts": [{"name": "../../x", "sha256": _SHA, "size": 1}]}, r"parts\[0\].name"),
        (_pg("../app.pgdump.gz", database="../app"), r"parts\[0\].database"),
        (_pg("a/b.pgdump.gz", database="a/b"), r"parts\[0\].database"),
        (_pg("app.sql.gz"), r"parts\[0\].name"),  # custom format under the plain name
        (_pg("app.pgdump.gz", fmt="tar"), r"parts\[0\].format"),
        (_pg("app.pgdump.gz", sha256="../x"), r"parts\[0\].sha256"),
        (_pg("app.pgdump.gz", size=True), r"parts\[0\].size"),
        ({"engine": "shell", "parts": []}, "'engine'"),
        ({"engine": "mysql", "parts": []}, "'parts'"),
        ({"engine": "mysql", "parts": [{"name": "mysql.sql.gz", "sha256": _SHA, "size": 1}]}, "databases"),
        ({**_pg("app.pgdump.gz"), "inventory": {"app": {"tables": {"t": [1]}}}}, "'inventory'"),
        ({**_pg("app.pgdump.gz"), "inventory": ["app"]}, "'inventory'"),
        ({**_pg("app.pgdump.gz"), "verification": {"checks": {"app": "x"}}}, "verification.checks"),
        (  # the globals part under another name, or a users part in a PostgreSQL backup
            {
                "engine": "postgres",
                "parts": [
                    _pg("app.pgdump.gz")["parts"][0],
                    {"name": "../g.gz", "extra": "globals", "sha256": _SHA, "size": 3},
                ],
            },
            r"parts\[1\].name",
        ),
        (
            {
                "engine": "postgres",
                "parts": [
                    _pg("app.pgdump.gz")["parts"][0],
                    {"name": "users.sql.gz", "extra": "users", "sha256": _SHA, "size": 3},
                ],
            },
            r"parts\[1\].extra",
        ),
    ],
)
def test_foreign_manifests_refused(manifest: dict[str, Any], what: str) -> None:
    with pytest.raises(InputError, match=what) as err:
        check_manifest(manifest)
    assert err.value.field == "backup"
