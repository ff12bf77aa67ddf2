"""Issue 15: encryption at rest with age (pyrage).

The stream pieces run without servers; the round trips run ``scheduled_backup`` / ``restore_backup``
against a real Prefect server (the identity lives in a real ``Secret`` block), a local directory, the
SeaweedFS S3 fixture and a real PostgreSQL.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import secrets
import threading
from pathlib import Path
from typing import Any

import pyrage
import pytest
from pydantic import SecretStr
from pyrage import x25519

from backup.helpers import local_manifests, make_tree, pg_block, pg_exec, s3_keys, sha256_file
from planning.backup_config import job_to_parameters, parse_job
from planning.backup_encryption import recipient_fingerprint
from stateferry.errors import InputError
from tasks.backup_pipeline import stream_part
from tasks.backup_storage import LocalStorage
from tasks.dumpers import DumpFailed, tree_digest
from tasks.restore_jobs import check_manifest

AGE_HEADER = b"age-encryption.org/v1\n"
B1 = "20260101T000000Z-0000e1"
_SHA = "ab" * 32


def _uid() -> str:
    return secrets.token_hex(3)


def _keypair() -> tuple[str, str]:
    ident = x25519.Identity.generate()
    return str(ident), str(ident.to_public())


class _HashWriter:
    """A storage writer that keeps only a digest (for the bounded-memory check)."""

    def __init__(self) -> None:
        self.h, self.n, self.committed = hashlib.sha256(), 0, False

    def write(self, chunk: bytes) -> None:
        self.h.update(chunk)
        self.n += len(chunk)

    def commit(self) -> None:
        self.committed = True

    def abort(self) -> None:
        pass


# --------------------------------------------------------------------------------------------------
# the stream


def test_encrypted_part_is_an_age_file_of_the_compressed_stream(tmp_path: Path) -> None:
    secret, public = _keypair()
    data = os.urandom(700_000) + b"INSERT INTO t VALUES (1);\n" * 100_000

    def produce(sink: Any) -> dict[str, Any]:
        for i in range(0, len(data), 100_000):
            sink.write(data[i : i + 100_000])
        return {}

    store = LocalStorage(tmp_path)
    res = stream_part(
        "mysql.sql.gz.age",
        produce,
        {"local": store.open_part("j", B1, "mysql.sql.gz.age")},
        age_recipients=[public],
    )
    stored = (tmp_path / "j" / f".partial-{B1}" / "mysql.sql.gz.age").read_bytes()
    assert stored.startswith(AGE_HEADER) and data[:1000] not in stored
    assert res.sha256 == hashlib.sha256(stored).hexdigest() and res.size == len(stored)  # stored bytes
    plain = pyrage.decrypt(stored, [x25519.Identity.from_str(secret)])
    assert gzip.decompress(plain) == data  # encrypted after compression
    with pytest.raises(pyrage.DecryptError):
        pyrage.decrypt(stored, [x25519.Identity.generate()])


def test_encrypted_stream_memory_is_bounded_and_a_failed_producer_stops_the_encryptor() -> None:
    import tracemalloc

    _, public = _keypair()
    block = os.urandom(1 << 20)

    def produce(sink: Any) -> dict[str, Any]:
        for _ in range(64):
            sink.write(os.urandom(1 << 20))  # incompressible: every byte goes through age
        return {}

    writer = _HashWriter()
    tracemalloc.start()
    try:
        res = stream_part("files.tar.gz.age", produce, {"w": writer}, age_recipients=[public])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert writer.committed and writer.n == res.size > 64 << 20
    assert peak < 32 << 20, f"peak {peak >> 20} MiB for a 64 MiB part"  # not growing with the part

    def failing(sink: Any) -> dict[str, Any]:
        sink.write(block)
        raise DumpFailed("pg_dump exited with status 1")

    with pytest.raises(DumpFailed):
        stream_part("x.sql.gz.age", failing, {"w": _HashWriter()}, age_recipients=[public])
    assert not [t for t in threading.enumerate() if t.name == "age-encrypt"]  # ended with the part


# --------------------------------------------------------------------------------------------------
# the job config and the manifest (pure)


def _files_job(**extra: Any) -> dict[str, Any]:
    return {
        "job": "enc",
        "type": "files",
        "sources": [{"target": ["/srv"]}],
        "storages": [{"storage": "local", "backup_dir": "/b"}],
        **extra,
    }


def test_encrypted_config_keeps_public_keys_only() -> None:
    secret, public = _keypair()
    job = parse_job(_files_job(encryption={"recipients": [public, public], "identity_secret": "age-key"}))
    assert job.encryption is not None and job.encryption.recipients == [public]
    assert job.encryption.fingerprints == [recipient_fingerprint(public)]
    assert parse_job(job_to_parameters(job)) == job
    with pytest.raises(InputError) as err:  # a private key pasted as recipient: refused, never echoed
        parse_job(_files_job(encryption={"recipients": [secret]}))
    assert err.value.field == "encryption.recipients[0]" and secret not in str(err.value)
    assert secret[15:30] not in str(err.value)
    for bad, field in (
        ({"recipients": ["age1nope"]}, "encryption.recipients[0]"),
        ({"recipients": []}, "encryption.recipients"),
        ({"recipients": [public], "identity_secret": secret}, "encryption.identity_secret"),
        ({"recipients": [public], "passphrase": "x"}, "encryption.passphrase"),
    ):
        with pytest.raises(InputError) as err:
            parse_job(_files_job(encryption=bad))
        assert err.value.field == field, (bad, err.value)
        assert secret not in str(err.value)


def _manifest(name: str, **top: Any) -> dict[str, Any]:
    return {"engine": "files", "parts": [{"name": name, "sha256": _SHA, "size": 9}], **top}


_FP = {"encryption": "age", "age_recipients": ["sha256:" + "0" * 16]}


@pytest.mark.parametrize(
    ("manifest", "problem"),
    [
        (_manifest("files.tar.gz.age", **_FP), None),
        (_manifest("files.tar.zst.age", compression="zstd", **_FP), None),
        (_manifest("files.tar.gz.age"), "not the layout's name 'files.tar.gz'"),
        (_manifest("files.tar.gz", **_FP), "not the layout's name 'files.tar.gz.age'"),
        (_manifest("files.tar.gz.age", encryption="gpg"), "'encryption' is 'gpg'"),
        (_manifest("files.tar.gz.age", encryption="age"), "age_recipients"),
        (_manifest("files.tar.gz.age", encryption="age", age_recipients=["age1x"]), "age_recipients"),
        (_manifest("../files.tar.gz.age", **_FP), "not the layout's name"),
    ],
)
def test_encrypted_manifest_names_follow_the_layout(manifest: dict[str, Any], problem: str | None) -> None:
    if problem is None:
        check_manifest(manifest)
        return
    with pytest.raises(InputError, match=problem) as err:
        check_manifest(manifest)
    assert err.value.field == "backup"


# --------------------------------------------------------------------------------------------------
# real round trips (Prefect server with Secret blocks, local + S3, PostgreSQL)


@pytest.fixture
def age_keys(prefect_server: Any) -> dict[str, str]:
    """A key pair whose identity is saved in a Secret block, and a second (wrong) saved identity."""
    from prefect.blocks.system import Secret

    secret, public = _keypair()
    wrong, _ = _keypair()
    good_block, wrong_block = f"age-{_uid()}", f"age-wrong-{_uid()}"
    Secret(value=SecretStr(f"# created: now\n# public key: {public}\n{secret}\n")).save(
        good_block, overwrite=True
    )
    Secret(value=SecretStr(wrong)).save(wrong_block, overwrite=True)
    return {
        "secret": secret,
        "public": public,
        "block": good_block,
        "wrong": wrong,
        "wrong_block": wrong_block,
    }


@pytest.fixture
def s3_block(prefect_server: Any, object_store_a: Any) -> str:
    name = f"enc-s3-{_uid()}"
    object_store_a.save(name, overwrite=True)
    return name


def _job(name: str, kind: str, source: dict[str, Any], local: Path, s3: str, **extra: Any) -> dict[str, Any]:
    return {
        "job": name,
        "type": kind,
        "sources": [source],
        "storages": [
            {"storage": "local", "backup_dir": str(local)},
            {"storage": "s3", "object_store": s3, "bucket_name": "backups", "backup_dir": "/enc"},
        ],
        **extra,
    }


def _logs_of_all_runs() -> str:
    from prefect.client.orchestration import get_client
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    with get_client(sync_client=True) as c:
        return "\n".join(x.message for x in c.read_logs(limit=200))


def test_encrypted_files_round_trip_local_and_s3(
    age_keys: dict[str, str], s3_block: str, object_store_a: Any, tmp_path: Path
) -> None:
    from flows.backup import scheduled_backup
    from flows.restore import restore_backup

    src = tmp_path / "src" / "www"
    src.mkdir(parents=True)
    make_tree(src)
    encryption = {"recipients": [age_keys["public"]], "identity_secret": age_keys["block"]}
    job = _job(f"enc-files-{_uid()}", "files", {"target": [str(src)]}, tmp_path / "b", s3_block, verify=True)

    # verify: true needs the identity: refused before anything is written
    with pytest.raises(InputError) as err:
        scheduled_backup({**job, "encryption": {"recipients": [age_keys["public"]]}})
    assert err.value.field == "encryption.identity_secret"
    assert not (tmp_path / "b").exists()

    job["encryption"] = encryption
    result = scheduled_backup(job)
    assert result["failed"] == {} and result["verification"]["result"] == "ok"  # verified through age
    (part,) = result["parts"]
    assert part["name"] == "files.tar.gz.age" and "raw_sha256" not in part
    (manifest,) = local_manifests(tmp_path / "b", job["job"]).values()
    assert manifest["encryption"] == "age"
    assert manifest["age_recipients"] == [recipient_fingerprint(age_keys["public"])]
    stored = tmp_path / "b" / job["job"] / result["backup_id"] / "files.tar.gz.age"
    assert stored.read_bytes().startswith(AGE_HEADER) and sha256_file(stored) == part["sha256"]
    assert s3_keys(object_store_a, "backups", f"enc/{job['job']}/") == [
        f"enc/{job['job']}/{result['backup_id']}/files.tar.gz.age",
        f"enc/{job['job']}/{result['backup_id']}/manifest.json",
    ]

    # backup, listing and rotation need no key: a second run without identity and without verify
    no_key = {**job, "verify": False, "encryption": {"recipients": [age_keys["public"]]}}
    second = scheduled_backup(no_key)
    assert second["failed"] == {} and len(second["retention"]) == 2
    plan = restore_backup(no_key, target_dir=str(tmp_path / "x"), dry_run=True)
    assert any("decrypt" in a for a in plan["actions"])
    with pytest.raises(InputError) as err:  # a real restore without the identity is refused
        restore_backup(no_key, target_dir=str(tmp_path / "x"))
    assert err.value.field == "identity_secret" and "encrypted" in err.value.problem
    with pytest.raises(InputError) as err:  # the key itself given instead of a block name
        restore_backup(job, target_dir=str(tmp_path / "x"), identity_secret=age_keys["wrong"])
    assert err.value.field == "identity_secret" and age_keys["wrong"] not in str(err.value)
    from prefect.blocks.system import Secret

    junk_block = f"age-junk-{_uid()}"
    Secret(value=SecretStr("AGE-SECRET-KEY-1NOTAKEY hunter2")).save(junk_block, overwrite=True)
    for block, problem in (
        (f"no-such-{_uid()}", "no saved Secret block"),
        (junk_block, "not an age identity"),
    ):
        with pytest.raises(InputError, match=problem) as err:
            restore_backup(job, target_dir=str(tmp_path / "x"), identity_secret=block)
        assert err.value.field == "identity_secret" and "hunter2" not in str(err.value)
    with pytest.raises(InputError) as err:  # a wrong identity: refused before anything is read
        restore_backup(job, target_dir=str(tmp_path / "x"), identity_secret=age_keys["wrong_block"])
    assert err.value.field == "identity_secret" and "not one of" in err.value.problem
    assert not (tmp_path / "x").exists()

    # from S3 and from local, the identity named in the job or as a parameter
    restore_backup(
        job, backup=result["backup_id"], target_dir=str(tmp_path / "s3"), storage=result["good"][1]
    )
    assert tree_digest(tmp_path / "s3")["tree_sha256"] == part["tree_sha256"]
    restore_backup(no_key, target_dir=str(tmp_path / "local"), identity_secret=age_keys["block"])
    assert (tmp_path / "local" / "www" / "docs" / "a.txt").read_text() == "hello\n"

    # a manifest altered to claim the wrong key: age itself refuses, still before anything is written
    wrong_fp = recipient_fingerprint(str(x25519.Identity.from_str(age_keys["wrong"]).to_public()))
    mpath = stored.with_name("manifest.json")
    mpath.write_text(json.dumps({**manifest, "age_recipients": [wrong_fp]}))
    with pytest.raises(InputError, match="cannot open") as err:
        restore_backup(
            job,
            backup=result["backup_id"],
            target_dir=str(tmp_path / "y"),
            identity_secret=age_keys["wrong_block"],
        )
    assert err.value.field == "identity_secret" and not (tmp_path / "y").exists()
    mpath.write_text(json.dumps(manifest))

    # damaged ciphertext whose manifest digest was updated to match: age's authentication catches it
    blob = bytearray(stored.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    stored.write_bytes(bytes(blob))
    parts = [{**part, "sha256": hashlib.sha256(blob).hexdigest()}]
    mpath.write_text(json.dumps({**manifest, "parts": parts}))
    with pytest.raises(Exception, match="cannot be decrypted"):
        restore_backup(job, backup=result["backup_id"], target_dir=str(tmp_path / "z"))
    assert not (tmp_path / "z").exists()

    everything = json.dumps([manifest, result, second, plan]) + _logs_of_all_runs()
    assert age_keys["secret"] not in everything
    assert not re.search(r"AGE-SECRET-KEY-1[0-9A-Z]{20}", everything)  # no identity, only the fix's hint


def test_encrypted_postgres_round_trip_wrong_identity_keeps_live(
    age_keys: dict[str, str], s3_block: str, postgres: Any, tmp_path: Path
) -> None:
    from flows.backup import scheduled_backup
    from flows.restore import restore_backup

    db = pg_block(postgres)
    block = f"enc-pg-{_uid()}"
    db.save(block, overwrite=True)
    name = f"encapp_{_uid()}"
    pg_exec(db, f'CREATE DATABASE "{name}"')
    try:
        pg_exec(
            db,
            "CREATE TABLE t (id int PRIMARY KEY, data bytea)",
            "INSERT INTO t SELECT g, sha256(g::text::bytea) FROM generate_series(1, 300) g",
            "CREATE VIEW v AS SELECT id FROM t WHERE id > 100",
            database=name,
        )
        encryption = {"recipients": [age_keys["public"]], "identity_secret": age_keys["block"]}
        job = _job(
            f"enc-pg-{_uid()}",
            "postgresql",
            {"connect": {"block": block}, "target": [name]},
            tmp_path / "b",
            s3_block,
            verify=True,
            encryption=encryption,
        )
        result = scheduled_backup(job)
        assert result["failed"] == {} and result["verification"]["checks"][name]["tables"] == {
            "public.t": 300
        }
        assert [p["name"] for p in result["parts"]] == [f"{name}.pgdump.gz.age", "globals.pgdumpall.gz.age"]

        pg_exec(db, "DELETE FROM t WHERE id > 10", database=name)  # the live database changes
        with pytest.raises(InputError) as err:
            restore_backup(job, overwrite=True, auto_approve=True, identity_secret=age_keys["wrong_block"])
        assert err.value.field == "identity_secret"
        assert pg_exec(db, "SELECT count(*) FROM t", database=name) == [(10,)]  # untouched

        out = restore_backup(
            job, overwrite=True, auto_approve=True, restore_globals=True, storage=result["good"][1]
        )
        assert out["databases"] == [name] and "postgres" in out["globals"]["existing_roles"]
        assert pg_exec(db, "SELECT count(*), sum(id) FROM t", database=name) == [(300, 45150)]
        assert pg_exec(db, "SELECT count(*) FROM v", database=name) == [(200,)]
        assert age_keys["secret"] not in json.dumps(out)
    finally:
        pg_exec(db, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_encrypted_inc_files_chain_reads_its_encrypted_snapshot(
    age_keys: dict[str, str], s3_block: str, tmp_path: Path
) -> None:
    """inc_files + age: the next incremental decrypts the previous snapshot; a point restores."""
    import datetime as dt

    from flows.backup import scheduled_backup
    from flows.restore import restore_backup

    src = tmp_path / "src" / "data"
    src.mkdir(parents=True)
    (src / "a.txt").write_text("one\n")
    encryption = {"recipients": [age_keys["public"]], "identity_secret": age_keys["block"]}
    job = _job(f"enc-inc-{_uid()}", "inc_files", {"target": [str(src)]}, tmp_path / "b", s3_block)
    job["encryption"] = encryption
    first = scheduled_backup(job, now=dt.datetime(2026, 5, 1, tzinfo=dt.UTC))
    (src / "b.txt").write_text("two\n")
    second = scheduled_backup(job, now=dt.datetime(2026, 5, 2, tzinfo=dt.UTC))
    assert [p["name"] for p in second["parts"]] == ["files.tar.gz.age", "files.snar.gz.age"]
    assert second["parts"][0]["chain"] == {
        "full": first["backup_id"],
        "parent": first["backup_id"],
        "level": 1,
    }
    restore_backup(job, target_dir=str(tmp_path / "out"), storage=second["good"][1])
    assert sorted(p.name for p in (tmp_path / "out" / "data").iterdir()) == ["a.txt", "b.txt"]


def test_encrypted_redis_rdb_inventory_and_restore_decrypt(
    age_keys: dict[str, str], s3_block: str, tmp_path: Path
) -> None:
    """A Redis RDB part is encrypted like any other; its inventory (no verify) and the restore
    into a new instance's data dir decrypt it with the identity."""
    from blocks.redis import RedisServer
    from devservers.redis import LocalRedis
    from flows.backup import scheduled_backup
    from flows.restore import restore_backup

    server = LocalRedis(tmp_path / "redis").start()
    try:
        server.client(0).set("greeting", "hello")
        block = f"enc-redis-{_uid()}"
        RedisServer(host=server.host, port=server.port, password=SecretStr(server.password)).save(
            block, overwrite=True
        )
        encryption = {"recipients": [age_keys["public"]], "identity_secret": age_keys["block"]}
        job = _job(f"enc-redis-{_uid()}", "redis", {"connect": {"block": block}}, tmp_path / "b", s3_block)
        job["encryption"] = encryption
        result = scheduled_backup(job)
        assert result["parts"][0]["name"] == "dump.rdb.gz.age"
        assert result["inventory"]["redis"]["keys"] == {"db0": 1}  # read back through age
        done = restore_backup(job, target_dir=str(tmp_path / "new"), storage=result["good"][1])
        assert done["inventory"]["restored"]["redis"]["keys"] == {"db0": 1}
    finally:
        server.cleanup()
