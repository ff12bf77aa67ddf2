"""The sandbox runtime parts that need no API server: IP pools, DNS rendering, TCP proxy, pod processes."""

from __future__ import annotations

import os
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.runtime.dns import (
    DEFAULT_COREFILE,
    ClusterDns,
    ServiceRecord,
    StaticHost,
    corefile_with_hosts,
    hosts_names,
    module_config_hosts,
    parse_corefile_hosts,
    write_in_place,
)
from sandbox.runtime.ippool import IpPool, PoolExhausted, load_balancer_pool, pod_pool
from sandbox.runtime.pods import (
    DEFAULT_PATH,
    POD_MARKER_ENV,
    ContainerPlan,
    Mount,
    PodPlan,
    PodRuntime,
    processes_with_env,
)
from sandbox.runtime.probes import parse_probe
from sandbox.runtime.proxy import ProxyManager


def test_ip_pool_allocates_lowest_free_and_reuses_released() -> None:
    pool = IpPool("127.9.1.254", 4)  # .254, (.255 skipped), (.0 skipped), .1
    assert pool.allocate("a") == "127.9.1.254"
    assert pool.allocate("a") == "127.9.1.254"
    assert pool.allocate("b") == "127.9.2.1"
    with pytest.raises(PoolExhausted):
        pool.allocate("c")
    pool.release("a")
    assert pool.allocate("c") == "127.9.1.254"
    assert not pool.reserve("d", "127.9.2.1")
    assert pod_pool(1).allocate("x") == "127.1.1.1"
    assert load_balancer_pool(2).allocate("x") == "127.2.200.1"


@pytest.mark.parametrize(
    ("corefile", "expected"),
    [
        (DEFAULT_COREFILE, []),
        (
            ".:53 {\n    hosts {\n       10.0.0.1 etcd-main-0.etcd-main Etcd-Main-0.\n"
            "       fallthrough\n    }\n}\n",
            [StaticHost("10.0.0.1", ("etcd-main-0.etcd-main", "etcd-main-0"))],
        ),
        (
            ".:53 {\n  hosts /etc/extra example.org {\n    ttl 60\n    1.2.3.4 a.example.org # c\n  }\n"
            "  hosts {\n    5.6.7.8 b\n  }\n  forward . /etc/resolv.conf {\n    max_concurrent 1\n  }\n}\n",
            [StaticHost("1.2.3.4", ("a.example.org",)), StaticHost("5.6.7.8", ("b",))],
        ),
    ],
)
def test_parse_corefile_hosts(corefile: str, expected: list[StaticHost]) -> None:
    assert parse_corefile_hosts(corefile) == expected


def test_corefile_with_hosts_round_trips() -> None:
    entries = [StaticHost("127.2.200.1", ("etcd-main-0.etcd-main",))]
    assert parse_corefile_hosts(corefile_with_hosts(DEFAULT_COREFILE, entries)) == entries


def test_module_config_hosts() -> None:
    spec = {"settings": {"hosts": [{"domain": "etcd-0.etcd", "ip": "10.1.1.1"}, {"domain": "x"}]}}
    assert module_config_hosts(spec) == [StaticHost("10.1.1.1", ("etcd-0.etcd",))]


@pytest.mark.parametrize(
    ("namespace", "name", "ips"),
    [
        ("default", "etcd-0.etcd", ["127.1.1.1"]),
        ("default", "etcd-0.etcd.default", ["127.1.1.1"]),
        ("default", "etcd-0.etcd.default.svc", ["127.1.1.1"]),
        ("default", "etcd-0.etcd.default.svc.cluster.local", ["127.1.1.1"]),
        ("other", "etcd-0.etcd", None),
        ("other", "etcd-0.etcd.default", ["127.1.1.1"]),
        ("default", "etcd", ["127.1.1.1", "127.1.1.2"]),
        ("default", "web", ["127.1.96.5"]),
        ("other", "web.default.svc.cluster.local", ["127.1.96.5"]),
        ("other", "web", None),
        ("other", "etcd-main-0.etcd-main", ["127.2.200.1"]),
        ("default", "google.com", None),
    ],
)
def test_cluster_dns_render(namespace: str, name: str, ips: list[str] | None) -> None:
    dns = ClusterDns(
        static_hosts=[StaticHost("127.2.200.1", ("etcd-main-0.etcd-main",))],
        services=[
            ServiceRecord(
                "etcd",
                "default",
                None,
                ("127.1.1.1", "127.1.1.2"),
                (("etcd-0", "127.1.1.1"), ("etcd-1", "127.1.1.2")),
            ),
            ServiceRecord("web", "default", "127.1.96.5"),
        ],
    )
    names = hosts_names(dns.render(namespace))
    assert names.get(name) == ips


