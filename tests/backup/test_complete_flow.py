"""Issue 18 through real flow runs: the manifest and the run's summary artifact carry the inventory,
a verification that finds an object missing says so in the artifact and publishes nothing, opt-outs
are shown in the plan, and PostgreSQL owners, grants and comments are part of what is proven.

Real MariaDB, PostgreSQL and the session's Prefect server.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from prefect_run import flow_run_texts

from backup.helpers import mysql_block, mysql_exec, pg_block, pg_exec
from backup.test_complete import MARIA_SCHEMA, _backup, _resolved
from flows.backup import scheduled_backup
from flows.restore import restore_backup
from planning.backup_config import DatabaseSourceConfig
from tasks.backup_publish import build_manifest
from tasks.backup_verify import inventory_source
from tasks.inventory import compare_inventories, postgres_inventory
from tasks.restore_jobs import restore_selected, select_backup
from tasks.restore_ops import postgres_recreate_database


@pytest.fixture
def maria_job(prefect_server: Any, mariadb: Any, tmp_path: Path) -> Any:
    db = mysql_block(mariadb)
    name = "cflow_" + secrets.token_hex(3)
    mysql_exec(db, f"CREATE DATABASE {name}")
    mysql_exec(db, *MARIA_SCHEMA, database=name)
    block = f"cflow-db-{secrets.token_hex(3)}"
    db.save(block, overwrite=True)

    def job(**source: Any) -> dict[str, Any]:
        return {
            "job": name.replace("_", "-"),
            "type": "mysql",
            "verify": True,
            "sources": [{"connect": {"block": block}, "target": [name], **source}],
            "storages": [{"storage": "local", "backup_dir": str(tmp_path / "backups")}],
        }

    yield db, name, job
    mysql_exec(db, f"DROP DATABASE IF EXISTS {name}")


def test_complete_flow_run_manifest_and_artifact_carry_the_inventory(maria_job: Any, tmp_path: Path) -> None:
    """A verified MariaDB backup: manifest.json lists every kind (sequence value included) and the
    run's artifact shows source and restored copy side by side."""
    _db, name, job = maria_job
    state = scheduled_backup(job(), return_state=True)
    assert state.is_completed()
    (manifest_path,) = (tmp_path / "backups" / job()["job"]).glob("*/manifest.json")
    inventory = json.loads(manifest_path.read_text())["inventory"][name]
    assert inventory["events"] == ["nightly"] and inventory["sequences"] == {"ticket": 110}
    assert inventory["routines"] == ["function f", "procedure p"] and inventory["views"] == ["tv"]
    texts = flow_run_texts(state.state_details.flow_run_id)
    assert f"| {name} | events | 1 | 1 |" in texts and f"| {name} | sequences | 1 | 1 |" in texts


