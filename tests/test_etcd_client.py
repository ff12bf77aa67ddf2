"""The etcd adapter against real etcd clusters (Debian etcd-server 3.4 on loopback)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from blocks.etcd import EtcdCluster
from blocks.etcd_client import EtcdClient
from blocks.etcd_records import EndpointStatus, Member
from devservers.etcd import LocalEtcd
from devservers.ports import free_port
from stateferry.errors import PermanentError, TransientError

T = TypeVar("T")


def run(fn: Callable[[EtcdClient], Awaitable[T]], endpoints: list[str], **kwargs: float) -> T:
    async def main() -> T:
        async with EtcdClient(endpoints, **kwargs) as etcd:  # type: ignore[arg-type]
            return await fn(etcd)

    return asyncio.run(main())


def test_put_get_delete_round_trip(etcd3: LocalEtcd) -> None:
    async def scenario(etcd: EtcdClient) -> None:
        rev = await etcd.put("/stateferry/test/a", b"1")
        await etcd.put("/stateferry/test/b", "two")
        assert await etcd.get("/stateferry/test/a") == b"1"
        assert await etcd.get("/stateferry/test/missing") is None
        listed = await etcd.get_prefix("/stateferry/test/")
        assert [(kv.key, kv.value) for kv in listed] == [
            (b"/stateferry/test/a", b"1"),
            (b"/stateferry/test/b", b"two"),
        ]
        assert await etcd.current_revision() >= rev + 1
        assert await etcd.delete("/stateferry/test/a") == 1
        assert await etcd.get("/stateferry/test/a") is None

    run(scenario, etcd3.endpoints)


def test_block_builds_client_and_resolves_localhost(etcd3: LocalEtcd) -> None:
    """Host names are resolved to IPv4 for etcd3aio (which dials ipv4: targets only)."""
    port = etcd3.endpoints[0].rsplit(":", 1)[1]
    block = EtcdCluster(endpoints=[f"http://localhost:{port}"])

    async def scenario() -> list[Member]:
        async with block.client() as etcd:
            return await etcd.member_list()

    members = asyncio.run(scenario())
    assert sorted(m.name for m in members) == sorted(etcd3.names)


def test_member_list_and_status_of_three_members(etcd3: LocalEtcd) -> None:
    async def scenario(etcd: EtcdClient) -> tuple[list[Member], list[EndpointStatus]]:
        return await etcd.member_list(), [await etcd.status(e) for e in etcd3.endpoints]

    members, statuses = run(scenario, etcd3.endpoints)
    assert sorted(m.name for m in members) == sorted(etcd3.names)
    assert all(not m.is_learner and m.is_started for m in members)
    assert {m.client_urls[0] for m in members} == set(etcd3.client_urls)
    leaders = {s.leader_id for s in statuses}
    assert len(leaders) == 1 and leaders.pop() in {m.id for m in members}
    assert sum(s.is_leader for s in statuses) == 1
    assert all(s.db_size > 0 and 0 < s.db_size_in_use <= s.db_size for s in statuses)
    assert all(s.version.startswith("3.4") for s in statuses)
    assert {s.member_id for s in statuses} == {m.id for m in members}


def test_unreachable_endpoint_is_transient_and_fast() -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(TransientError) as info:
        run(lambda etcd: etcd.member_list(), [endpoint], timeout=2.0)
    elapsed = time.monotonic() - started
    assert elapsed < 5, elapsed
    assert endpoint in str(info.value)
    assert "etcd listing members" in str(info.value)


def test_bad_endpoint_is_input_error() -> None:
    with pytest.raises(PermanentError) as info:
        EtcdClient(["127.0.0.1:notaport"])
    assert "endpoints" in str(info.value)


def test_alarms_empty_on_healthy_cluster(etcd3: LocalEtcd) -> None:
    assert run(lambda etcd: etcd.alarms(), etcd3.endpoints) == []


def test_compact_and_defragment_reduce_db_size_in_use(etcd_factory: Callable[[int], LocalEtcd]) -> None:
    cluster = etcd_factory(1)
    endpoint = cluster.endpoints[0]

    async def scenario(etcd: EtcdClient) -> tuple[EndpointStatus, EndpointStatus]:
        blob = b"x" * 64 * 1024
        for i in range(60):  # ~4 MiB of history for 4 keys
            await etcd.put(f"/churn/{i % 4}", blob)
        deadline = time.monotonic() + 10
        while (before := await etcd.status(endpoint)).db_size_in_use < 2 * 1024 * 1024:
            assert time.monotonic() < deadline, before  # the backend commits in batches (every 100 ms)
            await asyncio.sleep(0.1)
        await etcd.compact(await etcd.current_revision())
        await etcd.defragment(endpoint)
        after = await etcd.status(endpoint)
        return before, after

    before, after = run(scenario, cluster.endpoints)
    assert after.db_size_in_use < before.db_size_in_use / 2, (before, after)
    assert after.db_size < before.db_size, (before, after)


def test_snapshot_to_writes_a_valid_snapshot(etcd3: LocalEtcd, tmp_path: Path) -> None:
    path = tmp_path / "etcd.snapshot"

    async def scenario(etcd: EtcdClient) -> int:
        await etcd.put("/snap/key", "value")
        with path.open("wb") as handle:
            return await etcd.snapshot_to(handle)

    written = run(scenario, etcd3.endpoints)
    assert written == path.stat().st_size > 0
    status = subprocess.run(
        ["etcdctl", "snapshot", "status", str(path), "--write-out=json"],
        capture_output=True,
        text=True,
        env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
    )
    assert status.returncode == 0, status.stderr
    assert '"totalKey"' in status.stdout


def test_learner_add_start_promote_move_leader_remove(etcd_factory: Callable[[int], LocalEtcd]) -> None:
    """The membership steps of a stretch migration on a real cluster."""
    cluster = etcd_factory(1)
    joining = cluster.new_member("etcd-new")

    async def scenario(etcd: EtcdClient) -> None:
        added, after_add = await etcd.member_add([joining.peer_url])
        assert added.is_learner and not added.is_started
        assert len(after_add) == 2
        # adding the same peer URL again is a permanent error
        with pytest.raises(PermanentError, match="already registered"):
            await etcd.member_add([joining.peer_url])

        initial = f"{cluster.names[0]}={cluster.members[0].peer_url},{joining.name}={joining.peer_url}"
        cluster.start_joining_member(joining, initial, wait=False)

        deadline = time.monotonic() + 30
        while True:  # a learner can be promoted once it caught up with the leader
            try:
                members = await etcd.member_promote(added.id)
                break
            except TransientError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)
        promoted = next(m for m in members if m.id == added.id)
        assert not promoted.is_learner and promoted.name == "etcd-new"

        # both members answer status; move leadership to the new member
        etcd_all = EtcdClient([*cluster.endpoints])
        async with etcd_all:
            old_leader_endpoint, status = await etcd_all.leader_endpoint()
            assert old_leader_endpoint == cluster.endpoints[0]
            assert await etcd_all.move_leader(added.id) == added.id
            deadline = time.monotonic() + 10
            while (await etcd_all.status(joining.endpoint)).leader_id != added.id:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
            # remove the original member; the new one keeps serving the data
            await etcd_all.put("/moved", "yes")
            deadline = time.monotonic() + 20
            while True:  # etcd refuses ("unhealthy cluster", transient) until the new member is connected 5 s
                try:
                    remaining = await etcd_all.member_remove(status.member_id)
                    break
                except TransientError as exc:
                    assert "unhealthy cluster" in str(exc)
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.5)
            assert [m.id for m in remaining] == [added.id]

        async with EtcdClient([joining.endpoint]) as etcd_new:
            assert await etcd_new.get("/moved") == b"yes"
            with pytest.raises(PermanentError, match="member list"):
                await etcd_new.member_remove(status.member_id)

    run(scenario, cluster.endpoints)


# ------------------------------------------------------------------ TLS (mutual), server name from the host


def _pki(directory: Path) -> dict[str, str]:
    """A CA, a server certificate valid for DNS:localhost only, and a client certificate (PEM text)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def key_pem(key: ec.EllipticCurvePrivateKey) -> str:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()

    def cert(
        subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None, ca_key: Any, **kw: Any
    ) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer.subject if issuer else name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
        )
        if kw.get("san"):
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(kw["san"])]), critical=False
            )
        if kw.get("usage"):
            builder = builder.add_extension(x509.ExtendedKeyUsage(kw["usage"]), critical=False)
        return builder.sign(ca_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = cert("stateferry-test-ca", ca_key, None, ca_key)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = cert(
        "localhost",
        server_key,
        ca,
        ca_key,
        san="localhost",
        usage=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = cert("root", client_key, ca, ca_key, usage=[ExtendedKeyUsageOID.CLIENT_AUTH])
    pems = {
        "ca": ca.public_bytes(serialization.Encoding.PEM).decode(),
        "server": server.public_bytes(serialization.Encoding.PEM).decode(),
        "server_key": key_pem(server_key),
        "client": client.public_bytes(serialization.Encoding.PEM).decode(),
        "client_key": key_pem(client_key),
    }
    for name, text in pems.items():
        (directory / f"{name}.pem").write_text(text)
    return pems


@pytest.fixture
def tls_etcd(tmp_path: Path) -> Any:
    """A one-member etcd requiring client certificates, its certificate valid for "localhost" only."""
    from devservers.etcd import ETCD_BINARY
    from devservers.process import ManagedProcess, wait_until

    pems = _pki(tmp_path)
    client_port, peer_port = free_port(), free_port()
    process = ManagedProcess(
        [
            ETCD_BINARY,
            "--name=tls-0",
            f"--data-dir={tmp_path / 'data'}",
            f"--listen-client-urls=https://127.0.0.1:{client_port}",
            f"--advertise-client-urls=https://localhost:{client_port}",
            f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-cluster=tls-0=http://127.0.0.1:{peer_port}",
            f"--cert-file={tmp_path / 'server.pem'}",
            f"--key-file={tmp_path / 'server_key.pem'}",
            f"--trusted-ca-file={tmp_path / 'ca.pem'}",
            "--client-cert-auth",
            "--logger=zap",
        ],
        tmp_path / "etcd.log",
    )
    process.start()
    try:
        import socket

        def listening() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", client_port)) == 0

        assert wait_until(listening, 20), process.log_tail()
        yield client_port, pems
    finally:
        process.stop()


def test_mutual_tls_with_server_name_from_the_endpoint_host(tls_etcd: Any) -> None:
    port, pems = tls_etcd
    block = EtcdCluster(
        endpoints=[f"https://localhost:{port}"],
        ca_cert=pems["ca"],
        client_cert=pems["client"],
        client_key=pems["client_key"],
    )

    async def scenario() -> bytes | None:
        async with block.client() as etcd:
            deadline = time.monotonic() + 15
            while True:  # the member elects itself leader shortly after it listens
                try:
                    await etcd.put("/tls", "ok")
                    break
                except TransientError:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.2)
            return await etcd.get("/tls")

    assert asyncio.run(scenario()) == b"ok"

    # without a client certificate the server refuses the handshake: a clear error, no hang
    no_client_cert = EtcdCluster(
        endpoints=[f"https://localhost:{port}"], ca_cert=pems["ca"], timeout_seconds=2
    )

    async def refused() -> None:
        async with no_client_cert.client() as etcd:
            await etcd.get("/tls")

    with pytest.raises((TransientError, PermanentError)) as info:
        asyncio.run(refused())
    assert f"localhost:{port}" in str(info.value)

    # the certificate names "localhost" only: dialling the IP is refused, so the name check is real
    async def by_ip() -> None:
        async with EtcdClient(
            [f"https://127.0.0.1:{port}"],
            ca_cert=pems["ca"],
            cert_chain=pems["client"],
            cert_key=pems["client_key"],
            timeout=2,
        ) as etcd:
            await etcd.get("/tls")

    with pytest.raises((TransientError, PermanentError)):
        asyncio.run(by_ip())


def test_user_and_password_on_an_auth_enabled_cluster(etcd_factory: Callable[[int], LocalEtcd]) -> None:
    cluster = etcd_factory(1)
    password = "pw-" + "k" * 12
    env = {"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"}
    ctl = ["etcdctl", f"--endpoints={cluster.endpoints[0]}"]
    for args in (["user", "add", f"root:{password}", "--interactive=false"], ["auth", "enable"]):
        done = subprocess.run([*ctl, *args], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr

    good = EtcdCluster(endpoints=cluster.endpoints, username="root", password=password)  # type: ignore[arg-type]

    async def round_trip() -> bytes | None:
        async with good.client() as etcd:
            await etcd.put("/auth", "ok")
            return await etcd.get("/auth")

    assert asyncio.run(round_trip()) == b"ok"

    anonymous = EtcdCluster(endpoints=cluster.endpoints)

    async def denied() -> None:
        async with anonymous.client() as etcd:
            await etcd.get("/auth")

    with pytest.raises(PermanentError):
        asyncio.run(denied())

    wrong = EtcdCluster(endpoints=cluster.endpoints, username="root", password="wrong")  # type: ignore[arg-type]

    async def bad_login() -> None:
        async with wrong.client() as etcd:
            await etcd.get("/auth")

    with pytest.raises(PermanentError, match=r"EtcdCluster\.username") as info:
        asyncio.run(bad_login())
    assert "wrong" not in str(info.value) and password not in str(info.value)


def test_migration_tasks_use_the_flow_credentials(tls_etcd: Any) -> None:
    """tasks.etcd_ops builds every client through tasks.etcd_credentials: mTLS from the block."""
    from tasks.etcd_credentials import EtcdCredentials, use_credentials
    from tasks.etcd_ops import observe_now

    port, pems = tls_etcd
    block = EtcdCluster(
        endpoints=[f"https://localhost:{port}"],
        ca_cert=pems["ca"],
        client_cert=pems["client"],
        client_key=pems["client_key"],
    )
    creds = EtcdCredentials.from_block(block)
    assert "BEGIN" not in repr(creds)
    with use_credentials(creds):
        deadline = time.monotonic() + 15
        while True:
            try:
                view = observe_now({"tls-0": f"localhost:{port}"}, timeout=3.0)
                break
            except TransientError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
    assert [m.name for m in view.members] == ["tls-0"]
    assert view.statuses["tls-0"].member_id == view.members[0].id
    with pytest.raises(TransientError) as info:  # outside: plain http, refused
        observe_now({"tls-0": f"localhost:{port}"}, timeout=2.0)
    assert "BEGIN" not in str(info.value)
