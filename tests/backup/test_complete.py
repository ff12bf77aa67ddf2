"""Issue 18: a backup gives back every kind of object the source had, and verification proves it.

Real MariaDB and PostgreSQL; the backup tasks run directly (no Prefect server needed): inventory,
dump to a local storage, verification by a restore as a copy, then a restore over the original.
"""

from __future__ import annotations

import datetime as dt
import secrets
from pathlib import Path
from typing import Any

import pytest

from backup.helpers import mysql_block, mysql_exec, pg_block, pg_exec
from planning.backup_config import parse_job
from stateferry.errors import InputError
from tasks.backup_jobs import Resolved, VerificationFailed, dump_to_storages, new_backup_id, preflight_source
from tasks.backup_storage import LocalStorage
from tasks.backup_verify import inventory_source, verify_backup
from tasks.inventory import compare_inventories, mysql_inventory, postgres_inventory
from tasks.restore_ops import postgres_recreate_database, restore_mysql, restore_postgres


def _resolved(engine: str, db: Any, database: str, root: Path, **source: Any) -> Resolved:
    job = parse_job(
        {
            "job": "complete",
            "type": engine,
            "sources": [{"connect": {"block": "unused"}, "target": [database], **source}],
            "storages": [{"storage": "local", "backup_dir": str(root)}],
        }
    )
    label = job.storage_labels[0]
    r = Resolved(job, source_block=db, storages={label: LocalStorage(root, label)})
    r.storage_configs = {label: job.enabled_storages[0]}
    return r


def _backup(r: Resolved, before: dict[str, Any]) -> tuple[str, Any, dict[str, Any]]:
    label = next(iter(r.storages))
    facts = preflight_source.fn(r)
    bid = new_backup_id(dt.datetime.now(dt.UTC))
    parts, failed = dump_to_storages.fn(r, bid, facts, [label])
    assert not failed
    return bid, parts, verify_backup.fn(r, bid, parts, label, before)


MARIA_SCHEMA = (
    "CREATE TABLE t (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(20))",
    "CREATE TABLE audit (n INT)",
    "INSERT INTO t (v) VALUES ('a'), ('b'), ('c')",
    "CREATE VIEW tv AS SELECT v FROM t",
    "CREATE TRIGGER t_ins AFTER INSERT ON t FOR EACH ROW INSERT INTO audit VALUES (NEW.id)",
    "CREATE PROCEDURE p() SELECT 1",
    "CREATE FUNCTION f() RETURNS INT DETERMINISTIC RETURN 42",
    "CREATE EVENT nightly ON SCHEDULE EVERY 1 DAY DO DELETE FROM audit",
    "CREATE SEQUENCE ticket START WITH 100 CACHE 10",
    "SELECT NEXTVAL(ticket)",
)


@pytest.fixture
def maria_db(mariadb: Any) -> Any:
    db = mysql_block(mariadb)
    name = "complete_" + secrets.token_hex(3)
    mysql_exec(db, f"CREATE DATABASE {name}")
    mysql_exec(db, *MARIA_SCHEMA, database=name)
    yield db, name
    mysql_exec(db, f"DROP DATABASE IF EXISTS {name}")


def test_complete_mariadb_every_kind_round_trips(maria_db: Any, tmp_path: Path) -> None:
    """Table, view, trigger, procedure, function and event come back as a copy and by overwrite."""
    db, name = maria_db
    r = _resolved("mysql", db, name, tmp_path)
    before = inventory_source.fn(r, [name])
    assert before[name]["events"] == ["nightly"] and before[name]["triggers"] == ["t_ins"]
    assert before[name]["routines"] == ["function f", "procedure p"]
    assert before[name]["sequences"] == {"ticket": 110} and "ticket" not in before[name]["tables"]
    bid, parts, record = _backup(r, before)  # verification = restore as a copy + compare
    assert record["result"] == "ok" and record["checks"][name]["events"] == ["nightly"]
    mysql_exec(db, "DROP EVENT nightly", "DROP TRIGGER t_ins", "DROP VIEW tv", database=name)
    with LocalStorage(tmp_path).open_read("complete", bid, parts[0].name, published=False) as fh:
        restore_mysql(db, fh)  # over the original
    assert compare_inventories(name, before[name], mysql_inventory(db, name)) == []


def test_complete_mariadb_dump_without_events_fails_verification(maria_db: Any, tmp_path: Path) -> None:
    """A dump that leaves the event out is refused, naming the event."""
    db, name = maria_db
    full = inventory_source.fn(_resolved("mysql", db, name, tmp_path), [name])
    r = _resolved("mysql", db, name, tmp_path, skip_objects=["events"])
    assert "events" not in inventory_source.fn(r, [name])[name]  # an explicit opt-out is not expected
    with pytest.raises(VerificationFailed) as err:
        _backup(r, full)
    assert "event nightly missing" in str(err.value)


