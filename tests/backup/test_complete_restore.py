"""Issue 18: every real restore compares the restored inventory with the manifest's.

Real MariaDB and PostgreSQL; the tasks run directly (no Prefect server): back up, publish the
manifest on a local storage, then ``restore_selected`` as a copy under a new name and over the live
database. An archive that lacks an object its manifest lists is refused naming it, and an
overwrite then leaves the live database untouched.
"""

from __future__ import annotations

import datetime as dt
import secrets
from pathlib import Path
from typing import Any

import pytest

from backup.helpers import mysql_block, mysql_exec, pg_block, pg_exec
from backup.test_complete import MARIA_SCHEMA, _backup, _resolved
from flows.restore import RestoreIncomplete
from tasks.backup_jobs import Resolved, preflight_source
from tasks.backup_publish import build_manifest
from tasks.backup_verify import inventory_source
from tasks.inventory import mysql_inventory
from tasks.restore_jobs import restore_selected, select_backup


def _publish(r: Resolved, before: dict[str, Any], manifest_inventory: dict[str, Any] | None = None) -> None:
    """Back up, verify and publish; ``manifest_inventory`` replaces what the manifest claims."""
    bid, parts, record = _backup(r, before)
    now = dt.datetime.now(dt.UTC)
    facts = preflight_source.fn(r)
    manifest = build_manifest(r, bid, now, now, parts, facts, record, None, inventory=before)
    if manifest_inventory is not None:
        manifest["inventory"] = manifest_inventory
    label = next(iter(r.storages))
    r.storages[label].publish("complete", bid, manifest)


def _restore(r: Resolved, **kw: Any) -> dict[str, Any]:
    sel = select_backup.fn(r, "latest", None)
    args = {"target_database": None, "target_block": None, "target_dir": None, "overwrite": False, "etcd": {}}
    return restore_selected.fn(r, sel, **{**args, **kw})


@pytest.fixture
def maria(mariadb: Any) -> Any:
    db = mysql_block(mariadb)
    name = "complete_" + secrets.token_hex(3)
    mysql_exec(db, f"CREATE DATABASE {name}")
    mysql_exec(db, *MARIA_SCHEMA, database=name)
    yield db, name
    mysql_exec(db, f"DROP DATABASE IF EXISTS {name}", f"DROP DATABASE IF EXISTS {name}_copy")


def test_complete_mariadb_restore_compares_copy_and_overwrite(maria: Any, tmp_path: Path) -> None:
    """A copy under a new name and an overwrite both list the restored database and pass."""
    db, name = maria
    r = _resolved("mysql", db, name, tmp_path)
    before = inventory_source.fn(r, [name])
    _publish(r, before)

    done = _restore(r, target_database=f"{name}_copy")
    assert done["databases"] == [f"{name}_copy"]
    assert done["inventory"]["restored"][name] == before[name] == done["inventory"]["expected"][name]
    assert mysql_inventory(db, f"{name}_copy")["events"] == ["nightly"]

    mysql_exec(db, "DROP EVENT nightly", "DELETE FROM t WHERE id = 1", database=name)
    done = _restore(r, overwrite=True)
    assert done["inventory"]["restored"][name]["events"] == ["nightly"]
    assert mysql_inventory(db, name) == before[name]


def test_complete_mariadb_restore_of_incomplete_archive_fails_and_keeps_live(
    maria: Any, tmp_path: Path
) -> None:
    """A dump made without events, whose manifest lists the event: the overwrite's trial copy fails
    naming the event and the live database is untouched; a new copy is dropped again."""
    db, name = maria
    full = inventory_source.fn(_resolved("mysql", db, name, tmp_path), [name])
    r = _resolved("mysql", db, name, tmp_path, skip_objects=["events"])
    _publish(r, inventory_source.fn(r, [name]), manifest_inventory=full)
    mysql_exec(db, "INSERT INTO t (v) VALUES ('after the backup')", database=name)
    live = mysql_inventory(db, name)

    with pytest.raises(RestoreIncomplete) as err:
        _restore(r, overwrite=True)
    assert f"{name}: event nightly missing" in str(err.value)
    assert "live databases were not touched" in str(err.value)
    assert mysql_inventory(db, name) == live and live["tables"]["t"] == 4
    assert not [row for row in mysql_exec(db, "SHOW DATABASES") if row[0].startswith("sfrestore_")]

    with pytest.raises(RestoreIncomplete, match="event nightly missing") as err:
        _restore(r, target_database=f"{name}_copy")
    assert err.value.expected[name]["events"] == ["nightly"] and err.value.restored[name]["events"] == []
    assert (f"{name}_copy",) not in mysql_exec(db, "SHOW DATABASES")


