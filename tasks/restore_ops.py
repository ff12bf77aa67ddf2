"""Restores (and the checks verification uses): databases, directories, etcd snapshots.

Every restore reads a gzip or zstd stream (:func:`decompress_chunks`); callers verify the stored sha256
first (:func:`sha256_of`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import zstandard

from planning.db_args import pg_conninfo
from planning.pg_plain_sql import guard_plain_sql
from stateferry.errors import InputError, PermanentError, PreconditionFailed, StateferryError
from tasks.dumpers import CHUNK, find_tool, mysql_defaults_file, postgres_env, redactor
from tasks.tool_process import run_tool

if TYPE_CHECKING:
    from blocks.database import Database


class RestoreFailed(StateferryError):
    """The restore tool failed."""


_MANIFEST_FIX = "restore another backup (this manifest was not written by stateferry)"


def sha256_of(fh: BinaryIO) -> tuple[str, int]:
    """Hash a stream to its end; returns (hex digest, size)."""
    h = hashlib.sha256()
    n = 0
    for chunk in iter(lambda: fh.read(CHUNK), b""):
        h.update(chunk)
        n += len(chunk)
    return h.hexdigest(), n


GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: largest output one step of decompression may produce (a crafted part cannot blow up memory)
_MAX_OUT = 4 * 1024 * 1024
#: zstd input per step: a zstd block (<= 128 KiB out) can be 4 bytes in, so 1 KiB in is <= 32 MiB out
_ZSTD_STEP = 1024


def decompress_chunks(fh: BinaryIO) -> Iterator[bytes]:
    """Decompress a part (gzip or zstd, told apart by their magic bytes) chunk by chunk.

    Memory stays bounded whatever the part holds (a decompression bomb yields bounded chunks), and a
    stream that ends before its end marker is refused.

    Raises:
        RestoreFailed: neither gzip nor zstd, or truncated.
    """
    head = fh.read(4)
    if head[:2] == GZIP_MAGIC:
        yield from _gunzip(head, fh)
    elif head == ZSTD_MAGIC:
        yield from _unzstd(head, fh)
    else:
        raise RestoreFailed("the part is neither gzip nor zstd data (corrupt, or not written by stateferry)")


def _gunzip(head: bytes, fh: BinaryIO) -> Iterator[bytes]:
    d = zlib.decompressobj(31)
    data = head
    while True:
        while data:
            out = d.decompress(data, _MAX_OUT)
            data = d.unconsumed_tail
            if out:
                yield out
            if d.eof:
                break
        if d.eof:
            break
        data = fh.read(CHUNK)
        if not data:
            break
    if not d.eof:
        raise RestoreFailed("the gzip stream is truncated")


def _unzstd(head: bytes, fh: BinaryIO) -> Iterator[bytes]:
    d = zstandard.ZstdDecompressor().decompressobj()
    data = head
    while data and not d.eof:
        for i in range(0, len(data), _ZSTD_STEP):
            out = d.decompress(data[i : i + _ZSTD_STEP])
            if out:
                yield out
            if d.eof:
                break
        data = fh.read(CHUNK)
    if not d.eof:
        raise RestoreFailed("the zstd stream is truncated")


def feed_tool(
    argv: list[str], chunks: Iterator[bytes], *, env: dict[str, str] | None, redact: Callable[[str], str]
) -> None:
    """Stream ``chunks`` into the stdin of the tool ``argv``; a failure raises with its redacted stderr."""
    with run_tool(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env) as run:
        try:
            for chunk in chunks:
                run.stdin.write(chunk)
        except BrokenPipeError:
            pass
    if run.returncode != 0:
        msg = run.stderr_text(1500)
        raise RestoreFailed(redact(f"{Path(argv[0]).name} exited with status {run.returncode}: {msg}"))


# --------------------------------------------------------------------------------------------------
# MySQL / MariaDB

_DB_LINE = re.compile(
    rb"^(?P<pre>(?:/\*!40000 )?DROP DATABASE IF EXISTS |CREATE DATABASE (?:/\*!32312 IF NOT EXISTS\*/ )?"
    rb"|USE |-- Current Database: )`(?P<name>(?:[^`]|``)+)`"
)


def rename_databases(chunks: Iterator[bytes], mapping: dict[str, str]) -> Iterator[bytes]:
    """Rewrite the database names in a ``mysqldump --databases`` stream (line by line).

    Only the statements that select a database are touched (DROP/CREATE DATABASE, USE), so objects
    are restored under the new name.
    """
    if not mapping:
        yield from chunks
        return
    enc = {k.encode(): v.replace("`", "``").encode() for k, v in mapping.items()}
    yield from map_lines(chunks, lambda line: _rename_line(line, enc))


def map_lines(chunks: Iterator[bytes], fn: Callable[[bytes], bytes]) -> Iterator[bytes]:
    """Apply ``fn`` to every line of a byte stream (lines split on ``\\n``, kept whole across chunks)."""
    buf = b""
    for chunk in chunks:
        buf += chunk
        lines = buf.split(b"\n")
        buf = lines.pop()
        if lines:
            yield b"\n".join(fn(line) for line in lines) + b"\n"
    if buf:
        yield fn(buf)


def _rename_line(line: bytes, enc: dict[bytes, bytes]) -> bytes:
    if line[:1] not in (b"/", b"C", b"U", b"-", b"D"):
        return line
    m = _DB_LINE.match(line)
    if not m:
        return line
    name = m.group("name").replace(b"``", b"`")
    if name not in enc:
        return line
    return line[: m.start("name")] + enc[name] + line[m.end("name") :]


_EVENT_LINE = re.compile(
    rb"^(/\*!50106 CREATE\*/ (?:/\*!50117 DEFINER=.*?\*/ )?/\*!50106 EVENT `(?:[^`]|``)+`"
    rb" ON SCHEDULE .*? ON COMPLETION (?:NOT )?PRESERVE )ENABLE\b"
)


def disable_events(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Create every event of a ``mysqldump --events`` stream DISABLED (for scratch copies: an event
    whose body names the original database must not fire against it from a trial or verification
    copy). Only mysqldump's own ``CREATE EVENT`` line shape is touched."""
    yield from map_lines(chunks, lambda line: _EVENT_LINE.sub(rb"\1DISABLE", line, count=1))


