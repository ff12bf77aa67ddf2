"""Files of a PersistentVolumeClaim: packed in the cluster by the volume mover, restored into a claim.

The seed (nxs-backup in Kubernetes) backs a PVC up by mounting it into its CronJob. stateferry
reuses the data mover of ``app_migration`` (:mod:`tasks.volume_mover`, :mod:`planning.mover_pod`):
a short Job mounts the claim **read-only** on the node where it is attached (root with only
``DAC_READ_SEARCH`` by default) and runs ``python -m stateferry.worker.volume pack`` (GNU tar:
owners, modes, xattrs/ACLs, hard links, sparse files; ``--only`` for the job's ``paths``) into a
staging object on the job's first S3 storage (``<prefix>/<job>/<backup_id>/.mover-volume.tar.gz``,
inside the unpublished backup, so a crashed run's leftovers go with the incomplete backup). The
flow then streams that tar through the usual pipeline (compressed once, hashed once, to every
storage at once) and deletes the staging objects. The mover's tree checksum, file count and bytes
are the backup's inventory.

A restore goes the other way: the sha256-checked part is staged (gzip) on that S3 storage, the
target claim is created when missing (size, access modes and class of the source claim) and a fill
Job unpacks it there and must reach the backup's tree checksum. A claim holding other data is
refused unless ``overwrite`` (approved like every overwrite): the mover then extracts into a staging
directory of the claim, proves it, and only then swaps the paths in, removing the previous data once
the claim's checksum matches (:mod:`stateferry.worker.swap`).
"""

from __future__ import annotations

import io
import re
import secrets
import time
from collections.abc import Iterator
from typing import Any, BinaryIO, cast

from planning.backup_config import PvcSourceConfig
from planning.mover_pod import MOUNT, MoverSecurity, mover_job_body, pod_placement
from planning.pvc_source import check_paths, parse_claim
from stateferry.errors import InputError, PermanentError, PreconditionFailed, StateferryError
from tasks.archive_store import get_json
from tasks.backup_storage import S3Storage
from tasks.dumpers import CHUNK, DumpFailed, Sink
from tasks.kube_dynamic import create, dynamic_client, get_or_none, served_resource
from tasks.restore_checks import InventoryCheck
from tasks.volume_mover import WORKER_IMAGE, claim_users, run_mover_job, wait_pvcs_bound

STAGING_NAME = ".mover-volume.tar.gz"
_STAGING_SUFFIXES = ("", ".result.json", ".snar", ".sums.json.gz")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?([KMGTPE]i?|[mkMGTPE]|e[0-9]+)?$")
_ACCESS_MODES = {"ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"}
_CLASS = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def staging_storage(r: Any, usable: list[str] | None = None) -> S3Storage:
    """The job's first S3 storage among ``usable`` labels (default: all; the parser made sure the job
    has one): where the mover Job streams."""
    for label, storage in r.storages.items():
        if isinstance(storage, S3Storage) and (usable is None or label in usable):
            return storage
    raise InputError(
        "storages", "a pvc source needs a usable S3 storage (the mover streams through it)", "add or fix one"
    )


def _dyn(r: Any) -> Any:
    return dynamic_client(r.source_block.api_client())


def _claim(dyn: Any, ns: str, name: str) -> dict[str, Any] | None:
    return get_or_none(dyn, served_resource(dyn, "v1", "PersistentVolumeClaim"), name, ns)


