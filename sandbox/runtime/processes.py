"""Processes of the sandbox on the host: the marker variables every pod process carries, finding
and killing marked processes, and the etcdctl endpoint of a command run in a pod."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence

SANDBOX_MARKER_ENV = "STATEFERRY_SANDBOX_ID"
POD_MARKER_ENV = "STATEFERRY_SANDBOX_POD"


def etcdctl_env(argv: Sequence[str], pod_ip: str) -> dict[str, str]:
    """``ETCDCTL_ENDPOINTS=http://<pod-ip>:2379`` unless the command names its endpoints itself.

    Pods share the host's network namespace, so etcdctl's default endpoint (127.0.0.1:2379) would
    not reach the pod's etcd; etcdctl refuses the variable together with ``--endpoints``.
    """
    if any("--endpoints" in a for a in argv):
        return {}
    return {"ETCDCTL_ENDPOINTS": f"http://{pod_ip}:2379"}


def processes_with_env(name: str, value: str) -> list[int]:
    """PIDs of live processes whose initial environment has ``name=value`` (scans /proc)."""
    needle = f"{name}={value}".encode()
    out: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                env = fh.read().split(b"\0")
        except OSError:
            continue
        if needle in env:
            out.append(int(entry))
    return out


def kill_marked(name: str, value: str, sig: int = signal.SIGKILL) -> list[int]:
    """Send ``sig`` to every process marked with ``name=value``; return their PIDs."""
    pids = [p for p in processes_with_env(name, value) if p != os.getpid()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
    return pids


def terminate(procs: Sequence[subprocess.Popen[bytes]], grace: float) -> None:
    """SIGTERM every process, wait up to ``grace`` seconds, then SIGKILL their process groups."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    for proc in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def terminate_soon(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM ``proc`` now and SIGKILL its process group 2 s later if it still runs."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)

    def later() -> None:
        time.sleep(2)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)

    threading.Thread(target=later, daemon=True).start()
