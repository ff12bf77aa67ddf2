"""Table tests of planning/pg_globals.py (pure): an idempotent globals script, hashes scrubbed."""

from __future__ import annotations

import pytest

from planning.pg_globals import plan_globals, scrub_password_hashes, unquote

SCRIPT = "\n".join(
    [
        "SET default_transaction_read_only = off;",
        "CREATE ROLE app;",
        "ALTER ROLE app WITH NOSUPERUSER LOGIN PASSWORD 'SCRAM-SHA-256$4096:abc==$x:y';",
        "CREATE ROLE postgres;",
        "ALTER ROLE postgres WITH SUPERUSER LOGIN PASSWORD 'SCRAM-SHA-256$4096:def==$x:y';",
        'CREATE ROLE "We ""x""";',
        'ALTER ROLE "We ""x""" WITH NOLOGIN;',
        "ALTER ROLE postgres SET work_mem TO '8MB';",
        "CREATE TABLESPACE fast OWNER app LOCATION '/srv/fast';",
        'GRANT app TO "We ""x""" GRANTED BY postgres;',
    ]
)


@pytest.mark.parametrize(
    ("roles", "tablespaces", "gone", "created", "existing"),
    [
        (set(), set(), ["ALTER ROLE postgres"], ["app", "postgres", 'We "x"'], []),
        (
            {"postgres", "app"},
            {"fast"},
            ["CREATE ROLE app;", "CREATE ROLE postgres;", "ALTER ROLE postgres", "CREATE TABLESPACE"],
            ['We "x"'],
            ["app", "postgres"],
        ),
    ],
)
def test_plan_globals_skips_what_exists_and_the_own_role(
    roles: set[str], tablespaces: set[str], gone: list[str], created: list[str], existing: list[str]
) -> None:
    plan = plan_globals(SCRIPT, roles, tablespaces, "postgres")
    for text in gone:
        assert text not in plan.sql
    assert plan.create_roles == created and plan.existing_roles == existing
    assert plan.own_role_kept
    assert "ALTER ROLE app WITH NOSUPERUSER LOGIN PASSWORD" in plan.sql  # the backup's password comes back
    assert 'GRANT app TO "We ""x""" GRANTED BY postgres;' in plan.sql


def test_plan_globals_only_matches_whole_statements() -> None:
    """A role name merely containing the restoring role's name, or a CREATE ROLE with options, is kept."""
    sql = 'ALTER ROLE postgres2 WITH LOGIN;\nCREATE ROLE app WITH LOGIN;\nALTER ROLE "postgres" WITH LOGIN;'
    plan = plan_globals(sql, {"app"}, set(), "postgres")
    assert plan.sql == "ALTER ROLE postgres2 WITH LOGIN;\nCREATE ROLE app WITH LOGIN;"
    assert unquote('"a""b"') == 'a"b'


def test_scrub_password_hashes() -> None:
    msg = "ERROR: x\nLINE 1: ALTER ROLE app WITH PASSWORD 'SCRAM-SHA-256$4096:a$b:c' md5" + "a" * 32
    out = scrub_password_hashes(msg)
    assert "SCRAM" not in out and "a" * 32 not in out and "PASSWORD" not in out and "ALTER ROLE app" in out
