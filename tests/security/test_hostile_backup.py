"""Hostile parameters, archives and listings against the backup / restore flows (issue 11).

One test per finding; every test would fail on the original main. Crafted archives and listings
are made here, against the session's real PostgreSQL, MariaDB and SeaweedFS servers.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from backup.helpers import mysql_block, mysql_exec, pg_block, pg_exec
from pydantic import SecretStr, ValidationError

from blocks.database import Database
from planning.backup_config import parse_job
from stateferry.errors import InputError
from tasks.backup_jobs import Resolved, new_backup_id, preflight_source
from tasks.backup_publish import rotate_storage
from tasks.backup_storage import LocalStorage, S3Storage
from tasks.dumpers import mysqldump_producer, pg_dump_producer


def _pg_job(extra_keys: str | None = None, storages: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    src: dict[str, Any] = {"connect": {"block": "pg"}}
    if extra_keys is not None:
        src["extra_keys"] = extra_keys
    return {
        "job": "hostile",
        "type": "postgres",
        "sources": [src],
        "storages": storages or [{"storage": "local", "backup_dir": "/tmp/unused"}],
    }


def _drop(db: Database, *names: str) -> None:
    for n in names:
        pg_exec(db, 'DROP DATABASE IF EXISTS "' + n.replace('"', '""') + '" WITH (FORCE)')


def _gz(data: bytes) -> bytes:
    return gzip.compress(data)


# -------------------------------------------------------------------------------------------------
# finding 1


@pytest.mark.parametrize(
    ("engine", "keys"),
    [
        ("postgres", "--ho=evil --po=5432"),
        ("postgres", "--dbname=host=evil"),
        ("postgres", "--dbn=host=evil"),
        ("mysql", "--ho=evil"),
        ("mysql", "--opt --defaults-file=/tmp/x"),
    ],
)
def test_hostile_extra_keys_cannot_choose_the_server(engine: str, keys: str) -> None:
    """Abbreviated / connection options in extra_keys are refused naming the field."""
    job = _pg_job(keys)
    job["type"] = engine
    with pytest.raises(InputError) as err:
        parse_job(job)
    assert err.value.field == "sources[0].extra_keys"


def test_hostile_database_name_is_not_a_conninfo(postgres: Any) -> None:
    """A database named ``dbname=<other>`` is dumped as itself, never as a connection string."""
    db = pg_block(postgres)
    other, hostile = "sfh_other", "dbname=sfh_other"
    _drop(db, other, hostile)
    try:
        pg_exec(db, f'CREATE DATABASE "{other}"', f'CREATE DATABASE "{hostile}"')
        pg_exec(db, "CREATE TABLE secret_of_other (x int)", database=other)
        pg_exec(db, "CREATE TABLE mine (x int)", database=hostile)
        out = io.BytesIO()
        pg_dump_producer(db, hostile, "plain", [])(out)
        assert b"mine" in out.getvalue()
        assert b"secret_of_other" not in out.getvalue()
        with pytest.raises(InputError) as err:
            parse_job({**_pg_job(), "sources": [{"connect": {"block": "pg"}, "target": ["--host=evil"]}]})
        assert "target" in err.value.field
        # "all databases": a name read from the server that would be an option is skipped
        pg_exec(db, 'CREATE DATABASE "--host=evil"')
        facts = preflight_source.fn(Resolved(parse_job(_pg_job()), source_block=db))
        assert hostile in facts["databases"] and "--host=evil" not in facts["databases"]
    finally:
        _drop(db, other, hostile, "--host=evil")


def test_hostile_mysql_database_names_never_become_options(mariadb: Any) -> None:
    """MariaDB: a tenant's database named like an option is dumped as itself (after ``--``) when
    named, skipped when read from the server, and refused as a parameter with control characters."""
    db = mysql_block(mariadb)
    hostile, plain = "--defaults-extra-file=x", "sfh_plain"
    mysql_exec(db, f"DROP DATABASE IF EXISTS `{hostile}`", f"DROP DATABASE IF EXISTS {plain}")
    try:
        mysql_exec(db, f"CREATE DATABASE `{hostile}`", f"CREATE DATABASE {plain}")
        mysql_exec(db, "CREATE TABLE only_mine (x int)", database=plain)
        job = {
            "job": "h",
            "type": "mysql",
            "sources": [{"connect": {"block": "m"}}],
            "storages": [{"storage": "local", "backup_dir": "/tmp/unused"}],
        }
        facts = preflight_source.fn(Resolved(parse_job(job), source_block=db))
        assert plain in facts["databases"] and hostile not in facts["databases"]
        out = io.BytesIO()
        mysqldump_producer(db, [plain], ["--skip-comments"])(out)
        assert b"only_mine" in out.getvalue()
        for bad in ("--host=evil", "a\nb", "../x"):
            with pytest.raises(InputError) as err:
                parse_job({**job, "sources": [{"connect": {"block": "m"}, "target": [bad]}]})
            assert "target" in err.value.field
    finally:
        mysql_exec(db, f"DROP DATABASE IF EXISTS `{hostile}`", f"DROP DATABASE IF EXISTS {plain}")


# -------------------------------------------------------------------------------------------------
# finding 3 (storage side; the restore's manifest check is sec-restore's)


def test_hostile_part_names_are_never_paths(tmp_path: Path, object_store_a: Any) -> None:
    """A part name from a manifest cannot read or write outside the backup's own directory."""
    outside = tmp_path / "outside.gz"
    outside.write_bytes(b"not yours")
    local = LocalStorage(tmp_path / "root")
    s3 = S3Storage(object_store_a, "hostile-parts", "p")
    bid = new_backup_id(dt.datetime.now(dt.UTC))
    for name in ("../../../outside.gz", str(outside), ".hidden.gz", "a/b.gz"):
        for call in (
            lambda n=name: local.open_read("job", bid, n),
            lambda n=name: local.part_path("job", bid, n),
            lambda n=name: local.open_part("job", bid, n),
            lambda n=name: s3.open_read("job", bid, n),
        ):
            with pytest.raises(InputError):
                call()
    with pytest.raises(InputError):
        local.open_read("job", "../..", "outside.gz")
    assert outside.read_bytes() == b"not yours"
    assert not (tmp_path / "root" / "job").exists()


