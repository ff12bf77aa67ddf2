"""Backups on an SSH server over SFTP (nxs-backup's ``scp``/``sftp`` storage).

Same layout and the same guarantees as the local directory storage (tasks/backup_storage.py)::

    <backup_dir>/<job>/.partial-<backup_id>/<part>   while writing (mode 0600, directories 0700)
    <backup_dir>/<job>/<backup_id>/manifest.json     written last, then the directory is renamed

Publishing renames the partial directory with OpenSSH's ``posix-rename@openssh.com`` (atomic on the
server's filesystem), so a half-written backup is never visible under its id. Names read back from
the server (directory listings) are used only when they are backup ids of this layout; everything
else is never listed and never deleted. One SSH connection per storage object, opened lazily.
"""

from __future__ import annotations

import json
import posixpath
import stat
import threading
import uuid
import weakref
from typing import IO, TYPE_CHECKING, Any, BinaryIO, cast

from planning.backup_layout import check_backup_id, check_part_name, is_backup_id
from stateferry.errors import InputError, PermanentError, StateferryError, TransientError
from tasks.backup_storage import MANIFEST, PARTIAL_PREFIX, PartWriter, StoredBackup

if TYPE_CHECKING:
    from blocks.sftp import SftpServer

#: write buffer per part: SFTP packets are at most 32 KiB; paramiko splits larger writes.
_WRITE_BUFFER = 1024 * 1024


def _close_connection(client: Any, sftp: Any) -> None:
    try:
        sftp.close()
    finally:
        client.close()


def _fsync(sftp: Any, fh: Any) -> None:
    """Ask the server to fsync the file (OpenSSH's ``fsync@openssh.com``; paramiko has no wrapper).

    Servers without the extension answer with an error: the close still reports every write error,
    only the durability on a server crash is then the server's own.
    """
    from paramiko.sftp import CMD_EXTENDED

    try:
        sftp._request(CMD_EXTENDED, "fsync@openssh.com", fh.handle)
    except (OSError, AttributeError):
        pass


class _SftpPart:
    def __init__(self, sftp: Any, path: str) -> None:
        self.path = path
        self._sftp = sftp
        self._fh = sftp.open(path, "wb", bufsize=_WRITE_BUFFER)
        self._fh.chmod(0o600)
        self._fh.set_pipelined(True)

    def write(self, chunk: bytes) -> None:
        self._fh.write(chunk)

    def commit(self) -> None:
        self._fh.flush()
        _fsync(self._sftp, self._fh)
        self._fh.close()

    def abort(self) -> None:
        try:
            self._fh.close()
        finally:
            try:
                self._sftp.remove(self.path)
            except OSError:
                pass