def pvc_preflight(r: Any) -> dict[str, Any]:
    """The claim exists and is Bound; returns its size, access modes and class (for a restore).

    Raises:
        InputError: ``sources[0].pvc`` names no claim of the cluster, or it is not Bound.
    """
    src: PvcSourceConfig = r.job.source
    ns, name = parse_claim(src.pvc, "sources[0].pvc")
    claim = _claim(_dyn(r), ns, name)
    if claim is None:
        raise InputError(
            "sources[0].pvc", f"no claim {ns}/{name} in the cluster of {src.connect.block!r}", "fix the name"
        )
    phase = (claim.get("status") or {}).get("phase")
    if phase != "Bound":
        raise InputError("sources[0].pvc", f"claim {ns}/{name} is {phase}, not Bound", "bind it first")
    spec = claim.get("spec") or {}
    return {
        "pvc": f"{ns}/{name}",
        "paths": list(src.paths),
        "storage": str(((spec.get("resources") or {}).get("requests") or {}).get("storage", "")),
        "access_modes": list(spec.get("accessModes") or []),
        "storage_class": spec.get("storageClassName"),
    }


def _delete_staging(storage: S3Storage, key: str) -> None:
    for suffix in _STAGING_SUFFIXES:
        try:
            storage.client.remove_object(storage.bucket, key + suffix)
        except Exception:  # best effort: the objects lie inside the (discarded) backup anyway
            pass


def _only_args(paths: list[str]) -> list[str]:
    return [] if paths == ["."] else [f"--only={p}" for p in paths]  # one argument: "-x" stays a value


def _run_mover(r: Any, ns: str, claim: str, args: list[str], write: bool, storage: S3Storage) -> None:
    src: PvcSourceConfig = r.job.source
    dyn = _dyn(r)
    run = secrets.token_hex(4)
    name = re.sub(r"[^a-z0-9-]", "-", f"sf-{'fill' if write else 'pack'}-{claim}"[:40]).strip("-") + "-" + run
    body = mover_job_body(
        name,
        ns,
        claim,
        args,
        src.mover_endpoint or storage.store.url,
        storage.store.region,
        src.mover_image or WORKER_IMAGE,
        run,
        f"{name[:50]}-s3",
        mode=MoverSecurity.parse(src.mover_security, "sources[0].mover_security"),
        placement=pod_placement(claim_users(dyn, ns, claim)),
        write=write,
        timeout=src.timeout_seconds,
    )
    ok, msg = run_mover_job(dyn, body, storage.store, src.timeout_seconds)
    if not ok:
        raise StateferryError(f"mover Job {ns}/{name} failed: {msg or 'no message'}")


def pvc_tar_producer(r: Any, backup_id: str, healthy: list[str]) -> Any:
    """A producer: the mover Job packs the claim into the staging object (on the first S3 storage
    that passed the preflight), which is then streamed (as raw tar) into the pipeline; the staging
    objects are removed in any case."""
    src: PvcSourceConfig = r.job.source
    ns, claim = parse_claim(src.pvc, "sources[0].pvc")
    storage = staging_storage(r, healthy)
    key = storage._key(r.job.job, backup_id, STAGING_NAME)

    def produce(sink: Sink) -> dict[str, Any]:
        from tasks.restore_ops import decompress_chunks

        t0 = time.monotonic()
        try:
            args = ["pack", "--dir", MOUNT, "--bucket", storage.bucket, "--key", key, *_only_args(src.paths)]
            try:
                _run_mover(r, ns, claim, args, False, storage)
            finally:
                rec = get_json(storage.store, storage.bucket, key + ".result.json") or {}
            if not rec.get("ok"):
                raise DumpFailed(
                    f"packing {ns}/{claim} failed: {r.redact(str(rec.get('error') or 'no result'))}"
                )
            packed = time.monotonic() - t0
            resp = storage.client.get_object(storage.bucket, key)
            try:
                for chunk in decompress_chunks(cast(BinaryIO, _Body(resp))):
                    sink.write(chunk)
            finally:
                resp.close()
                resp.release_conn()
        finally:
            _delete_staging(storage, key)
        return {
            "pvc": f"{ns}/{claim}",
            "paths": list(src.paths),
            "file_count": int(rec["files"]),
            "total_bytes": int(rec["bytes"]),
            "tree_sha256": str(rec["sha256_tree"]),
            "skipped": rec.get("skipped") or [],
            "changed_while_reading": bool(rec.get("changed_while_reading")),
            "mover_seconds": round(packed, 3),
            "tool": "GNU tar (stateferry.worker.volume pack)",
        }

    return produce