# -------------------------------------------------------------------------------------------------
# finding 6


def _manifest(bid: str, started: dt.datetime) -> bytes:
    return json.dumps({"status": "good", "started": started.isoformat(), "backup_id": bid}).encode()


def test_hostile_retention_deletes_only_its_own_backups(tmp_path: Path, object_store_a: Any) -> None:
    """A stray key, a foreign folder or an unreadable manifest never makes retention delete more."""
    now = dt.datetime.now(dt.UTC)
    old_t = now - dt.timedelta(days=40)
    old, new = new_backup_id(old_t), new_backup_id(now)
    bucket = "hostile-retention"
    job = parse_job(
        {
            "job": "hostile",
            "type": "files",
            "sources": [{"target": ["/tmp"]}],
            "storages": [
                {
                    "storage": "local",
                    "backup_dir": str(tmp_path),
                    "store": {"days": 0, "weeks": 0, "months": 0},
                },
                {
                    "storage": "s3",
                    "object_store": "unused",
                    "bucket_name": bucket,
                    "backup_dir": "pre",
                    "store": {"days": 0, "weeks": 0, "months": 0},
                },
            ],
        }
    )
    local_cfg, s3_cfg = job.enabled_storages
    s3 = S3Storage(object_store_a, bucket, "pre", s3_cfg.label)
    local = LocalStorage(tmp_path, local_cfg.label)
    r = Resolved(job, storages={s3_cfg.label: s3, local_cfg.label: local})
    r.storage_configs = {s3_cfg.label: s3_cfg, local_cfg.label: local_cfg}

    client = s3.client
    if not client.bucket_exists(bucket):
        client.make_bucket(bucket)
    for bid, t in ((old, old_t), (new, now)):
        body = _manifest(bid, t)
        client.put_object(bucket, f"pre/hostile/{bid}/manifest.json", io.BytesIO(body), len(body))
    # SeaweedFS folds "hostile//x" into "hostile/x"; a foreign "directory" lists as an id just the same
    client.put_object(bucket, "pre/hostile/notours/x", io.BytesIO(b"stray"), 5)
    rotate_storage.fn(r, s3_cfg.label, now, new)
    keys = {o.object_name for o in client.list_objects(bucket, prefix="pre/", recursive=True)}
    assert f"pre/hostile/{new}/manifest.json" in keys
    assert "pre/hostile/notours/x" in keys  # not ours: left alone
    with pytest.raises(InputError):
        s3.discard("hostile", "")  # the id "" would name the whole job prefix
    assert f"pre/hostile/{old}/manifest.json" not in keys  # retention still works

    jd = tmp_path / "hostile"
    unreadable = new_backup_id(old_t - dt.timedelta(days=1))
    for bid, t in ((old, old_t), (new, now), (unreadable, old_t)):
        (jd / bid).mkdir(parents=True)
        (jd / bid / "manifest.json").write_bytes(_manifest(bid, t))
    (jd / unreadable / "manifest.json").write_bytes(b"{not json")
    (jd / "keepme").mkdir()
    rotate_storage.fn(r, local_cfg.label, now, new)
    assert sorted(p.name for p in jd.iterdir()) == sorted(["keepme", new, unreadable])
    with pytest.raises(InputError):
        local.discard("hostile", "")