def test_write_in_place_keeps_inode(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    assert write_in_place(path, "a\n")
    inode = path.stat().st_ino
    assert not write_in_place(path, "a\n")
    assert write_in_place(path, "b\n")
    assert path.stat().st_ino == inode
    assert path.read_text() == "b\n"


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data = self.request.recv(1024)
        self.request.sendall(b"echo:" + data)


@pytest.fixture
def echo_server() -> Iterator[tuple[str, int]]:
    server = socketserver.ThreadingTCPServer(("127.9.1.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address  # type: ignore[misc]
    finally:
        server.shutdown()
        server.server_close()


def _roundtrip(addr: tuple[str, int]) -> bytes:
    with socket.create_connection(addr, timeout=5) as s:
        try:
            s.sendall(b"hi")
            s.shutdown(socket.SHUT_WR)
            return s.recv(1024)
        except OSError:  # closed by the proxy without a backend (reset / not connected)
            return b""


def test_proxy_routes_to_backends_and_reconfigures(echo_server: tuple[str, int]) -> None:
    manager = ProxyManager()
    try:
        listen = ("127.9.200.1", echo_server[1])
        manager.ensure(listen, [])
        assert _roundtrip(listen) == b""  # no ready backend: connection closed
        manager.ensure(listen, [("127.9.1.99", 1), echo_server])  # dead backend is skipped
        assert _roundtrip(listen) == b"echo:hi"
        assert _roundtrip(listen) == b"echo:hi"
        manager.remove(listen)
        with pytest.raises(OSError):
            _roundtrip(listen)
    finally:
        manager.close()


def _wait(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_pod_runtime_runs_etcd_in_private_mount_namespace(tmp_path: Path) -> None:
    pod_dir, pv = tmp_path / "pod", tmp_path / "pv"
    pod_dir.mkdir()
    pv.mkdir()
    (pod_dir / "hosts").write_text("127.0.0.1 localhost\n127.9.1.7 db-0.db\n")
    (pod_dir / "resolv.conf").write_text("nameserver 127.9.0.53\n")
    ip = "127.9.1.7"
    script = (
        "etcd --name=$HOSTNAME --initial-advertise-peer-urls=http://$HOSTNAME.db:2380 "
        "--initial-cluster db-0=http://db-0.db:2380 --advertise-client-urls=http://$HOSTNAME.db:2379 "
        f"--listen-client-urls=http://{ip}:2379 --listen-peer-urls=http://{ip}:2380 & child=$!; wait $child"
    )
    probe = parse_probe(
        {
            "exec": {"command": ["/bin/bash", "-c", "/usr/local/bin/etcdctl endpoint health"]},
            "periodSeconds": 1,
        },
        ip,
        {},
    )
    container = ContainerPlan(
        name="etcd",
        image="quay.io/coreos/etcd:v3.4.18",
        argv=["sh", "-c", script],
        env={"PATH": DEFAULT_PATH, "HOSTNAME": "db-0", "ETCD_DATA_DIR": "/var/lib/etcd"},
        readiness=probe,
    )
    plan = PodPlan(
        uid="test-pod-uid-1",
        namespace="default",
        name="db-0",
        hostname="db-0",
        pod_ip=ip,
        pod_dir=pod_dir,
        hosts_file=pod_dir / "hosts",
        resolv_file=pod_dir / "resolv.conf",
        mounts=[Mount(str(pv), "/var/lib/etcd")],
        containers=[container],
    )
    pod = PodRuntime(plan)
    pod.start()
    try:
        assert _wait(lambda: pod.snapshot()[0].ready, 30), pod.snapshot()
        assert pod.exec(["getent", "hosts", "db-0.db"]).stdout.split() == [b"127.9.1.7", b"db-0.db"]
        assert pod.exec(["getent", "hosts", "example.com"]).returncode != 0  # host resolver not used
        assert pod.exec(["hostname"]).stdout.strip() == b"db-0"
        assert (pv / "member").is_dir()  # the PV directory is the container's /var/lib/etcd
        assert str(pv) not in Path("/proc/self/mountinfo").read_text()  # nothing mounted on the host
        # kill the etcd process: the container restarts (restartPolicy Always) and becomes Ready again
        etcd_pids = [p for p in processes_with_env(POD_MARKER_ENV, plan.uid) if _comm(p) == "etcd"]
        assert etcd_pids
        os.kill(etcd_pids[0], 9)
        assert _wait(lambda: pod.snapshot()[0].restart_count == 1, 30)
        assert _wait(lambda: pod.snapshot()[0].ready, 30)
        assert pod.snapshot()[0].last_terminated["exitCode"] == 137  # type: ignore[index]
    finally:
        pod.stop(grace=5)
    assert processes_with_env(POD_MARKER_ENV, plan.uid) == []
    assert pod.snapshot()[0].state == "terminated"


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def test_failing_liveness_probe_restarts_and_startup_probe_gates(tmp_path: Path) -> None:
    pod_dir = tmp_path / "pod"
    pod_dir.mkdir()
    (pod_dir / "hosts").write_text("127.0.0.1 localhost\n")
    (pod_dir / "resolv.conf").write_text("nameserver 127.9.0.53\n")
    ip = "127.9.1.9"
    dead = parse_probe({"tcpSocket": {"port": 1}, "periodSeconds": 0.2, "failureThreshold": 2}, ip, {})
    startup = parse_probe({"exec": {"command": ["test", "-e", "/tmp"]}, "periodSeconds": 0.2}, ip, {})
    plan = PodPlan(
        uid="test-pod-uid-2",
        namespace="default",
        name="lively",
        hostname="lively",
        pod_ip=ip,
        pod_dir=pod_dir,
        hosts_file=pod_dir / "hosts",
        resolv_file=pod_dir / "resolv.conf",
        mounts=[],
        containers=[
            ContainerPlan(
                name="dies",
                image="stateferry/x",
                argv=["sleep", "100"],
                env={"PATH": DEFAULT_PATH},
                liveness=dead,
            ),
            ContainerPlan(
                name="lives",
                image="stateferry/x",
                argv=["sleep", "100"],
                env={"PATH": DEFAULT_PATH},
                startup=startup,
            ),
        ],
    )
    pod = PodRuntime(plan)
    pod.start()
    try:
        assert _wait(lambda: pod.snapshot()[0].restart_count >= 1, 30), pod.snapshot()
        assert _wait(lambda: pod.snapshot()[1].started and pod.snapshot()[1].ready, 30)
        assert pod.snapshot()[1].restart_count == 0
    finally:
        pod.stop(grace=2)
    assert processes_with_env(POD_MARKER_ENV, plan.uid) == []


class _FlakyKube:
    """The controllers' Kube layer with an API server that times out every write (reads are not used)."""

    def __init__(self) -> None:
        self.writes = 0

    def _fail(self, *args: object, **kwargs: object) -> None:
        self.writes += 1
        raise TimeoutError("the API server did not answer in time")

    create = patch = delete = _fail


def test_service_keeps_serving_when_a_pass_cannot_write_its_endpoints(echo_server: tuple[str, int]) -> None:
    """kube-proxy and CoreDNS keep their last state while the endpoints controller cannot write."""
    from sandbox.runtime.ippool import IpPool
    from sandbox.runtime.network import ServiceNetwork
    from sandbox.runtime.world import World

    pod = {
        "metadata": {"name": "web-0", "namespace": "ns", "uid": "p1", "labels": {"app": "web"}},
        "spec": {"nodeName": "node", "containers": [{"name": "c"}]},
        "status": {
            "podIP": echo_server[0],
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    svc = {
        "metadata": {"name": "web", "namespace": "ns", "uid": "s1"},
        "spec": {
            "type": "LoadBalancer",
            "clusterIP": "127.9.96.10",
            "selector": {"app": "web"},
            "ports": [{"port": echo_server[1], "targetPort": echo_server[1]}],
        },
        "status": {"loadBalancer": {"ingress": [{"ip": "127.9.200.7"}]}},
    }
    proxies = ProxyManager()
    kube = _FlakyKube()
    net = ServiceNetwork("c", kube, IpPool("127.9.200.1", 16), proxies)  # type: ignore[arg-type]
    try:
        net.sync(World({"services": [svc], "pods": [pod]}))
        assert kube.writes >= 2  # Endpoints and EndpointSlice writes were tried and failed
        lb = ("127.9.200.7", echo_server[1])
        assert _roundtrip(lb) == b"echo:hi"
        assert [r.name for r in net.dns_services] == ["web"]
        # a pass that fails for the Service as a whole keeps what the last good pass published
        broken = {**svc, "spec": {**svc["spec"], "ports": [{"port": "not-a-port"}]}}
        net.sync(World({"services": [broken], "pods": [pod]}))
        assert _roundtrip(lb) == b"echo:hi"
        assert [r.name for r in net.dns_services] == ["web"]
        net.sync(World({"services": [], "pods": [pod]}))  # the Service is gone: so is its proxy
        with pytest.raises(OSError):
            _roundtrip(lb)
    finally:
        proxies.close()
