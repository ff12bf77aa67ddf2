"""Redis source (issue 15): RDB snapshots through ``redis-cli --rdb`` to local + S3, verified by a
scratch ``redis-server``; restores into a new data dir or, when named, into a server.

Real servers: ``redis-server`` started by the fixture on a free port (requirepass), SeaweedFS S3,
the session's Prefect server.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from blocks.redis import RedisServer
from devservers.redis import LocalRedis
from flows.backup import scheduled_backup
from flows.restore import restore_backup
from planning.backup_config import parse_job
from planning.redis_inventory import keyspace_problems
from stateferry.errors import InputError, PreconditionFailed
from tasks.dumpers import DumpFailed
from tasks.redis_source import RdbInvalid, check_rdb, rdb_inventory, redis_rdb_producer
from tasks.restore_checks import RestoreIncomplete


@pytest.fixture(scope="module")
def redis_src(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedis]:
    server = LocalRedis(tmp_path_factory.mktemp("redis-src")).start()
    c0, c3 = server.client(0), server.client(3)
    c0.set("greeting", "hello")
    c0.set("blob", "\u00ff\u0000binary")
    c0.hset("user:1", mapping={"name": "ada", "lang": "en"})
    c0.rpush("queue", *[f"job{i}" for i in range(20)])
    c0.sadd("tags", "a", "b", "c")
    c0.zadd("scores", {"x": 1.5, "y": 2.5})
    c0.xadd("events", {"kind": "login"})
    c0.set("session", "tok", ex=3600)
    for i in range(50):
        c3.set(f"k{i}", "v" * i)
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def redis_empty(tmp_path: Path) -> Iterator[LocalRedis]:
    server = LocalRedis(tmp_path / "redis-target").start()
    try:
        yield server
    finally:
        server.cleanup()


def _block(server: LocalRedis, password: str | None = None) -> RedisServer:
    return RedisServer(host=server.host, port=server.port, password=SecretStr(password or server.password))


def _snapshot(server: LocalRedis) -> dict[int, dict[str, Any]]:
    """Every key of databases 0 and 3 with its type, value and whether it has a TTL."""
    out: dict[int, dict[str, Any]] = {}
    for db in (0, 3):
        c = server.client(db)
        keys: dict[str, Any] = {}
        for key in c.scan_iter():
            kind = c.type(key)
            value: Any = {
                "string": lambda k, c=c: c.get(k),
                "hash": lambda k, c=c: c.hgetall(k),
                "list": lambda k, c=c: c.lrange(k, 0, -1),
                "set": lambda k, c=c: sorted(c.smembers(k)),
                "zset": lambda k, c=c: c.zrange(k, 0, -1, withscores=True),
                "stream": lambda k, c=c: c.xrange(k),
            }[kind](key)
            keys[key] = (kind, value, c.ttl(key) > 0)
        out[db] = keys
    return out


def _job(name: str, block: str, local: Path, s3_block: str, **extra: Any) -> dict[str, Any]:
    return {
        "job": name,
        "type": "redis",
        "sources": [{"connect": {"block": block}}],
        "storages": [
            {"storage": "local", "name": "local", "backup_dir": str(local)},
            {"storage": "s3", "name": "s3", "object_store": s3_block, "bucket_name": "redis-backups"},
        ],
        **extra,
    }


def test_redis_backup_local_and_s3_verify_restore_into_data_dir_and_server(
    prefect_server: Any, redis_src: LocalRedis, redis_empty: LocalRedis, object_store_a: Any, tmp_path: Path
) -> None:
    """One run writes the RDB to local and S3 at once, a scratch server proves it loads, the
    manifest lists keys per database and no secret; restores from S3 give back every key."""
    uid = secrets.token_hex(3)
    _block(redis_src).save(f"redis-src-{uid}", overwrite=True)
    _block(redis_empty).save(f"redis-dst-{uid}", overwrite=True)
    object_store_a.save(f"s3-{uid}", overwrite=True)
    job = _job(f"redis-{uid}", f"redis-src-{uid}", tmp_path / "backups", f"s3-{uid}", verify=True)

    result = scheduled_backup(job)

    assert sorted(result["good"]) == ["local", "s3"] and not result["failed"]
    assert result["inventory"] == {"redis": {"keys": {"db0": 8, "db3": 50}, "expires": {"db0": 1, "db3": 0}}}
    assert result["verification"]["result"] == "ok"
    (manifest_path,) = (tmp_path / "backups" / job["job"]).glob("*/manifest.json")
    manifest_text = manifest_path.read_text()
    manifest = json.loads(manifest_text)
    assert [p["name"] for p in manifest["parts"]] == ["dump.rdb.gz"]
    assert manifest["source"]["keyspace_at_dump"]["keys"] == {"db0": 8, "db3": 50}
    assert redis_src.password not in manifest_text and redis_src.password not in repr(result)

    # a new instance's data dir, from the S3 copy: redis-server started on it holds every key
    data_dir = tmp_path / "new-instance"
    done = restore_backup(job, storage="s3", target_dir=str(data_dir))
    rdb = data_dir / "dump.rdb"
    assert stat.S_IMODE(rdb.stat().st_mode) == 0o600
    assert done["inventory"]["restored"]["redis"]["keys"] == {"db0": 8, "db3": 50}
    revived = LocalRedis(data_dir).start()
    try:
        assert _snapshot(revived) == _snapshot(redis_src)
    finally:
        revived.stop()

    # a data dir that is not empty is refused (a new instance only, unless overwrite)
    with pytest.raises(PreconditionFailed, match="not empty"):
        restore_backup(job, target_dir=str(data_dir))

    # into a running server, named explicitly: DUMP/RESTORE with TTLs
    done = restore_backup(job, storage="s3", target_block=f"redis-dst-{uid}")
    assert done["keys_copied"] == 58
    assert _snapshot(redis_empty) == _snapshot(redis_src)
    assert 0 < redis_empty.client(0).ttl("session") <= 3600
    # its databases hold keys now: refused without overwrite, nothing changed
    redis_empty.client(0).set("greeting", "changed")
    with pytest.raises(PreconditionFailed, match="hold keys"):
        restore_backup(job, target_block=f"redis-dst-{uid}")
    assert redis_empty.client(0).get("greeting") == "changed"
    restore_backup(job, target_block=f"redis-dst-{uid}", overwrite=True, auto_approve=True)
    assert redis_empty.client(0).get("greeting") == "hello"

    with pytest.raises(InputError, match="target_dir"):  # neither target: never the source implicitly
        restore_backup(job, dry_run=True)


def test_redis_wrong_password_error_without_the_secret(
    prefect_server: Any, redis_src: LocalRedis, tmp_path: Path
) -> None:
    """A wrong password fails the preflight naming the field; neither password is in the message."""
    uid = secrets.token_hex(3)
    wrong = "Wrong-" + secrets.token_hex(8)
    _block(redis_src, wrong).save(f"redis-bad-{uid}", overwrite=True)
    job = {
        "job": f"redis-bad-{uid}",
        "type": "redis",
        "sources": [{"connect": {"block": f"redis-bad-{uid}"}}],
        "storages": [{"storage": "local", "backup_dir": str(tmp_path / "b")}],
    }
    with pytest.raises(InputError) as caught:
        scheduled_backup(job)
    text = str(caught.value)
    assert caught.value.field == "sources[0].connect"
    assert "refused the login" in text and f"redis-bad-{uid}" in text
    assert wrong not in text and redis_src.password not in text
    assert not any((tmp_path / "b").rglob("*.gz"))  # nothing was written

    # the dump tool itself (REDISCLI_AUTH, never argv): a refused login fails the dump, unechoed
    sink = io.BytesIO()
    block = _block(redis_src, wrong)
    with pytest.raises(DumpFailed) as dump_err:
        redis_rdb_producer(block, lambda s: s.replace(wrong, "***"))(sink)
    assert wrong not in str(dump_err.value) and sink.getvalue() == b""


def test_redis_rdb_truncated_or_corrupt_is_refused(redis_src: LocalRedis, tmp_path: Path) -> None:
    """The producer's RDB loads with the right counts; a cut or flipped copy does not."""
    sink = io.BytesIO()
    facts = redis_rdb_producer(_block(redis_src), lambda s: s)(sink)
    rdb = sink.getvalue()
    assert rdb.startswith(b"REDIS") and facts["bytes"] == len(rdb) and facts["rdb_version"] >= 9
    inventory = rdb_inventory(iter([rdb]))
    assert inventory["keys"] == {"db0": 8, "db3": 50} and inventory["rdb"]["keys"] == 58
    # a disk-based transfer (no end mark after the RDB) gives the same bytes' worth of keys
    admin = redis_src.client()
    admin.config_set("repl-diskless-sync", "no")
    try:
        disk = io.BytesIO()
        redis_rdb_producer(_block(redis_src), lambda s: s)(disk)
    finally:
        admin.config_set("repl-diskless-sync", "yes")
    assert rdb_inventory(iter([disk.getvalue()]))["keys"] == inventory["keys"]

    cut = tmp_path / "cut.rdb"
    cut.write_bytes(rdb[: len(rdb) // 2])
    with pytest.raises(RdbInvalid):
        check_rdb(cut)
    flipped = bytearray(rdb)
    flipped[len(rdb) // 2] ^= 0xFF
    with pytest.raises(RdbInvalid):
        rdb_inventory(iter([bytes(flipped)]))


def test_redis_restore_refuses_rdb_that_differs_from_manifest(
    prefect_server: Any, redis_src: LocalRedis, tmp_path: Path
) -> None:
    """A manifest whose inventory does not match the RDB stops the restore before anything is
    written (the part's sha256 is intact; only the key counts disagree)."""
    uid = secrets.token_hex(3)
    _block(redis_src).save(f"redis-m-{uid}", overwrite=True)
    job: dict[str, Any] = {
        "job": f"redis-m-{uid}",
        "type": "redis",
        "sources": [{"connect": {"block": f"redis-m-{uid}"}}],
        "storages": [{"storage": "local", "backup_dir": str(tmp_path / "b")}],
    }
    result = scheduled_backup(job)  # no verify: the inventory still comes from the RDB
    assert result["inventory"]["redis"]["keys"] == {"db0": 8, "db3": 50}
    (path,) = (tmp_path / "b" / job["job"]).glob("*/manifest.json")
    manifest = json.loads(path.read_text())
    manifest["inventory"]["redis"]["keys"]["db3"] = 51
    path.write_text(json.dumps(manifest))
    target = tmp_path / "data"
    with pytest.raises(RestoreIncomplete, match="db3: 50 keys without a TTL restored, 51 in the backup"):
        restore_backup(job, target_dir=str(target))
    assert not target.exists()


def test_redis_block_and_job_refuse_injection_and_secrets() -> None:
    """Host, port and ACL user never become options; a password in the job is refused."""
    for bad in ("-h", "127.0.0.1 --rdb /etc/x", "--user=x", ""):
        with pytest.raises(ValueError, match="host"):
            RedisServer(host=bad, password=SecretStr("x"))
    with pytest.raises(ValueError, match="port"):
        RedisServer(host="127.0.0.1", port=0)
    with pytest.raises(ValueError, match="username"):
        RedisServer(host="127.0.0.1", username="-a")
    with pytest.raises(ValueError, match="password"):
        RedisServer(host="127.0.0.1", password=SecretStr("a\nb"))
    with pytest.raises(InputError) as caught:
        parse_job(
            {
                "job": "r",
                "type": "redis",
                "sources": [{"connect": {"block": "x", "db_password": "hunter2"}}],
                "storages": [{"storage": "local", "backup_dir": "/b"}],
            }
        )
    assert caught.value.field == "sources[0].connect.db_password" and "hunter2" not in str(caught.value)
    job = parse_job(
        {
            "job": "r",
            "type": "redis",
            "sources": [{"connect": {"block": "x"}}],
            "storages": [{"storage": "local", "backup_dir": "/b"}],
        }
    )
    assert job.engine == "redis"


@pytest.mark.parametrize(
    ("want", "got", "problems"),
    [
        ({"keys": {"db0": 5}, "expires": {"db0": 2}}, {"keys": {"db0": 5}, "expires": {"db0": 2}}, []),
        # keys with a TTL may expire between the snapshot and the restore
        ({"keys": {"db0": 5}, "expires": {"db0": 2}}, {"keys": {"db0": 3}, "expires": {"db0": 0}}, []),
        (
            {"keys": {"db0": 5}, "expires": {"db0": 0}},
            {"keys": {"db0": 4}, "expires": {"db0": 0}},
            ["redis db0: 4 keys without a TTL restored, 5 in the backup"],
        ),
        (
            {"keys": {"db0": 1}, "expires": {}},
            {"keys": {"db0": 1, "db9": 2}, "expires": {"db9": 2}},
            ["redis db9: 2 keys with a TTL restored, at most 0 in the backup"],
        ),
        (
            {"keys": {"db2": 3}, "expires": {}},
            {"keys": {}, "expires": {}},
            ["redis db2: 0 keys without a TTL restored, 3 in the backup"],
        ),
    ],
)
def test_redis_keyspace_problems(want: dict[str, Any], got: dict[str, Any], problems: list[str]) -> None:
    assert keyspace_problems("redis", want, got) == problems


def test_redis_cli_gets_password_from_env_only(redis_src: LocalRedis) -> None:
    """The argv holds host, port and flags only; the password is in REDISCLI_AUTH."""
    from tasks.redis_source import redis_cli_argv, redis_cli_env

    block = RedisServer(host="127.0.0.1", port=redis_src.port, username="backup", password=SecretStr("pw-9"))
    argv = redis_cli_argv(block)
    assert argv[1:] == ["-h", "127.0.0.1", "-p", str(redis_src.port), "--user", "backup",
                        "--no-auth-warning", "--rdb", "-"]  # fmt: skip
    assert "pw-9" not in " ".join(argv) and redis_cli_env(block)["REDISCLI_AUTH"] == "pw-9"
    assert "REDISCLI_AUTH" not in redis_cli_env(RedisServer(host="127.0.0.1"))
    assert os.environ.get("REDISCLI_AUTH") is None