class SftpStorage:
    """Backups in a directory on an SSH server.

    Args:
        server: the saved ``SftpServer`` block.
        root: the storage's ``backup_dir`` on the server (absolute).
        label: name used in reports.
    """

    def __init__(self, server: SftpServer, root: str, label: str | None = None) -> None:
        self.server = server
        self.root = root.rstrip("/") or "/"
        self.label = label or f"sftp:{server.host}:{self.root}"
        self._lock = threading.Lock()
        self._conn: tuple[Any, Any] | None = None

    @property
    def sftp(self) -> Any:
        """The SFTP session (opened on first use)."""
        with self._lock:
            if self._conn is None:
                self._conn = self.server.connect()
                # closed with close() or, at the latest, when this storage object goes away (the
                # flow's resolved job), so a long-lived worker never accumulates SSH sessions
                weakref.finalize(self, _close_connection, *self._conn)
            return self._conn[1]

    def close(self) -> None:
        """Close the SSH connection."""
        with self._lock:
            if self._conn is not None:
                _close_connection(*self._conn)
                self._conn = None

    def _job_dir(self, job: str) -> str:
        return posixpath.join(self.root, job)

    def _mkdirs(self, path: str) -> None:
        parts = [p for p in path.split("/") if p]
        cur = "/"
        for p in parts:
            cur = posixpath.join(cur, p)
            try:
                st = self.sftp.stat(cur)
            except FileNotFoundError:
                self.sftp.mkdir(cur, mode=0o700)
                continue
            if not stat.S_ISDIR(st.st_mode or 0):
                raise InputError(
                    "backup_dir", f"{cur} on {self.server.host} is not a directory", "fix the path"
                )

    def check_writable(self, job: str, *, rotation: bool = True) -> list[str]:
        """Create the job directory and write a probe file, then remove it (no warnings).

        Raises:
            InputError: naming ``backup_dir`` when the directory cannot be created or written.
        """
        probe = posixpath.join(self._job_dir(job), f".probe-{uuid.uuid4().hex}")
        try:
            self._mkdirs(self._job_dir(job))
            with self.sftp.open(probe, "wb") as fh:
                fh.write(b"ok")
            self.sftp.remove(probe)
            return []
        except OSError as exc:
            raise InputError(
                "backup_dir",
                f"{self.root} on {self.server.host} is not writable ({type(exc).__name__}: {exc})",
                "create the directory on the server and give the SSH user write access, or fix the path",
            ) from None

    def open_part(self, job: str, backup_id: str, part: str) -> PartWriter:
        """Open ``.partial-<id>/<part>`` for writing."""
        check_backup_id(backup_id)
        check_part_name(part)
        d = posixpath.join(self._job_dir(job), f"{PARTIAL_PREFIX}{backup_id}")
        self._mkdirs(d)
        return _SftpPart(self.sftp, posixpath.join(d, part))

    def publish(self, job: str, backup_id: str, manifest: dict[str, Any]) -> None:
        """Write the manifest into the partial directory and rename the directory into place."""
        check_backup_id(backup_id)
        partial = posixpath.join(self._job_dir(job), f"{PARTIAL_PREFIX}{backup_id}")
        final = posixpath.join(self._job_dir(job), backup_id)
        tmp = posixpath.join(partial, f".{MANIFEST}.tmp")
        part = _SftpPart(self.sftp, tmp)
        part.write(json.dumps(manifest, indent=2, sort_keys=True).encode())
        part.commit()
        self.sftp.posix_rename(tmp, posixpath.join(partial, MANIFEST))
        try:
            self.sftp.stat(final)
        except FileNotFoundError:
            pass
        else:
            raise PermanentError(
                f"{self.label}: backup {job}/{backup_id} already exists; refusing to overwrite it"
            )
        self.sftp.posix_rename(partial, final)

    def _rmtree(self, path: str) -> None:
        try:
            entries = self.sftp.listdir_attr(path)
        except FileNotFoundError:
            return
        for e in entries:
            child = posixpath.join(path, e.filename)
            if stat.S_ISDIR(e.st_mode or 0) and not stat.S_ISLNK(e.st_mode or 0):
                self._rmtree(child)
            else:
                self.sftp.remove(child)
        self.sftp.rmdir(path)

    def discard(self, job: str, backup_id: str) -> None:
        """Remove ``<id>`` and ``.partial-<id>`` (only ids of this layout)."""
        check_backup_id(backup_id)
        for name in (backup_id, f"{PARTIAL_PREFIX}{backup_id}"):
            self._rmtree(posixpath.join(self._job_dir(job), name))

    def list_backups(self, job: str) -> list[StoredBackup]:
        """Backups of the job, oldest first; partial directories are listed as incomplete."""
        try:
            entries = self.sftp.listdir_attr(self._job_dir(job))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise TransientError(f"{self.label}: listing failed ({type(exc).__name__}: {exc})") from None
        out: list[StoredBackup] = []
        for e in sorted(entries, key=lambda a: a.filename):
            if not stat.S_ISDIR(e.st_mode or 0):
                continue
            name = e.filename
            if name.startswith(PARTIAL_PREFIX):
                if is_backup_id(name.removeprefix(PARTIAL_PREFIX)):
                    out.append(StoredBackup(name, None))
                continue
            if not is_backup_id(name):
                continue  # not ours: never listed, never deleted
            try:
                with self.sftp.open(posixpath.join(self._job_dir(job), name, MANIFEST), "rb") as fh:
                    manifest = json.loads(fh.read(16 * 1024 * 1024))
            except (OSError, ValueError):
                out.append(StoredBackup(name, None, unreadable=True))
                continue
            out.append(
                StoredBackup(name, manifest) if isinstance(manifest, dict) else StoredBackup(name, None, True)
            )
        return out

    def open_read(self, job: str, backup_id: str, part: str, *, published: bool = True) -> BinaryIO:
        """Open a part for reading (prefetched: reads are pipelined)."""
        check_backup_id(backup_id)
        check_part_name(part)
        name = backup_id if published else f"{PARTIAL_PREFIX}{backup_id}"
        try:
            fh = self.sftp.open(posixpath.join(self._job_dir(job), name, part), "rb", bufsize=_WRITE_BUFFER)
        except FileNotFoundError:
            raise StateferryError(f"{self.label}: {job}/{name}/{part} does not exist") from None
        fh.prefetch()
        return cast(BinaryIO, cast(IO[bytes], fh))
