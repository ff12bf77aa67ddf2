"""A throw-away Redis server on a free loopback port with its own data directory and a password."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from devservers.ports import free_port
from devservers.process import ManagedProcess, wait_until


class LocalRedis:
    """``redis-server`` from Debian's package (never the machine's own server on 6379).

    The password is set with ``requirepass`` in a 0600 config file (not on the command line); the
    server listens on 127.0.0.1 only, on a free port, with persistence off.

    Args:
        base_dir: directory for the config, the log and the data dir (created).
        password: ``requirepass`` (default: random).
    """

    def __init__(self, base_dir: Path, password: str | None = None, host: str = "127.0.0.1") -> None:
        self.base_dir = Path(base_dir).absolute()
        self.host = host
        self.port = free_port(host)
        self.password = password or secrets.token_urlsafe(16)
        self.process: ManagedProcess | None = None

    def start(self, timeout: float = 30.0) -> LocalRedis:
        """Start the server and wait until it answers an authenticated PING."""
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            raise RuntimeError("redis-server not found: run scripts/setup (installs redis-server)")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        conf = self.base_dir / "redis.conf"
        conf.write_text(f"requirepass {self.password}\n")
        os.chmod(conf, 0o600)
        argv = [
            binary,
            str(conf),
            "--bind", self.host,
            "--port", str(self.port),
            "--dir", str(self.base_dir),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--protected-mode", "yes",
        ]  # fmt: skip
        self.process = ManagedProcess(argv, self.base_dir / "redis.log")
        self.process.start()
        if not wait_until(lambda: self.client().ping(), timeout, 0.05):
            tail = self.process.log_tail()
            self.stop()
            raise RuntimeError(f"redis-server did not start within {timeout}s\n{tail}")
        return self

    def client(self, db: int = 0) -> Any:
        """A ``redis.Redis`` client (str responses) of database ``db``."""
        import redis

        return redis.Redis(
            host=self.host, port=self.port, password=self.password, db=db, decode_responses=True
        )

    def stop(self) -> None:
        """Stop the server."""
        if self.process:
            self.process.stop(timeout=10)

    def cleanup(self) -> None:
        """Stop and delete everything."""
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
