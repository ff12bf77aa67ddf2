"""Where backups live: a local directory or an S3 bucket + prefix.

Layout (same on both)::

    <root>/<job>/<backup_id>/<part>.gz        data, one part per database / archive / snapshot
    <root>/<job>/<backup_id>/manifest.json    written LAST; only a manifest with status "good" makes
                                              the backup good

Writes never expose a half-written backup:

* local: parts are written into ``<root>/<job>/.partial-<backup_id>/``; publishing writes the manifest
  there, fsyncs, and renames the directory to ``<backup_id>`` (atomic on one filesystem);
* S3: every part is a multipart upload that only becomes visible when completed, and it is completed
  only when the producer reached the end of a successful dump; an aborted stream aborts the multipart
  upload. The manifest is put last; a backup directory without a good manifest is incomplete and is
  removed by the next rotation.
"""

from __future__ import annotations

import io
import json
import os
import queue
import shutil
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from planning.backup_layout import check_backup_id, check_part_name, is_backup_id
from planning.storage_probe import PROBE_NAME
from stateferry.errors import InputError, PermanentError, StateferryError, translate
from tasks.s3_probe import probe_s3

if TYPE_CHECKING:
    from blocks.object_store import ObjectStore

MANIFEST = "manifest.json"
PARTIAL_PREFIX = ".partial-"
#: multipart part size for S3 uploads (memory per S3 target is about parallel_uploads+2 parts).
S3_PART_SIZE = 8 * 1024 * 1024
S3_PARALLEL_UPLOADS = 2


@dataclass(frozen=True)
class StoredBackup:
    """A backup found in a storage."""

    backup_id: str
    manifest: dict[str, Any] | None
    #: a manifest exists but cannot be read or parsed: never deleted by retention.
    unreadable: bool = False

    @property
    def good(self) -> bool:
        """True when the manifest exists and says ``status: good``."""
        return bool(self.manifest) and self.manifest.get("status") == "good"  # type: ignore[union-attr]


class PartWriter(Protocol):
    """Receives one part's compressed bytes."""

    def write(self, chunk: bytes) -> None:
        """Append bytes."""

    def commit(self) -> None:
        """The part is complete (only called after the producer succeeded)."""

    def abort(self) -> None:
        """Discard the part."""


class BackupStorage(Protocol):
    """One backup target."""

    label: str

    def check_writable(self, job: str, *, rotation: bool = True) -> list[str]:
        """Fail with a clear error unless a backup could be written now; returns warnings (what
        the storage refuses that retention would need)."""

    def open_part(self, job: str, backup_id: str, part: str) -> PartWriter:
        """Start writing one part of an unpublished backup."""

    def publish(self, job: str, backup_id: str, manifest: dict[str, Any]) -> None:
        """Write the manifest and make the backup visible as good."""

    def discard(self, job: str, backup_id: str) -> None:
        """Remove everything of an unpublished (or any) backup."""

    def list_backups(self, job: str) -> list[StoredBackup]:
        """Every backup of the job (good or incomplete)."""

    def open_read(self, job: str, backup_id: str, part: str, *, published: bool = True) -> BinaryIO:
        """Open a part for reading (a partial one with ``published=False``)."""


# --------------------------------------------------------------------------------------------------
# local directory


