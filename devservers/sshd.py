"""A real OpenSSH ``sshd`` for the SFTP storage tests, on a free loopback port.

Host key, client key and ``authorized_keys`` are generated in ``base_dir``; SFTP is OpenSSH's
``internal-sftp``. Key login is for the user running the tests (sshd started by root serves any
account; the suite runs as root). :meth:`LocalSshd.add_password_user` creates a temporary system
account (``stateferry-sftp-<pid>-<hex>``, no home, shell ``nologin``, SFTP only) for password-login tests;
:meth:`LocalSshd.cleanup` removes it again, and :meth:`LocalSshd.start` removes accounts left behind by
a killed run.
"""

from __future__ import annotations

import getpass
import os
import secrets
import shutil
import socket
import subprocess
from pathlib import Path

from devservers.ports import free_port
from devservers.process import ManagedProcess, wait_until

USER_PREFIX = "stateferry-sftp-"


def _sshd() -> str:
    for candidate in ("/usr/sbin/sshd", shutil.which("sshd") or ""):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("OpenSSH sshd not found: run scripts/setup (Debian package openssh-server)")


class LocalSshd:
    """One sshd on ``127.0.0.1:<free port>``.

    Args:
        base_dir: keys, config, log and the directories served.
    """

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = Path(base_dir).absolute()
        self.host = "127.0.0.1"
        self.port = free_port(self.host)
        self.user = getpass.getuser()
        self.process: ManagedProcess | None = None
        self.password_users: list[str] = []

    @property
    def client_key(self) -> str:
        """The client's private key (OpenSSH format)."""
        return (self.base_dir / "client_ed25519").read_text()

    @property
    def known_hosts(self) -> str:
        """The known_hosts line of this server (what ``ssh-keyscan -p PORT 127.0.0.1`` prints)."""
        pub = (self.base_dir / "host_ed25519.pub").read_text().split()
        return f"[{self.host}]:{self.port} {pub[0]} {pub[1]}"

    def _keygen(self, path: Path) -> None:
        if not path.exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "stateferry-test", "-f", str(path)],
                check=True,
            )

    def start(self, timeout: float = 30.0) -> LocalSshd:
        """Generate keys and config, start sshd, wait for its banner."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.base_dir.chmod(0o755)
        remove_stale_users()
        self._keygen(self.base_dir / "host_ed25519")
        self._keygen(self.base_dir / "client_ed25519")
        auth = self.base_dir / "authorized_keys"
        auth.write_text((self.base_dir / "client_ed25519.pub").read_text())
        auth.chmod(0o644)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege-separation dir sshd requires
        config = self.base_dir / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    f"ListenAddress {self.host}",
                    f"HostKey {self.base_dir / 'host_ed25519'}",
                    f"PidFile {self.base_dir / 'sshd.pid'}",
                    f"AuthorizedKeysFile {auth}",
                    "StrictModes no",
                    "UsePAM no",
                    "PasswordAuthentication yes",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    "Subsystem sftp internal-sftp",
                    "LogLevel VERBOSE",
                    f"Match User {USER_PREFIX}*",
                    "    ForceCommand internal-sftp",
                    "    AllowTcpForwarding no",
                    "",
                ]
            )
        )
        self.process = ManagedProcess([_sshd(), "-D", "-e", "-f", str(config)], self.base_dir / "sshd.log")
        self.process.start()
        if not wait_until(self._banner, timeout, interval=0.1):
            tail = self.process.log_tail()
            self.cleanup()
            raise RuntimeError(f"sshd did not start within {timeout}s\n{tail}")
        return self

    def _banner(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as s:
                return s.recv(64).startswith(b"SSH-2.0-")
        except OSError:
            return False

    def add_password_user(self) -> tuple[str, str]:
        """Create a temporary SFTP-only account with a random password; returns (user, password)."""
        user = f"{USER_PREFIX}{os.getpid()}-{secrets.token_hex(2)}"
        password = "pw-" + secrets.token_urlsafe(18)
        subprocess.run(["useradd", "-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", user], check=True)
        self.password_users.append(user)
        subprocess.run(["chpasswd"], input=f"{user}:{password}\n", text=True, check=True)
        return user, password

    def cleanup(self) -> None:
        """Stop sshd, remove the temporary accounts and the directory."""
        if self.process:
            self.process.stop()
        for user in self.password_users:
            subprocess.run(["userdel", "-f", user], check=False, capture_output=True)
        self.password_users.clear()
        shutil.rmtree(self.base_dir, ignore_errors=True)


def remove_stale_users() -> None:
    """Remove ``stateferry-sftp-<pid>-*`` accounts whose creating test process is gone (a killed run)."""
    try:
        lines = Path("/etc/passwd").read_text().splitlines()
    except OSError:
        return
    for line in lines:
        name = line.split(":", 1)[0]
        pid = name.removeprefix(USER_PREFIX).split("-", 1)[0]
        if name.startswith(USER_PREFIX) and pid.isdigit() and not Path(f"/proc/{pid}").exists():
            subprocess.run(["userdel", "-f", name], check=False, capture_output=True)
