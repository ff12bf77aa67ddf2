"""Real multi-member etcd clusters (Debian ``etcd-server``) on loopback."""

from __future__ import annotations

import json
import shutil
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from devservers.ports import free_port
from devservers.process import ManagedProcess, wait_until

ETCD_BINARY = "/usr/bin/etcd"


@dataclass
class LocalMember:
    """One etcd member process."""

    name: str
    host: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    process: ManagedProcess | None = field(default=None, repr=False)

    @property
    def client_url(self) -> str:
        """``http://host:client_port``."""
        return f"http://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        """``http://host:peer_port``."""
        return f"http://{self.host}:{self.peer_port}"

    @property
    def endpoint(self) -> str:
        """``host:client_port``."""
        return f"{self.host}:{self.client_port}"

    def healthy(self) -> bool:
        """True when the member answers ``/health`` with ``health: true``."""
        try:
            with urllib.request.urlopen(f"{self.client_url}/health", timeout=1) as resp:
                return bool(json.loads(resp.read()).get("health") in (True, "true"))
        except (OSError, ValueError):
            return False


class LocalEtcd:
    """A real etcd cluster of ``size`` members, each its own ``etcd`` process on loopback ports.

    Args:
        size: number of members to bootstrap.
        base_dir: directory for data dirs and logs (created).
        host: loopback address to bind.
        token: initial cluster token.
    """

    def __init__(
        self, size: int, base_dir: Path, host: str = "127.0.0.1", token: str = "stateferry-test"
    ) -> None:
        if size < 1:
            raise ValueError("size must be >= 1")
        self.base_dir = Path(base_dir).absolute()
        self.host = host
        self.token = token
        self.members: list[LocalMember] = [self._new_member(f"etcd-{i}") for i in range(size)]

    def _new_member(self, name: str) -> LocalMember:
        return LocalMember(
            name=name,
            host=self.host,
            client_port=free_port(self.host),
            peer_port=free_port(self.host),
            data_dir=self.base_dir / name / "data",
            log_path=self.base_dir / name / "etcd.log",
        )

    # -- properties -------------------------------------------------------------------------------
    @property
    def endpoints(self) -> list[str]:
        """``host:port`` client endpoints of the running members."""
        return [m.endpoint for m in self.members if m.process and m.process.running]

    @property
    def client_urls(self) -> list[str]:
        """``http://host:port`` client URLs of the running members."""
        return [m.client_url for m in self.members if m.process and m.process.running]

    @property
    def peer_urls(self) -> list[str]:
        """Peer URLs of every known member."""
        return [m.peer_url for m in self.members]

    @property
    def names(self) -> list[str]:
        """Member names."""
        return [m.name for m in self.members]

    def initial_cluster(self, members: list[LocalMember] | None = None) -> str:
        """The ``--initial-cluster`` string for ``members`` (default: all)."""
        return ",".join(f"{m.name}={m.peer_url}" for m in (members or self.members))

    # -- lifecycle --------------------------------------------------------------------------------
    def _argv(self, m: LocalMember, initial_cluster: str, state: str) -> list[str]:
        return [
            ETCD_BINARY,
            f"--name={m.name}",
            f"--data-dir={m.data_dir}",
            f"--listen-client-urls={m.client_url}",
            f"--advertise-client-urls={m.client_url}",
            f"--listen-peer-urls={m.peer_url}",
            f"--initial-advertise-peer-urls={m.peer_url}",
            f"--initial-cluster={initial_cluster}",
            f"--initial-cluster-state={state}",
            f"--initial-cluster-token={self.token}",
            "--heartbeat-interval=100",
            "--election-timeout=1000",
            "--logger=zap",
            "--log-outputs=stderr",
        ]

    def start(self, timeout: float = 30.0) -> LocalEtcd:
        """Bootstrap every member at once and wait until all are healthy."""
        cluster = self.initial_cluster()
        for m in self.members:
            m.data_dir.mkdir(parents=True, exist_ok=True)
            state = "existing" if any(m.data_dir.iterdir()) else "new"
            m.process = ManagedProcess(self._argv(m, cluster, state), m.log_path)
            m.process.start()
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait until every running member reports healthy; raise with the logs otherwise."""
        running = [m for m in self.members if m.process and m.process.running]
        if not wait_until(lambda: all(m.healthy() for m in running), timeout):
            tails = "\n".join(f"--- {m.name}\n{m.process.log_tail() if m.process else ''}" for m in running)
            raise RuntimeError(f"etcd cluster did not become healthy within {timeout}s\n{tails}")

    def stop(self) -> None:
        """Stop every member (keeps data)."""
        for m in self.members:
            if m.process:
                m.process.stop()

    def cleanup(self) -> None:
        """Stop every member and delete all data."""
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def stop_member(self, i: int) -> None:
        """Gracefully stop member ``i`` (data kept)."""
        p = self.members[i].process
        if p:
            p.stop()

    def kill_member(self, i: int) -> None:
        """SIGKILL member ``i`` (simulates a crash)."""
        p = self.members[i].process
        if p:
            p.kill()

    def start_member(self, i: int, timeout: float = 30.0) -> None:
        """Restart a stopped member ``i`` with its existing data dir."""
        m = self.members[i]
        m.process = ManagedProcess(self._argv(m, self.initial_cluster(), "existing"), m.log_path)
        m.process.start()
        if not wait_until(m.healthy, timeout):
            raise RuntimeError(f"{m.name} did not become healthy\n{m.process.log_tail()}")

    def new_member(self, name: str) -> LocalMember:
        """Allocate (but do not start) a new member, e.g. before ``member add``."""
        m = self._new_member(name)
        self.members.append(m)
        return m

    def start_joining_member(
        self, m: LocalMember, initial_cluster: str, wait: bool = True, timeout: float = 30.0
    ) -> None:
        """Start ``m`` with ``--initial-cluster-state existing`` after it was added with ``member add``."""
        m.data_dir.mkdir(parents=True, exist_ok=True)
        m.process = ManagedProcess(self._argv(m, initial_cluster, "existing"), m.log_path)
        m.process.start()
        if wait and not wait_until(m.healthy, timeout):
            raise RuntimeError(f"{m.name} did not become healthy\n{m.process.log_tail()}")

    def __enter__(self) -> LocalEtcd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
