"""A throw-away MariaDB server on a free loopback port with its own data directory."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

from devservers.ports import free_port
from devservers.process import ManagedProcess, wait_until


def _binary(*names: str) -> str:
    for name in names:
        for d in ("/usr/sbin", "/usr/bin", "/usr/local/bin"):
            if Path(d, name).exists():
                return str(Path(d, name))
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError(f"none of {names} found: run scripts/setup (installs mariadb-server)")


class LocalMariaDB:
    """MariaDB server started from the installed binaries (never the machine's own server).

    Args:
        base_dir: data directory parent (created).
        host: loopback address to bind.
    """

    def __init__(self, base_dir: Path, host: str = "127.0.0.1") -> None:
        self.base_dir = Path(base_dir).absolute()
        self.host = host
        self.port = free_port(host)
        self.user = "root"
        self.password = secrets.token_urlsafe(12)
        self.datadir = self.base_dir / "data"
        self.socket = str(self.base_dir / "mysqld.sock")
        self.process: ManagedProcess | None = None

    def _client(self, sql: str, *, via_socket: bool = False) -> None:
        client = _binary("mariadb", "mysql")
        argv = [client, "--no-defaults", "-u", "root"]
        env = dict(os.environ)
        if via_socket:
            argv += [f"--socket={self.socket}"]
        else:
            argv += ["-h", self.host, "-P", str(self.port)]
            env["MYSQL_PWD"] = self.password
        subprocess.run([*argv, "-e", sql], check=True, capture_output=True, env=env, timeout=30)

    def start(self, timeout: float = 60.0) -> LocalMariaDB:
        """Initialise the data directory (first time), start the server, set the root password."""
        fresh = not self.datadir.exists()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if fresh:
            self._install_db()
        argv = [
            _binary("mariadbd", "mysqld"),
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--socket={self.socket}",
            f"--port={self.port}",
            f"--bind-address={self.host}",
            f"--pid-file={self.base_dir / 'mysqld.pid'}",
            "--skip-name-resolve",
            "--innodb-buffer-pool-size=64M",
            "--innodb-log-file-size=16M",
            "--skip-log-bin",
            f"--log-error={self.base_dir / 'error.log'}",
        ]
        if os.geteuid() == 0:
            argv.append("--user=root")
        self.process = ManagedProcess(argv, self.base_dir / "mariadbd.log")
        self.process.start()
        if not wait_until(lambda: Path(self.socket).exists() and self._ping_socket(), timeout, 0.1):
            err = (
                (self.base_dir / "error.log").read_text(errors="replace")[-2000:]
                if (self.base_dir / "error.log").exists()
                else ""
            )
            self.stop()
            raise RuntimeError(f"MariaDB did not start within {timeout}s\n{err}")
        if fresh:
            pw = self.password.replace("'", "''")
            self._client(
                f"CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '{pw}';"
                f"ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY '{pw}';"
                "GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;"
                f"ALTER USER 'root'@'localhost' IDENTIFIED BY '{pw}';FLUSH PRIVILEGES;",
                via_socket=True,
            )
        return self

    def _install_db(self, attempts: int = 3) -> None:
        """Initialise the data directory; a failed bootstrap (seen once on a loaded CI machine) is retried
        on a fresh directory, and the last failure says what the bootstrap printed."""
        argv = [
            _binary("mariadb-install-db", "mysql_install_db"),
            "--no-defaults",
            f"--datadir={self.datadir}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--user=root" if os.geteuid() == 0 else f"--user={os.getlogin()}",
        ]
        for attempt in range(1, attempts + 1):
            done = subprocess.run(argv, capture_output=True, timeout=120, check=False)
            if done.returncode == 0:
                return
            shutil.rmtree(self.datadir, ignore_errors=True)
            if attempt == attempts:
                out = (done.stdout + done.stderr).decode(errors="replace")[-2000:]
                raise RuntimeError(
                    f"mariadb-install-db failed {attempts} times (exit {done.returncode}):\n{out}"
                )
            time.sleep(1.0)

    def _ping_socket(self) -> bool:
        try:
            self._client("SELECT 1", via_socket=True)
            return True
        except subprocess.CalledProcessError:
            # after the first start the root password is set: ping over TCP instead
            self._client("SELECT 1")
            return True

    def stop(self) -> None:
        """Stop the server (data kept)."""
        if self.process:
            self.process.stop(timeout=20)

    def kill(self) -> None:
        """SIGKILL the server (simulates a crash)."""
        if self.process:
            self.process.kill()

    def cleanup(self) -> None:
        """Stop and delete all data."""
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> LocalMariaDB:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
