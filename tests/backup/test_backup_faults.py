"""Backup faults: the server stops mid-dump, bad input fails before anything is deleted, notifications."""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.exceptions import ParameterTypeError
from pydantic import SecretStr

from backup.helpers import local_manifests, mysql_block, mysql_exec, s3_keys, webhook_server
from blocks.database import Database
from blocks.object_store import ObjectStore
from devservers.mariadb import LocalMariaDB
from devservers.ports import free_port
from flows.backup import scheduled_backup
from stateferry.errors import InputError, StateferryError
from tasks.backup_storage import LocalStorage

pytestmark = pytest.mark.timeout(300)


def _uid() -> str:
    return secrets.token_hex(3)


@pytest.fixture
def own_mariadb(tmp_path: Path) -> Iterator[LocalMariaDB]:
    """A private MariaDB this test may stop (never the session's)."""
    server = LocalMariaDB(tmp_path / "mariadb")
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


def test_server_stops_mid_dump_nothing_partial_is_good(
    prefect_server: Any, own_mariadb: LocalMariaDB, object_store_a: ObjectStore, tmp_path: Path
) -> None:
    db = mysql_block(own_mariadb)
    block, s3 = f"bk-stop-{_uid()}", f"bk-stop-s3-{_uid()}"
    db.save(block, overwrite=True)
    object_store_a.save(s3, overwrite=True)
    mysql_exec(db, "CREATE DATABASE big")
    mysql_exec(
        db,
        "CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, b LONGBLOB) ENGINE=InnoDB",
        "INSERT INTO t (b) VALUES (RANDOM_BYTES(1024))",
        database="big",
    )
    local = tmp_path / "b"
    job_name = f"stop-{_uid()}"
    job: dict[str, Any] = {
        "job": job_name,
        "type": "mysql",
        "sources": [{"connect": {"block": block}, "target": ["big"]}],
        "storages": [
            {"storage": "local", "backup_dir": str(local), "store": {"days": 0, "weeks": 0, "months": 0}},
            {"storage": "s3", "object_store": s3, "bucket_name": "backups", "backup_dir": "stop"},
        ],
    }
    first = scheduled_backup(job)
    old_manifest = (local / job_name / first["backup_id"] / "manifest.json").read_bytes()
    old_keys = s3_keys(object_store_a, "backups", f"stop/{job_name}/")
    assert len(old_keys) == 2

    # 48 MiB of incompressible rows (96 MiB of hex dump, several seconds of gzip): long enough to stop
    # the server in the middle of the dump
    conn = db.connect("big")
    try:
        with conn.cursor() as cur:
            cur.execute("UPDATE t SET b = %s", (os.urandom(48 * 1024),))
    finally:
        conn.close()
    mysql_exec(db, *["INSERT INTO t (b) SELECT b FROM t"] * 10, database="big")

    stopped = threading.Event()

    def stop_when_dumping() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            partial = list((local / job_name).glob(".partial-*/mysql.sql.gz"))
            if partial and partial[0].stat().st_size > 1024 * 1024:
                own_mariadb.stop()
                stopped.set()
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=stop_when_dumping, daemon=True)
    watcher.start()
    state = scheduled_backup(job, return_state=True)
    watcher.join(timeout=90)
    assert stopped.is_set(), "the dump finished before the server could be stopped"
    assert state.is_failed()
    with pytest.raises(StateferryError, match="exited with status"):
        state.result()
    # only the older backup remains, byte for byte; nothing partial anywhere
    assert sorted(p.name for p in (local / job_name).iterdir()) == [first["backup_id"]]
    assert (local / job_name / first["backup_id"] / "manifest.json").read_bytes() == old_manifest
    assert s3_keys(object_store_a, "backups", f"stop/{job_name}/") == old_keys
    client = object_store_a.minio_client()
    assert not list(client._list_multipart_uploads("backups", prefix=f"stop/{job_name}/").uploads)


def _old_backups(root: Path, job: str) -> list[str]:
    """Two good backups from 2020 (retention 0/0/0 would delete the older one on success)."""
    storage = LocalStorage(root)
    ids = []
    for day in (1, 2):
        bid = f"202001{day:02d}T000000Z-01d00{day}"
        writer = storage.open_part(job, bid, "x.gz")
        writer.write(b"old")
        writer.commit()
        storage.publish(
            job, bid, {"status": "good", "started": dt.datetime(2020, 1, day, tzinfo=dt.UTC).isoformat()}
        )
        ids.append(bid)
    return ids


@pytest.fixture
def maria_block(prefect_server: Any, mariadb: Any) -> str:
    name = f"bk-good-{_uid()}"
    mysql_block(mariadb).save(name, overwrite=True)
    mysql_exec(mysql_block(mariadb), "CREATE DATABASE IF NOT EXISTS badinput")
    return name


def _db_block(mariadb: Any, *, port: int | None = None, password: str | None = None) -> str:
    name = f"bk-bad-{_uid()}"
    Database(
        engine="mysql",
        host="127.0.0.1",
        port=port or mariadb.port,
        user="root",
        password=SecretStr(password or mariadb.password),
    ).save(name, overwrite=True)
    return name


BAD_PASSWORD = "wrong-" + secrets.token_hex(8)


