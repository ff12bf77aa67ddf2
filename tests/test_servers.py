"""Each real server started by the fixtures does a real round trip."""

from __future__ import annotations

import io
import json
import subprocess
import urllib.request
from collections.abc import Callable

import psycopg
import pymysql
from minio import Minio

from devservers.etcd import LocalEtcd
from devservers.mariadb import LocalMariaDB
from devservers.postgres import LocalPostgres
from devservers.prefect_server import LocalPrefectServer
from devservers.s3 import SeaweedS3


def test_etcd_three_members_round_trip(etcd3: LocalEtcd) -> None:
    env = {"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"}
    eps = ",".join(etcd3.endpoints)
    subprocess.run(["etcdctl", f"--endpoints={eps}", "put", "/t/servers", "ok"], check=True, env=env)
    out = subprocess.run(
        ["etcdctl", f"--endpoints={etcd3.endpoints[2]}", "get", "/t/servers", "--print-value-only"],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert out == "ok"
    members = subprocess.run(
        ["etcdctl", f"--endpoints={eps}", "member", "list", "-w", "json"],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    ).stdout
    assert len(json.loads(members)["members"]) == 3


def test_etcd_member_stop_and_start(etcd_factory: Callable[[int], LocalEtcd]) -> None:
    cluster = etcd_factory(3)
    cluster.stop_member(0)
    assert not cluster.members[0].healthy()
    assert cluster.members[1].healthy()  # quorum of 2/3 keeps serving
    cluster.start_member(0)
    assert cluster.members[0].healthy()


def _minio(s3: SeaweedS3) -> Minio:
    return Minio(
        s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key, secure=False, region=s3.region
    )


def test_two_independent_s3_stores(s3_a: SeaweedS3, s3_b: SeaweedS3) -> None:
    a, b = _minio(s3_a), _minio(s3_b)
    a.make_bucket("servers-roundtrip")
    a.put_object("servers-roundtrip", "k", io.BytesIO(b"hello"), 5)
    assert a.get_object("servers-roundtrip", "k").read() == b"hello"
    assert not b.bucket_exists("servers-roundtrip")
    assert s3_a.endpoint != s3_b.endpoint
    a.remove_object("servers-roundtrip", "k")
    a.remove_bucket("servers-roundtrip")


def test_mariadb_round_trip(mariadb: LocalMariaDB) -> None:
    assert mariadb.port != 3306
    conn = pymysql.connect(host=mariadb.host, port=mariadb.port, user=mariadb.user, password=mariadb.password)
    with conn.cursor() as cur:
        cur.execute("CREATE DATABASE IF NOT EXISTS servers_rt")
        cur.execute("CREATE TABLE IF NOT EXISTS servers_rt.t (id INT PRIMARY KEY, v VARBINARY(16))")
        cur.execute("REPLACE INTO servers_rt.t VALUES (1, 0x00ff)")
        cur.execute("SELECT v FROM servers_rt.t WHERE id = 1")
        assert cur.fetchone() == (b"\x00\xff",)
        cur.execute("DROP DATABASE servers_rt")
    conn.close()


def test_postgres_round_trip(postgres: LocalPostgres) -> None:
    assert postgres.port != 5432
    with psycopg.connect(
        host=postgres.host,
        port=postgres.port,
        user=postgres.user,
        password=postgres.password,
        dbname="postgres",
        autocommit=True,
    ) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS servers_rt (id int primary key, v bytea)")
        conn.execute("INSERT INTO servers_rt VALUES (1, '\\x00ff'::bytea) ON CONFLICT DO NOTHING")
        assert conn.execute("SELECT v FROM servers_rt").fetchone() == (b"\x00\xff",)
        conn.execute("DROP TABLE servers_rt")


def test_prefect_server_runs_a_flow(prefect_server: LocalPrefectServer) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client

    @flow(name="servers-roundtrip")
    def hello() -> str:
        return "hi"

    state = hello(return_state=True)
    assert state.is_completed()
    with get_client(sync_client=True) as client:
        assert state.state_details.flow_run_id is not None
        run = client.read_flow_run(state.state_details.flow_run_id)
        assert run.state is not None and run.state.is_completed()
    with urllib.request.urlopen(prefect_server.ui_url, timeout=5) as resp:
        assert resp.status == 200
