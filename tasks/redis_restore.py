"""Restoring a Redis backup: into a new instance's data dir, or (explicitly) into a running server.

nxs-backup only dumps Redis (``redis-cli --rdb``); restoring is left to the operator. stateferry
restores in two ways, both only after a scratch ``redis-server`` loaded the RDB and its keys per
database matched the manifest's inventory (nothing is written before that):

* ``target_dir``: ``dump.rdb`` is written (0600, fsynced, renamed into place) into a directory that
  is empty or missing — the data dir of a NEW instance (e.g. a fresh PVC) that loads it at start-up.
  With ``overwrite`` an existing ``dump.rdb`` is replaced; a directory holding an AOF is refused
  (redis-server would load the AOF instead).
* ``target_block``: a saved ``RedisServer`` block, named explicitly (the job's own source is never
  written implicitly). Every key is copied from the scratch server with ``DUMP`` / ``PTTL`` /
  ``RESTORE`` (values byte for byte, TTLs kept); databases of the target that hold keys are refused
  unless ``overwrite`` (then keys of the same name are replaced, ``RESTORE ... REPLACE``; others
  stay). Into empty databases the target's key counts are compared with the manifest afterwards.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from planning.redis_inventory import keyspace_problems
from stateferry.errors import InputError, PreconditionFailed
from tasks.redis_source import RdbInvalid, Scratch, check_rdb, scratch_redis, spooled_rdb
from tasks.restore_checks import InventoryCheck, expected_inventory
from tasks.restore_ops import RestoreFailed, decompress_chunks

#: keys per DUMP / RESTORE pipeline round trip
BATCH = 500


def redis_restore_actions(target_dir: str | None, target_block: str | None, overwrite: bool) -> list[str]:
    """The plan of a Redis restore (pure).

    Raises:
        InputError: neither or both of ``target_dir`` / ``target_block`` given.
    """
    if bool(target_dir) == bool(target_block):
        raise InputError(
            "target_dir",
            "a Redis restore goes either into a data dir (target_dir) or into a server (target_block)",
            "give target_dir (a new instance's data dir) or target_block (a saved RedisServer block),"
            " not both",
        )
    actions = ["load the RDB into a scratch redis-server and compare keys per database with the manifest"]
    if target_dir:
        how = " (replace dump.rdb)" if overwrite else " (must be empty or missing)"
        actions.append(f"write dump.rdb into the data dir {target_dir}{how}")
    else:
        how = ", replacing keys of the same name" if overwrite else "; its databases must be empty"
        actions.append(f"copy every key (DUMP/RESTORE, TTLs kept) into RedisServer {target_block!r}{how}")
    return actions


def restore_redis(
    r: Any,
    path: Path,
    manifest: dict[str, Any],
    target_dir: str | None,
    target_block: str | None,
    overwrite: bool,
    check: InventoryCheck,
) -> dict[str, Any]:
    """Restore a verified (sha256-checked) RDB part; see the module docstring.

    Raises:
        RestoreFailed: the RDB does not load.
        RestoreIncomplete: its keys differ from the manifest's inventory (nothing written), or the
            target server's afterwards.
        PreconditionFailed: the data dir is not empty / the target databases hold keys (no overwrite).
    """
    what = f"restore of {manifest.get('job')}/{manifest.get('backup_id')}"
    want = expected_inventory(manifest, "redis")
    with open(path, "rb") as fh, spooled_rdb(decompress_chunks(fh)) as rdb:
        try:
            facts = check_rdb(rdb)
        except RdbInvalid as exc:
            raise RestoreFailed(str(exc)) from None
        with scratch_redis(rdb, databases=max(facts["db_ids"] or [0]) + 1) as scratch:
            loaded = _keyspace(scratch)
            check.expected["redis"] = want or {}
            check.restored["redis"] = loaded
            if want is not None:
                check.problems += keyspace_problems("redis", want, loaded)
            check.raise_if_problems(what, "nothing was written")
            if target_dir:
                dest = _write_data_dir(rdb, Path(target_dir), overwrite)
                return {"data_dir": str(dest), "file": "dump.rdb", "keys": loaded["keys"]}
            from blocks.loading import load_saved
            from blocks.redis import RedisServer

            server = load_saved(RedisServer, str(target_block), "target_block")
            if server.password is not None:
                r.secrets.append(server.password.get_secret_value())
            return _copy_keys(scratch, server, loaded, overwrite, check, what)


def _keyspace(scratch: Scratch) -> dict[str, Any]:
    from blocks.redis import keyspace_counts

    client = scratch.client()
    try:
        return keyspace_counts(client.info("keyspace"))
    finally:
        client.close()


def _write_data_dir(rdb: Path, dest: Path, overwrite: bool) -> Path:
    if dest.exists() and not dest.is_dir():
        raise PreconditionFailed(f"restore target {dest} exists and is not a directory")
    present = sorted(p.name for p in dest.iterdir()) if dest.exists() else []
    if present and not overwrite:
        raise PreconditionFailed(
            f"restore target {dest} is not empty ({', '.join(present[:5])}); give the empty or missing data"
            " dir of a new instance, or pass overwrite=True to replace its dump.rdb"
        )
    aof = [n for n in present if n.startswith("appendonly")]
    if aof:
        raise PreconditionFailed(
            f"{dest} holds {aof[0]}: redis-server would load the AOF instead of dump.rdb; move it away first"
        )
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = dest / f".dump.rdb.stateferry-{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out, open(rdb, "rb") as src:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest / "dump.rdb")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dfd = os.open(dest, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return dest


def _copy_keys(
    scratch: Scratch, server: Any, loaded: dict[str, Any], overwrite: bool, check: InventoryCheck, what: str
) -> dict[str, Any]:
    before = server.ping()["keyspace"]
    busy = {db: n for db, n in before["keys"].items() if n and db in loaded["keys"]}
    if busy and not overwrite:
        raise PreconditionFailed(
            f"database(s) {sorted(busy)} of redis at {server.where} hold keys; restore into empty"
            " databases, or pass overwrite=True (keys of the same name are then replaced)"
        )
    copied = 0
    for db in loaded["keys"]:
        src, dst = scratch.client(int(db[2:])), server.client(int(db[2:]), timeout=120)
        try:
            batch: list[bytes] = []
            for key in src.scan_iter(count=1000):
                batch.append(key)
                if len(batch) >= BATCH:
                    copied += _restore_batch(src, dst, batch, overwrite)
                    batch = []
            copied += _restore_batch(src, dst, batch, overwrite)
        finally:
            src.close()
            dst.close()
    after = server.ping()["keyspace"]
    got = {k: {db: n for db, n in after[k].items() if db in loaded["keys"]} for k in ("keys", "expires")}
    if busy:  # the target held other keys too: its counts say nothing about the backup
        check.not_compared["redis"] = "the target's databases held keys before the restore"
    else:
        check.restored["redis"] = got
        check.problems += keyspace_problems("redis", loaded, got)
        check.raise_if_problems(what, f"the keys copied into {server.where} were left there for inspection")
    return {"server": server.where, "keys_copied": copied, "keys": got["keys"]}


def _restore_batch(src: Any, dst: Any, keys: list[bytes], overwrite: bool) -> int:
    if not keys:
        return 0
    pipe = src.pipeline(transaction=False)
    for key in keys:
        pipe.pttl(key)
        pipe.dump(key)
    found = pipe.execute()
    out = dst.pipeline(transaction=False)
    n = 0
    for i, key in enumerate(keys):
        ttl, payload = found[2 * i], found[2 * i + 1]
        if payload is None or ttl == -2:  # expired since the scan
            continue
        out.restore(key, max(int(ttl), 0), payload, replace=overwrite)
        n += 1
    out.execute()
    return n