# -------------------------------------------------------------------------------------------------
# finding 7 (backup side: the dump never carries drop/create; restore side is sec-restore's)


@pytest.mark.parametrize("keys", ["--create", "--clean", "--clean --if-exists"])
def test_hostile_pg_dump_keys_cannot_drop_databases(keys: str) -> None:
    """pg_dump options that make a dump drop or create databases are refused."""
    with pytest.raises(InputError) as err:
        parse_job(_pg_job(keys))
    assert err.value.field == "sources[0].extra_keys"


# -------------------------------------------------------------------------------------------------
# finding 10 (backup parts)


def test_hostile_local_backups_private_and_credentials_inert(tmp_path: Path) -> None:
    """Local backups are 0600/0700; newlines cannot inject options; endpoint secrets are not echoed."""
    from blocks.object_store import ObjectStore

    storage = LocalStorage(tmp_path / "root")
    bid = new_backup_id(dt.datetime.now(dt.UTC))
    storage.check_writable("job")
    part = storage.open_part("job", bid, "files.tar.gz")
    part.write(b"data")
    part.commit()
    storage.publish("job", bid, {"status": "good"})
    for p in [tmp_path / "root" / "job", tmp_path / "root" / "job" / bid]:
        assert stat.S_IMODE(p.stat().st_mode) == 0o700, p
    for p in (tmp_path / "root" / "job" / bid).iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p

    for field, value in (("user", "root\nhost=evil"), ("password", "pw\n[client]\nhost=evil")):
        kwargs: dict[str, Any] = {"engine": "mysql", "host": "127.0.0.1", "user": "root", "password": "pw"}
        kwargs[field] = SecretStr(value) if field == "password" else value
        with pytest.raises(ValidationError) as verr:
            Database(**kwargs)
        assert field in str(verr.value) and "evil" not in str(verr.value)

    with pytest.raises(ValidationError) as oerr:
        ObjectStore(
            endpoint="http://AKIA:TOPSECRETVALUE@127.0.0.1:80x",
            access_key="a",
            secret_key=SecretStr("b"),
        )
    assert "TOPSECRETVALUE" not in str(oerr.value)
    assert "endpoint" in str(oerr.value)
