"""Backup / restore flows against real MariaDB, PostgreSQL, etcd, S3 and Prefect servers."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from backup.helpers import (
    local_manifests,
    make_tree,
    mysql_block,
    mysql_exec,
    pg_block,
    pg_exec,
    s3_keys,
    sha256_file,
)
from pydantic import SecretStr

from blocks.object_store import ObjectStore
from flows.backup import BackupTargetsFailed, scheduled_backup
from flows.restore import restore_backup
from stateferry.errors import InputError, PreconditionFailed
from tasks.dumpers import tree_digest

pytestmark = pytest.mark.timeout(300)


def _uid() -> str:
    return secrets.token_hex(3)


@pytest.fixture
def s3_block_name(prefect_server: Any, object_store_a: ObjectStore) -> str:
    name = f"bk-s3-{_uid()}"
    object_store_a.save(name, overwrite=True)
    return name


def _job(
    name: str, kind: str, source: dict[str, Any], local: Path, s3_block: str | None, **extra: Any
) -> dict[str, Any]:
    storages: list[dict[str, Any]] = [
        {"storage": "local", "backup_dir": str(local), "store": {"days": 6, "weeks": 4, "months": 6}}
    ]
    if s3_block:
        storages.append(
            {
                "storage": "s3",
                "object_store": s3_block,
                "bucket_name": "backups",
                "backup_dir": "/t",
                "store": {"days": 2, "weeks": 1, "months": 1},
            }
        )
    return {"job": name, "type": kind, "sources": [source], "storages": storages, **extra}


def _progress_of(job: str) -> float | None:
    """The final value of the job's dump progress artifact on the server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterType

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(type=ArtifactFilterType(any_=["progress"]))
        )
    values = [a.data for a in arts if a.description and f"backup {job}:" in a.description]
    return float(values[-1]) if values else None  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# MariaDB


MYSQL_SCHEMA = [
    "CREATE TABLE blobs (id INT PRIMARY KEY, data LONGBLOB, note VARCHAR(100)) ENGINE=InnoDB",
    "CREATE TABLE items (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(50), price DECIMAL(10,2))",
    "INSERT INTO items (name, price) VALUES ('a', 1.50), ('b''quote', 2.00), ('c\\\\back', NULL)",
    "CREATE VIEW cheap AS SELECT id, name FROM items WHERE price < 2",
    "CREATE PROCEDURE add_item(IN n VARCHAR(50)) INSERT INTO items (name, price) VALUES (n, 0)",
    "CREATE FUNCTION twice(x INT) RETURNS INT DETERMINISTIC RETURN x * 2",
]


def _mysql_fill(db: Any, name: str) -> None:
    mysql_exec(db, f"DROP DATABASE IF EXISTS `{name}`", f"CREATE DATABASE `{name}`")
    mysql_exec(db, *MYSQL_SCHEMA, database=name)
    conn = db.connect(name)
    try:
        with conn.cursor() as cur:
            payloads = [bytes(range(256)) * 4, b"\x00'\"\\\n\r\x1a" * 100, secrets.token_bytes(200_000), b""]
            for i, p in enumerate(payloads):
                cur.execute("INSERT INTO blobs VALUES (%s, %s, %s)", (i, p, f"row {i}"))
    finally:
        conn.close()


def _mysql_snapshot(db: Any, name: str) -> dict[str, Any]:
    return {
        "blobs": mysql_exec(db, "SELECT id, data, note FROM blobs ORDER BY id", database=name),
        "items": mysql_exec(db, "SELECT * FROM items ORDER BY id", database=name),
        "view": mysql_exec(db, "SELECT * FROM cheap ORDER BY id", database=name),
        "func": mysql_exec(db, "SELECT twice(21)", database=name),
        "routines": mysql_exec(
            db,
            "SELECT routine_type, routine_name FROM information_schema.routines "
            f"WHERE routine_schema = '{name}' ORDER BY 2",
        ),
    }


