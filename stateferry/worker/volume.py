"""Volume data mover run inside a ``stateferry/worker`` Job pod.

``python -m stateferry.worker.volume pack --dir /data --bucket B --key K [--level N]``
    streams the tree under ``--dir`` through GNU tar (``--format=posix --sparse --xattrs --acls
    --numeric-owner --listed-incremental``) and gzip to ``s3://B/<level key>`` and writes
    ``<level key>.result.json`` = ``{"ok", "sha256_tree", "files", "bytes", "skipped", ...}`` and the
    tar snapshot ``<level key>.snar``. Level 0 is the bulk copy; level N > 0 holds only what changed
    since level N-1 (new/changed files, every directory with its listing, so deletions are applied).

``python -m stateferry.worker.volume unpack --dir /data --bucket B --key K [--level N]
--expect-sha256 X [--expect-before Y] --result-key R``
    checks every member of ``s3://B/<level key>`` (:mod:`stateferry.worker.tarcheck`) before GNU
    tar extracts it into ``--dir``, with owners, modes, times, xattrs, ACLs, hard links and holes.
    Level 0 needs an empty ``--dir``; level N needs the tree of level N-1 (checksum ``Y``). A
    ``--dir`` that already holds ``X`` is left alone (a re-run is a no-op). Exit 1 when the result
    differs from ``X`` or the archive is refused.

The checksum (:mod:`stateferry.worker.tree`) is computed the same way on both sides. S3 from the
environment: ``STATEFERRY_S3_ENDPOINT``, ``STATEFERRY_S3_ACCESS_KEY``, ``STATEFERRY_S3_SECRET_KEY``
(from a Secret owned by the Job), ``STATEFERRY_S3_REGION``.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from isal import isal_zlib

from stateferry.worker.swap import SwapError, replace_tree
from stateferry.worker.tarcheck import TarGate, UnsafeArchive
from stateferry.worker.tree import TreeError, tree_checksum, walk

PART_SIZE = 16 * 1024 * 1024
XATTR_FLAGS = ["--xattrs", "--xattrs-include=user.*", "--acls"]
CREATE_FLAGS = [
    "--create",
    "--format=posix",
    "--sparse",
    "--sparse-version=1.0",
    *XATTR_FLAGS,
    "--numeric-owner",
    "--no-check-device",
    "--exclude=./lost+found",
    "--exclude=./.stateferry-restore-*",
    "--exclude=./.stateferry-old-*",
]
EXTRACT_FLAGS = [
    "--extract",
    "--listed-incremental=/dev/null",  # apply each directory's listing: deletions of a delta
    "--numeric-owner",
    "--same-owner",
    "--same-permissions",
    "--delay-directory-restore",
    *XATTR_FLAGS,
]


class MoverError(Exception):
    """A pack/unpack step failed; the message is written to the result record."""


def level_key(key: str, level: int) -> str:
    """Object key of one level's archive (level 0 = ``key``)."""
    return key if level == 0 else f"{key}.level{level}"


def s3_client() -> Any:
    """A MinIO client from the ``STATEFERRY_S3_*`` environment."""
    import minio

    endpoint = os.environ["STATEFERRY_S3_ENDPOINT"]
    u = urlparse(endpoint if "://" in endpoint else f"http://{endpoint}")
    return minio.Minio(
        u.netloc,
        access_key=os.environ["STATEFERRY_S3_ACCESS_KEY"],
        secret_key=os.environ["STATEFERRY_S3_SECRET_KEY"],
        secure=u.scheme == "https",
        region=os.environ.get("STATEFERRY_S3_REGION", "us-east-1"),
    )


def _put_json(client: Any, bucket: str, key: str, data: dict[str, Any]) -> None:
    raw = json.dumps(data, sort_keys=True).encode()
    client.put_object(bucket, key, io.BytesIO(raw), len(raw), content_type="application/json")


def _get(client: Any, bucket: str, key: str) -> bytes:
    resp = client.get_object(bucket, key)
    try:
        return bytes(resp.read())
    finally:
        resp.close()
        resp.release_conn()


def _load_sums(client: Any, bucket: str, lkey: str) -> dict[str, list[Any]] | None:
    """The per-file checksums the previous level recorded (None if missing or unreadable)."""
    try:
        data = json.loads(gzip.decompress(_get(client, bucket, lkey + ".sums.json.gz")))
    except Exception:  # a missing or damaged cache only costs a full re-read
        return None
    return data if isinstance(data, dict) else None