def test_complete_flow_run_of_an_incomplete_dump_fails_naming_the_event(
    maria_job: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dump tool that drops the events (simulated: --skip-events after stateferry's own keys) fails
    verification; the artifact names the event and shows the inventories; nothing is published."""
    _db, name, job = maria_job
    complete = DatabaseSourceConfig.dump_args
    monkeypatch.setattr(
        DatabaseSourceConfig, "dump_args", lambda self, e: [*complete(self, e), "--skip-events"]
    )
    state = scheduled_backup(job(), return_state=True)
    assert state.is_failed()
    texts = flow_run_texts(state.state_details.flow_run_id)
    assert f"{name}: event nightly missing from the restored copy" in texts
    assert "verification FAILED, nothing was published" in texts and f"| {name} | events | 1 | 0 |" in texts
    assert not list((tmp_path / "backups").glob("*/*/manifest.json"))


def test_complete_opt_out_is_shown_in_the_summary_and_the_restore_plan(
    maria_job: Any, tmp_path: Path
) -> None:
    """skip_objects: the summary artifact says what was left out, a restore plan warns the restored
    database will not have it."""
    _db, _name, job = maria_job
    state = scheduled_backup(job(skip_objects=["events"]), return_state=True)
    assert state.is_completed()
    texts = flow_run_texts(state.state_details.flow_run_id)
    assert "left out on purpose (skip_objects): events" in texts
    plan = restore_backup(job(skip_objects=["events"]), overwrite=True, dry_run=True)
    assert any("made without events (skip_objects)" in a and "lose theirs" in a for a in plan["actions"])


def test_complete_postgres_owners_grants_comments_round_trip_by_overwrite(
    postgres: Any, tmp_path: Path
) -> None:
    """Owners, grants and comments are in the inventory; every kind comes back by an overwrite (a
    temporary database swapped in); a copy restored without grants is named as incomplete."""
    db = pg_block(postgres)
    name = "cowner_" + secrets.token_hex(3)
    role = "reader_" + secrets.token_hex(3)
    pg_exec(db, f"CREATE ROLE {role} NOLOGIN", f"CREATE DATABASE {name}")
    try:
        pg_exec(
            db,
            "CREATE EXTENSION IF NOT EXISTS citext",
            "CREATE TYPE mood AS ENUM ('sad', 'ok')",
            "CREATE TABLE t (id serial PRIMARY KEY, m mood, c citext)",
            "INSERT INTO t (m, c) VALUES ('ok', 'x'), ('sad', 'y')",
            "CREATE VIEW tv AS SELECT id FROM t",
            "CREATE MATERIALIZED VIEW tm AS SELECT count(*) AS n FROM t",
            "CREATE FUNCTION trg() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$",
            "CREATE TRIGGER t_ins BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION trg()",
            "SELECT lo_from_bytea(0, 'large object')",
            "COMMENT ON TABLE t IS 'kept'",
            f"GRANT SELECT ON t TO {role}",
            f"ALTER VIEW tv OWNER TO {role}",
            database=name,
        )
        r = _resolved("postgres", db, name, tmp_path, globals=False)
        before = inventory_source.fn(r, [name])
        inv = before[name]
        assert inv["owners"]["public.tv"] == role and role in inv["privileges"]["public.t"]
        assert set(inv["comments"]) == {"public.t"}
        bid, parts, record = _backup(r, before)
        assert record["result"] == "ok" and record["checks"][name]["owners"]["public.tv"] == role
        label = next(iter(r.storages))
        r.storages[label].publish("complete", bid, build_manifest(r, bid, *_times(), parts, {}, record, None))

        pg_exec(
            db, f"REVOKE SELECT ON t FROM {role}", "COMMENT ON TABLE t IS NULL", "DROP VIEW tv", database=name
        )
        sel = select_backup.fn(r, "latest", None)
        args = {"target_database": None, "target_block": None, "target_dir": None, "etcd": {}}
        done = restore_selected.fn(r, sel, overwrite=True, **args)
        assert compare_inventories(name, inv, done["inventory"]["restored"][name]) == []
        assert compare_inventories(name, inv, postgres_inventory(db, name)) == []

        # the same archive restored without grants (pg_restore --no-acl) is named as incomplete
        bare = name + "_bare"
        postgres_recreate_database(db, bare, drop=True)
        try:
            dump = next((tmp_path / "complete").glob("*/*.pgdump.gz"))
            _pg_restore_no_acl(db, dump, bare)
            problems = compare_inventories(name, inv, postgres_inventory(db, bare))
            assert f"{name}: privilege public.t missing from the restored copy" in problems
        finally:
            pg_exec(db, f"DROP DATABASE IF EXISTS {bare} WITH (FORCE)")
    finally:
        pg_exec(db, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        pg_exec(db, f"DROP ROLE IF EXISTS {role}")


def _times() -> tuple[Any, Any]:
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    return now, now


def _pg_restore_no_acl(db: Any, dump: Path, database: str) -> None:
    import gzip
    import subprocess

    from planning.db_args import pg_conninfo
    from tasks.dumpers import find_tool, postgres_env

    argv = [find_tool("pg_restore"), "--no-acl", "--exit-on-error", f"--dbname={pg_conninfo(database)}"]
    subprocess.run(argv, input=gzip.decompress(dump.read_bytes()), env=postgres_env(db), check=True)


def test_complete_postgres_dump_without_large_objects_fails_verification(
    postgres: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pg_dump that leaves the large objects out (simulated: --no-blobs instead of
    stateferry's --blobs, which the job config refuses) fails verification against the dump's own snapshot."""
    from tasks.backup_jobs import VerificationFailed

    db = pg_block(postgres)
    name = "cnolo_" + secrets.token_hex(3)
    pg_exec(db, f"CREATE DATABASE {name}")
    try:
        pg_exec(db, "CREATE TABLE t (id int)", "SELECT lo_from_bytea(0, 'large object')", database=name)
        complete = DatabaseSourceConfig.dump_args
        monkeypatch.setattr(
            DatabaseSourceConfig,
            "dump_args",
            lambda self, e: [k for k in complete(self, e) if k != "--blobs"] + ["--no-blobs"],
        )
        r = _resolved("postgres", db, name, tmp_path, globals=False)
        with pytest.raises(VerificationFailed) as err:
            _backup(r, inventory_source.fn(r, [name]))
        assert f"{name}: large objects is 0 restored, 1 in the source" in err.value.problems
    finally:
        pg_exec(db, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
