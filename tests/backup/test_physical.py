"""Physical MariaDB backups (issue 15): ``mariadb-backup`` streams to local + S3, verification
prepares the copy and starts a scratch server on it, a restore prepares a new data directory that a
real ``mariadbd`` starts on; hostile streams and settings are refused before anything is written.

Real servers: a MariaDB of this module's own (a physical backup copies the whole instance), SeaweedFS
S3, the session's Prefect server.
"""

from __future__ import annotations

import gzip
import json
import secrets
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backup.helpers import mysql_block, mysql_exec
from devservers.mariadb import LocalMariaDB
from flows.backup import scheduled_backup
from flows.restore import restore_backup
from planning.backup_config import parse_job
from planning.xbstream import MAGIC
from stateferry.errors import InputError
from tasks.mariadb_physical import PhysicalBackupInvalid, extract_and_prepare

SCHEMA = (
    "CREATE DATABASE shop",
    "CREATE TABLE shop.orders (id INT PRIMARY KEY AUTO_INCREMENT, item VARCHAR(40)) ENGINE=InnoDB",
    "CREATE TABLE shop.audit (n INT) ENGINE=Aria",
    "INSERT INTO shop.orders (item) VALUES ('tea'), ('cake'), ('jam')",
    "CREATE VIEW shop.items AS SELECT item FROM shop.orders",
    "CREATE TRIGGER shop.orders_ins AFTER INSERT ON shop.orders FOR EACH ROW"
    " INSERT INTO shop.audit VALUES (NEW.id)",
    "CREATE PROCEDURE shop.p() SELECT 1",
    "CREATE FUNCTION shop.f() RETURNS INT DETERMINISTIC RETURN 42",
    "CREATE EVENT shop.nightly ON SCHEDULE EVERY 1 DAY DO DELETE FROM shop.audit",
    "CREATE DATABASE crm",
    "CREATE TABLE crm.people (id INT PRIMARY KEY, name TEXT)",
    "INSERT INTO crm.people VALUES (1, 'ada'), (2, 'grace')",
)


@pytest.fixture(scope="module")
def maria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMariaDB]:
    server = LocalMariaDB(tmp_path_factory.mktemp("maria-physical")).start()
    mysql_exec(mysql_block(server), *SCHEMA)
    try:
        yield server
    finally:
        server.cleanup()


def _job(name: str, block: str, local: Path, s3_block: str | None = None, **extra: Any) -> dict[str, Any]:
    storages: list[dict[str, Any]] = [{"storage": "local", "name": "local", "backup_dir": str(local)}]
    if s3_block:
        storages.append({"storage": "s3", "name": "s3", "object_store": s3_block, "bucket_name": "physical"})
    return {
        "job": name,
        "type": "mariadb_backup",
        "sources": [{"connect": {"block": block}, **extra.pop("source", {})}],
        "storages": storages,
        **extra,
    }


def _rows(server: LocalMariaDB) -> dict[str, Any]:
    db = mysql_block(server)
    return {
        "orders": mysql_exec(db, "SELECT id, item FROM shop.orders ORDER BY id"),
        "people": mysql_exec(db, "SELECT id, name FROM crm.people ORDER BY id"),
        "event": mysql_exec(db, "SELECT event_name FROM information_schema.events"),
        "f": mysql_exec(db, "SELECT shop.f()"),
    }


def test_physical_backup_verified_to_local_and_s3_then_restored_as_a_new_data_dir(
    prefect_server: Any, maria: LocalMariaDB, object_store_a: Any, tmp_path: Path
) -> None:
    """The stream goes to local and S3 at once; verification prepares it and compares a scratch
    server's inventory with the source's; the S3 copy restores into a new data directory on which a
    real mariadbd starts with every row, routine and event and the source's own users."""
    uid = secrets.token_hex(3)
    mysql_block(maria).save(f"maria-phys-{uid}", overwrite=True)
    object_store_a.save(f"s3-phys-{uid}", overwrite=True)
    job = _job(f"phys-{uid}", f"maria-phys-{uid}", tmp_path / "backups", f"s3-phys-{uid}", verify=True)

    result = scheduled_backup(job)

    assert sorted(result["good"]) == ["local", "s3"] and not result["failed"]
    assert result["verification"]["result"] == "ok"
    checked = result["verification"]["checks"]
    assert checked["shop"]["tables"] == {"orders": 3, "audit": 0} and checked["shop"]["events"] == ["nightly"]
    assert checked["crm"]["tables"] == {"people": 2}
    (manifest_path,) = (tmp_path / "backups" / job["job"]).glob("*/manifest.json")
    text = manifest_path.read_text()
    manifest = json.loads(text)
    (part,) = manifest["parts"]
    assert part["name"] == "mariadb.xbstream.gz" and part["kind"] == "mariadb-backup"
    assert part["databases"] == ["crm", "shop"] and part["files"] > 10 and "shop" in part["schemas"]
    assert manifest["inventory"]["shop"]["routines"] and manifest["inventory"]["shop"]["views"] == ["items"]
    assert maria.password not in text and maria.password not in repr(result)

    plan = restore_backup(job, storage="s3", target_dir=str(tmp_path / "x"), dry_run=True)
    assert any("mariadb-backup --prepare" in a for a in plan["actions"]) and not (tmp_path / "x").exists()

    target = tmp_path / "restored" / "data"
    done = restore_backup(job, storage="s3", target_dir=str(target))
    assert done["data_dir"] == str(target)
    assert done["inventory"]["restored"]["shop"]["events"] == ["nightly"]
    assert not [p for p in target.parent.iterdir() if ".partial-" in p.name]  # staging removed

    revived = LocalMariaDB(target.parent)  # datadir = <base>/data: started as is, nothing initialised
    revived.password = maria.password  # the source's users came with the files
    revived.start()
    try:
        assert _rows(revived) == _rows(maria)
    finally:
        revived.stop()

    with pytest.raises(InputError, match="target_dir"):  # a prepared directory is never overwritten
        restore_backup(job, target_dir=str(target))
    with pytest.raises(InputError, match="overwrite"):
        restore_backup(job, target_dir=str(tmp_path / "other"), overwrite=True, dry_run=True)


