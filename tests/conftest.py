"""Shared fixtures: real servers started by the tests themselves.

Slow servers are session-scoped. At collection time the servers that the collected tests need are
started in parallel in background threads, so a full run pays for the slowest one only once. Every
process and directory is cleaned up at the end of the session, also when tests fail.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

# Isolate Prefect's client side from the user's ~/.prefect before prefect is imported anywhere.
_SESSION_ROOT = Path(tempfile.mkdtemp(prefix="stateferry-test-"))
os.environ["PREFECT_HOME"] = str(_SESSION_ROOT / "prefect-client")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.pop("PREFECT_API_KEY", None)
# The session's Prefect server gets its port now, so PREFECT_API_URL is right in every thread and
# subprocess from the start (Prefect reads settings at import; threads do not inherit contexts).
# A flow run in a test that does not use the `prefect_server` fixture fails to connect instead of
# silently starting an ephemeral server.
from devservers.ports import free_port  # noqa: E402

_PREFECT_PORT = free_port()
os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{_PREFECT_PORT}/api"

import pytest  # noqa: E402

from devservers.etcd import LocalEtcd  # noqa: E402
from devservers.mariadb import LocalMariaDB  # noqa: E402
from devservers.postgres import LocalPostgres  # noqa: E402
from devservers.prefect_server import LocalPrefectServer  # noqa: E402
from devservers.s3 import SeaweedS3  # noqa: E402


class ServerPool:
    """Starts session servers in the background and hands them out; stops them all at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._executor = ThreadPoolExecutor(max_workers=6, thread_name_prefix="server-start")
        self._futures: dict[str, Future[Any]] = {}
        self.timings: dict[str, float] = {}
        self._factories: dict[str, Callable[[], Any]] = {
            "prefect_server": lambda: LocalPrefectServer(root / "prefect-server", port=_PREFECT_PORT).start(),
            "etcd3": lambda: LocalEtcd(3, root / "etcd3").start(),
            "s3_a": lambda: SeaweedS3(
                root / "s3-a", access_key="stateferry-a", secret_key="secret-a-" + "x" * 16
            ).start(),
            "s3_b": lambda: SeaweedS3(
                root / "s3-b", access_key="stateferry-b", secret_key="secret-b-" + "y" * 16
            ).start(),
            "mariadb": lambda: LocalMariaDB(root / "mariadb").start(),
            "postgres": lambda: LocalPostgres(root / "postgres").start(),
        }

    @property
    def names(self) -> list[str]:
        """Names of the servers this pool can start."""
        return list(self._factories)

    def _timed(self, name: str) -> Any:
        t0 = time.monotonic()
        server = self._factories[name]()
        self.timings[name] = time.monotonic() - t0
        return server

    def prestart(self, name: str) -> None:
        """Start ``name`` in the background unless already started."""
        if name not in self._futures:
            self._futures[name] = self._executor.submit(self._timed, name)

    def get(self, name: str) -> Any:
        """The running server ``name`` (waits for its start)."""
        self.prestart(name)
        return self._futures[name].result()

    def shutdown(self) -> None:
        """Stop every server that was started (or is starting)."""
        for future in self._futures.values():
            try:
                server = future.result(timeout=180)
            except Exception:
                continue
            try:
                server.cleanup()
            except Exception:
                pass
        self._executor.shutdown(wait=True)


_POOL = ServerPool(_SESSION_ROOT)

# fixtures that imply a server
_IMPLIES = {
    "object_store_a": ["s3_a"],
    "object_store_b": ["s3_b"],
}


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Start, in parallel and in the background, every session server the collected tests use."""
    needed: set[str] = set()
    for item in items:
        for name in getattr(item, "fixturenames", ()):
            if name in _POOL.names:
                needed.add(name)
            needed.update(_IMPLIES.get(name, ()))
    # Prefect first: it is the slowest to start.
    for name in sorted(needed, key=lambda n: n != "prefect_server"):
        _POOL.prestart(name)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop every server and remove the session's temp root."""
    _POOL.shutdown()
    shutil.rmtree(_SESSION_ROOT, ignore_errors=True)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Report how long each server took to start."""
    if _POOL.timings:
        parts = ", ".join(f"{k} {v:.1f}s" for k, v in sorted(_POOL.timings.items()))
        terminalreporter.write_line(f"server start-up times (parallel): {parts}")


@pytest.fixture(scope="session")
def session_root() -> Path:
    """Temp directory of this test session (removed at the end)."""
    return _SESSION_ROOT


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[LocalPrefectServer]:
    """A real Prefect API server; PREFECT_API_URL points to it for the whole session (and subprocesses)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    server: LocalPrefectServer = _POOL.get("prefect_server")
    assert os.environ["PREFECT_API_URL"] == server.api_url
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        yield server
        _drain_prefect_workers()


def _drain_prefect_workers() -> None:
    """Send queued logs and events to the server before it stops (no 'Error logging to API' noise)."""
    try:
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=10)
    except Exception:
        pass
    try:
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all(timeout=10)
    except Exception:
        pass


@pytest.fixture(scope="session")
def etcd3() -> LocalEtcd:
    """A running 3-member etcd cluster shared by the session (do not change its membership)."""
    return _POOL.get("etcd3")


@pytest.fixture
def etcd_factory(tmp_path: Path) -> Iterator[Callable[[int], LocalEtcd]]:
    """``make(size)`` starts a fresh etcd cluster for one test; all are removed afterwards."""
    made: list[LocalEtcd] = []

    def make(size: int) -> LocalEtcd:
        cluster = LocalEtcd(size, tmp_path / f"etcd-{len(made)}").start()
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.cleanup()


@pytest.fixture(scope="session")
def s3_a() -> SeaweedS3:
    """First S3 store (SeaweedFS)."""
    return _POOL.get("s3_a")


@pytest.fixture(scope="session")
def s3_b() -> SeaweedS3:
    """Second, independent S3 store (SeaweedFS)."""
    return _POOL.get("s3_b")


def _object_store(s3: SeaweedS3) -> Any:
    from pydantic import SecretStr

    from blocks.object_store import ObjectStore

    return ObjectStore(
        endpoint=s3.endpoint,
        access_key=s3.access_key,
        secret_key=SecretStr(s3.secret_key),
        region=s3.region,
        secure=False,
    )


@pytest.fixture
def object_store_a(s3_a: SeaweedS3) -> Any:
    """An ``ObjectStore`` block (unsaved) for ``s3_a``."""
    return _object_store(s3_a)


@pytest.fixture
def object_store_b(s3_b: SeaweedS3) -> Any:
    """An ``ObjectStore`` block (unsaved) for ``s3_b``."""
    return _object_store(s3_b)


@pytest.fixture(scope="session")
def mariadb() -> LocalMariaDB:
    """A MariaDB server of this session (root / random password, loopback, free port)."""
    return _POOL.get("mariadb")


@pytest.fixture(scope="session")
def postgres() -> LocalPostgres:
    """A PostgreSQL server of this session (postgres / random password, loopback, free port)."""
    return _POOL.get("postgres")
