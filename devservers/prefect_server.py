"""A real Prefect API server (with UI) on a free loopback port, with its own PREFECT_HOME (SQLite)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.request
from pathlib import Path

from devservers.ports import free_port
from devservers.process import ManagedProcess, wait_until


def server_env(home: Path, api_url: str) -> dict[str, str]:
    """Environment for a Prefect server / client using ``home`` and ``api_url``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_UI_API_URL": api_url,
            "PREFECT_UI_API_URL": api_url,
            "PREFECT_LOGGING_LEVEL": "INFO",
        }
    )
    return env


class LocalPrefectServer:
    """``prefect server start`` on loopback.

    Args:
        home: PREFECT_HOME for the server (its SQLite database lives here).
        port: port to bind (free port by default).
        host: loopback address.
        ui: serve the UI too.
    """

    def __init__(self, home: Path, port: int | None = None, host: str = "127.0.0.1", ui: bool = True) -> None:
        self.home = Path(home).absolute()
        self.host = host
        self.port = port or free_port(host)
        self.ui = ui
        self.process: ManagedProcess | None = None

    @property
    def api_url(self) -> str:
        """``http://host:port/api``."""
        return f"http://{self.host}:{self.port}/api"

    @property
    def ui_url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    def healthy(self) -> bool:
        """True when ``/api/health`` answers ``true``."""
        try:
            with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as resp:
                return bool(json.loads(resp.read()))
        except (OSError, ValueError):
            return False

    def start(self, timeout: float = 120.0) -> LocalPrefectServer:
        """Start the server and wait until it answers ``/api/health``."""
        self.home.mkdir(parents=True, exist_ok=True)
        env = server_env(self.home, self.api_url)
        env["PREFECT_SERVER_UI_ENABLED"] = "true" if self.ui else "false"
        prefect = str(Path(sys.executable).parent / "prefect")
        if not Path(prefect).exists():
            prefect = shutil.which("prefect") or "prefect"
        argv = [prefect, "server", "start", "--host", self.host, "--port", str(self.port)]
        self.process = ManagedProcess(argv, self.home / "server.log", env=env)
        self.process.start()
        if not wait_until(self.healthy, timeout, 0.25):
            tail = self.process.log_tail(60)
            self.stop()
            raise RuntimeError(f"Prefect server did not become healthy within {timeout}s\n{tail}")
        return self

    def stop(self) -> None:
        """Stop the server."""
        if self.process:
            self.process.stop(timeout=15)

    def cleanup(self) -> None:
        """Stop and delete PREFECT_HOME."""
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> LocalPrefectServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
