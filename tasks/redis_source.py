"""Redis as a backup source: an RDB snapshot through ``redis-cli --rdb -``, and what an RDB holds.

Why ``redis-cli --rdb`` (Debian's redis-tools) rather than the Python client: the snapshot is taken
by Redis' own replication handshake (``REPLCONF rdb-only`` on 7.x, so the server sends only the RDB,
no replication stream), disk-backed and diskless transfers are both handled by the tool that ships
with the server, and the Python ``redis`` client has no replication API (we would re-implement the
``SYNC`` framing). The password reaches ``redis-cli`` through ``REDISCLI_AUTH`` only; host, port and
ACL user come from the validated ``RedisServer`` block, never from the job.

The inventory of an RDB is what a scratch ``redis-server`` reports after loading it: keys and keys
with a TTL per database (``INFO keyspace``). The scratch server listens on a unix socket in its own
0700 directory (``--port 0``): no port to race for, nobody else can connect. ``redis-check-rdb``
checks the file's structure and CRC64 first.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from prefect import task
from prefect.cache_policies import NO_CACHE

from stateferry.errors import StateferryError
from stateferry.waiting import wait_until
from tasks.dumpers import CHUNK, DumpFailed, Sink, find_tool, tool_version
from tasks.tool_process import run_tool, stop_process

if TYPE_CHECKING:
    from blocks.redis import RedisServer

#: ``$EOF:<40 bytes>`` diskless-transfer mark that ``redis-cli --rdb -`` cannot truncate off stdout
EOF_MARK_SIZE = 40
_DONE = re.compile(rb"Transfer finished with success after ([0-9]+) bytes")
_SIZED = re.compile(rb"writing ([0-9]+) bytes to")


class RdbInvalid(StateferryError):
    """The RDB file does not pass ``redis-check-rdb`` or does not load into ``redis-server``."""


def redis_cli_env(server: RedisServer) -> dict[str, str]:
    """Environment for ``redis-cli``: the password in ``REDISCLI_AUTH`` (never on the command line)."""
    env = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}
    if server.password is not None:
        env["REDISCLI_AUTH"] = server.password.get_secret_value()
    return env


def redis_cli_argv(server: RedisServer) -> list[str]:
    """``redis-cli -h HOST -p PORT [--user USER] --no-auth-warning --rdb -`` (values from the block)."""
    argv = [find_tool("redis-cli"), "-h", server.host, "-p", str(server.port)]
    if server.username:
        argv += ["--user", server.username]
    return [*argv, "--no-auth-warning", "--rdb", "-"]


def redis_rdb_producer(server: RedisServer, redact: Callable[[str], str]) -> Callable[[Sink], dict[str, Any]]:
    """A producer streaming the server's RDB snapshot (``redis-cli --rdb -``) into the sink.

    ``redis-cli`` writing to stdout leaves the 40-byte end-of-transfer mark of a diskless transfer
    after the RDB (it can only truncate a file); the last 40 bytes are held back and only the length
    the tool reports is passed on. The result must start with ``REDIS`` and end with the RDB's EOF
    opcode and checksum, so a cut-short transfer never becomes a good backup.
    """

    def produce(sink: Sink) -> dict[str, Any]:
        held = b""
        head = b""
        last = b""  # the last bytes passed on (the RDB must end in its EOF opcode + CRC64)
        sent = 0
        argv = redis_cli_argv(server)
        with run_tool(argv, env=redis_cli_env(server)) as run:
            while chunk := run.stdout.read1(CHUNK):
                held += chunk
                if len(head) < 9:
                    head = (head + chunk)[:9]
                if len(held) > EOF_MARK_SIZE:
                    out, held = held[:-EOF_MARK_SIZE], held[-EOF_MARK_SIZE:]
                    sink.write(out)
                    sent += len(out)
                    last = (last + out)[-9:]
        text = run.stderr.data
        msg = redact(run.stderr_text(800))
        if run.returncode != 0:
            raise DumpFailed(f"redis-cli --rdb exited with status {run.returncode}: {msg or '(no message)'}")
        found = _DONE.search(text) or _SIZED.search(text)
        if found is None:
            raise DumpFailed(f"redis-cli --rdb did not report a finished transfer: {msg or '(no message)'}")
        size = int(found.group(1))
        extra = sent + len(held) - size
        if extra not in (0, EOF_MARK_SIZE) or size < sent:
            raise DumpFailed(f"redis-cli --rdb reported {size} bytes but wrote {sent + len(held)}")
        tail = held[: size - sent]
        last = (last + tail)[-9:]
        if not head.startswith(b"REDIS") or len(last) < 9 or last[0] != 0xFF:
            raise DumpFailed("the RDB from redis-cli is incomplete (no REDIS header or no EOF opcode)")
        sink.write(tail)
        return {
            "bytes": size,
            "rdb_version": int(head[5:9]) if head[5:9].isdigit() else None,
            "tool": tool_version(argv[0]),
        }

    return produce


# --------------------------------------------------------------------------------------------------
# what an RDB holds


def check_rdb(path: Path) -> dict[str, Any]:
    """``redis-check-rdb``: structure and CRC64 of the file, total keys and TTLs, database ids.

    Raises:
        RdbInvalid: the tool found the file corrupt or truncated.
    """
    out = subprocess.run(
        [find_tool("redis-check-rdb"), str(path)], capture_output=True, text=True, timeout=3600
    )
    text = out.stdout + out.stderr
    if out.returncode != 0 or "RDB looks OK" not in text:
        lines = [ln for ln in text.splitlines() if "ERROR" in ln or "Unexpected" in ln or "error" in ln]
        raise RdbInvalid("redis-check-rdb: " + ("; ".join(lines[:5]) or text.strip()[-400:]))

    def count(label: str) -> int:
        m = re.search(rf"\[info\] ([0-9]+) {label}", text)
        return int(m.group(1)) if m else 0

    dbs = sorted({int(m) for m in re.findall(r"Selecting DB ID ([0-9]+)", text)})
    return {
        "keys": count("keys read"),
        "expires": count("expires"),
        "already_expired": count("already expired"),
        "db_ids": dbs,
    }


@contextlib.contextmanager
def spooled_rdb(chunks: Iterator[bytes]) -> Iterator[Path]:
    """Write a decompressed RDB into a fresh 0700 directory; yields the file (removed afterwards)."""
    d = Path(tempfile.mkdtemp(prefix="stateferry-rdb-"))
    try:
        path = d / "dump.rdb"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
        yield path
    finally:
        shutil.rmtree(d, ignore_errors=True)


@dataclass(frozen=True)
class Scratch:
    """A running scratch server: its unix socket and its random password."""

    socket: str
    password: str = field(repr=False)

    def client(self, db: int = 0) -> Any:
        """A ``redis.Redis`` client (binary responses) of database ``db``; the caller closes it."""
        import redis

        return redis.Redis(unix_socket_path=self.socket, password=self.password, db=db, socket_timeout=120)


@contextlib.contextmanager
def scratch_redis(rdb: Path, databases: int = 16, timeout: float | None = None) -> Iterator[Scratch]:
    """A throw-away ``redis-server`` that loaded ``rdb``; yields its unix socket path.

    The server gets its own 0700 directory holding a hard link (or copy) of the file, ``--port 0``
    (no TCP), a random ``requirepass``, no persistence; it is stopped and removed afterwards.

    Raises:
        RdbInvalid: the server refused the file (its log's last lines are in the message).
    """
    d = Path(tempfile.mkdtemp(prefix="stateferry-redis-"))
    sock = d / "redis.sock"
    password = secrets.token_hex(16)
    try:
        target = d / "dump.rdb"
        try:
            os.link(rdb, target)
        except OSError:
            shutil.copyfile(rdb, target)
        conf = d / "redis.conf"  # the password in a 0600 file, not on the server's command line
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"requirepass {password}\n")
        argv = [
            find_tool("redis-server"),
            str(conf),
            "--port", "0",
            "--unixsocket", str(sock),
            "--unixsocketperm", "700",
            "--dir", str(d),
            "--dbfilename", "dump.rdb",
            "--save", "",
            "--appendonly", "no",
            "--sanitize-dump-payload", "yes",  # the RDB was read back from a storage: check it deeply
            "--databases", str(max(16, databases)),
            "--logfile", str(d / "redis.log"),
            "--daemonize", "no",
        ]  # fmt: skip
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            limit = timeout or 60 + rdb.stat().st_size / (20 << 20)
            _wait_loaded(proc, sock, password, d / "redis.log", limit)
            yield Scratch(str(sock), password)
        finally:
            stop_process(proc, grace=20)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _wait_loaded(proc: subprocess.Popen[bytes], sock: Path, password: str, log: Path, limit: float) -> None:
    import redis

    def loaded() -> bool:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").splitlines()[-6:] if log.exists() else []
            raise RdbInvalid("redis-server could not load the RDB: " + " | ".join(tail)[-600:])
        if not sock.exists():
            return False
        client = redis.Redis(unix_socket_path=str(sock), password=password, socket_timeout=5)
        try:
            return str(client.info("persistence").get("loading", 1)) == "0"
        except (redis.BusyLoadingError, redis.ConnectionError):
            return False
        finally:
            client.close()

    wait_until(
        loaded,
        timeout=limit,
        interval=0.05,
        describe=lambda: f"redis-server did not finish loading the RDB within {limit:.0f} s",
        error=RdbInvalid,
    )


def rdb_inventory(chunks: Iterator[bytes]) -> dict[str, Any]:
    """Check an RDB (decompressed stream) and list what it holds.

    Returns:
        ``{"keys": {"db0": n}, "expires": {"db0": n}}`` as loaded by a scratch ``redis-server``, plus
        ``"rdb"``: ``redis-check-rdb``'s totals (kept out of the inventory proper).

    Raises:
        RdbInvalid: corrupt, truncated, not loadable, or the loaded key counts disagree with the file.
    """
    from blocks.redis import keyspace_counts

    with spooled_rdb(chunks) as path:
        facts = check_rdb(path)
        with scratch_redis(path, databases=max(facts["db_ids"] or [0]) + 1) as scratch:
            client = scratch.client()
            try:
                loaded = keyspace_counts(client.info("keyspace"))
            finally:
                client.close()
    persistent = sum(loaded["keys"].values()) - sum(loaded["expires"].values())
    if persistent != facts["keys"] - facts["expires"] or sum(loaded["expires"].values()) > facts["expires"]:
        raise RdbInvalid(
            f"redis-server loaded {sum(loaded['keys'].values())} keys ({sum(loaded['expires'].values())}"
            f" with a TTL) but the file holds {facts['keys']} ({facts['expires']} with a TTL)"
        )
    return {**loaded, "rdb": facts}


def part_inventory(fh: BinaryIO) -> dict[str, Any]:
    """:func:`rdb_inventory` of a stored (gzip/zstd) part."""
    from tasks.restore_ops import decompress_chunks

    return rdb_inventory(decompress_chunks(fh))


# --------------------------------------------------------------------------------------------------
# preflight


def redis_preflight(server: RedisServer, block_name: str, redact: Callable[[str], str]) -> dict[str, Any]:
    """Log in, read the version and the keyspace (kept in the manifest as ``keyspace_at_dump``).

    Raises:
        InputError: ``sources[0].connect`` when the server refuses the credentials (never echoed).
        TransientError: the server is unreachable.
    """
    from stateferry.errors import InputError, TransientError

    try:
        info = server.ping()
    except InputError as exc:
        raise InputError(
            "sources[0].connect",
            redact(exc.problem),
            f"check username/password in the RedisServer block {block_name!r}",
        ) from None
    except TransientError as exc:
        raise TransientError(
            redact(f"sources[0].connect: {exc}. Fix: check host/port in the RedisServer block {block_name!r}")
        ) from None
    find_tool("redis-cli")
    return {
        "host": server.host,
        "port": server.port,
        "redis_version": info["version"],
        "keyspace_at_dump": info["keyspace"],
    }


@task(name="redis_backup_inventory", cache_policy=NO_CACHE)
def redis_backup_inventory(
    storage: Any, job: str, backup_id: str, part: str, identities: list[Any] | None = None
) -> dict[str, Any]:
    """Keys and keys with a TTL per database of the (unpublished) RDB part, loaded by a scratch
    ``redis-server``: the manifest's inventory when no verification ran.

    Raises:
        RdbInvalid: the stored RDB is corrupt or does not load (the backup is not published).
    """
    from tasks.backup_crypto import open_plain  # encrypted parts (age): decrypted with ``identities``

    with (
        storage.open_read(job, backup_id, part, published=False) as fh,
        open_plain(fh, identities, field="encryption.identity_secret", what=part) as plain,
    ):
        got = part_inventory(plain)
    return {k: got[k] for k in ("keys", "expires")}