def test_complete_postgres_restore_compares_and_refuses_before_swap(postgres: Any, tmp_path: Path) -> None:
    """PostgreSQL: copy and overwrite pass the check; an archive lacking a large object and a
    table its manifest lists fails in the temporary database, before the swap."""
    db = pg_block(postgres)
    name = "complete_" + secrets.token_hex(3)
    pg_exec(db, f"CREATE DATABASE {name}")
    try:
        pg_exec(
            db,
            "CREATE TABLE t (id serial PRIMARY KEY, v text)",
            "INSERT INTO t (v) VALUES ('a'), ('b')",
            "CREATE SEQUENCE counter START 7",
            "SELECT nextval('counter')",
            "SELECT lo_from_bytea(0, 'blob')",
            database=name,
        )
        r = _resolved("postgres", db, name, tmp_path)
        before = inventory_source.fn(r, [name])
        _publish(r, before)
        done = _restore(r, target_database=f"{name}_copy")
        assert done["inventory"]["restored"][name]["large_objects"] == 1
        assert done["inventory"]["restored"][name]["sequences"]["public.counter"] == 7
        pg_exec(db, "DELETE FROM t", database=name)
        _restore(r, overwrite=True)
        assert pg_exec(db, "SELECT count(*) FROM t", database=name) == [(2,)]

        claimed = {
            name: {**before[name], "large_objects": 2, "tables": {**before[name]["tables"], "public.gone": 1}}
        }
        _publish(r, before, manifest_inventory=claimed)
        pg_exec(db, "INSERT INTO t (v) VALUES ('live only')", database=name)
        with pytest.raises(RestoreIncomplete) as err:
            _restore(r, overwrite=True)
        msg = str(err.value)
        assert (
            f"{name}: table public.gone missing" in msg
            and "large objects is 1 restored, 2 in the source" in msg
        )
        assert "no database was touched" in msg
        assert pg_exec(db, "SELECT count(*) FROM t", database=name) == [(3,)]
        assert not pg_exec(db, "SELECT datname FROM pg_database WHERE datname LIKE 'sfrestore_%'")
    finally:
        pg_exec(
            db,
            f"DROP DATABASE IF EXISTS {name} WITH (FORCE)",
            f"DROP DATABASE IF EXISTS {name}_copy WITH (FORCE)",
        )


def test_complete_restore_summary_shows_backup_and_restored() -> None:
    """The restore artifact's table lists the manifest's and the restored counts side by side."""
    from tasks.restore_checks import inventory_markdown

    rows = inventory_markdown({"shop": {"events": ["nightly"]}}, {"shop": {"events": []}})
    assert "| database | kind | backup (manifest) | restored |" in rows
    assert "| shop | events | 1 | 0 |" in rows


def test_complete_narrowed_dump_is_not_compared(postgres: Any, tmp_path: Path) -> None:
    """A dump narrowed on purpose (``--exclude-table``) verifies and restores; its inventory
    comparison is reported as not done instead of failing on the left-out table."""
    db = pg_block(postgres)
    name = "narrow_" + secrets.token_hex(3)
    pg_exec(db, f"CREATE DATABASE {name}")
    try:
        pg_exec(db, "CREATE TABLE keep (x int)", "CREATE TABLE skip (x int)", database=name)
        r = _resolved("postgres", db, name, tmp_path, extra_keys="--exclude-table=skip", globals=False)
        _publish(r, inventory_source.fn(r, [name]))
        done = _restore(r, target_database=f"{name}_copy")
        assert done["inventory"]["not_compared"] == {name: "the dump was narrowed by --exclude-table"}
        assert list(done["inventory"]["restored"][name]["tables"]) == ["public.keep"]
    finally:
        pg_exec(
            db,
            f"DROP DATABASE IF EXISTS {name} WITH (FORCE)",
            f"DROP DATABASE IF EXISTS {name}_copy WITH (FORCE)",
        )


