"""A throw-away PostgreSQL server on a free loopback port with its own data directory."""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from devservers.ports import free_port
from devservers.process import ManagedProcess, wait_until


def pg_bindir() -> Path:
    """The newest installed PostgreSQL server bin directory (Debian layout)."""
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(Path(d).parent.name))
    for d in reversed(dirs):
        if Path(d, "postgres").exists():
            return Path(d)
    found = shutil.which("postgres")
    if found:
        return Path(found).parent
    raise RuntimeError("PostgreSQL server binaries not found: run scripts/setup (installs postgresql)")


class LocalPostgres:
    """PostgreSQL server started from the installed binaries (never the machine's own server).

    PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` system user in a
    data directory under the system temp dir that this user can reach.

    Args:
        base_dir: where logs go (data lives in a private temp dir when running as root).
        host: loopback address to bind.
    """

    def __init__(self, base_dir: Path, host: str = "127.0.0.1") -> None:
        self.base_dir = Path(base_dir).absolute()
        self.host = host
        self.port = free_port(host)
        self.user = "postgres"
        self.password = secrets.token_urlsafe(12)
        self._as_root = os.geteuid() == 0
        self.root_dir = Path(tempfile.mkdtemp(prefix="stateferry-pg-")) if self._as_root else self.base_dir
        self.datadir = self.root_dir / "data"
        self.process: ManagedProcess | None = None

    def _run_as(self) -> list[str]:
        return ["runuser", "-u", "postgres", "--"] if self._as_root else []

    def start(self, timeout: float = 60.0) -> LocalPostgres:
        """initdb (first time), start, wait until it accepts connections."""
        bindir = pg_bindir()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        fresh = not self.datadir.exists()
        if self._as_root:
            pw_entry = pwd.getpwnam("postgres")
            os.chown(self.root_dir, pw_entry.pw_uid, pw_entry.pw_gid)
        if fresh:
            pwfile = self.root_dir / "pwfile"
            pwfile.write_text(self.password + "\n")
            if self._as_root:
                os.chown(pwfile, pwd.getpwnam("postgres").pw_uid, -1)
            pwfile.chmod(0o600)
            subprocess.run(
                [
                    *self._run_as(),
                    str(bindir / "initdb"),
                    "-D",
                    str(self.datadir),
                    "-U",
                    "postgres",
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                    "--no-sync",
                ],
                check=True,
                capture_output=True,
                timeout=120,
            )
            pwfile.unlink()
        argv = [
            *self._run_as(),
            str(bindir / "postgres"),
            "-D",
            str(self.datadir),
            "-c",
            f"listen_addresses={self.host}",
            "-c",
            f"port={self.port}",
            "-c",
            f"unix_socket_directories={self.root_dir}",
            "-c",
            "fsync=off",
            "-c",
            "shared_buffers=32MB",
            "-c",
            "max_connections=50",
        ]
        self.process = ManagedProcess(argv, self.base_dir / "postgres.log")
        self.process.start()
        if not wait_until(self._ready, timeout, 0.1):
            tail = self.process.log_tail()
            self.stop()
            raise RuntimeError(f"PostgreSQL did not start within {timeout}s\n{tail}")
        return self

    def _ready(self) -> bool:
        import psycopg

        with psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname="postgres",
            connect_timeout=2,
        ) as conn:
            conn.execute("SELECT 1")
        return True

    def stop(self) -> None:
        """Stop the server (data kept)."""
        if self.process:
            self.process.stop(timeout=20, sig=2)  # SIGINT = fast shutdown

    def kill(self) -> None:
        """SIGKILL the server (simulates a crash)."""
        if self.process:
            self.process.kill()

    def cleanup(self) -> None:
        """Stop and delete all data."""
        self.stop()
        shutil.rmtree(self.root_dir, ignore_errors=True)
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
