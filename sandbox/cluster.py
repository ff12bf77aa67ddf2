"""The sandbox supervisor: both clusters (API servers, controllers, kubelets, DNS, LBs) as one unit.

``Sandbox(state_dir).up()`` starts ONE detached supervisor process (``python -m sandbox.cluster
serve --state-dir DIR``) that hosts the ``source`` and ``target`` clusters, writes
``<state_dir>/kubeconfig`` (contexts ``source`` and ``target``) and waits until both answer.
Every process the sandbox starts carries ``STATEFERRY_SANDBOX_ID=<id of the state dir>`` in its
environment, so ``down`` finds and kills all of them even after the supervisor was SIGKILLed.
Mounts exist only in per-pod private mount namespaces and vanish with their processes.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.runtime import ippool
from sandbox.runtime.processes import SANDBOX_MARKER_ENV, processes_with_env

CLUSTERS = ("source", "target")
API_PORT = 6443
DEFAULT_STATE_DIR = Path(".stateferry") / "sandbox"

log = logging.getLogger(__name__)


class SandboxError(RuntimeError):
    """The sandbox cannot do what was asked; the message says how to fix it."""


@dataclass
class SandboxStatus:
    """What ``status()`` reports."""

    state_dir: Path
    running: bool
    supervisor_pid: int | None
    kubeconfig: Path
    clusters: dict[str, str] = field(default_factory=dict)  # name -> API URL
    pods: dict[str, int] = field(default_factory=dict)  # cluster -> running pod count
    stray_pids: list[int] = field(default_factory=list)

    def describe(self) -> str:
        """Human-readable summary."""
        if not self.running:
            extra = f" ({len(self.stray_pids)} orphaned processes)" if self.stray_pids else ""
            return f"sandbox in {self.state_dir}: not running{extra}"
        lines = [f"sandbox in {self.state_dir}: running (supervisor pid {self.supervisor_pid})"]
        for name, url in self.clusters.items():
            lines.append(f"  {name}: {url}  pods running: {self.pods.get(name, 0)}")
        lines.append(f"  kubeconfig: {self.kubeconfig}")
        return "\n".join(lines)


def sandbox_id(state_dir: Path) -> str:
    """The marker value of a state dir (stable, derived from its absolute path)."""
    return "sbx-" + hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:16]


def api_url(cluster: str, base_octet: int = 1) -> str:
    """API server URL of a cluster (``source`` = ``127.<base>.0.1``, ``target`` = ``127.<base+1>.0.1``)."""
    return f"http://{ippool.api_server_ip(ippool.cluster_octet(cluster, base_octet))}:{API_PORT}"


def _alive(pid: int | None) -> bool:
    if not pid or pid < 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


class Sandbox:
    """Start, stop and inspect the two-cluster sandbox kept in ``state_dir``.

    Args:
        state_dir: where the kubeconfig, API state, PV directories and logs live.
        base_octet: second address octet of ``source`` (``target`` gets the next one). Default:
            what the state dir was created with, else ``$STATEFERRY_SANDBOX_BASE_OCTET``, else 1.
    """

    def __init__(self, state_dir: Path | str = DEFAULT_STATE_DIR, base_octet: int | None = None) -> None:
        self.state_dir = Path(state_dir).absolute()
        self.marker = sandbox_id(self.state_dir)
        saved = None
        with contextlib.suppress(OSError, ValueError):
            saved = int(json.loads(self.config_file.read_text())["base_octet"])
        env_octet = os.environ.get("STATEFERRY_SANDBOX_BASE_OCTET")
        self.base_octet = base_octet or saved or (int(env_octet) if env_octet else 1)
        if not 1 <= self.base_octet <= 250:
            raise SandboxError(f"base_octet must be within 1..250, got {self.base_octet}")

    @property
    def config_file(self) -> Path:
        """Remembers the address plan of the state dir."""
        return self.state_dir / "sandbox.json"

    def octet(self, cluster: str) -> int:
        """Second address octet of ``cluster``."""
        return ippool.cluster_octet(cluster, self.base_octet)

    def url(self, cluster: str) -> str:
        """API server URL of ``cluster``."""
        return api_url(cluster, self.base_octet)

    @property
    def kubeconfig(self) -> Path:
        """Path of the kubeconfig with contexts ``source`` and ``target``."""
        return self.state_dir / "kubeconfig"

    @property
    def pid_file(self) -> Path:
        """The supervisor's pid file."""
        return self.state_dir / "supervisor.pid"

    @property
    def pids_file(self) -> Path:
        """JSON with the pids of every process of the sandbox."""
        return self.state_dir / "pids.json"

    @property
    def ready_file(self) -> Path:
        """Written by the supervisor once both clusters serve."""
        return self.state_dir / "ready.json"

    @property
    def log_file(self) -> Path:
        """The supervisor's log."""
        return self.state_dir / "supervisor.log"

    def _pid(self) -> int | None:
        """The supervisor's pid from the pid file, None if missing or if that pid is another program."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return pid  # dead: a stale pid file
        if b"sandbox.cluster" not in cmdline or str(self.state_dir).encode() not in cmdline:
            return -pid  # the pid was reused by an unrelated process: never signal it
        return pid

    def stray_pids(self) -> list[int]:
        """PIDs of processes carrying this sandbox's marker."""
        return processes_with_env(SANDBOX_MARKER_ENV, self.marker)

    # ------------------------------------------------------------------ status
    def status(self) -> SandboxStatus:
        """Report whether the sandbox runs, its API URLs and pod counts."""
        pid = self._pid()
        running = _alive(pid) and self.ready_file.exists()
        st = SandboxStatus(self.state_dir, running, pid if _alive(pid) else None, self.kubeconfig)
        if running:
            with contextlib.suppress(OSError, ValueError):
                st.clusters = dict(json.loads(self.ready_file.read_text()).get("clusters") or {})
            for name in CLUSTERS:
                with contextlib.suppress(OSError, ValueError):
                    index = json.loads((self.state_dir / name / "pods" / "index.json").read_text())
                    st.pods[name] = len(index)
        else:
            st.stray_pids = self.stray_pids()
        return st

    # ------------------------------------------------------------------ up
    def up(self, timeout: float = 90.0, extra_env: dict[str, str] | None = None) -> SandboxStatus:
        """Start the sandbox (no-op if it already runs) and wait until both clusters are ready.

        Raises:
            SandboxError: a half-dead sandbox is in the way, the addresses are taken, or start-up failed.
        """
        pid = self._pid()
        if _alive(pid) and self.ready_file.exists():
            return self.status()
        strays = self.stray_pids()
        if pid is not None or strays:
            what = []
            if pid is not None:
                what.append(
                    f"a stale pid file ({self.pid_file}, pid {abs(pid)} {'alive' if _alive(pid) else 'dead'})"
                )
            if strays:
                what.append(
                    f"{len(strays)} orphaned sandbox processes (pids {', '.join(map(str, strays[:8]))})"
                )
            raise SandboxError(
                f"found a half-dead sandbox in {self.state_dir}: {' and '.join(what)}. Clean it with "
                f"`stateferry sandbox down --state-dir {self.state_dir}` (keeps the clusters' state) or "
                f"`stateferry sandbox down --wipe --state-dir {self.state_dir}` (deletes it), "
                "then run `up` again."
            )
        self._check_addresses_free()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(json.dumps({"base_octet": self.base_octet}))
        self.ready_file.unlink(missing_ok=True)
        env = {**os.environ, **(extra_env or {}), SANDBOX_MARKER_ENV: self.marker}
        src_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = src_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        with open(self.log_file, "ab") as log_fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "sandbox.cluster", "serve", "--state-dir", str(self.state_dir)],
                stdout=log_fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=src_root,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = self.log_file.read_text(errors="replace")[-2000:]
                self.down()
                raise SandboxError(f"the sandbox supervisor exited during start-up; log tail:\n{tail}")
            if self.ready_file.exists():
                return self.status()
            time.sleep(0.05)
        self.down()
        raise SandboxError(f"the sandbox did not become ready within {timeout:.0f}s; see {self.log_file}")

    def _check_addresses_free(self) -> None:
        import socket

        for name in CLUSTERS:
            host = ippool.api_server_ip(self.octet(name))
            with socket.socket() as s:
                s.settimeout(0.5)
                if s.connect_ex((host, API_PORT)) == 0:
                    raise SandboxError(
                        f"{host}:{API_PORT} is already in use (another sandbox with a different state dir?). "
                        "Only one sandbox can run per machine: stop the other one with "
                        "`stateferry sandbox down --state-dir <its dir>`."
                    )

    # ------------------------------------------------------------------ down
    def down(self, wipe: bool = False, timeout: float = 20.0) -> list[int]:
        """Stop every process of the sandbox (supervisor first, then leftovers); keep state unless ``wipe``.

        Returns:
            The pids that had to be killed after the supervisor's own shutdown.
        """
        pid = self._pid()
        if _alive(pid):
            assert pid is not None
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        killed: list[int] = []
        for _ in range(50):
            strays = self.stray_pids()
            if not strays:
                break
            for p in strays:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(p, signal.SIGKILL)
            killed.extend(p for p in strays if p not in killed)
            time.sleep(0.1)
        for f in (self.pid_file, self.ready_file, self.pids_file):
            f.unlink(missing_ok=True)
        if wipe and self.state_dir.exists():
            shutil.rmtree(self.state_dir, ignore_errors=True)
        return killed