def test_complete_restore_messages_keep_manifest_names_inert() -> None:
    """A name from an (untrusted) manifest cannot add lines to the error or log."""
    from tasks.restore_checks import InventoryCheck

    check = InventoryCheck({"inventory": {"db": {"events": ["x\nINFO all good"]}}, "parts": []})
    check.add("db", {"events": []})
    with pytest.raises(RestoreIncomplete) as err:
        check.raise_if_problems("restore", "nothing touched")
    assert "\n" not in str(err.value) and "event x?INFO all good missing" in str(err.value)


def test_complete_scratch_copies_create_events_disabled(maria: Any, tmp_path: Path) -> None:
    """Trial and verification copies get the events disabled (an event naming the original database
    must not fire against it from a copy); a real restore keeps them enabled."""
    from tasks.restore_ops import restore_mysql

    db, name = maria
    r = _resolved("mysql", db, name, tmp_path)
    _publish(r, inventory_source.fn(r, [name]))
    (part,) = tmp_path.glob("complete/*/mysql.sql.gz")
    status = "SELECT status FROM information_schema.events WHERE event_schema = %s"
    for scratch, want in ((True, "DISABLED"), (False, "ENABLED")):
        mysql_exec(db, f"DROP DATABASE IF EXISTS {name}_copy")
        with open(part, "rb") as fh:
            restore_mysql(db, fh, rename={name: f"{name}_copy"}, scratch=scratch)
        conn = db.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(status, (f"{name}_copy",))
                assert cur.fetchall() == ((want,),)
        finally:
            conn.close()


def test_complete_disable_events_touches_only_the_event_flag() -> None:
    from tasks.restore_ops import disable_events

    lines = [
        b"/*!50106 CREATE*/ /*!50117 DEFINER=`root`@`%`*/ /*!50106 EVENT `ENABLE x` ON SCHEDULE"
        b" EVERY 1 DAY STARTS '2026-01-01 00:00:00' ON COMPLETION NOT PRESERVE ENABLE"
        b" COMMENT 'ENABLE' DO DELETE FROM a */ ;;",
        b"INSERT INTO t VALUES ('ON COMPLETION PRESERVE ENABLE');",
        b"/*!50106 CREATE*/ /*!50106 EVENT `e` ON SCHEDULE AT '2026-01-01'"
        b" ON COMPLETION PRESERVE ENABLE DO SELECT 1",
    ]
    out = b"".join(disable_events(iter([b"\n".join(lines)[:50], b"\n".join(lines)[50:]]))).split(b"\n")
    assert out[0].count(b"ENABLE") == 2 and b"PRESERVE DISABLE COMMENT 'ENABLE' DO" in out[0]
    assert out[1] == lines[1] and out[2].endswith(b"PRESERVE DISABLE DO SELECT 1")


@pytest.mark.parametrize("verified", [False, True])
def test_complete_unverified_mysql_row_counts_are_notes(verified: bool) -> None:
    """MySQL row counts are listed just before the dump: without a verification that reconciled
    them, a different count is a note; a missing object always fails."""
    from tasks.restore_checks import InventoryCheck

    manifest = {
        "engine": "mysql",
        "parts": [],
        "inventory": {"db": {"tables": {"t": 3, "u": 1}, "events": ["e"]}},
        "verification": {"result": "ok", "checks": {}, "drift": []} if verified else None,
    }
    check = InventoryCheck(manifest)
    found = check.add("db", {"tables": {"t": 5}, "events": ["e"]})
    assert "db: table u missing from the restored copy" in found
    count = "db: table t is 5 restored, 3 in the source"
    assert (count in found) is verified
    assert any(n.startswith(count) for n in check.record()["notes"]) is not verified