class _LocalPart:
    def __init__(self, path: Path) -> None:
        self.path = path
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        self._fh = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        self._fh.write(chunk)

    def commit(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()

    def abort(self) -> None:
        self._fh.close()
        self.path.unlink(missing_ok=True)


def _private_dir(path: Path) -> None:
    """Create a directory (and parents) readable only by the flow's user (0700)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)


class LocalStorage:
    """Backups in a directory.

    Args:
        root: the storage's ``backup_dir``.
        label: name used in reports.
    """

    def __init__(self, root: str | Path, label: str | None = None) -> None:
        self.root = Path(root)
        self.label = label or f"local:{root}"

    def _job_dir(self, job: str) -> Path:
        return self.root / job

    def check_writable(self, job: str, *, rotation: bool = True) -> list[str]:
        """Create the job directory and write/remove a probe file (no warnings).

        Raises:
            InputError: naming ``backup_dir`` when the directory cannot be created or written.
        """
        probe = self._job_dir(job) / f".probe-{uuid.uuid4().hex}"
        try:
            _private_dir(self._job_dir(job))
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise InputError(
                "backup_dir",
                f"{self.root} is not writable ({exc.strerror or exc})",
                "create the directory and give the flow's user write access, or fix the path",
            ) from None
        return []

    def open_part(self, job: str, backup_id: str, part: str) -> PartWriter:
        """Open ``.partial-<id>/<part>`` for writing."""
        check_backup_id(backup_id)
        check_part_name(part)
        d = self._job_dir(job) / f"{PARTIAL_PREFIX}{backup_id}"
        _private_dir(self._job_dir(job))
        _private_dir(d)
        return _LocalPart(d / part)

    def publish(self, job: str, backup_id: str, manifest: dict[str, Any]) -> None:
        """Write the manifest into the partial directory and rename it into place."""
        partial = self._job_dir(job) / f"{PARTIAL_PREFIX}{backup_id}"
        final = self._job_dir(job) / backup_id
        tmp = partial / f".{MANIFEST}.tmp"
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
            json.dump(manifest, fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.rename(partial / MANIFEST)
        if final.exists():
            raise PermanentError(
                f"{self.label}: backup {job}/{backup_id} already exists; refusing to overwrite it"
            )
        partial.rename(final)
        fd = os.open(self._job_dir(job), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def discard(self, job: str, backup_id: str) -> None:
        """Remove ``<id>`` and ``.partial-<id>`` (only ids of this layout)."""
        check_backup_id(backup_id)
        for name in (backup_id, f"{PARTIAL_PREFIX}{backup_id}"):
            shutil.rmtree(self._job_dir(job) / name, ignore_errors=True)

    def list_backups(self, job: str) -> list[StoredBackup]:
        """Backups of the job, oldest first; partial directories are listed as incomplete."""
        d = self._job_dir(job)
        if not d.is_dir():
            return []
        out: list[StoredBackup] = []
        for entry in sorted(d.iterdir()):
            if not entry.is_dir() or entry.is_symlink():
                continue
            if entry.name.startswith(PARTIAL_PREFIX):
                if is_backup_id(entry.name.removeprefix(PARTIAL_PREFIX)):
                    out.append(StoredBackup(entry.name, None))
                continue
            if not is_backup_id(entry.name):
                continue  # not ours: never listed, never deleted
            try:
                manifest = json.loads((entry / MANIFEST).read_text())
            except (OSError, ValueError):
                out.append(StoredBackup(entry.name, None, unreadable=True))
                continue
            if not isinstance(manifest, dict):
                out.append(StoredBackup(entry.name, None, unreadable=True))
                continue
            out.append(StoredBackup(entry.name, manifest))
        return out

    def open_read(self, job: str, backup_id: str, part: str, *, published: bool = True) -> BinaryIO:
        """Open a part file."""
        check_backup_id(backup_id)
        check_part_name(part)
        name = backup_id if published else f"{PARTIAL_PREFIX}{backup_id}"
        return open(self._job_dir(job) / name / part, "rb")

    def part_path(self, job: str, backup_id: str, part: str) -> Path:
        """Path of a published part (for tools that need a file)."""
        check_backup_id(backup_id)
        check_part_name(part)
        return self._job_dir(job) / backup_id / part


# --------------------------------------------------------------------------------------------------
# S3


class _QueueReader(io.RawIOBase):
    """A file-like ``read()`` over chunks put in a bounded queue by the producer."""

    _EOF = object()
    _ABORT = object()

    def __init__(self, maxsize: int = 8) -> None:
        super().__init__()
        self.q: queue.Queue[object] = queue.Queue(maxsize=maxsize)
        self._buf = b""
        self._done = False

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        out = bytearray()
        want = size if size is not None and size >= 0 else None
        while want is None or len(out) < want:
            if self._buf:
                take = self._buf if want is None else self._buf[: want - len(out)]
                out += take
                self._buf = self._buf[len(take) :]
                continue
            if self._done:
                break
            item = self.q.get()
            if item is self._EOF:
                self._done = True
            elif item is self._ABORT:
                raise OSError("backup stream aborted by the producer")
            else:
                self._buf = item  # type: ignore[assignment]
        return bytes(out)


class _S3Part:
    def __init__(self, client: Any, bucket: str, key: str, label: str) -> None:
        self.client, self.bucket, self.key, self.label = client, bucket, key, label
        self.reader = _QueueReader()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"s3-upload-{key}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.client.put_object(
                self.bucket,
                self.key,
                self.reader,
                length=-1,
                part_size=S3_PART_SIZE,
                num_parallel_uploads=S3_PARALLEL_UPLOADS,
                content_type="application/gzip",
            )
        except BaseException as exc:
            self.error = exc
            # unblock a producer waiting on a full queue
            while True:
                try:
                    self.reader.q.get_nowait()
                except queue.Empty:
                    break

    def _raise(self) -> None:
        if self.error is not None:
            raise translate(self.error, context=f"uploading {self.key} to {self.label}")

    def write(self, chunk: bytes) -> None:
        while True:
            self._raise()
            if not self.thread.is_alive():
                raise StateferryError(f"{self.label}: upload of {self.key} stopped")
            try:
                self.reader.q.put(chunk, timeout=0.5)
                return
            except queue.Full:
                continue

    def commit(self) -> None:
        while self.thread.is_alive():
            try:
                self.reader.q.put(_QueueReader._EOF, timeout=0.5)
                break
            except queue.Full:
                continue
        self.thread.join()
        self._raise()

    def abort(self) -> None:
        if self.thread.is_alive():
            try:
                self.reader.q.put(_QueueReader._ABORT, timeout=5)
            except queue.Full:
                pass
            self.thread.join(timeout=30)


class S3Storage:
    """Backups under ``s3://bucket/prefix/``.

    Args:
        store: the ``ObjectStore`` block (endpoint + credentials).
        bucket: bucket name (created when missing).
        prefix: key prefix ("" = bucket root).
        label: name used in reports.
    """

    def __init__(self, store: ObjectStore, bucket: str, prefix: str = "", label: str | None = None) -> None:
        self.store = store
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.label = label or f"s3:{bucket}/{self.prefix}".rstrip("/")
        self._client: Any = None

    @property
    def client(self) -> Any:
        """The minio client (built once)."""
        if self._client is None:
            self._client = self.store.minio_client()
        return self._client

    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def check_writable(self, job: str, *, rotation: bool = True) -> list[str]:
        """Ensure a backup can be written: the bucket exists (created when reported missing) and a
        probe object (one fixed name per job) can be written. Removing it is tried but not needed: a
        write-only bucket is writable (``planning/storage_probe.py``); what it refuses that
        retention needs comes back as warnings.

        Raises:
            StateferryError: (translated) when the server is down, credentials are wrong, writing
                is denied, etc.
        """
        context = f"checking that {self.label} ({self.store.url}) is writable"
        warnings = probe_s3(self.client, self.bucket, self._key(job, PROBE_NAME), context, rotation=rotation)
        return [f"{self.label}: {w}" for w in warnings]

    def open_part(self, job: str, backup_id: str, part: str) -> PartWriter:
        """Start a streaming multipart upload of ``<job>/<id>/<part>``."""
        check_backup_id(backup_id)
        check_part_name(part)
        return _S3Part(self.client, self.bucket, self._key(job, backup_id, part), self.label)

    def publish(self, job: str, backup_id: str, manifest: dict[str, Any]) -> None:
        """Put the manifest (last)."""
        data = json.dumps(manifest, indent=2, sort_keys=True).encode()
        try:
            self.client.put_object(
                self.bucket,
                self._key(job, backup_id, MANIFEST),
                io.BytesIO(data),
                len(data),
                content_type="application/json",
            )
        except Exception as exc:
            raise translate(
                exc, context=f"writing the manifest of {job}/{backup_id} to {self.label}"
            ) from None

    def discard(self, job: str, backup_id: str) -> None:
        """Remove every object of the backup (the manifest first, so it is never half-good)."""
        from minio.deleteobjects import DeleteObject

        check_backup_id(backup_id)
        try:
            self.client.remove_object(self.bucket, self._key(job, backup_id, MANIFEST))
            names = [
                o.object_name
                for o in self.client.list_objects(
                    self.bucket, prefix=self._key(job, backup_id) + "/", recursive=True
                )
            ]
            errors = list(self.client.remove_objects(self.bucket, (DeleteObject(n) for n in names)))
            if errors:
                raise PermanentError(
                    f"{self.label}: could not delete {len(errors)} objects of {job}/{backup_id}"
                )
        except StateferryError:
            raise
        except Exception as exc:
            raise translate(exc, context=f"deleting {job}/{backup_id} from {self.label}") from None

    def list_backups(self, job: str) -> list[StoredBackup]:
        """Backups of the job, oldest first (those without a manifest are incomplete)."""
        prefix = self._key(job) + "/"
        ids: dict[str, bool] = {}
        try:
            for obj in self.client.list_objects(self.bucket, prefix=prefix, recursive=True):
                rest = obj.object_name[len(prefix) :]
                if "/" not in rest:
                    continue
                bid, name = rest.split("/", 1)
                if not is_backup_id(bid):
                    continue  # e.g. "<job>//x" (id ""): not ours, never listed or deleted
                ids[bid] = ids.get(bid, False) or name == MANIFEST
            out: list[StoredBackup] = []
            for bid in sorted(ids):
                manifest = None
                unreadable = False
                if ids[bid]:
                    resp = self.client.get_object(self.bucket, self._key(job, bid, MANIFEST))
                    try:
                        manifest = json.loads(resp.read())
                    except ValueError:
                        manifest = None
                    finally:
                        resp.close()
                        resp.release_conn()
                    if not isinstance(manifest, dict):
                        manifest, unreadable = None, True
                out.append(StoredBackup(bid, manifest, unreadable=unreadable))
            return out
        except Exception as exc:
            raise translate(exc, context=f"listing backups of {job} in {self.label}") from None

    def open_read(self, job: str, backup_id: str, part: str, *, published: bool = True) -> BinaryIO:
        """Stream a part's object."""
        check_backup_id(backup_id)
        check_part_name(part)
        try:
            resp = self.client.get_object(self.bucket, self._key(job, backup_id, part))
        except Exception as exc:
            raise translate(exc, context=f"reading {job}/{backup_id}/{part} from {self.label}") from None
        return _HTTPReader(resp)  # type: ignore[return-value]


class _HTTPReader(io.RawIOBase):
    def __init__(self, resp: Any) -> None:
        super().__init__()
        self.resp = resp

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        return bytes(self.resp.read(size if size is not None and size >= 0 else None))

    def close(self) -> None:
        if not self.closed:
            self.resp.close()
            self.resp.release_conn()
        super().close()


def iter_chunks(fh: BinaryIO, size: int = 1024 * 1024) -> Iterator[bytes]:
    """Read a file object in chunks until EOF."""
    while True:
        chunk = fh.read(size)
        if not chunk:
            return
        yield chunk