class _Body(io.RawIOBase):
    def __init__(self, resp: Any) -> None:
        self.resp = resp

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        return bytes(self.resp.read(CHUNK if size is None or size < 0 else size))


class _Chunks(io.RawIOBase):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks, self.buf = chunks, b""

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        want = CHUNK if size is None or size < 0 else size
        while len(self.buf) < want:
            nxt = next(self.chunks, None)
            if nxt is None:
                break
            self.buf += nxt
        out, self.buf = self.buf[:want], self.buf[want:]
        return out


# --------------------------------------------------------------------------------------------------
# restore


def pvc_restore_actions(manifest: dict[str, Any], target_pvc: str | None, overwrite: bool) -> list[str]:
    """The plan of a restore into a claim.

    Raises:
        InputError: no ``target_pvc``.
    """
    if not target_pvc:
        raise InputError(
            "target_pvc",
            "is required to restore files of a PVC",
            "give <namespace>/<claim>: a new claim (created like the source's) or an empty one",
        )
    ns, claim = parse_claim(target_pvc, "target_pvc")
    paths = (manifest.get("source") or {}).get("paths") or ["."]
    unpack = f"stage the archive on the job's S3 storage and unpack {paths} into it with a mover Job"
    if overwrite:
        return [
            f"create claim {ns}/{claim} like the source's unless it exists",
            unpack + " into a staging directory of the claim, and prove it there (tree checksum)",
            f"then swap {paths} in; the previous data is removed only once the claim's checksum matches",
        ]
    return [
        f"create claim {ns}/{claim} like the source's unless it exists (an existing one must be empty)",
        unpack,
        "compare the claim's tree checksum with the backup's",
    ]


def _claim_body(ns: str, claim: str, source: dict[str, Any]) -> dict[str, Any]:
    """A new claim like the source's (size, access modes, class: read from the manifest, checked)."""
    size = str(source.get("storage") or "")
    modes = [m for m in source.get("access_modes") or [] if m in _ACCESS_MODES] or ["ReadWriteOnce"]
    if not _QUANTITY.match(size):
        raise InputError(
            "backup", f"manifest source.storage {size[:20]!r} is not a quantity", "create the claim"
        )
    spec: dict[str, Any] = {"accessModes": modes, "resources": {"requests": {"storage": size}}}
    cls = source.get("storage_class")
    if isinstance(cls, str) and _CLASS.match(cls):
        spec["storageClassName"] = cls
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim}, "spec": spec}


