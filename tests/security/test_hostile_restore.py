"""Hostile archives and manifests on the restore side (issue 11: findings 2, 3 and 7).

Each test takes a real backup with the flows, then rewrites what is stored (as anyone who can write
the backup storage could) and restores it against the real PostgreSQL / S3 servers of the harness.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest
from backup.helpers import mysql_block, mysql_exec, pg_block, pg_exec

from flows.backup import scheduled_backup
from flows.restore import restore_backup
from stateferry.errors import InputError, StateferryError
from tasks.dumpers import find_tool, postgres_env

pytestmark = pytest.mark.timeout(300)


def _uid() -> str:
    return secrets.token_hex(3)


def _pg_job(block: str, database: str, local: Path) -> dict[str, Any]:
    return {
        "job": f"hostile-pg-{_uid()}",
        "type": "postgresql",
        "sources": [{"connect": {"block": block}, "target": [database], "format": "plain"}],
        "storages": [{"storage": "local", "backup_dir": str(local), "store": {"days": 3}}],
    }


def _live(postgres: Any) -> tuple[Any, str, str]:
    """A saved block and a live database ``t`` holding the row 'backup' and a backslash row."""
    db = pg_block(postgres)
    block = f"hostile-pg-{_uid()}"
    db.save(block, overwrite=True)
    live = f"live_{_uid()}"
    pg_exec(db, f'CREATE DATABASE "{live}"')
    pg_exec(
        db, "CREATE TABLE t (x text)", "INSERT INTO t VALUES ('backup'), ('\\! not a command')", database=live
    )
    return db, block, live


def _replace_local_part(local: Path, job: dict[str, Any], backup_id: str, raw_sql: bytes) -> None:
    """Replace the stored part with gzip'd ``raw_sql`` and fix the manifest's digest (a storage writer)."""
    folder = local / job["job"] / backup_id
    manifest = json.loads((folder / "manifest.json").read_text())
    part = manifest["parts"][0]
    data = gzip.compress(raw_sql)
    (folder / part["name"]).write_bytes(data)
    part["sha256"], part["size"] = hashlib.sha256(data).hexdigest(), len(data)
    manifest["inventory"] = None  # the archive now holds other rows: an inventory-less (older) manifest
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _pg_dump(db: Any, database: str, *extra: str, restrict: bool = False) -> bytes:
    """A real plain dump; without ``restrict`` as pg_dump before 15.14 / 17.6 wrote it (no
    ``\\restrict`` lines, with which psql itself would block later meta-commands)."""
    out = subprocess.run(
        [find_tool("pg_dump"), "--format=p", *extra, "--dbname", database],
        env=postgres_env(db),
        capture_output=True,
        check=True,
        timeout=60,
    )
    if restrict:
        return out.stdout
    return b"".join(
        line
        for line in out.stdout.splitlines(keepends=True)
        if not line.startswith((b"\\restrict", b"\\unrestrict"))
    )


def _rows(db: Any, database: str) -> list[str]:
    return sorted(r[0] for r in pg_exec(db, "SELECT x FROM t", database=database))


def _leftovers(db: Any) -> list[str]:
    return [
        r[0]
        for r in pg_exec(
            db, "SELECT datname FROM pg_database WHERE datname LIKE 'sfrestore%' OR datname LIKE 'sfold%'"
        )
    ]


def test_hostile_restore_as_copy_cannot_recreate_live_database(
    prefect_server: Any, postgres: Any, tmp_path: Path
) -> None:
    """A `pg_dump --create --clean` archive restored under a new name leaves the live database alone."""
    db, block, live = _live(postgres)
    job = _pg_job(block, live, tmp_path)
    result = scheduled_backup(job)
    _replace_local_part(tmp_path, job, result["backup_id"], _pg_dump(db, live, "--create", "--clean"))
    pg_exec(db, "INSERT INTO t VALUES ('written after the backup')", database=live)

    copy = f"{live}_copy"
    out = restore_backup(job, target_database=copy)
    assert out["databases"] == [copy]
    assert _rows(db, copy) == ["\\! not a command", "backup"]
    assert _rows(db, live) == ["\\! not a command", "backup", "written after the backup"]
    assert _leftovers(db) == []
    pg_exec(db, f'DROP DATABASE "{live}" WITH (FORCE)', f'DROP DATABASE "{copy}" WITH (FORCE)')


def test_hostile_failed_overwrite_leaves_live_database(
    prefect_server: Any, postgres: Any, tmp_path: Path
) -> None:
    """An approved overwrite whose archive fails half-way (as on a version mismatch) changes nothing;
    a good one replaces the database even with a session connected to it."""
    db, block, live = _live(postgres)
    job = _pg_job(block, live, tmp_path)
    result = scheduled_backup(job)
    pg_exec(db, "INSERT INTO t VALUES ('live only')", database=live)
    good = _pg_dump(db, live, restrict=True)
    head, tail = _pg_dump(db, live).split(b"CREATE TABLE", 1)
    broken = head + b"SELECT no_such_function_in_pg15();\nCREATE TABLE" + tail
    _replace_local_part(tmp_path, job, result["backup_id"], broken)

    with pytest.raises(StateferryError, match="no_such_function_in_pg15"):
        restore_backup(job, overwrite=True, auto_approve=True)
    assert _rows(db, live) == ["\\! not a command", "backup", "live only"]
    assert _leftovers(db) == []

    _replace_local_part(tmp_path, job, result["backup_id"], good.replace(b"live only", b"restored"))
    session = db.connect(live)
    try:
        restore_backup(job, overwrite=True, auto_approve=True)
    finally:
        session.close()
    assert _rows(db, live) == ["\\! not a command", "backup", "restored"]
    assert _leftovers(db) == []
    pg_exec(db, f'DROP DATABASE "{live}" WITH (FORCE)')


_META_PAYLOADS = [
    b"\\! touch {marker}\n",
    b"SELECT 1; \\! touch {marker}\n",
    b"SELECT 'it''s' AS a, $q$ ' $q$ AS b; \\o | touch {marker}\n",
    b"\\connect postgres\nSELECT 1;\n\\! touch {marker}\n",
]


def test_hostile_plain_sql_meta_command_refused(prefect_server: Any, postgres: Any, tmp_path: Path) -> None:
    """psql meta-commands in a plain archive (at a line start, mid-line, after quoted text, after a
    dropped ``\\connect``) are refused before psql reaches them; nothing is created."""
    db, block, live = _live(postgres)
    job = _pg_job(block, live, tmp_path / "b")
    result = scheduled_backup(job)
    marker = tmp_path / "pwned"
    head, tail = _pg_dump(db, live).split(b"CREATE TABLE", 1)
    copy = f"{live}_copy"
    for payload in _META_PAYLOADS:
        crafted = head + payload.replace(b"{marker}", str(marker).encode()) + b"CREATE TABLE" + tail
        _replace_local_part(tmp_path / "b", job, result["backup_id"], crafted)
        with pytest.raises(InputError) as err:
            restore_backup(job, target_database=copy)
        assert err.value.field == "backup" and "meta-command" in str(err.value), payload
        assert not marker.exists(), payload
        assert pg_exec(db, f"SELECT 1 FROM pg_database WHERE datname = {_lit(copy)}") == []
        assert _leftovers(db) == []
    assert _rows(db, live) == ["\\! not a command", "backup"]
    pg_exec(db, f'DROP DATABASE "{live}" WITH (FORCE)')


def _lit(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def test_hostile_manifest_part_name_path_refused(
    prefect_server: Any, object_store_a: Any, tmp_path: Path
) -> None:
    """An S3 manifest whose part name is a path (absolute or ../) is refused; nothing is written."""
    store_block = f"hostile-s3-{_uid()}"
    object_store_a.save(store_block, overwrite=True)
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("from the backup")
    job = {
        "job": f"hostile-files-{_uid()}",
        "type": "files",
        "sources": [{"target": [str(src)]}],
        "storages": [
            {
                "storage": "s3",
                "object_store": store_block,
                "bucket_name": "backups",
                "backup_dir": "/hostile",
                "store": {"days": 2},
            }
        ],
    }
    result = scheduled_backup(job)
    client = object_store_a.minio_client()
    base = f"hostile/{job['job']}/{result['backup_id']}"
    manifest = json.loads(client.get_object("backups", f"{base}/manifest.json").read())
    data = client.get_object("backups", f"{base}/files.tar.gz").read()
    escaped = tmp_path / "outside" / "evil.gz"
    escaped.parent.mkdir()
    label = result["good"][0]
    for name in (str(escaped), f"x/../../../../../../../..{escaped}"):  # minio itself refuses a "../" key
        manifest["parts"][0]["name"] = name
        raw = json.dumps(manifest).encode()
        client.put_object("backups", f"{base}/manifest.json", io.BytesIO(raw), len(raw))
        if ".." not in name:
            client.put_object("backups", f"{base}/{name}", io.BytesIO(data), len(data))
        with pytest.raises(InputError) as err:
            restore_backup(job, storage=label, target_dir=str(tmp_path / "out"))
        assert err.value.field == "backup" and "parts[0].name" in str(err.value)
        assert not escaped.exists() and os.listdir(escaped.parent) == []
        assert not (tmp_path / "out").exists()


def test_hostile_mysql_failed_overwrite_leaves_live_database(
    prefect_server: Any, mariadb: Any, tmp_path: Path
) -> None:
    """An approved MariaDB overwrite whose archive fails half-way leaves the live database as it was."""
    db = mysql_block(mariadb)
    block = f"hostile-my-{_uid()}"
    db.save(block, overwrite=True)
    live = f"live_{_uid()}"
    mysql_exec(db, f"CREATE DATABASE `{live}`")
    mysql_exec(db, "CREATE TABLE t (x varchar(40))", "INSERT INTO t VALUES ('backup')", database=live)
    job = {
        "job": f"hostile-my-{_uid()}",
        "type": "mysql",
        "sources": [{"connect": {"block": block}, "target": [live]}],
        "storages": [{"storage": "local", "backup_dir": str(tmp_path), "store": {"days": 3}}],
    }
    result = scheduled_backup(job)
    mysql_exec(db, "INSERT INTO t VALUES ('live only')", database=live)
    sql = gzip.decompress((tmp_path / job["job"] / result["backup_id"] / "mysql.sql.gz").read_bytes())
    head, tail = sql.split(b"CREATE TABLE", 1)
    broken = head + b"SELECT no_such_function_in_mariadb();\nCREATE TABLE" + tail
    _replace_local_part(tmp_path, job, result["backup_id"], broken)

    with pytest.raises(StateferryError, match="no_such_function_in_mariadb"):
        restore_backup(job, overwrite=True, auto_approve=True)
    assert sorted(r[0] for r in mysql_exec(db, "SELECT x FROM t", database=live)) == ["backup", "live only"]
    assert mysql_exec(db, "SHOW DATABASES LIKE 'sfrestore%'") == []

    _replace_local_part(tmp_path, job, result["backup_id"], sql)
    restore_backup(job, overwrite=True, auto_approve=True)
    assert mysql_exec(db, "SELECT x FROM t", database=live) == [("backup",)]
    mysql_exec(db, f"DROP DATABASE `{live}`")


def test_hostile_files_restore_tar_members_checked(prefect_server: Any, tmp_path: Path) -> None:
    """A storage writer swaps a files backup's archive (and fixes the manifest's digest): the
    CVE-2025-4517 symlink escape, absolute and ``..`` names, links out and devices are refused
    before GNU tar writes them, by restores and overwrites alike; nothing lands outside the target."""
    import tarfile

    from flows.backup import scheduled_backup
    from flows.restore import restore_backup
    from security.test_hostile_app import _cve_2025_4517_archive, _simple_archive
    from stateferry.errors import InputError

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    local = tmp_path / "backups"
    job = {
        "job": f"hostile-files-{_uid()}",
        "type": "desc_files",
        "sources": [{"target": [str(src)]}],
        "storages": [{"storage": "local", "backup_dir": str(local)}],
    }
    backup_id = scheduled_backup(job)["backup_id"]
    outer = tmp_path / "outer"
    target = outer / "restore"
    cases = {
        "cve-2025-4517": _cve_2025_4517_archive(target),
        "absolute": _simple_archive([(str(tmp_path / "absolute-evil"), tarfile.REGTYPE, "", b"x")]),
        "dotdot": _simple_archive([("a/../../evil", tarfile.REGTYPE, "", b"x")]),
        "hardlink-out": _simple_archive([("pw", tarfile.LNKTYPE, "/etc/hostname", b"")]),
        "through-symlink": _simple_archive(
            [("up", tarfile.SYMTYPE, "..", b""), ("up/flag", tarfile.REGTYPE, "", b"overwrite")]
        ),
    }
    for name, raw in cases.items():
        _replace_local_part(local, job, backup_id, raw)
        for overwrite in (False, True):
            target.mkdir(parents=True, exist_ok=True)
            with pytest.raises(InputError, match="archive is refused") as err:
                restore_backup(job, target_dir=str(target), overwrite=overwrite, auto_approve=True)
            assert err.value.field == "backup", name
            assert sorted(p.name for p in outer.iterdir()) == ["restore"], name
            assert not (tmp_path / "absolute-evil").exists() and not (tmp_path / "evil").exists(), name
    assert (src / "a.txt").read_text() == "a"