def test_mysql_round_trip_local_and_s3(
    prefect_server: Any, mariadb: Any, object_store_a: ObjectStore, s3_block_name: str, tmp_path: Path
) -> None:
    db = mysql_block(mariadb)
    block = f"bk-maria-{_uid()}"
    db.save(block, overwrite=True)
    name = f"shop_{_uid()}"
    _mysql_fill(db, name)
    before = _mysql_snapshot(db, name)
    job = _job(
        f"maria-{_uid()}",
        "mariadb",
        {"connect": {"block": block}, "target": [name]},
        tmp_path,
        s3_block_name,
        verify=True,
    )

    result = scheduled_backup(job)

    assert result["failed"] == {} and len(result["good"]) == 2
    assert result["verification"]["result"] == "ok"
    assert result["verification"]["checks"][name]["tables"] == {"blobs": 4, "items": 3}
    (manifest,) = local_manifests(tmp_path, job["job"]).values()
    assert manifest["status"] == "good" and manifest["parts"][0]["databases"] == [name]
    part = tmp_path / job["job"] / result["backup_id"] / "mysql.sql.gz"
    assert sha256_file(part) == manifest["sha256"] == result["sha256"]
    keys = s3_keys(object_store_a, "backups", f"t/{job['job']}/")
    assert keys == [
        f"t/{job['job']}/{result['backup_id']}/manifest.json",
        f"t/{job['job']}/{result['backup_id']}/mysql.sql.gz",
    ]
    assert db.password.get_secret_value() not in json.dumps(manifest)
    assert _progress_of(job["job"]) == 100.0

    # drop, then restore from S3 (sha256 checked) and compare exactly
    mysql_exec(db, f"DROP DATABASE `{name}`")
    s3_label = result["good"][1]
    out = restore_backup(job, storage=s3_label)
    assert out["databases"] == [name]
    assert _mysql_snapshot(db, name) == before

    # restoring over an existing database needs overwrite; under another name works from local
    with pytest.raises(Exception, match="overwrite"):
        restore_backup(job)
    other = f"{name}_copy"
    restore_backup(job, backup=result["backup_id"], target_database=other)
    copy = _mysql_snapshot(db, other)
    assert (
        copy["blobs"] == before["blobs"]
        and copy["items"] == before["items"]
        and copy["view"] == before["view"]
    )
    assert [r[1] for r in copy["routines"]] == ["add_item", "twice"]
    mysql_exec(db, f"DROP DATABASE `{name}`", f"DROP DATABASE `{other}`")


# --------------------------------------------------------------------------------------------------
# PostgreSQL


@pytest.mark.parametrize("fmt", ["custom", "plain"])
def test_postgres_round_trip(
    prefect_server: Any, postgres: Any, s3_block_name: str, tmp_path: Path, fmt: str
) -> None:
    db = pg_block(postgres)
    block = f"bk-pg-{_uid()}"
    db.save(block, overwrite=True)
    name, second = f"app_{_uid()}", f"aux_{_uid()}"
    for d in (name, second):
        pg_exec(db, f'DROP DATABASE IF EXISTS "{d}"', f'CREATE DATABASE "{d}"')
    pg_exec(
        db,
        "CREATE TABLE files (id int PRIMARY KEY, data bytea, meta jsonb)",
        "INSERT INTO files SELECT g, decode(md5(g::text) || '00ff27', 'hex'), jsonb_build_object('g', g) "
        "FROM generate_series(1, 500) g",
        "INSERT INTO files VALUES (0, '\\x00deadbeef'::bytea, NULL)",
        "CREATE VIEW big AS SELECT id FROM files WHERE id > 250",
        "CREATE FUNCTION twice(x int) RETURNS int LANGUAGE sql AS 'SELECT x * 2'",
        database=name,
    )
    pg_exec(db, "CREATE TABLE t (x text)", "INSERT INTO t VALUES ('only row')", database=second)

    def snap(dbname: str) -> Any:
        return (
            pg_exec(db, "SELECT id, data, meta FROM files ORDER BY id", database=dbname),
            pg_exec(db, "SELECT count(*) FROM big", database=dbname),
            pg_exec(db, "SELECT twice(21)", database=dbname),
        )

    before = snap(name)
    job = _job(
        f"pg-{fmt}-{_uid()}",
        "postgresql",
        {"connect": {"block": block}, "target": [name, second], "format": fmt},
        tmp_path,
        s3_block_name,
        verify=True,
    )
    result = scheduled_backup(job)
    assert result["failed"] == {}
    assert result["verification"]["checks"][name]["tables"] == {"public.files": 501}
    assert [p.get("database") for p in result["parts"]] == [name, second, None]
    assert result["parts"][2]["name"] == "globals.pgdumpall.gz"  # roles next to the dumps (issue 18)
    pg_exec(db, f'DROP DATABASE "{name}"', f'DROP DATABASE "{second}"')
    out = restore_backup(job, storage=result["good"][1])
    assert out["databases"] == [name, second]
    assert snap(name) == before
    assert pg_exec(db, "SELECT x FROM t", database=second) == [("only row",)]
    # a new name fits a single database only: refused before anything is touched
    with pytest.raises(InputError, match="target_database"):
        restore_backup(job, target_database=f"{name}_copy")
    with pytest.raises(PreconditionFailed, match="overwrite"):
        restore_backup(job)
    out = restore_backup(job, overwrite=True, auto_approve=True, restore_globals=True)
    assert snap(name) == before
    assert "postgres" in out["globals"]["existing_roles"]  # idempotent: existing roles are kept
    assert out["inventory"]["restored"][name]["tables"] == {"public.files": 501}
    pg_exec(db, f'DROP DATABASE "{name}" WITH (FORCE)', f'DROP DATABASE "{second}" WITH (FORCE)')