def test_physical_job_inputs_are_refused_by_field(
    prefect_server: Any, maria: LocalMariaDB, tmp_path: Path
) -> None:
    """Database lists and relative or unreadable data directories are refused, naming the field;
    nothing is written to the storage."""
    uid = secrets.token_hex(3)
    mysql_block(maria).save(f"maria-bad-{uid}", overwrite=True)
    assert parse_job({**_job("p", "b", tmp_path), "type": "mysql_xtrabackup"}).engine == "mysql_physical"
    with pytest.raises(InputError, match=r"sources\[0\]\.target.*whole server"):
        parse_job(_job("p", "b", tmp_path, source={"target": ["shop"]}))
    with pytest.raises(InputError, match=r"sources\[0\]\.datadir"):
        parse_job(_job("p", "b", tmp_path, source={"datadir": "data"}))
    local = tmp_path / "backups"
    missing = tmp_path / "no-such-datadir"
    with pytest.raises(InputError, match=r"sources\[0\]\.datadir.*not a readable directory"):
        scheduled_backup(_job(f"pb-{uid}", f"maria-bad-{uid}", local, source={"datadir": str(missing)}))
    assert not any((local / f"pb-{uid}").glob("*/manifest.json"))


def _chunk(path: bytes, payload: bytes = b"", *, kind: bytes = b"P") -> bytes:
    head = MAGIC + b"\x00" + kind + struct.pack("<I", len(path)) + path
    if kind == b"E":
        return head
    return head + struct.pack("<QQI", len(payload), 0, zlib.crc32(payload)) + payload


def _file(path: bytes, payload: bytes) -> bytes:
    return _chunk(path, payload) + _chunk(path, kind=b"E")


def test_physical_hostile_stream_paths_never_leave_the_staging_directory(tmp_path: Path) -> None:
    """A stored stream naming ``../`` is stopped by the gate before mbstream writes that chunk."""
    outside = tmp_path / "pwned"
    evil = _file(b"ibdata1", b"x") + _file(b"../pwned", b"gotcha") + _file(b"xtrabackup_checkpoints", b"")
    with pytest.raises(PhysicalBackupInvalid, match=r"component '\.\.'"):
        extract_and_prepare(_gz(evil, tmp_path), tmp_path / "stage")
    assert not outside.exists()


def test_physical_hostile_backup_my_cnf_is_refused_before_prepare(
    maria: LocalMariaDB, tmp_path: Path
) -> None:
    """``backup-my.cnf`` pointing prepare at another data directory (the live server's) is refused;
    the live server's files are untouched."""
    live = sorted(p.name for p in maria.datadir.iterdir())
    cnf = f"[mysqld]\ninnodb_page_size=16384\ninnodb_data_home_dir={maria.datadir}\n".encode()
    evil = _file(b"backup-my.cnf", cnf) + _file(b"xtrabackup_checkpoints", b"backup_type = full-backuped\n")
    with pytest.raises(PhysicalBackupInvalid, match=r"backup-my\.cnf line 3"):
        extract_and_prepare(_gz(evil, tmp_path), tmp_path / "stage")
    assert sorted(p.name for p in maria.datadir.iterdir()) == live


def _gz(data: bytes, tmp_path: Path) -> Any:
    path = tmp_path / f"part-{secrets.token_hex(3)}.gz"
    path.write_bytes(gzip.compress(data))
    return open(path, "rb")