def restore_pvc(
    r: Any,
    path: Any,
    manifest: dict[str, Any],
    part: dict[str, Any],
    target_pvc: str,
    check: InventoryCheck,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Unpack a sha256-checked part into a new or empty claim; see the module docstring.

    ``overwrite``: into a claim holding other data: the mover extracts into a staging directory of
    the claim, proves it, then swaps the paths in (``stateferry/worker/swap.py``).

    Raises:
        PreconditionFailed: the claim holds other data and ``overwrite`` is off (nothing written).
        RestoreIncomplete: the tree checksum differs from the backup's.
    """
    from stateferry.worker.volume import GzipReader
    from tasks.restore_ops import decompress_chunks

    ns, claim = parse_claim(target_pvc, "target_pvc")
    source = manifest.get("source") or {}
    want = str(part.get("tree_sha256") or "")
    try:  # the manifest was read back from a storage: its paths and checksum become worker arguments
        paths = check_paths(source.get("paths") or ["."], "manifest.source.paths")
    except InputError as exc:
        raise InputError("backup", f"manifest {exc.problem}", "restore another backup") from None
    if not re.fullmatch(r"[0-9a-f]{64}", want):
        raise InputError("backup", "manifest parts[0].tree_sha256 is not a sha256", "restore another backup")
    dyn = _dyn(r)
    created = False
    if _claim(dyn, ns, claim) is None:
        if get_or_none(dyn, served_resource(dyn, "v1", "Namespace"), ns, None) is None:
            raise PreconditionFailed(f"namespace {ns} does not exist; create it first")
        pvcs = served_resource(dyn, "v1", "PersistentVolumeClaim")
        create(dyn, pvcs, _claim_body(ns, claim, source), ns)
        created = True
    wait_pvcs_bound(dyn, r.job.source.connect.block, [(ns, claim)])
    storage = staging_storage(r)
    token = secrets.token_hex(4)
    key = storage._key(r.job.job, f".restore-{token}.tar.gz")
    result_key = key + ".fill.json"
    try:
        with open(path, "rb") as fh:
            storage.client.put_object(
                storage.bucket, key, GzipReader(_Chunks(decompress_chunks(fh))), length=-1, part_size=16 << 20
            )
        args = ["unpack", "--dir", MOUNT, "--bucket", storage.bucket, "--key", key]
        args += ["--expect-sha256", want, "--result-key", result_key, *_only_args(paths)]
        args += ["--replace"] if overwrite else []
        try:
            _run_mover(r, ns, claim, args, True, storage)
        except StateferryError:
            pass  # the result record says why
        rec = get_json(storage.store, storage.bucket, result_key) or {}
    finally:
        for k in (key, result_key):
            try:
                storage.client.remove_object(storage.bucket, k)
            except Exception:
                pass
    if not rec.get("ok") and "not empty" in str(rec.get("error")):
        raise PreconditionFailed(f"claim {ns}/{claim} holds other data; nothing was written: {rec['error']}")
    got = {
        "file_count": rec.get("files"),
        "total_bytes": rec.get("bytes"),
        "tree_sha256": rec.get("sha256_tree"),
    }
    expected = {k: part.get(k) for k in ("file_count", "total_bytes", "tree_sha256")}
    check.add("files", got, fallback=expected)
    if not rec.get("ok") and not check.problems:
        raise PermanentError(f"unpacking into {ns}/{claim} failed: {rec.get('error') or 'no result record'}")
    check.raise_if_problems(f"restore into {ns}/{claim}", "the claim is left as it is for inspection")
    return {"pvc": f"{ns}/{claim}", "created": created, "tree": got, "status": rec.get("status")}


def verify_volume_archive(fh: Any, info: dict[str, Any]) -> list[str]:
    """``verify: true`` for a pvc backup: read the stored archive end to end through the mover's own
    member check (no absolute names, no ``..``, no links out) and count its files and bytes, which
    must equal what the mover counted in the volume. (The tree checksum with owners, modes and
    xattrs is compared by every restore, in the cluster.)"""
    import tarfile
    import tempfile
    from pathlib import Path

    from stateferry.worker.tarcheck import TarGate, UnsafeArchive
    from tasks.restore_ops import decompress_chunks

    files = size = 0
    with tempfile.TemporaryDirectory(prefix="stateferry-verify-") as empty:
        gate = TarGate(Path(empty))
        checked = (gate.feed(chunk) for chunk in decompress_chunks(fh))
        try:
            with tarfile.open(fileobj=_Chunks(checked), mode="r|") as tar:
                for member in tar:
                    if member.isreg():
                        files += 1
                        size += member.size
        except UnsafeArchive as exc:
            return [f"volume archive refused: {exc}"]
        except tarfile.TarError as exc:
            return [f"volume archive unreadable: {exc}"]
    want = (info.get("file_count"), info.get("total_bytes"))
    if (files, size) != want:
        return [f"volume archive holds {files} files / {size} bytes, the mover counted {want[0]} / {want[1]}"]
    return []
