"""Bring the sandbox up for tests: ``with running_sandbox(state_dir) as sb: ...``.

Several processes (pytest-xdist workers, or several session fixtures) may ask for the same
``state_dir``: the first one starts the sandbox, later ones reuse it, and the last one to leave
stops it (a file lock plus a list of user pids in ``<state_dir>.users``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sandbox.cluster import Sandbox
from sandbox.podexec import exec_in_pod

DEFAULT_TEST_ENV = {"STATEFERRY_SANDBOX_TIME_SCALE": "0.2"}
# The sandbox every test session shares (its own addresses, so a developer's sandbox on 127.1/127.2 can
# keep running): use ``running_sandbox(TEST_STATE_DIR, base_octet=TEST_BASE_OCTET)``.
TEST_STATE_DIR = Path(tempfile.gettempdir()) / f"stateferry-test-sandbox-{os.getuid()}"
TEST_BASE_OCTET = 31


@dataclass(frozen=True)
class SandboxHandle:
    """A running sandbox as tests see it.

    Attributes:
        state_dir: the sandbox's state directory.
        kubeconfig_path: kubeconfig with contexts ``source`` and ``target``.
        source_url / target_url: the API server URLs.
    """

    state_dir: Path
    kubeconfig_path: Path
    source_url: str
    target_url: str

    def url(self, cluster: str) -> str:
        """API URL of ``cluster``."""
        return self.source_url if cluster == "source" else self.target_url

    def api_client(self, cluster: str) -> object:
        """A ``kubernetes.client.ApiClient`` for ``cluster`` built from the kubeconfig."""
        import kubernetes.config

        return kubernetes.config.new_client_from_config(
            config_file=str(self.kubeconfig_path), context=cluster
        )

    def exec(self, cluster: str, namespace: str, pod: str, argv: list[str], timeout: float = 60.0) -> object:
        """Run a command inside a pod (see :func:`sandbox.podexec.exec_in_pod`)."""
        return exec_in_pod(self.state_dir, cluster, namespace, pod, argv, timeout=timeout)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _users(path: Path) -> list[int]:
    try:
        pids = [int(p) for p in json.loads(path.read_text())]
    except (OSError, ValueError):
        return []
    return [p for p in pids if os.path.exists(f"/proc/{p}")]


@contextlib.contextmanager
def running_sandbox(
    state_dir: Path | str,
    *,
    base_octet: int | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 90.0,
    fresh: bool = True,
) -> Iterator[SandboxHandle]:
    """Start (or join) the sandbox in ``state_dir``; stop it when the last user leaves.

    Args:
        state_dir: state directory; tests should use a temporary one.
        base_octet: address plan (``source`` = ``127.<base>.x.x``, ``target`` = ``127.<base+1>.x.x``);
            default from ``$STATEFERRY_SANDBOX_BASE_OCTET`` or 1.
        env: extra environment of the supervisor (default: probe delays scaled by 0.2).
        timeout: seconds to wait for readiness.
        fresh: when this call starts the sandbox, wipe state left by an earlier run first.
    """
    sb = Sandbox(state_dir, base_octet)
    lock = Path(str(sb.state_dir) + ".lock")
    users_file = Path(str(sb.state_dir) + ".users")
    with _locked(lock):
        users = _users(users_file)
        if not users:  # nobody uses it: whatever runs there is a leftover of an earlier session
            sb.down(wipe=fresh)
            sb = Sandbox(state_dir, base_octet)
        if not sb.status().running:
            sb.up(timeout=timeout, extra_env=DEFAULT_TEST_ENV if env is None else env)
        users_file.write_text(json.dumps([*users, os.getpid()]))
    try:
        yield SandboxHandle(sb.state_dir, sb.kubeconfig, sb.url("source"), sb.url("target"))
    finally:
        with _locked(lock):
            remaining = [p for p in _users(users_file) if p != os.getpid()]
            users_file.write_text(json.dumps(remaining))
            if not remaining:
                sb.down()
