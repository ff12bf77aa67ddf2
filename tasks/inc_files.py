"""Incremental file backups (``type: inc_files``): GNU tar ``--listed-incremental`` chains.

Backup: the chain planner (``planning/inc_chain.py``) decides full or incremental from the manifests
on one storage (local first); an incremental starts from the previous link's snapshot, read back
(sha256-checked, decrypted when the job is encrypted, then checked by
``planning/tar_snapshot.check_snapshot``), and when that snapshot is unusable the run takes a full.
GNU tar writes the archive (``files.tar.gz``) to stdout and updates the snapshot, stored as the
backup's ``files.snar.gz`` part; the manifest's main part carries ``chain``.

Restore of any point: every link from the full to that point is sha256-checked (and decrypted), then
extracted in order into a new directory, each through :class:`stateferry.worker.tarcheck.TarGate`
(no absolute names, no ``..``, nothing through a symlink, no devices) into ``tar --extract
--listed-incremental=/dev/null`` (which applies each directory's listing: files deleted between two
links are deleted).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo

from planning.backup_layout import FILES_SNAPSHOT_PART, is_backup_id
from planning.inc_chain import Link, NextBackup, chain_to, link_of, next_backup, parse_full_every
from planning.tar_snapshot import MAX_SNAPSHOT_BYTES, check_snapshot
from stateferry.errors import InputError, PreconditionFailed
from stateferry.logs import run_logger
from tasks.backup_crypto import open_plain
from tasks.backup_storage import LocalStorage
from tasks.dumpers import CHUNK, Sink, run_dump
from tasks.restore_ops import decompress_chunks
from tasks.tar_extract import extract_checked

CREATE_FLAGS = ["--create", "--format=posix", "--sparse", "--numeric-owner", "--no-check-device", "--file=-"]


@dataclass
class IncPlan:
    """The next backup of an incremental job and the snapshot it starts from."""

    next: NextBackup
    snapshot: bytes = b""


def roots(paths: list[str]) -> list[str]:
    """The archived top-level names (each target under its base name)."""
    return [Path(p).name for p in paths]


def main_part(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The archive part of a manifest (not the snapshot)."""
    parts = manifest.get("parts")
    if not isinstance(parts, list):
        return None
    return next((p for p in parts if isinstance(p, dict) and "extra" not in p), None)


def _created(b: Any) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(str(b.manifest["started"]))
    except (KeyError, TypeError, ValueError):
        return dt.datetime.strptime(b.backup_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)


def links_of(stored: list[Any]) -> tuple[list[Link], dict[str, dict[str, Any]]]:
    """Chain links (and manifests by id) of a storage's listing (unpublished or foreign names left out)."""
    links, manifests = [], {}
    for b in stored:
        if not is_backup_id(b.backup_id):
            continue
        part = main_part(b.manifest) if b.manifest else None
        links.append(link_of(b.backup_id, _created(b), b.good, (part or {}).get("chain")))
        if b.manifest:
            manifests[b.backup_id] = b.manifest
    return links, manifests


def plan_incremental(r: Any, healthy: list[str], now: dt.datetime) -> IncPlan:
    """Full or incremental for this run (never raises: anything unusable means a full)."""
    src = r.job.source
    every = parse_full_every(src.full_every or "month")
    labels = sorted(healthy, key=lambda lbl: not isinstance(r.storages[lbl], LocalStorage))
    local_now = now.astimezone(ZoneInfo(r.job.timezone))
    for label in labels[:1]:
        storage = r.storages[label]
        try:
            links, manifests = links_of(storage.list_backups(r.job.job))
        except Exception as exc:
            run_logger().warning("cannot list %s for the chain, taking a full: %s", label, r.redact(str(exc)))
            break
        links = [
            Link(x.backup_id, x.created.astimezone(local_now.tzinfo), x.good, x.full, x.parent, x.level)
            for x in links
        ]
        nxt = next_backup(links, local_now, every)
        if nxt.full:
            return IncPlan(nxt)
        assert nxt.parent is not None
        try:
            data = read_snapshot(r, storage, nxt.parent, manifests[nxt.parent])
            check_snapshot(data, roots(src.target))
        except Exception as exc:
            reason = f"the snapshot of {nxt.parent} is unusable ({r.redact(str(exc))[:200]}): a full"
            run_logger().warning("%s", reason)
            return IncPlan(NextBackup(True, None, None, 0, reason))
        return IncPlan(nxt, data)
    return IncPlan(NextBackup(True, None, None, 0, "no storage to read the chain from: a full"))


