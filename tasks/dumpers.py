"""Backup sources as streaming producers: mysqldump, pg_dump, tar, etcd snapshot.

A producer is called with a file-like sink and pushes the raw dump into it; it returns extra facts for
the manifest and raises when the source failed. Passwords reach the dump tools through a temporary
0600 option file (MySQL/MariaDB) or the environment (``PGPASSWORD``) — never the command line — and
every error message is passed through :func:`redactor`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import glob
import hashlib
import os
import re
import shutil
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Protocol, cast

from planning.db_args import mysql_database_args, pg_conninfo
from stateferry.errors import InputError, PermanentError, StateferryError
from tasks.tool_process import TailBuffer, run_tool

if TYPE_CHECKING:
    from blocks.database import Database
    from blocks.etcd import EtcdCluster

CHUNK = 1024 * 1024
MYSQL_SYSTEM_DBS = frozenset({"information_schema", "performance_schema", "mysql", "sys"})


class Sink(Protocol):
    """Where producers write."""

    def write(self, data: bytes) -> int:
        """Accept bytes."""


class DumpFailed(StateferryError):
    """The dump tool failed or its output was incomplete; the backup is not good."""


# --------------------------------------------------------------------------------------------------
# helpers


def redactor(*secrets: str | None) -> Callable[[str], str]:
    """Return a function that replaces every given secret (non-empty) in a string with ``***``."""
    values = sorted({s for s in secrets if s}, key=len, reverse=True)

    def redact(text: str) -> str:
        for s in values:
            text = text.replace(s, "***")
        return text

    return redact


def find_tool(*names: str) -> str:
    """Find a client binary on PATH, then under ``/usr/lib/postgresql/<newest>/bin``.

    Raises:
        PermanentError: saying which package to install.
    """
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    for name in names:
        candidates = sorted(
            glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
            key=lambda p: [int(x) if x.isdigit() else 0 for x in Path(p).parts[-3].split(".")],
        )
        if candidates:
            return candidates[-1]
    raise PermanentError(
        f"none of {', '.join(names)} was found on PATH or in /usr/lib/postgresql/*/bin; "
        "install the database client package (scripts/setup installs mariadb-client and postgresql-client)"
    )


def tool_version(path: str) -> str:
    """``<tool> --version`` (first line), or "unknown"."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=15)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


@contextlib.contextmanager
def mysql_defaults_file(db: Database) -> Iterator[str]:
    """A temporary ``[client]`` option file (mode 0600) with the connection and password."""
    password = db.password.get_secret_value().replace("\\", "\\\\").replace('"', '\\"')
    fd, path = tempfile.mkstemp(prefix="stateferry-my-", suffix=".cnf")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(
                "[client]\n"
                f"host={db.host}\nport={db.effective_port}\nuser={db.user}\n"
                f'password="{password}"\nprotocol=TCP\n'
            )
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def postgres_env(db: Database) -> dict[str, str]:
    """Environment for pg_dump / pg_restore / psql (password in PGPASSWORD)."""
    env = dict(os.environ)
    env.update(
        {
            "PGHOST": db.host,
            "PGPORT": str(db.effective_port),
            "PGUSER": db.user,
            "PGPASSWORD": db.password.get_secret_value(),
            "PGCONNECT_TIMEOUT": "10",
        }
    )
    return env