class GzipReader(io.RawIOBase):
    """``read()`` gives the gzip (ISA-L, level 1) of a raw stream: what ``gzip -1`` would pipe, at
    several times its speed (SIMD deflate; the compression releases the GIL, so tar, the upload and
    the compression overlap). The output is a standard gzip member."""

    def __init__(self, raw: Any, level: int = 1) -> None:
        self._raw = raw
        self._c = isal_zlib.compressobj(level, isal_zlib.DEFLATED, 31)
        self._buf = bytearray()
        self._eof = False

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        want = size if size is not None and size >= 0 else 1 << 62
        while len(self._buf) < want and not self._eof:
            chunk = self._raw.read(1 << 20)
            if chunk:
                self._buf += self._c.compress(chunk)
            else:
                self._buf += self._c.flush()
                self._eof = True
        out = bytes(self._buf[:want])
        del self._buf[:want]
        return out


def check_only(root: Path, only: list[str] | None) -> list[str] | None:
    """Relative paths inside ``root`` to archive (None = all): each must exist and be reached without
    a symlink (a symlinked component could lead tar outside the volume).

    Raises:
        MoverError: naming the path.
    """
    if not only:
        return None
    out = []
    for rel in only:
        parts = rel.split("/")
        if rel.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\x00" in rel:
            raise MoverError(f"--only {rel!r} is not a plain relative path inside the volume")
        here = root
        for part in parts:
            here = here / part
            if not here.is_symlink() and not here.exists():
                raise MoverError(f"{rel} does not exist in the volume")
            if here.is_symlink() and here != root / rel:
                raise MoverError(f"{rel}: {here.relative_to(root)} is a symlink; refusing to follow it")
        out.append(rel)
    return out