# ---------------------------------------------------------------------------------------- supervisor
def _load_api_server() -> Any:
    from sandbox.apiserver import ApiServer

    return ApiServer


def serve(state_dir: Path) -> int:
    """Run both clusters in this process until SIGTERM/SIGINT (the supervisor's main)."""
    from sandbox.kubeconfig import write_kubeconfig
    from sandbox.runtime.manager import ClusterRuntime
    from sandbox.runtime.proxy import ProxyManager

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sb = Sandbox(state_dir)
    sb.pid_file.write_text(f"{os.getpid()}\n")
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    api_server_cls = _load_api_server()
    servers: list[Any] = []
    runtimes: list[ClusterRuntime] = []
    proxies = ProxyManager()
    try:
        for name in CLUSTERS:
            octet = sb.octet(name)
            server = api_server_cls(
                name,
                ippool.api_server_ip(octet),
                API_PORT,
                sb.state_dir / name / "api",
                service_cidr_base=f"127.{octet}.96",
            )
            server.start()
            servers.append(server)
        urls = {name: str(s.url) for name, s in zip(CLUSTERS, servers, strict=True)}
        write_kubeconfig(sb.kubeconfig, urls)
        for name in CLUSTERS:
            rt = ClusterRuntime(name, sb.octet(name), urls[name], sb.state_dir / name, sb.marker, proxies)
            rt.bootstrap()
            rt.start()
            runtimes.append(rt)
        for server, rt in zip(servers, runtimes, strict=True):
            if hasattr(server, "set_log_reader"):
                server.set_log_reader(rt.kubelet.read_log)  # kubectl logs
            if hasattr(server, "set_exec_starter"):
                server.set_exec_starter(rt.kubelet.exec_process)  # kubectl exec
        for rt in runtimes:
            rt.kick()
        tmp = sb.ready_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"clusters": urls, "kubeconfig": str(sb.kubeconfig), "pid": os.getpid()}))
        tmp.replace(sb.ready_file)
        log.info("sandbox ready: %s", urls)
        while not stop.wait(1.0):
            pids = {"supervisor": os.getpid(), "pods": {rt.name: rt.kubelet.all_pids() for rt in runtimes}}
            with contextlib.suppress(OSError):
                sb.pids_file.write_text(json.dumps(pids))
    finally:
        sb.ready_file.unlink(missing_ok=True)
        threads = [threading.Thread(target=rt.stop) for rt in runtimes]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        proxies.close()
        for server in servers:
            with contextlib.suppress(Exception):
                server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m sandbox.cluster serve --state-dir DIR``."""
    parser = argparse.ArgumentParser(prog="python -m sandbox.cluster")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("serve", help="run the supervisor in the foreground")
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    args = parser.parse_args(argv)
    return serve(args.state_dir)


if __name__ == "__main__":
    sys.exit(main())