@pytest.mark.parametrize(
    ("case", "error", "field_or_text"),
    [
        # the job is a typed parameter (BackupJobSpec): refused at Prefect's parameter validation,
        # before the flow starts, naming the field and the fix
        ("unknown-engine", ParameterTypeError, "type: unknown engine 'oracle'"),
        ("negative-retention", ParameterTypeError, "storages[0].store.days"),
        ("unreachable-host", StateferryError, "sources[0].connect"),
        ("wrong-password", InputError, "sources[0].connect"),
        ("unwritable-path", InputError, "storages[0].backup_dir"),
        ("missing-block", InputError, "sources[0].connect.block"),
        ("missing-database", InputError, "sources[0].target"),
    ],
)
def test_bad_input_fails_before_anything_is_deleted(
    prefect_server: Any,
    mariadb: Any,
    maria_block: str,
    tmp_path: Path,
    case: str,
    error: type,
    field_or_text: str,
) -> None:
    root = tmp_path / "b"
    job_name = f"bad-{_uid()}"
    old = _old_backups(root, job_name)
    block = maria_block
    storage: dict[str, Any] = {
        "storage": "local",
        "backup_dir": str(root),
        "store": {"days": 0, "weeks": 0, "months": 0},
    }
    source: dict[str, Any] = {"connect": {"block": block}, "target": ["badinput"]}
    kind = "mysql"
    if case == "unknown-engine":
        kind = "oracle"
    elif case == "negative-retention":
        storage["store"] = {"days": -1}
    elif case == "unreachable-host":
        source["connect"] = {"block": _db_block(mariadb, port=free_port())}
    elif case == "wrong-password":
        source["connect"] = {"block": _db_block(mariadb, password=BAD_PASSWORD)}
    elif case == "unwritable-path":
        storage["backup_dir"] = "/dev/null/backups"
    elif case == "missing-block":
        source["connect"] = {"block": "no-such-block-" + _uid()}
    elif case == "missing-database":
        source["target"] = ["no_such_db"]
    job = {"job": job_name, "type": kind, "sources": [source], "storages": [storage]}

    t0 = time.monotonic()
    with pytest.raises(error) as info:
        scheduled_backup(job)
    assert time.monotonic() - t0 < 60
    text = str(info.value)
    if isinstance(info.value, InputError):
        assert info.value.field == field_or_text, text
    else:
        assert field_or_text in text and "Fix:" in text
    assert BAD_PASSWORD not in text and mariadb.password not in text
    if case != "unwritable-path":
        assert sorted(local_manifests(root, job_name)) == sorted(old)


def test_failure_notification_has_job_error_link_and_no_secret(
    prefect_server: Any, mariadb: Any, tmp_path: Path
) -> None:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    with webhook_server() as (url, received):
        hook = f"ops-{_uid()}"
        CustomWebhookNotificationBlock(  # type: ignore[call-arg]
            name="stateferry-ops", url=url, json_data={"text": "{{subject}}\n{{body}}"}
        ).save(hook, overwrite=True)
        job: dict[str, Any] = {
            "job": f"notify-{_uid()}",
            "type": "mysql",
            "sources": [{"connect": {"block": _db_block(mariadb, password=BAD_PASSWORD)}}],
            "storages": [{"storage": "local", "backup_dir": str(tmp_path / "b")}],
            "notify": {"block": f"custom-webhook/{hook}", "on_success": True},
        }
        with pytest.raises(InputError):
            scheduled_backup(job)
        assert len(received) == 1
        text = json.loads(received[0]["body"])["text"]
        assert job["job"] in text and "FAILED" in text and "sources[0].connect" in text
        assert "Flow run: http://127.0.0.1" in text and "/flow-run/" in text
        assert BAD_PASSWORD not in text and mariadb.password not in text

        # success notifications when asked for
        mysql_exec(mysql_block(mariadb), "CREATE DATABASE IF NOT EXISTS notifyok")
        job["sources"] = [{"connect": {"block": _db_block(mariadb)}, "target": ["notifyok"]}]
        scheduled_backup(job)
        assert len(received) == 2
        ok = json.loads(received[1]["body"])["text"]
        assert "completed" in ok and mariadb.password not in ok


def test_verify_catches_a_dump_that_cannot_be_restored(
    prefect_server: Any, postgres: Any, tmp_path: Path
) -> None:
    """A classic unrestorable dump: a CHECK calls a function reading another table, whose data
    pg_restore loads later. pg_dump exits 0; only the restore fails. verify=True must refuse it."""
    from backup.helpers import pg_block, pg_exec
    from tasks.backup_jobs import VerificationFailed

    db = pg_block(postgres)
    block = f"bk-pgv-{_uid()}"
    db.save(block, overwrite=True)
    name = f"trap_{_uid()}"
    pg_exec(db, f'CREATE DATABASE "{name}"')
    pg_exec(
        db,
        "CREATE TABLE z_limits (n int)",
        "INSERT INTO z_limits VALUES (1), (2), (3)",
        "CREATE FUNCTION max_allowed() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM public.z_limits'",
        "CREATE TABLE a_items (x int CHECK (x <= max_allowed()))",
        "INSERT INTO a_items VALUES (2)",
        database=name,
    )
    root = tmp_path / "b"
    job: dict[str, Any] = {
        "job": f"trap-{_uid()}",
        "type": "postgres",
        "sources": [{"connect": {"block": block}, "target": [name]}],
        "storages": [{"storage": "local", "backup_dir": str(root)}],
    }
    unverified = scheduled_backup(job)  # pg_dump itself is happy
    assert unverified["good"]
    with pytest.raises(VerificationFailed, match="a_items"):
        scheduled_backup(job, verify=True)
    # the unverifiable backup was not published; the earlier one is untouched; no scratch db is left
    assert sorted(local_manifests(root, job["job"])) == [unverified["backup_id"]]
    assert not [p for p in (root / job["job"]).iterdir() if p.name.startswith(".partial-")]
    left = pg_exec(db, "SELECT datname FROM pg_database WHERE datname LIKE 'sfverify_%'")
    assert left == []
    pg_exec(db, f'DROP DATABASE "{name}" WITH (FORCE)')