def read_snapshot(r: Any, storage: Any, backup_id: str, manifest: dict[str, Any]) -> bytes:
    """The snapshot part of a published backup: sha256-checked against its manifest, decrypted."""
    part = next((p for p in manifest.get("parts", []) if p.get("extra") == "snapshot"), None)
    if part is None or not str(part.get("name", "")).startswith(FILES_SNAPSHOT_PART + "."):
        raise InputError("backup", f"{backup_id} has no snapshot part", "a full backup follows")
    with storage.open_read(r.job.job, backup_id, part["name"]) as fh:
        blob = fh.read(MAX_SNAPSHOT_BYTES + 1)
    if hashlib.sha256(blob).hexdigest() != part.get("sha256"):
        raise InputError("backup", f"the snapshot of {backup_id} does not match its sha256", "a full follows")
    identities = r.age_identities if manifest.get("encryption") == "age" else None
    with open_plain(io.BytesIO(blob), identities, field="encryption.identity_secret", what="snapshot") as fh:
        out = bytearray()
        for chunk in decompress_chunks(fh):
            out += chunk
            if len(out) > MAX_SNAPSHOT_BYTES:
                raise InputError("backup", "the snapshot is too large", "a full follows")
    return bytes(out)


def gnu_tar_producer(paths: list[str], excludes: list[str], snapshot: Path) -> Any:
    """A producer running GNU tar (``--listed-incremental=<snapshot>``) into the sink."""
    for p in paths:
        if Path(p).name.startswith("-") or not Path(p).name:
            raise InputError("sources[0].target", f"{p!r}: its base name cannot be archived", "rename it")
    argv = ["tar", *CREATE_FLAGS, f"--listed-incremental={snapshot}"]
    argv += [f"--exclude={e}" for e in excludes]
    for p in paths:
        argv += ["-C", str(Path(p).parent), Path(p).name]

    def produce(sink: Sink) -> dict[str, Any]:
        info = run_dump(argv, sink)
        return {"bytes": info["bytes"], "tool": "GNU tar --listed-incremental", "paths": paths}

    return produce


def file_producer(path: Path) -> Any:
    """A producer streaming one local file (the updated snapshot)."""

    def produce(sink: Sink) -> dict[str, Any]:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(CHUNK), b""):
                sink.write(chunk)
        return {"bytes": path.stat().st_size}

    return produce


def extract_link(fh: BinaryIO, dest: Path) -> None:
    """Extract one archive of the chain into ``dest`` (deletions applied) through :class:`TarGate`.

    Raises:
        InputError: field ``backup``: a member would leave ``dest`` (nothing of it is written).
        RestoreFailed: tar failed (truncated or corrupt archive).
    """
    extract_checked(fh, dest, incremental=True)


def chain_action(engine: str, part: dict[str, Any]) -> str:
    """How a restore plan names the extraction of a files / etcd backup (a chain: its full and level)."""
    chain = part.get("chain")
    if engine != "files":
        return "etcdctl snapshot restore into the data dir"
    if not isinstance(chain, dict):
        return "extract the archive"
    return (
        f"apply the chain from full {str(chain.get('full'))[:40]} through {int(chain.get('level') or 0)}"
        " incremental(s), in order (deletions included), into the new directory"
    )


def restore_chain(r: Any, sel: Any, dest: Path, verified_parts: Any, selected: Any) -> dict[str, Any]:
    """Restore the point ``sel`` of an incremental chain into the new directory ``dest``.

    Every link is read from ``sel.storage``; all of them are sha256-checked (and decrypted) before
    the first is extracted.

    Raises:
        PreconditionFailed: ``dest`` exists and is not empty.
        InputError: a link is missing / altered (named), or an archive member is unsafe.
    """
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise PreconditionFailed(f"{dest} is not empty; a chain is restored into a new directory only")
    links, manifests = links_of(r.storages[sel.storage].list_backups(r.job.job))
    chain = chain_to({x.backup_id: x for x in links}, sel.backup_id)
    with contextlib.ExitStack() as stack:  # every link checked (and decrypted) before the first is extracted
        files = []
        for x in chain:
            link_sel = selected(sel.storage, x.backup_id, manifests[x.backup_id])
            files.append((x.backup_id, stack.enter_context(verified_parts(r, link_sel))))
        dest.mkdir(parents=True, exist_ok=True)
        for bid, paths in files:
            part = main_part(manifests[bid])
            assert part is not None
            with open(paths[part["name"]], "rb") as fh:
                extract_link(fh, dest)
    return {"directory": str(dest), "chain": [x.backup_id for x in chain]}


def snapshot_dir() -> Path:
    """A private temporary directory for this run's snapshot file."""
    return Path(tempfile.mkdtemp(prefix="stateferry-snar-"))