def test_complete_postgres_every_kind_round_trips(postgres: Any, tmp_path: Path) -> None:
    """Tables, views, materialised views, triggers, routines, sequences (values), extensions, enum
    types and large objects come back as a copy (verification) and over the original."""
    db = pg_block(postgres)
    name = "complete_" + secrets.token_hex(3)
    pg_exec(db, f"CREATE DATABASE {name}")
    try:
        pg_exec(
            db,
            "CREATE EXTENSION IF NOT EXISTS citext",
            "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')",
            "CREATE TABLE t (id serial PRIMARY KEY, m mood, c citext)",
            "INSERT INTO t (m, c) SELECT 'ok', 'x' FROM generate_series(1, 5)",
            "CREATE SEQUENCE counter START 100",
            "SELECT nextval('counter'), nextval('counter')",
            "CREATE VIEW tv AS SELECT id FROM t",
            "CREATE MATERIALIZED VIEW tm AS SELECT count(*) AS n FROM t",
            "CREATE FUNCTION trg() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$",
            "CREATE TRIGGER t_ins BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION trg()",
            "COMMENT ON TABLE t IS 'kept'",
            "SELECT lo_from_bytea(0, 'large object')",
            database=name,
        )
        r = _resolved("postgres", db, name, tmp_path)
        before = inventory_source.fn(r, [name])
        inv = before[name]
        assert inv["sequences"]["public.counter"] == 101 and inv["large_objects"] == 1
        assert inv["extensions"] == ["citext"] and inv["enum_types"] == {"public.mood": "sad,ok,happy"}
        assert inv["materialized_views"] == ["public.tm"] and inv["triggers"] == ["public.t.t_ins"]
        bid, parts, record = _backup(r, before)
        assert record["result"] == "ok" and record["checks"][name]["large_objects"] == 1
        assert parts[0].info["inventory"] == inv  # listed in the dump's own snapshot
        other = name + "_over"
        postgres_recreate_database(db, other, drop=True)
        try:
            with LocalStorage(tmp_path).open_read("complete", bid, parts[0].name, published=False) as fh:
                restore_postgres(db, fh, other, "custom")
            assert compare_inventories(name, inv, postgres_inventory(db, other)) == []
        finally:
            pg_exec(db, f"DROP DATABASE IF EXISTS {other} WITH (FORCE)")
    finally:
        pg_exec(db, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_complete_inventory_names_each_difference() -> None:
    """The comparison names every missing or different object (pure)."""
    before = {"tables": {"t": 3}, "events": ["nightly"], "large_objects": 2}
    restored = {"tables": {"t": 2}, "events": [], "large_objects": 2}
    assert compare_inventories("db", before, restored) == [
        "db: table t is 2 restored, 3 in the source",
        "db: event nightly missing from the restored copy",
    ]


def test_complete_postgres_dump_keeps_grants_comments_large_objects() -> None:
    """pg_dump options that leave objects out are refused; large objects are always dumped."""
    base = {"job": "complete", "type": "postgres", "storages": [{"storage": "local", "backup_dir": "/tmp/x"}]}
    for keys in (
        "--no-privileges",
        "--no-comments",
        "--no-blobs",
        "--no-owner",
        "--no-acl",
        "--no-publications",
    ):
        with pytest.raises(InputError) as err:
            parse_job({**base, "sources": [{"connect": {"block": "b"}, "extra_keys": keys}]})
        assert err.value.field == "sources[0].extra_keys"
    job = parse_job({**base, "sources": [{"connect": {"block": "b"}, "extra_keys": "--schema=public"}]})
    assert "--blobs" in job.source.dump_args("postgres")  # type: ignore[union-attr]
    mysql = parse_job(
        {**base, "type": "mysql", "sources": [{"connect": {"block": "b"}, "extra_keys": "--opt"}]}
    )
    assert {"--events", "--routines", "--triggers"} <= set(mysql.source.dump_args("mysql"))  # type: ignore[union-attr]


def test_complete_summary_shows_inventory_side_by_side() -> None:
    """The backup's summary artifact lists source and restored counts per kind."""
    from flows.backup import _summary

    job = parse_job(
        {
            "job": "complete",
            "type": "mysql",
            "sources": [{"connect": {"block": "b"}}],
            "storages": [{"storage": "local", "backup_dir": "/tmp/x"}],
        }
    )
    inv = {"shop": {"tables": {"t": 3}, "events": ["nightly"]}}
    result = {
        "inventory": inv,
        "verification": {
            "result": "ok",
            "read_from": "local",
            "checks": {"shop": {"tables": {"t": 3}, "events": []}},
        },
    }
    text = _summary(job, "20260101T000000Z-abcdef", result, {}, 1.0)
    assert "| shop | tables | 1 | 1 |" in text and "| shop | events | 1 | 0 |" in text


def test_complete_changed_definition_is_named_and_opt_outs_drop_theirs(maria_db: Any, tmp_path: Path) -> None:
    """A trigger re-created with another body keeps its name but not its definition digest; a job
    that skips triggers expects neither the names nor the definitions back."""
    db, name = maria_db
    before = mysql_inventory(db, name)
    mysql_exec(
        db,
        "DROP TRIGGER t_ins",
        "CREATE TRIGGER t_ins AFTER INSERT ON t FOR EACH ROW INSERT INTO audit VALUES (NEW.id + 1)",
        database=name,
    )
    after = mysql_inventory(db, name)
    assert after["triggers"] == before["triggers"]
    (problem,) = compare_inventories(name, before, after)
    assert problem.startswith(f"{name}: definition trigger t_ins is ")
    r = _resolved("mysql", db, name, tmp_path, skip_objects=["triggers", "events"])
    kept = inventory_source.fn(r, [name])[name]
    assert "triggers" not in kept and "events" not in kept
    assert sorted(kept["definitions"]) == ["function f", "procedure p", "view tv"]