def pack(root: Path, bucket: str, key: str, level: int = 0, only: list[str] | None = None) -> dict[str, Any]:
    """Stream ``root`` (level 0) or its changes since level-1 to S3; write and return the result record.

    ``only``: relative paths to archive instead of the whole tree (members ``./<path>/...``).
    """
    t0 = time.monotonic()
    client = s3_client()
    lkey = level_key(key, level)
    try:
        only = check_only(root, only)
        walk(root)  # fail early and clearly when the tree is not readable
        with tempfile.TemporaryDirectory(prefix="stateferry-mover-") as tmp:
            snar = Path(tmp) / "snapshot.snar"
            if level > 0:
                snar.write_bytes(_get(client, bucket, level_key(key, level - 1) + ".snar"))
            tar = subprocess.Popen(
                [
                    "tar",
                    *CREATE_FLAGS,
                    f"--listed-incremental={snar}",
                    "-C",
                    str(root),
                    "-f",
                    "-",
                    *([f"./{p}" for p in only] if only else ["."]),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            assert tar.stdout is not None and tar.stderr is not None
            err: list[bytes] = []
            reader = threading.Thread(target=lambda: err.append(tar.stderr.read()), daemon=True)  # type: ignore[union-attr]
            reader.start()
            client.put_object(
                bucket,
                lkey,
                GzipReader(tar.stdout),
                length=-1,
                part_size=PART_SIZE,
                content_type="application/gzip",
            )
            rc = tar.wait()
            reader.join()
            warnings = (err[0] if err else b"").decode(errors="replace").strip()
            if rc > 1:
                raise MoverError(f"tar exited {rc}: {warnings[-500:]}")
            raw_snar = snar.read_bytes()
            client.put_object(bucket, lkey + ".snar", io.BytesIO(raw_snar), len(raw_snar))
        summary = tree_checksum(
            root, cache=_load_sums(client, bucket, level_key(key, level - 1)) if level else None, only=only
        )
        raw_sums = gzip.compress(json.dumps(summary.pop("sums")).encode(), 1)
        client.put_object(bucket, lkey + ".sums.json.gz", io.BytesIO(raw_sums), len(raw_sums))
    except (TreeError, MoverError, OSError) as exc:
        result = {"ok": False, "error": str(exc), "level": level, "key": lkey}
        _put_json(client, bucket, lkey + ".result.json", result)
        raise MoverError(str(exc)) from exc
    result = {
        **summary,
        "ok": True,
        "level": level,
        "key": lkey,
        "changed_while_reading": rc == 1,
        "warnings": warnings[-500:],
        "seconds": round(time.monotonic() - t0, 3),
    }
    _put_json(client, bucket, lkey + ".result.json", result)
    return result


def _extract(client: Any, bucket: str, key: str, root: Path) -> list[list[str]]:
    """Download, gunzip, check and extract one archive; return the dropped members."""
    skipped: list[list[str]] = []
    gate = TarGate(root, on_skip=lambda n, k: skipped.append([n, k]))
    tar = subprocess.Popen(
        ["tar", *EXTRACT_FLAGS, "-C", str(root), "-f", "-"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert tar.stdin is not None and tar.stderr is not None
    err: list[bytes] = []
    reader = threading.Thread(target=lambda: err.append(tar.stderr.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    unzip = isal_zlib.decompressobj(wbits=31)
    resp = client.get_object(bucket, key)
    refused: UnsafeArchive | None = None
    try:
        for chunk in resp.stream(1 << 20):
            data = unzip.decompress(chunk)
            while unzip.unused_data:  # concatenated gzip members
                rest = unzip.unused_data
                unzip = isal_zlib.decompressobj(wbits=31)
                data += unzip.decompress(rest)
            tar.stdin.write(gate.feed(data))
    except UnsafeArchive as exc:
        refused = exc
    except BrokenPipeError:
        pass
    finally:
        resp.close()
        resp.release_conn()
        try:
            tar.stdin.close()
        except BrokenPipeError:
            pass
    rc = tar.wait()
    reader.join()
    if refused is not None:
        raise MoverError(f"archive {key} refused: {refused}")
    if rc != 0:
        raise MoverError(
            f"tar exited {rc}: {(err[0] if err else b'').decode(errors='replace').strip()[-500:]}"
        )
    return skipped


def unpack(
    root: Path,
    bucket: str,
    key: str,
    expect: str | None,
    result_key: str,
    level: int = 0,
    expect_before: str | None = None,
    only: list[str] | None = None,
    replace: bool = False,
) -> dict[str, Any]:
    """Fill ``root`` from one level's archive; verify the tree checksum; write the result record.

    ``only``: the archive was packed with these paths; the checksum covers them (not their parents).
    ``replace``: level 0 over a volume holding other data, proven first (:mod:`.swap`); needs ``expect``.
    """
    t0 = time.monotonic()
    client = s3_client()
    root.mkdir(parents=True, exist_ok=True)
    try:
        entries = walk(root)
        before = tree_checksum(root, only=only or None)
        if expect and before["sha256_tree"] == expect:
            present = {k: v for k, v in before.items() if k != "sums"}
            result = {**present, "seconds": 0.0, "status": "already-present", "ok": True, "level": level}
            _put_json(client, bucket, result_key, result)
            return result
        if replace and level == 0 and expect:
            after, skipped = replace_tree(
                root, expect, only or None, lambda d: _extract(client, bucket, level_key(key, level), d)
            )
            after.pop("sums")
            result = {**after, "seconds": round(time.monotonic() - t0, 3), "status": "replaced", "ok": True}
            result.update({"level": level, "expected": expect, "dropped": skipped})
            _put_json(client, bucket, result_key, result)
            return result
        if level == 0 and len(entries) > 1:
            raise MoverError(
                f"{root} is not empty ({len(entries) - 1} entries) and does not hold the expected data; "
                "refusing to overwrite: empty the volume or restore into a new PVC"
            )
        if level > 0 and before["sha256_tree"] != expect_before:
            raise MoverError(
                f"{root} does not hold the data of level {level - 1} (checksum {before['sha256_tree'][:12]}, "
                f"expected {str(expect_before)[:12]}); refusing to apply a delta: re-run the full copy"
            )
        skipped = _extract(client, bucket, level_key(key, level), root)
        after = tree_checksum(root, cache=before["sums"], only=only or None)  # untouched files: not re-read
        after.pop("sums")
    except (TreeError, MoverError, SwapError, OSError) as exc:
        _put_json(
            client, bucket, result_key, {"ok": False, "error": str(exc), "level": level, "expected": expect}
        )
        raise MoverError(str(exc)) from exc
    ok = expect is None or after["sha256_tree"] == expect
    result = {
        **after,
        "seconds": round(time.monotonic() - t0, 3),
        "status": "filled",
        "ok": ok,
        "level": level,
        "expected": expect,
        "dropped": skipped,
    }
    _put_json(client, bucket, result_key, result)
    return result


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m stateferry.worker.volume")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--dir", required=True, type=Path)
    p.add_argument("--bucket", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--level", type=int, default=0)
    p.add_argument("--only", action="append", default=None, help="relative path to archive (repeatable)")
    u = sub.add_parser("unpack")
    u.add_argument("--dir", required=True, type=Path)
    u.add_argument("--bucket", required=True)
    u.add_argument("--key", required=True)
    u.add_argument("--level", type=int, default=0)
    u.add_argument("--expect-sha256", default=None)
    u.add_argument("--expect-before", default=None)
    u.add_argument("--result-key", required=True)
    u.add_argument("--only", action="append", default=None, help="the paths the archive was packed with")
    u.add_argument("--replace", action="store_true", help="replace other data, after proving the copy")
    c = sub.add_parser("checksum")
    c.add_argument("--dir", required=True, type=Path)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "pack":
            print(json.dumps(pack(args.dir, args.bucket, args.key, args.level, args.only)))
            return 0
        if args.cmd == "unpack":
            res = unpack(
                args.dir,
                args.bucket,
                args.key,
                args.expect_sha256,
                args.result_key,
                args.level,
                args.expect_before,
                args.only,
                args.replace,
            )
            print(json.dumps(res))
            return 0 if res.get("ok") else 1
    except MoverError as exc:
        print(f"stateferry mover: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({k: v for k, v in tree_checksum(args.dir).items() if k != "sums"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
