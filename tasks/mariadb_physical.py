"""Physical MariaDB backups with ``mariadb-backup`` (nxs-backup's ``mysql_xtrabackup``).

Backup: ``mariadb-backup --backup --stream=xbstream`` reads the server's data directory on this
machine (the worker must see it: the same host, or the volume mounted) while connected to the
server for its backup locks, and its stream goes through the normal pipeline (compression,
encryption, every storage at once). The stream is parsed on the way (:class:`XbstreamGate`), so a
backup whose stream is cut short or lacks ``xtrabackup_checkpoints`` is never published.

Restore ("prepare on restore"): the part is checked chunk by chunk before ``mbstream -x`` sees it,
``backup-my.cnf`` is checked before ``mariadb-backup --prepare`` reads it, and the prepared data
directory is proven by a scratch ``mariadbd`` (unix socket in a 0700 directory, no network, grant
tables, plugins and events off) whose inventory is compared with the backup's, all in a staging
directory next to the target; only then is it renamed to the target. A live data directory is never
written.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from planning.xbstream import XbstreamError, XbstreamGate, prepare_options
from stateferry.errors import InputError, StateferryError
from stateferry.waiting import wait_until
from tasks.dumpers import (
    MYSQL_SYSTEM_DBS,
    Sink,
    find_tool,
    mysql_defaults_file,
    redactor,
    run_dump,
    tool_version,
)
from tasks.inventory import mysql_inventory
from tasks.restore_ops import RestoreFailed, decompress_chunks, feed_tool
from tasks.tool_process import stop_process

_VERSION = re.compile(r"(\d+)\.(\d+)\.\d+")


class PhysicalBackupInvalid(StateferryError):
    """The stored stream is not a backup this restore may unpack (refused before anything changed)."""


def physical_preflight(
    db: Any, datadir: str | None, block_name: str, redact: Callable[[str], str]
) -> dict[str, Any]:
    """Check the server is MariaDB of the tool's version and its data directory is readable here.

    Returns:
        ``{"datadir", "databases", "server_version", "estimated_bytes"}``.

    Raises:
        InputError: naming ``type`` (not MariaDB, or another major version than ``mariadb-backup``)
            or ``sources[0].datadir`` (not visible or not readable on this worker).
    """
    tool = find_tool("mariadb-backup", "mariabackup")
    conn = db.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT VERSION(), @@datadir")
            version, server_dir = cur.fetchone()
            cur.execute("SHOW DATABASES")
            dbs = sorted(r[0] for r in cur.fetchall() if r[0] not in MYSQL_SYSTEM_DBS)
            cur.execute("SELECT COALESCE(SUM(data_length + index_length), 0) FROM information_schema.tables")
            size = int(cur.fetchone()[0])
    finally:
        conn.close()
    ours = tool_version(tool)  # one run of the tool for the check and the message
    mine = _VERSION.search(ours)
    theirs = _VERSION.search(str(version))
    if "mariadb" not in str(version).lower() or not mine or not theirs or mine.groups() != theirs.groups():
        raise InputError(
            "type",
            redact(
                f"the server of block {block_name!r} is {version!s}; {ours} backs up"
                " MariaDB of its own major version only"
            ),
            "use a mariadb-backup of the server's version on the worker, or type: mysql (logical dump)",
        )
    where = Path(datadir or str(server_dir))
    if not where.is_absolute() or not where.is_dir() or not os.access(where, os.R_OK | os.X_OK):
        raise InputError(
            "sources[0].datadir",
            f"the data directory {str(where)[:200]!r} is not a readable directory on this worker",
            "run the worker where the server's data directory is (same host or the volume mounted) and"
            " give its path here when it differs from the server's @@datadir",
        )
    return {
        "datadir": str(where),
        "databases": dbs,
        "server_version": str(version),
        "estimated_bytes": size,
    }


def mariabackup_producer(db: Any, datadir: str, parallel: int) -> Callable[[Sink], dict[str, Any]]:
    """A producer running ``mariadb-backup --backup --stream=xbstream``; the stream is parsed on the
    way and must end complete (every file closed, ``xtrabackup_checkpoints`` present)."""
    tool = find_tool("mariadb-backup", "mariabackup")

    def produce(sink: Sink) -> dict[str, Any]:
        gate = XbstreamGate()

        class _Checked:
            def write(self, data: bytes) -> int:
                gate.feed(data)
                sink.write(data)
                return len(data)

        work = Path(tempfile.mkdtemp(prefix="stateferry-mb-"))
        try:
            with mysql_defaults_file(db) as cnf:  # as --defaults-file: no system my.cnf is read
                argv = [
                    tool,
                    f"--defaults-file={cnf}",
                    "--backup",
                    "--stream=xbstream",
                    f"--target-dir={work / 'target'}",
                    f"--tmpdir={work}",
                    f"--datadir={datadir}",
                    f"--parallel={parallel}",
                ]
                info = run_dump(argv, _Checked(), redact=redactor(db.password.get_secret_value()))
            gate.finish()
        except XbstreamError as exc:
            raise StateferryError(f"mariadb-backup wrote an incomplete stream: {exc}") from None
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return {
            **info,
            "tool": tool_version(tool),
            "format": "xbstream",
            "files": len(gate.files),
            "total_bytes": gate.total_bytes,
            "schemas": gate.databases(),
        }

    return produce


def _gated(chunks: Iterator[bytes], gate: XbstreamGate) -> Iterator[bytes]:
    for chunk in chunks:
        gate.feed(chunk)
        yield chunk
    gate.finish()


def extract_and_prepare(fh: Any, dest: Path) -> list[str]:
    """Unpack a stored part into the new directory ``dest`` and prepare it.

    Returns:
        The server options of the backup's InnoDB layout (from the checked ``backup-my.cnf``).

    Raises:
        PhysicalBackupInvalid: a chunk, ``backup-my.cnf`` or the prepare step was refused/failed.
    """
    dest.mkdir(mode=0o700)
    gate = XbstreamGate()
    mbstream = find_tool("mbstream")
    try:
        feed_tool(
            [mbstream, "-x", "-C", str(dest)], _gated(decompress_chunks(fh), gate), env=None, redact=str
        )
        cnf = dest / "backup-my.cnf"
        options = prepare_options(cnf.read_text(errors="replace") if cnf.is_file() else "")
    except (XbstreamError, RestoreFailed) as exc:
        raise PhysicalBackupInvalid(f"the backup stream was refused: {exc}") from None
    tool = find_tool("mariadb-backup", "mariabackup")
    done = subprocess.run(
        [tool, "--prepare", f"--target-dir={dest}"], capture_output=True, timeout=3600, check=False
    )
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip()[-1200:]
        raise PhysicalBackupInvalid(f"mariadb-backup --prepare failed (exit {done.returncode}): {tail}")
    return options


class _SocketServer:
    """What :func:`mysql_inventory` needs of a Database block: ``connect(database)``, over a socket."""

    def __init__(self, socket: str) -> None:
        self.socket = socket

    def connect(self, database: str | None = None) -> Any:
        import pymysql

        return pymysql.connect(
            unix_socket=self.socket, user="root", database=database, autocommit=True, charset="utf8mb4"
        )


@contextlib.contextmanager
def scratch_server(datadir: Path, options: list[str], timeout: float = 120.0) -> Iterator[_SocketServer]:
    """A ``mariadbd`` on a prepared data directory: socket only (0700 dir), no grant tables (so no
    plugins from the backup's ``mysql.plugin`` and no events), ``--no-defaults``."""
    run = Path(tempfile.mkdtemp(prefix="stateferry-mbsrv-"))
    sock = run / "s.sock"
    argv = [
        find_tool("mariadbd", "mysqld"),
        "--no-defaults",
        f"--datadir={datadir}",
        f"--socket={sock}",
        f"--pid-file={run / 'pid'}",
        f"--log-error={run / 'error.log'}",
        f"--tmpdir={run}",
        "--skip-networking",
        "--skip-grant-tables",
        "--skip-slave-start",
        "--skip-log-bin",
        "--event-scheduler=DISABLED",
        "--innodb-buffer-pool-size=64M",
        *options,
    ]
    if os.geteuid() == 0:
        argv.append("--user=root")
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    server = _SocketServer(str(sock))

    def up() -> bool:
        if proc.poll() is not None:
            return True
        try:
            server.connect().close()
            return True
        except Exception:
            return False

    try:
        wait_until(
            up,
            timeout=timeout,
            describe=lambda: "the scratch MariaDB server did not start on the prepared data directory",
            error=PhysicalBackupInvalid,
        )
        if proc.poll() is not None:
            log = (
                (run / "error.log").read_text(errors="replace")[-1500:]
                if (run / "error.log").exists()
                else ""
            )
            raise PhysicalBackupInvalid(f"mariadbd does not start on the prepared data directory: {log}")
        yield server
    finally:
        stop_process(proc, grace=60)
        shutil.rmtree(run, ignore_errors=True)


def prepared_inventory(datadir: Path, options: list[str], databases: list[str]) -> dict[str, Any]:
    """Inventory of each database in a prepared data directory (a scratch server started on it)."""
    with scratch_server(datadir, options) as server:
        conn = server.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW DATABASES")
                present = {r[0] for r in cur.fetchall()}
        finally:
            conn.close()
        return {
            d: mysql_inventory(server, d, events_from="mysql.event") if d in present else {}  # type: ignore[arg-type]
            for d in databases
        }


def restore_physical(
    fh: Any, target_dir: Path, databases: list[str], accept: Callable[[dict[str, Any]], None]
) -> dict[str, Any]:
    """Prepare a data directory in ``target_dir`` (missing or empty) from a stored part.

    Everything happens in a staging directory next to the target; ``accept`` receives the scratch
    server's inventory and raises when it falls short (the staging directory is then removed and the
    target untouched); only after it returns is the directory renamed to the target. Returns the
    inventory.

    Raises:
        InputError: ``target_dir`` exists and is not empty.
        PhysicalBackupInvalid: refused stream, failed prepare, or a server that does not start.
    """
    if target_dir.exists() and (not target_dir.is_dir() or any(target_dir.iterdir())):
        raise InputError(
            "target_dir",
            f"{target_dir} exists and is not empty",
            "give a new directory: a physical restore prepares a whole data directory, never in place",
        )
    target_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target_dir.name[:40]}.partial-", dir=target_dir.parent))
    try:
        options = extract_and_prepare(fh, staging / "data")
        inventory = prepared_inventory(staging / "data", options, databases)
        accept(inventory)
        if target_dir.exists():
            target_dir.rmdir()
        (staging / "data").rename(target_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return inventory