def mysql_database_exists(db: Database, name: str) -> bool:
    """True when the database exists."""
    with contextlib.closing(db.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM information_schema.schemata WHERE schema_name = %s", (name,))
        return cur.fetchone() is not None


def mysql_drop_database(db: Database, name: str) -> None:
    """Drop a database if it exists."""
    with contextlib.closing(db.connect()) as conn, conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name.replace('`', '``')}`")


@functools.cache
def _has_sandbox(client: str) -> bool:
    """True when the client knows ``--sandbox`` (MariaDB 10.5.25+/10.11.8+: no ``\\!``, ``source``,
    ``tee`` … from the dump)."""
    try:
        out = subprocess.run([client, "--help"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.SubprocessError):
        return False
    return "--sandbox" in out.stdout


def restore_mysql(
    db: Database, fh: BinaryIO, *, rename: dict[str, str] | None = None, scratch: bool = False
) -> None:
    """Feed a gzip'd ``mysqldump --databases`` stream to the ``mysql`` client.

    The MariaDB client runs with ``--sandbox`` when it has it, so a ``\\!`` (shell), ``\\.``
    (source a file) or ``tee`` line in a hostile archive is an error instead of running on the worker.

    Args:
        db: the target server.
        fh: the stored part (gzip).
        rename: source database -> target database.
        scratch: a trial / verification copy: events are created disabled (:func:`disable_events`).
    """
    client = find_tool("mariadb", "mysql")
    sandbox = ["--sandbox"] if _has_sandbox(client) else []
    with mysql_defaults_file(db) as cnf:
        feed_tool(
            [client, f"--defaults-extra-file={cnf}", "--binary-mode", "--batch", *sandbox],
            (disable_events if scratch else iter)(rename_databases(decompress_chunks(fh), rename or {})),
            env=None,
            redact=redactor(db.password.get_secret_value()),
        )


def postgres_database_exists(db: Database, name: str) -> bool:
    """True when the database exists."""
    with contextlib.closing(db.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        return cur.fetchone() is not None


def postgres_recreate_database(db: Database, name: str, *, drop: bool) -> None:
    """(Drop and) create an empty database."""
    ident = '"' + name.replace('"', '""') + '"'
    with contextlib.closing(db.connect()) as conn, conn.cursor() as cur:
        if drop:
            cur.execute(f"DROP DATABASE IF EXISTS {ident} WITH (FORCE)")
        cur.execute(f"CREATE DATABASE {ident}")


def postgres_drop_database(db: Database, name: str) -> None:
    """Drop a database if it exists (disconnecting its sessions)."""
    with contextlib.closing(db.connect()) as conn, conn.cursor() as cur:
        cur.execute('DROP DATABASE IF EXISTS "' + name.replace('"', '""') + '" WITH (FORCE)')


def psql_script_argv(conninfo: str) -> list[str]:
    """``psql`` reading a (guarded) SQL script from stdin: no psqlrc, stop at the first error.

    Args:
        conninfo: a ``--dbname`` value built by :func:`planning.db_args.pg_conninfo` (never a raw name).
    """
    psql = find_tool("psql")
    return [psql, "--no-psqlrc", "-q", "-v", "ON_ERROR_STOP=1", f"--dbname={conninfo}", "-f", "-"]


def restore_postgres(db: Database, fh: BinaryIO, database: str, fmt: str) -> None:
    """Restore one gzip'd pg_dump into an existing (empty) database.

    Custom format goes through ``pg_restore --exit-on-error`` (no option that re-targets the restore,
    such as ``--create``/``--clean``, is ever passed). Plain SQL is checked line by line
    (:func:`planning.pg_plain_sql.guard_plain_sql`: no psql meta-commands, no database-level
    statements) and run by ``psql --no-psqlrc -v ON_ERROR_STOP=1``.

    Raises:
        InputError: the plain SQL holds what a pg_dump never writes (psql is stopped first).
        RestoreFailed: the tool failed.
    """
    env = postgres_env(db)
    redact = redactor(db.password.get_secret_value())
    target = pg_conninfo(database)
    if fmt == "custom":
        argv = [find_tool("pg_restore"), "--exit-on-error", f"--dbname={target}"]
        feed_tool(argv, decompress_chunks(fh), env=env, redact=redact)
    elif fmt == "plain":
        feed_tool(psql_script_argv(target), guard_plain_sql(decompress_chunks(fh)), env=env, redact=redact)
    else:
        raise InputError("backup", f"unknown PostgreSQL dump format {fmt!r} in the manifest", _MANIFEST_FIX)


def postgres_temp_name(token: str) -> str:
    """Name of the temporary database a restore writes into (no user-chosen text in it)."""
    return f"sfrestore_{token}"


def postgres_swap_in(db: Database, temp: str, name: str, *, token: str, attempts: int = 5) -> None:
    """Put the restored ``temp`` database in place of ``name`` (which may or may not exist).

    The live database stops accepting connections, its sessions are terminated, and in ONE
    transaction it is renamed to ``sfold_<token>`` and ``temp`` to ``name``; only after that
    committed is the old copy dropped. On any failure before the commit the live database is
    left as it was (connections allowed again).
    """
    q = _pg_ident
    old = f"sfold_{token}"
    with contextlib.closing(db.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        exists = cur.fetchone() is not None
        if not exists:
            cur.execute(f"ALTER DATABASE {q(temp)} RENAME TO {q(name)}")
            return
        cur.execute(f"ALTER DATABASE {q(name)} WITH ALLOW_CONNECTIONS false")
        try:
            for attempt in range(attempts):
                cur.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = %s AND pid <> pg_backend_pid()",
                    (name,),
                )
                try:
                    with conn.transaction():
                        cur.execute(f"ALTER DATABASE {q(name)} RENAME TO {q(old)}")
                        cur.execute(f"ALTER DATABASE {q(temp)} RENAME TO {q(name)}")
                    break
                except Exception:
                    if attempt == attempts - 1:
                        raise
                    time.sleep(0.2 * (attempt + 1))
        except BaseException:
            cur.execute(f"ALTER DATABASE {q(name)} WITH ALLOW_CONNECTIONS true")
            raise
        cur.execute(f"DROP DATABASE IF EXISTS {q(old)} WITH (FORCE)")


def _pg_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# --------------------------------------------------------------------------------------------------
# files


def restore_files(fh: BinaryIO, target_dir: Path, *, overwrite: bool = False) -> None:
    """Extract a compressed tar stream into ``target_dir`` (must be empty unless ``overwrite``).

    Every member passes :class:`~stateferry.worker.tarcheck.TarGate` before GNU tar sees it (no
    absolute names, no ``..``, no link or path through a symlink out of the directory, no devices):
    ``tarfile``'s ``data`` filter alone is not enough on Python < 3.11.13 (CVE-2025-4517).

    Raises:
        PreconditionFailed: ``target_dir`` is not empty and ``overwrite`` is False.
        InputError: field ``backup``: a member would leave the directory (it is not written).
        RestoreFailed: tar failed (truncated or corrupt archive).
    """
    target_dir = Path(target_dir)
    if target_dir.exists() and any(target_dir.iterdir()) and not overwrite:
        raise PreconditionFailed(
            f"restore target {target_dir} is not empty; choose an empty directory or pass overwrite=True"
        )
    target_dir.mkdir(parents=True, exist_ok=True)
    from tasks.tar_extract import extract_checked  # it reads through this module's decompressor

    extract_checked(fh, target_dir, incremental=False)


# --------------------------------------------------------------------------------------------------
# etcd


@contextlib.contextmanager
def spooled_snapshot(fh: BinaryIO) -> Iterator[Path]:
    """Decompress a gzip'd snapshot into a temporary file (etcdctl needs a file path)."""
    d = Path(tempfile.mkdtemp(prefix="stateferry-snap-"))
    try:
        path = d / "snapshot.db"
        with open(path, "wb") as out:
            for chunk in decompress_chunks(fh):
                out.write(chunk)
        yield path
    finally:
        shutil.rmtree(d, ignore_errors=True)


def etcd_snapshot_status(snapshot: Path) -> dict[str, Any]:
    """``etcdctl snapshot status -w json`` (hash, revision, totalKey, totalSize)."""
    out = subprocess.run(
        [find_tool("etcdctl"), "snapshot", "status", str(snapshot), "-w", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "ETCDCTL_API": "3"},
    )
    if out.returncode != 0:
        raise RestoreFailed(f"etcdctl snapshot status failed: {out.stderr.strip()[-800:]}")
    return dict(json.loads(out.stdout))


def restore_etcd_snapshot(
    snapshot: Path,
    data_dir: Path,
    *,
    name: str = "default",
    peer_url: str = "http://127.0.0.1:2380",
    initial_cluster: str | None = None,
    cluster_token: str = "stateferry-restore",
) -> None:
    """``etcdctl snapshot restore`` into a fresh data directory (checks the snapshot's hash).

    Raises:
        PreconditionFailed: the data directory exists.
        RestoreFailed: etcdctl refused the snapshot.
    """
    if data_dir.exists():
        raise PreconditionFailed(f"etcd data dir {data_dir} exists; restore needs a fresh directory")
    argv = [
        find_tool("etcdutl", "etcdctl"),
        "snapshot",
        "restore",
        str(snapshot),
        "--data-dir",
        str(data_dir),
        "--name",
        name,
        "--initial-advertise-peer-urls",
        peer_url,
        "--initial-cluster",
        initial_cluster or f"{name}={peer_url}",
        "--initial-cluster-token",
        cluster_token,
    ]
    out = subprocess.run(
        argv, capture_output=True, text=True, timeout=300, env={**os.environ, "ETCDCTL_API": "3"}
    )
    if out.returncode != 0:
        raise RestoreFailed(f"etcd snapshot restore failed: {out.stderr.strip()[-800:]}")


def ensure_empty_or_missing(path: Path) -> None:
    """Raise unless ``path`` is missing or an empty directory."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise PermanentError(f"{path} exists and is not empty")
