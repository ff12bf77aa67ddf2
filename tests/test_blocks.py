"""Blocks: validation that names the field and the fix, secrets that never leak, clients that work."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import httpx
import kubernetes.client
import pydantic
import pytest
import yaml
from pydantic import SecretStr

from blocks import Database, EtcdCluster, KubeCluster, ObjectStore
from devservers.mariadb import LocalMariaDB
from devservers.postgres import LocalPostgres
from devservers.prefect_server import LocalPrefectServer
from devservers.s3 import SeaweedS3
from stateferry.commands.blocks import register_blocks
from stateferry.errors import PermanentError

SECRET = "s3cr3t-" + "Q" * 20
TOKEN = "kube-token-" + "Z" * 24
PEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"


def kubeconfig(
    server: str = "https://127.0.0.1:6443", contexts: tuple[str, ...] = ("source", "target")
) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": c, "cluster": {"server": server}} for c in contexts],
            "users": [{"name": f"{c}-admin", "user": {"token": TOKEN}} for c in contexts],
            "contexts": [{"name": c, "context": {"cluster": c, "user": f"{c}-admin"}} for c in contexts],
            "current-context": contexts[0],
        }
    )


S3_OK: dict[str, Any] = {"endpoint": "127.0.0.1:8333", "access_key": "ak", "secret_key": SECRET}
DB_OK: dict[str, Any] = {"engine": "mysql", "host": "127.0.0.1", "user": "root", "password": SECRET}

BAD_INPUT: list[tuple[str, type[Any], dict[str, Any], str, str]] = [
    # (case, block, kwargs, field named, fix fragment)
    ("s3 malformed endpoint", ObjectStore, {**S3_OK, "endpoint": "http://:8333/x"}, "endpoint", "host:port"),
    (
        "s3 endpoint with path",
        ObjectStore,
        {**S3_OK, "endpoint": "http://h:1/bucket"},
        "endpoint",
        "host:port",
    ),
    ("s3 bad scheme", ObjectStore, {**S3_OK, "endpoint": "ftp://h:21"}, "endpoint", "http(s)://"),
    ("s3 port out of range", ObjectStore, {**S3_OK, "endpoint": "h:70000"}, "endpoint", "65535"),
    ("s3 bad host", ObjectStore, {**S3_OK, "endpoint": "bad_host!:1"}, "endpoint", "host"),
    ("s3 missing secret", ObjectStore, {"endpoint": "h:1", "access_key": "ak"}, "secret_key", "required"),
    ("s3 empty secret", ObjectStore, {**S3_OK, "secret_key": " "}, "secret_key", "secret access key"),
    ("s3 empty access key", ObjectStore, {**S3_OK, "access_key": ""}, "access_key", "access key id"),
    (
        "s3 scheme vs secure",
        ObjectStore,
        {**S3_OK, "endpoint": "https://h:1", "secure": False},
        "secure",
        "set secure to match",
    ),
    ("s3 ca without tls", ObjectStore, {**S3_OK, "ca_bundle": PEM}, "ca_bundle", "secure=True"),
    (
        "s3 ca not pem",
        ObjectStore,
        {**S3_OK, "secure": True, "ca_bundle": SECRET},
        "ca_bundle",
        "BEGIN CERTIFICATE",
    ),
    ("db unknown engine", Database, {**DB_OK, "engine": "oracle"}, "engine", '"postgres"'),
    ("db port out of range", Database, {**DB_OK, "port": 0}, "port", "between 1 and 65535"),
    (
        "db missing password",
        Database,
        {k: v for k, v in DB_OK.items() if k != "password"},
        "password",
        "required",
    ),
    ("db bad host", Database, {**DB_OK, "host": "a b"}, "host", "host name"),
    ("db bad database name", Database, {**DB_OK, "databases": ["ok", "no;drop"]}, "databases", "letters"),
    ("etcd no endpoints", EtcdCluster, {"endpoints": []}, "endpoints", "at least one"),
    ("etcd malformed endpoint", EtcdCluster, {"endpoints": ["h:port"]}, "endpoints", "host:port"),
    ("etcd no port", EtcdCluster, {"endpoints": ["10.0.0.1"]}, "endpoints", ":2379"),
    ("etcd https without ca", EtcdCluster, {"endpoints": ["https://e:2379"]}, "ca_cert", "etcd CA"),
    (
        "etcd mixed schemes",
        EtcdCluster,
        {"endpoints": ["https://a:2379", "http://b:2379"], "ca_cert": PEM},
        "endpoints",
        "one scheme",
    ),
    (
        "etcd user without password",
        EtcdCluster,
        {"endpoints": ["a:2379"], "username": "root"},
        "password",
        "both",
    ),
    (
        "etcd cert without key",
        EtcdCluster,
        {"endpoints": ["https://a:2379"], "ca_cert": PEM, "client_cert": PEM},
        "client_key",
        "both",
    ),
    ("kube nothing", KubeCluster, {}, "kubeconfig", "in_cluster=True"),
    (
        "kube not yaml",
        KubeCluster,
        {"kubeconfig": f"{SECRET}: [unclosed"},
        "kubeconfig",
        "kubectl config view",
    ),
    ("kube not a kubeconfig", KubeCluster, {"kubeconfig": f"token: {SECRET}"}, "kubeconfig", "clusters"),
    (
        "kube unknown context",
        KubeCluster,
        {"kubeconfig": kubeconfig(), "context": "prod"},
        "context",
        "source",
    ),
    (
        "kube both sources",
        KubeCluster,
        {"kubeconfig": kubeconfig(), "in_cluster": True},
        "in_cluster",
        "either",
    ),
    (
        "kube context without cluster",
        KubeCluster,
        {"kubeconfig": kubeconfig().replace("cluster: target", "cluster: nowhere"), "context": "target"},
        "kubeconfig",
        "cluster entry",
    ),
]


@pytest.mark.parametrize(
    ("block", "kwargs", "field", "fix"), [c[1:] for c in BAD_INPUT], ids=[c[0] for c in BAD_INPUT]
)
def test_bad_input_fails_at_construction_naming_the_field(
    block: type[Any], kwargs: dict[str, Any], field: str, fix: str
) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        block(**kwargs)
    text = str(info.value)
    assert field in text
    assert fix in text, text
    assert SECRET not in text and TOKEN not in text  # rejected secrets are never echoed


@pytest.mark.parametrize(
    ("kwargs", "url", "secure"),
    [
        ({**S3_OK, "endpoint": "127.0.0.1:8333"}, "http://127.0.0.1:8333", False),
        ({**S3_OK, "endpoint": "http://127.0.0.1:8333/"}, "http://127.0.0.1:8333", False),
        ({**S3_OK, "endpoint": "https://s3.example.com"}, "https://s3.example.com:443", True),
        (
            {**S3_OK, "endpoint": "minio.minio.svc:9000", "secure": True, "ca_bundle": PEM},
            "https://minio.minio.svc:9000",
            True,
        ),
    ],
)
def test_object_store_url(kwargs: dict[str, Any], url: str, secure: bool) -> None:
    store = ObjectStore(**kwargs)
    assert store.url == url
    assert store.secure is secure


@pytest.mark.parametrize(
    ("engine", "canonical", "port"),
    [("mysql", "mysql", 3306), ("MariaDB", "mysql", 3306), ("postgresql", "postgres", 5432)],
)
def test_database_engine_aliases_and_default_port(engine: str, canonical: str, port: int) -> None:
    db = Database(**{**DB_OK, "engine": engine})
    assert (db.engine, db.port) == (canonical, port)


def test_secrets_masked_in_repr_str_dump_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    blocks = [
        ObjectStore(**S3_OK),
        Database(**DB_OK),
        EtcdCluster(endpoints=["127.0.0.1:2379"], username="root", password=SecretStr(SECRET)),
        KubeCluster(kubeconfig=SecretStr(kubeconfig()), context="target"),
    ]
    logger = logging.getLogger("stateferry.test")
    with caplog.at_level(logging.INFO):
        for block in blocks:
            logger.info("block %s / %r", block, block)
            for text in (repr(block), str(block), block.model_dump_json(), str(block.model_dump())):
                assert SECRET not in text and TOKEN not in text
    assert caplog.records and SECRET not in caplog.text and TOKEN not in caplog.text


def test_kube_cluster_builds_clients_on_a_fresh_configuration() -> None:
    default_before = kubernetes.client.Configuration.get_default_copy().host
    source = KubeCluster(kubeconfig=SecretStr(kubeconfig(server="https://127.0.0.1:6443")), context="source")
    target = KubeCluster(kubeconfig=SecretStr(kubeconfig(server="http://127.0.0.2:8080")), context="target")
    assert source.context_name == "source"
    with source.api_client() as a, target.api_client() as b:
        assert a.configuration.host == "https://127.0.0.1:6443"
        assert b.configuration.host == "http://127.0.0.2:8080"
        assert a.configuration.auth_settings()["BearerToken"]["value"] == f"Bearer {TOKEN}"
    assert kubernetes.client.Configuration.get_default_copy().host == default_before


def test_object_store_clients_round_trip(object_store_a: ObjectStore, s3_a: SeaweedS3) -> None:
    bucket = f"blocks-{uuid.uuid4().hex[:8]}"
    client = object_store_a.minio_client()
    client.make_bucket(bucket)
    s3 = object_store_a.boto3_client()
    s3.put_object(Bucket=bucket, Key="k", Body=b"hello")
    assert client.get_object(bucket, "k").read() == b"hello"
    assert bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_wrong_s3_secret_is_permanent_and_says_what_to_fix(s3_a: SeaweedS3) -> None:
    from minio.error import S3Error

    from stateferry.errors import translate

    store = ObjectStore(
        endpoint=s3_a.endpoint, access_key=s3_a.access_key, secret_key=SecretStr("wrong-secret-key")
    )
    with pytest.raises(S3Error) as info:
        store.minio_client().list_buckets()
    error = translate(info.value, context="listing buckets")
    assert isinstance(error, PermanentError)
    assert "ObjectStore.secret_key" in str(error) or "ObjectStore.access_key" in str(error)


def test_database_connects_to_mariadb_and_postgres(mariadb: LocalMariaDB, postgres: LocalPostgres) -> None:
    my = Database(
        engine="mysql",
        host=mariadb.host,
        port=mariadb.port,
        user=mariadb.user,
        password=SecretStr(mariadb.password),
    )
    with my.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    pg = Database(
        engine="postgres",
        host=postgres.host,
        port=postgres.port,
        user=postgres.user,
        password=SecretStr(postgres.password),
    )
    with pg.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    assert my.client_env()["MYSQL_PWD"] == mariadb.password
    assert pg.client_env()["PGPASSWORD"] == postgres.password


def test_database_wrong_password_is_permanent(mariadb: LocalMariaDB) -> None:
    db = Database(
        engine="mysql", host=mariadb.host, port=mariadb.port, user="root", password=SecretStr(SECRET)
    )
    with pytest.raises(PermanentError) as info:
        db.connect()
    assert "Database.password" in str(info.value)
    assert SECRET not in str(info.value)


def test_register_save_and_read_back_through_the_api(prefect_server: LocalPrefectServer) -> None:
    registered = register_blocks()
    assert {slug for _, slug in registered} == {
        "stateferry-kube-cluster",
        "stateferry-object-store",
        "stateferry-etcd-cluster",
        "stateferry-database",
        "stateferry-sftp-server",
        "stateferry-redis-server",
    }
    name = f"t-{uuid.uuid4().hex[:8]}"
    ObjectStore(**S3_OK).save(f"{name}-s3")
    KubeCluster(kubeconfig=SecretStr(kubeconfig()), context="target").save(f"{name}-kube")
    Database(**DB_OK).save(f"{name}-db")
    EtcdCluster(endpoints=["127.0.0.1:2379"], username="root", password=SecretStr(SECRET)).save(
        f"{name}-etcd"
    )

    response = httpx.post(f"{prefect_server.api_url}/block_documents/filter", json={"limit": 200}, timeout=30)
    response.raise_for_status()
    documents = [d for d in response.json() if d["name"].startswith(name)]
    assert len(documents) == 4
    assert SECRET not in response.text and TOKEN not in response.text
    for document in documents:
        one = httpx.get(f"{prefect_server.api_url}/block_documents/{document['id']}", timeout=30)
        assert one.status_code == 200
        assert SECRET not in one.text and TOKEN not in one.text

    # the secrets survive a round trip for the code that needs them
    loaded = ObjectStore.load(f"{name}-s3")
    assert isinstance(loaded, ObjectStore)
    assert loaded.secret_key.get_secret_value() == SECRET
    kube = KubeCluster.load(f"{name}-kube")
    assert isinstance(kube, KubeCluster)
    assert kube.kubeconfig is not None and TOKEN in kube.kubeconfig.get_secret_value()


def test_kube_client_errors_name_the_field() -> None:
    from stateferry.errors import InputError

    with pytest.raises(InputError, match="in_cluster: no in-cluster service account"):
        KubeCluster(in_cluster=True).api_client()
    broken = yaml.safe_load(kubeconfig())
    broken["users"][0]["user"] = {
        "client-certificate": "/nonexistent/cert.pem",
        "client-key": "/nonexistent/k",
    }
    with pytest.raises(InputError, match="kubeconfig: context 'source' cannot be loaded") as info:
        KubeCluster(kubeconfig=SecretStr(yaml.safe_dump(broken))).api_client()
    assert TOKEN not in str(info.value)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"known_hosts": "not a key line"}, "known_hosts"),
        ({"known_hosts": ""}, "known_hosts"),
        ({"password": None, "private_key": None}, "private_key"),
        ({"host": "bad host!"}, "host"),
        ({"username": " "}, "username"),
    ],
)
def test_sftp_server_block_refuses_what_cannot_connect_safely(fields: dict[str, Any], field: str) -> None:
    from blocks.sftp import SftpServer

    ok: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 2222,
        "username": "backup",
        "password": SecretStr(SECRET),
        "known_hosts": "[127.0.0.1]:2222 ssh-ed25519"
        " AAAAC3NzaC1lZDI1NTE5AAAAIE5ekR0izn3VG7po5Xzr2eY1/M+pO5numoGjEIdeMQT2",
    }
    SftpServer(**ok)  # the baseline is valid
    with pytest.raises(pydantic.ValidationError) as info:
        SftpServer(**{**ok, **fields})
    assert field in str(info.value) and SECRET not in str(info.value)