def run_dump(
    argv: list[str],
    sink: Sink,
    *,
    env: dict[str, str] | None = None,
    redact: Callable[[str], str] = lambda s: s,
    complete_marker: bytes | None = None,
    on_start: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> dict[str, Any]:
    """Run a dump tool and push its stdout into the sink.

    Args:
        argv: the command (never containing a password).
        sink: receives stdout.
        env: environment for the tool.
        redact: scrubs secrets from error messages.
        complete_marker: bytes that must appear in the last 8 KiB of output (e.g. mysqldump's
            "-- Dump completed"), so a cut-short dump is detected even if the tool exits 0.
        on_start: called with the process (tests use it to observe the dump).

    Returns:
        ``{"bytes": n}``.

    Raises:
        DumpFailed: non-zero exit status or missing completion marker (stderr tail included, redacted).
    """
    tail = TailBuffer()
    total = 0
    tool = Path(argv[0]).name
    with run_tool(argv, env=env, stderr_limit=4096) as run:
        if on_start is not None:
            on_start(run.proc)
        while chunk := run.stdout.read1(CHUNK):
            total += len(chunk)
            tail.add(chunk)
            sink.write(chunk)
    if run.returncode != 0:
        msg = run.stderr_text(1500)
        raise DumpFailed(redact(f"{tool} exited with status {run.returncode}: {msg or '(no message)'}"))
    if complete_marker is not None and complete_marker not in tail.data:
        raise DumpFailed(
            f"{tool} exited 0 but its output is incomplete (no {complete_marker.decode()!r} at the end)"
        )
    return {"bytes": total}


# --------------------------------------------------------------------------------------------------
# MySQL / MariaDB


def mysql_user_databases(db: Database) -> list[str]:
    """Every non-system database on the server."""
    with contextlib.closing(db.connect()) as conn, conn.cursor() as cur:
        cur.execute("SHOW DATABASES")
        return sorted(r[0] for r in cur.fetchall() if r[0] not in MYSQL_SYSTEM_DBS)


def mysql_data_size(db: Database, databases: list[str]) -> int:
    """Approximate bytes of table data in the databases (for progress reporting)."""
    with contextlib.closing(db.connect()) as conn, conn.cursor() as cur:
        marks = ", ".join(["%s"] * len(databases))
        cur.execute(
            "SELECT COALESCE(SUM(data_length), 0) FROM information_schema.tables"
            f" WHERE table_schema IN ({marks})",
            tuple(databases),
        )
        row = cur.fetchone()
        return int(row[0]) if row else 0


def mysqldump_producer(
    db: Database,
    databases: list[str],
    keys: list[str],
    *,
    on_start: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> Callable[[Sink], dict[str, Any]]:
    """A producer running ``mysqldump <keys> --databases <dbs>``.

    Args:
        db: the server (password via a 0600 option file).
        databases: databases to dump (``--databases`` so the dump recreates them).
        keys: the job's extra keys (nxs-backup's defaults + ``--single-transaction``).
        on_start: hook receiving the process.
    """
    tool = find_tool("mariadb-dump", "mysqldump")
    marker = None if ("--skip-comments" in keys or "--compact" in keys) else b"-- Dump completed"

    def produce(sink: Sink) -> dict[str, Any]:
        with mysql_defaults_file(db) as cnf:
            argv = [tool, f"--defaults-extra-file={cnf}", *keys, *mysql_database_args(databases)]
            info = run_dump(
                argv,
                sink,
                redact=redactor(db.password.get_secret_value()),
                complete_marker=marker,
                on_start=on_start,
            )
        return {**info, "databases": databases, "tool": tool_version(tool)}

    return produce


# --------------------------------------------------------------------------------------------------
# PostgreSQL


def postgres_user_databases(db: Database) -> list[str]:
    """Every non-template database except ``postgres``."""
    with contextlib.closing(db.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database WHERE NOT datistemplate AND datname <> 'postgres'")
        return sorted(r[0] for r in cur.fetchall())


def postgres_data_size(db: Database, databases: list[str]) -> int:
    """Bytes of the databases on disk (for progress reporting)."""
    with contextlib.closing(db.connect()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT COALESCE(SUM(pg_database_size(datname)), 0) FROM pg_database WHERE datname = ANY(%s)",
            (databases,),
        )
        row = cur.fetchone()
        return int(row[0]) if row else 0


_SNAPSHOT_ID = re.compile(r"^[0-9A-F]+-[0-9A-F]+(-[0-9]+)?$")


def pg_dump_producer(
    db: Database,
    database: str,
    fmt: str,
    extra: list[str],
    *,
    inventory: Callable[[Any], dict[str, Any]] | None = None,
) -> Callable[[Sink], dict[str, Any]]:
    """A producer running ``pg_dump -F c|p`` for one database (password via PGPASSWORD).

    With ``inventory`` the producer opens a REPEATABLE READ transaction, exports its snapshot, lists
    the database in it (``inventory(connection)``) and has pg_dump read the same snapshot
    (``--snapshot``): the manifest's inventory describes exactly what the dump holds.
    """
    tool = find_tool("pg_dump")
    marker = b"PostgreSQL database dump complete" if fmt == "plain" else None

    def produce(sink: Sink) -> dict[str, Any]:
        if inventory is None:
            return dump(sink, [])
        with contextlib.closing(db.connect(database)) as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            row = conn.execute("SELECT pg_export_snapshot()").fetchone()
            snapshot = str(row[0]) if row else ""
            if not _SNAPSHOT_ID.match(snapshot):
                raise DumpFailed(f"unexpected snapshot id {snapshot[:40]!r} from the server")
            inv = inventory(conn)
            info = dump(sink, [f"--snapshot={snapshot}"])
            conn.execute("COMMIT")
        return {**info, "inventory": inv}

    def dump(sink: Sink, snapshot: list[str]) -> dict[str, Any]:
        argv = [
            tool,
            "--format",
            "c" if fmt == "custom" else "p",
            *extra,
            *snapshot,
            "--dbname",
            pg_conninfo(database),
        ]
        info = run_dump(
            argv,
            sink,
            env=postgres_env(db),
            redact=redactor(db.password.get_secret_value()),
            complete_marker=marker,
        )
        return {**info, "database": database, "format": fmt, "tool": tool_version(tool)}

    return produce


# --------------------------------------------------------------------------------------------------
# files


class _HashingReader:
    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.h = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.fh.read(size)
        self.h.update(data)
        return data


def _excluded(rel: str, name: str, excludes: list[str]) -> bool:
    return any(fnmatch.fnmatch(rel, pat) or fnmatch.fnmatch(name, pat) for pat in excludes)


class TreeDigest:
    """Order-independent description of a directory tree: file count, bytes, and one sha256."""

    def __init__(self) -> None:
        self.entries: list[str] = []
        self.files = 0
        self.bytes = 0

    def add_file(self, rel: str, sha: str, size: int) -> None:
        """Record a regular file."""
        self.entries.append(f"f {rel} {sha}")
        self.files += 1
        self.bytes += size

    def add_link(self, rel: str, target: str) -> None:
        """Record a symlink."""
        self.entries.append(f"l {rel} {target}")

    def add_dir(self, rel: str) -> None:
        """Record a directory."""
        self.entries.append(f"d {rel}")

    def summary(self) -> dict[str, Any]:
        """``{"file_count", "total_bytes", "tree_sha256"}``."""
        h = hashlib.sha256("\n".join(sorted(self.entries)).encode())
        return {"file_count": self.files, "total_bytes": self.bytes, "tree_sha256": h.hexdigest()}


def tree_digest(root: Path) -> dict[str, Any]:
    """Digest of a directory as restored (the archive's top-level names are its children)."""
    d = TreeDigest()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            full = Path(dirpath, name)
            rel = full.relative_to(root).as_posix()
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                d.add_link(rel, os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                d.add_dir(rel)
            elif stat.S_ISREG(st.st_mode):
                d.add_file(rel, sha256_file(full), st.st_size)
    return d.summary()


def tar_producer(paths: list[str], excludes: list[str]) -> Callable[[Sink], dict[str, Any]]:
    """A producer writing a tar stream of the given paths (each under its base name).

    The digest of exactly what went into the archive (per-file sha256) is returned for the manifest,
    so verification and restores can check the extracted tree.
    """
    names = [Path(p).name or "root" for p in paths]
    if len(set(names)) != len(names):
        raise InputError(
            "sources[0].target", f"two paths share a base name ({names})", "archive them in two jobs"
        )

    def produce(sink: Sink) -> dict[str, Any]:
        digest = TreeDigest()
        with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            for path, arc in zip(paths, names, strict=True):
                root = Path(path)
                if not root.exists():
                    raise InputError(
                        "sources[0].target", f"{path} does not exist", "fix the path or create it"
                    )
                tar.add(str(root), arcname=arc, recursive=False)
                if root.is_dir() and not root.is_symlink():
                    digest.add_dir(arc)
                    _add_tree(tar, root, arc, excludes, digest)
                elif root.is_file():
                    digest.add_file(arc, sha256_file(root), root.stat().st_size)
        return {"paths": paths, **digest.summary()}

    return produce


def sha256_file(p: Path) -> str:
    """Hex sha256 of a file's content, read in chunks."""
    with open(p, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _add_tree(tar: tarfile.TarFile, root: Path, arc: str, excludes: list[str], digest: TreeDigest) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        keep_dirs = []
        for name in sorted(dirnames):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if not _excluded(rel, name, excludes):
                keep_dirs.append(name)
        dirnames[:] = keep_dirs
        for name in sorted(dirnames + filenames):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if _excluded(rel, name, excludes):
                continue
            full = Path(dirpath, name)
            arcname = f"{arc}/{rel}"
            info = tar.gettarinfo(str(full), arcname=arcname)
            if info.isreg():
                with open(full, "rb") as fh:
                    reader = _HashingReader(fh)
                    tar.addfile(info, reader)
                digest.add_file(arcname, reader.h.hexdigest(), info.size)
            elif info.issym():
                tar.addfile(info)
                digest.add_link(arcname, info.linkname)
            elif info.isdir():
                tar.addfile(info)
                digest.add_dir(arcname)
            # sockets, fifos, devices are skipped


# --------------------------------------------------------------------------------------------------
# etcd


def etcd_snapshot_producer(cluster: EtcdCluster) -> Callable[[Sink], dict[str, Any]]:
    """A producer streaming an etcd snapshot (``Maintenance.Snapshot``) through the etcd adapter."""

    def produce(sink: Sink) -> dict[str, Any]:
        async def run() -> int:
            async with cluster.client() as client:
                return int(await client.snapshot_to(cast(IO[bytes], sink)))

        n = asyncio.run(run())
        if n <= 0:
            raise DumpFailed("etcd returned an empty snapshot")
        return {"bytes": n, "tool": "etcd Maintenance.Snapshot (etcd3aio)"}

    return produce
