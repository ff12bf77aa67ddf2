"""SFTP backup storage (issue 15) against a real OpenSSH sshd started by the fixture on a free port:
backup, list, restore, verify and rotate over SFTP with key and with password login; the host key is
pinned (an unknown key is refused before anything is written); nothing secret in errors."""

from __future__ import annotations

import gc
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from backup.helpers import make_tree
from blocks.sftp import SftpServer
from devservers.sshd import LocalSshd
from flows.backup import scheduled_backup
from flows.restore import restore_backup
from stateferry.errors import InputError
from tasks.dumpers import tree_digest


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSshd]:
    server = LocalSshd(tmp_path_factory.mktemp("sshd")).start()
    try:
        yield server
    finally:
        server.cleanup()


def _sessions_of(user: str) -> list[str]:
    """Command lines of the sshd session processes serving ``user`` (``sshd: <user>...``)."""
    out = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cmd.startswith(f"sshd: {user}"):
            out.append(cmd)
    return out


def _uid() -> str:
    return secrets.token_hex(3)


def _files_job(src: Path, storages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "job": f"sftp-{_uid()}",
        "type": "desc_files",
        "sources": [{"target": [str(src)]}],
        "storages": storages,
        **extra,
    }


def test_sftp_key_login_backup_restore_verify_and_rotate(
    prefect_server: Any, sshd: LocalSshd, tmp_path: Path
) -> None:
    block = f"ssh-{_uid()}"
    SftpServer(
        host=sshd.host,
        port=sshd.port,
        username=sshd.user,
        private_key=SecretStr(sshd.client_key),
        known_hosts=sshd.known_hosts,
    ).save(block, overwrite=True)
    src = tmp_path / "src" / "www"
    src.mkdir(parents=True)
    make_tree(src)
    remote = tmp_path / "on-the-server"
    sftp = {
        "storage": "sftp",
        "sftp_server": block,
        "backup_dir": str(remote),
        "store": {"days": 0, "weeks": 0, "months": 0},
    }
    job = _files_job(src, [{"storage": "local", "backup_dir": str(tmp_path / "local")}, sftp], verify=True)

    first = scheduled_backup(job)
    assert first["failed"] == {} and len(first["good"]) == 2
    label = first["good"][1]
    stored = remote / job["job"] / first["backup_id"]
    assert sorted(p.name for p in stored.iterdir()) == ["files.tar.gz", "manifest.json"]
    assert (stored / "files.tar.gz").stat().st_mode & 0o777 == 0o600
    assert not list((remote / job["job"]).glob(".partial-*"))

    restore_backup(job, target_dir=str(tmp_path / "out"), storage=label)
    assert tree_digest(tmp_path / "out")["tree_sha256"] == first["parts"][0]["tree_sha256"]

    # a corrupt copy on the server is refused by its sha256; nothing is extracted
    data = bytearray((stored / "files.tar.gz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (stored / "files.tar.gz").write_bytes(bytes(data))
    with pytest.raises(Exception, match="corrupt"):
        restore_backup(job, target_dir=str(tmp_path / "out2"), storage=label)
    assert not (tmp_path / "out2").exists()

    # rotation over SFTP (all counts 0 keep only the newest); a directory that is not ours is never touched
    (remote / job["job"] / "not-a-backup").mkdir()
    second = scheduled_backup(job)
    assert second["failed"] == {}
    assert sorted(p.name for p in (remote / job["job"]).iterdir()) == sorted(
        [second["backup_id"], "not-a-backup"]
    )


def test_sftp_password_login_and_an_unknown_host_key_is_refused(
    prefect_server: Any, sshd: LocalSshd, tmp_path: Path
) -> None:
    user, password = sshd.add_password_user()
    remote = Path(tempfile.mkdtemp(prefix="stateferry-sftp-"))  # reachable by the unprivileged account
    try:
        shutil.chown(remote, user)
        src = tmp_path / "src"
        src.mkdir()
        (src / "a.txt").write_text("over sftp with a password")
        good = f"ssh-pw-{_uid()}"
        SftpServer(
            host=sshd.host,
            port=sshd.port,
            username=user,
            password=SecretStr(password),
            known_hosts=sshd.known_hosts,
        ).save(good, overwrite=True)
        job = _files_job(src, [{"storage": "sftp", "sftp_server": good, "backup_dir": str(remote / "b")}])
        result = scheduled_backup(job)
        assert result["failed"] == {}
        owner = os.stat(remote / "b" / job["job"] / result["backup_id"] / "manifest.json").st_uid
        assert owner != 0  # written by the password account, not by root
        restore_backup(job, target_dir=str(tmp_path / "out"))
        assert (tmp_path / "out" / "src" / "a.txt").read_text() == "over sftp with a password"

        # a server whose key is not the pinned one: refused before anything is written
        keydir = tmp_path / "other-keys"
        keydir.mkdir()
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keydir / "k")], check=True)
        pub = (keydir / "k.pub").read_text().split()
        wrong = f"ssh-wrong-{_uid()}"
        SftpServer(
            host=sshd.host,
            port=sshd.port,
            username=user,
            password=SecretStr(password),
            known_hosts=f"[{sshd.host}]:{sshd.port} {pub[0]} {pub[1]}",
        ).save(wrong, overwrite=True)
        job2 = _files_job(src, [{"storage": "sftp", "sftp_server": wrong, "backup_dir": str(remote / "c")}])
        with pytest.raises(InputError) as info:
            scheduled_backup(job2)
        assert info.value.field.endswith("known_hosts") or "known_hosts" in str(info.value)
        assert password not in str(info.value)
        assert not (remote / "c").exists()

        # a wrong password: a clear error naming the field, the password never shown
        bad = f"ssh-bad-{_uid()}"
        SftpServer(
            host=sshd.host,
            port=sshd.port,
            username=user,
            password=SecretStr("not-" + password),
            known_hosts=sshd.known_hosts,
        ).save(bad, overwrite=True)
        job3 = _files_job(src, [{"storage": "sftp", "sftp_server": bad, "backup_dir": str(remote / "d")}])
        with pytest.raises(InputError) as info:
            scheduled_backup(job3)
        assert "password" in str(info.value) and password not in str(info.value)

        # every SSH session of those runs is closed once their flows are done (a worker that runs
        # backups for months must not pile up sessions)
        gc.collect()
        deadline = time.monotonic() + 30
        while _sessions_of(user) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _sessions_of(user) == []
    finally:
        shutil.rmtree(remote, ignore_errors=True)