# --------------------------------------------------------------------------------------------------
# files


def test_files_round_trip_with_excludes_and_dry_run(
    prefect_server: Any, s3_block_name: str, tmp_path: Path
) -> None:
    src = tmp_path / "src" / "www"
    src.mkdir(parents=True)
    make_tree(src)
    job = _job(
        f"files-{_uid()}",
        "desc_files",
        {"target": [str(src)], "excludes": ["*.tmp", "cache"]},
        tmp_path / "backups",
        s3_block_name,
        verify=True,
    )
    result = scheduled_backup(job)
    assert result["failed"] == {}
    part = result["parts"][0]
    assert part["file_count"] == 3  # a.txt, b.bin, top.dat (scratch.tmp and cache/ excluded)

    plan = restore_backup(job, target_dir=str(tmp_path / "out"), dry_run=True, storage=result["good"][1])
    assert plan["dry_run"] and not (tmp_path / "out").exists()
    assert any("extract" in a for a in plan["actions"])

    restore_backup(job, target_dir=str(tmp_path / "out"), storage=result["good"][1])
    restored = tmp_path / "out" / "www"
    assert (restored / "docs" / "deep" / "b.bin").read_bytes() == (
        src / "docs" / "deep" / "b.bin"
    ).read_bytes()
    assert (restored / "link").is_symlink() and (restored / "empty").is_dir()
    assert not (restored / "scratch.tmp").exists() and not (restored / "cache").exists()
    assert tree_digest(tmp_path / "out")["tree_sha256"] == part["tree_sha256"]

    # a corrupt local copy is refused (sha256), nothing is extracted
    local = tmp_path / "backups" / job["job"] / result["backup_id"] / "files.tar.gz"
    data = bytearray(local.read_bytes())
    data[len(data) // 2] ^= 0xFF
    local.write_bytes(bytes(data))
    with pytest.raises(Exception, match="corrupt"):
        restore_backup(job, target_dir=str(tmp_path / "out2"))
    assert not (tmp_path / "out2").exists()


def test_zstd_files_round_trip_on_local_and_s3(
    prefect_server: Any, s3_block_name: str, tmp_path: Path
) -> None:
    src = tmp_path / "src" / "www"
    src.mkdir(parents=True)
    make_tree(src)
    job = _job(f"zst-{_uid()}", "desc_files", {"target": [str(src)]}, tmp_path / "backups", s3_block_name)
    job.update(compression="zstd", compression_level=6)
    result = scheduled_backup(job)
    assert result["failed"] == {} and result["parts"][0]["name"] == "files.tar.zst"
    stored = tmp_path / "backups" / job["job"] / result["backup_id"] / "files.tar.zst"
    assert stored.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"  # a zstd frame
    manifest = json.loads(stored.with_name("manifest.json").read_text())
    assert manifest["compression"] == "zstd"
    restore_backup(job, target_dir=str(tmp_path / "out"), storage=result["good"][1])  # from S3
    assert tree_digest(tmp_path / "out")["tree_sha256"] == result["parts"][0]["tree_sha256"]


# --------------------------------------------------------------------------------------------------
# etcd


def test_etcd_snapshot_round_trip(prefect_server: Any, etcd3: Any, tmp_path: Path) -> None:
    from pydantic import SecretStr as _S  # noqa: F401 - keep pydantic import local

    from blocks.etcd import EtcdCluster
    from devservers.ports import free_port

    prefix = f"/backup-test/{_uid()}/"
    env = {"ETCDCTL_API": "3"}
    for i in range(20):
        subprocess.run(
            ["etcdctl", f"--endpoints={','.join(etcd3.client_urls)}", "put", f"{prefix}k{i}", f"value-{i}"],
            check=True,
            capture_output=True,
            env=env,
        )
    block = f"bk-etcd-{_uid()}"
    EtcdCluster(endpoints=etcd3.endpoints).save(block, overwrite=True)
    job = _job(f"etcd-{_uid()}", "etcd", {"connect": {"block": block}}, tmp_path / "b", None, verify=True)
    result = scheduled_backup(job)
    assert result["failed"] == {} and result["verification"]["result"] == "ok"

    peer, client = free_port(), free_port()
    data_dir = tmp_path / "restored.etcd"
    restore_backup(job, target_dir=str(data_dir), etcd_name="r1", etcd_peer_url=f"http://127.0.0.1:{peer}")
    proc = subprocess.Popen(
        [
            "etcd",
            "--name",
            "r1",
            "--data-dir",
            str(data_dir),
            f"--listen-client-urls=http://127.0.0.1:{client}",
            f"--advertise-client-urls=http://127.0.0.1:{client}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        out = None
        while time.monotonic() < deadline:
            out = subprocess.run(
                [
                    "etcdctl",
                    f"--endpoints=http://127.0.0.1:{client}",
                    "get",
                    "--prefix",
                    prefix,
                    "--print-value-only",
                ],
                capture_output=True,
                text=True,
                env=env,
            )
            if out.returncode == 0 and out.stdout.strip():
                break
            time.sleep(0.3)
        assert out is not None
        assert sorted(out.stdout.split()) == sorted(f"value-{i}" for i in range(20))
    finally:
        proc.terminate()
        proc.wait(timeout=20)


# --------------------------------------------------------------------------------------------------
# faults


def test_s3_down_local_still_good(prefect_server: Any, tmp_path: Path) -> None:
    from devservers.ports import free_port

    dead = ObjectStore(endpoint=f"127.0.0.1:{free_port()}", access_key="k", secret_key=SecretStr("s" * 20))
    name = f"bk-dead-{_uid()}"
    dead.save(name, overwrite=True)
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"payload" * 1000)
    job = _job(f"down-{_uid()}", "files", {"target": [str(src)]}, tmp_path / "b", name)
    state = scheduled_backup(job, return_state=True)
    assert state.is_failed()
    with pytest.raises(BackupTargetsFailed) as info:
        state.result()
    assert list(info.value.failed) == [f"s3:{name}/backups/t"]
    assert info.value.good == [f"local:{tmp_path / 'b'}"]
    (manifest,) = local_manifests(tmp_path / "b", job["job"]).values()
    assert manifest["status"] == "good"
    restore_backup(job, target_dir=str(tmp_path / "out"))
    assert (tmp_path / "out" / "src" / "f").read_bytes() == b"payload" * 1000
    # the tasks' own lines reach the run's log in the UI (Prefect's run logger, not a module logger)
    logs = _run_log(state.state_details.flow_run_id)
    assert "streaming files.tar.gz to local:" in logs, logs[-2000:]


def _run_log(flow_run_id: Any) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    deadline = time.monotonic() + 30
    text = ""
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as c:
            logs = c.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        text = "\n".join(x.message for x in logs)
        if "streaming" in text:
            break
        time.sleep(0.5)
    return text


def test_rotation_per_storage_after_success(
    prefect_server: Any, object_store_a: ObjectStore, s3_block_name: str, tmp_path: Path
) -> None:
    """Each storage applies its own retention after the new backup is published (simulated days)."""
    import datetime as dt

    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    name = f"rot-{_uid()}"
    job = {
        "job": name,
        "type": "files",
        "sources": [{"target": [str(src)]}],
        "storages": [
            {
                "storage": "local",
                "backup_dir": str(tmp_path / "b"),
                "store": {"days": 1, "weeks": 0, "months": 0},
            },
            {
                "storage": "s3",
                "object_store": s3_block_name,
                "bucket_name": "backups",
                "backup_dir": "rot",
                "store": {"days": 1, "weeks": 0, "months": 1},
            },
        ],
    }
    ids = []
    for day in (1, 2, 3):
        res = scheduled_backup(job, now=dt.datetime(2025, 3, day, 1, 0, tzinfo=dt.UTC))
        ids.append(res["backup_id"])
    assert sorted(local_manifests(tmp_path / "b", name)) == [ids[2]]
    s3_ids = sorted({k.split("/")[2] for k in s3_keys(object_store_a, "backups", f"rot/{name}/")})
    assert s3_ids == sorted([ids[0], ids[2]])  # March 1st is the S3 storage's monthly copy
    assert "monthly copy" in res["retention"][res["good"][1]]
    assert res["deleted"][res["good"][0]] == [ids[1]]
    # pick by time: the newest backup taken at or before the given moment, on the chosen storage
    plan = restore_backup(
        job,
        backup="2025-03-02T12:00:00Z",
        storage=res["good"][1],
        target_dir=str(tmp_path / "r"),
        dry_run=True,
    )
    assert plan["backup_id"] == ids[0] and plan["dry_run"]
    plan = restore_backup(job, backup="latest", target_dir=str(tmp_path / "r"), dry_run=True)
    assert plan["backup_id"] == ids[2] and plan["storage"] == res["good"][0]
    assert not (tmp_path / "r").exists()


def test_overwrite_restore_waits_for_approval(prefect_server: Any, tmp_path: Path) -> None:
    """An overwriting restore pauses with its plan; rejected it changes nothing, approved it restores."""
    import threading

    from devservers.prefect_runs import find_flow_run, resume_with_input
    from tasks.approvals import ApprovalRejected

    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("from the backup")
    job = _job(f"appr-{_uid()}", "files", {"target": [str(src)]}, tmp_path / "b", None)
    scheduled_backup(job)
    target = tmp_path / "live"
    (target / "src").mkdir(parents=True)
    (target / "src" / "f").write_text("live data")

    def run_restore(box: dict[str, Any]) -> threading.Thread:
        def go() -> None:
            box["state"] = restore_backup(job, target_dir=str(target), overwrite=True, return_state=True)

        thread = threading.Thread(target=go, daemon=True)
        thread.start()
        return thread

    rejected: dict[str, Any] = {}
    thread = run_restore(rejected)
    run_id = find_flow_run("restore_backup")
    assert resume_with_input(run_id, {"approved": False, "comment": "not during business hours"}) == "ACCEPT"
    thread.join(60)
    assert rejected["state"].is_failed()
    with pytest.raises(ApprovalRejected):
        rejected["state"].result()
    assert (target / "src" / "f").read_text() == "live data"

    approved: dict[str, Any] = {}
    thread = run_restore(approved)
    run_id = find_flow_run("restore_backup")
    assert resume_with_input(run_id, {"approved": True, "comment": "go"}) == "ACCEPT"
    thread.join(60)
    assert approved["state"].is_completed()
    assert (target / "src" / "f").read_text() == "from the backup"
