"""Volume data mover run inside a ``stateferry/worker`` Job pod.

``python -m stateferry.worker.volume pack --dir /data --bucket B --key K``
    streams the file tree under ``--dir`` as a gzip tarball to ``s3://B/K`` and writes
    ``s3://B/K.result.json`` = ``{"sha256_tree", "files", "bytes", "seconds"}``.

``python -m stateferry.worker.volume unpack --dir /data --bucket B --key K --expect-sha256 X
--result-key R``
    streams ``s3://B/K`` into ``--dir`` (which must be empty unless it already holds exactly the
    expected tree: a re-run is then a no-op), computes the tree checksum and writes ``s3://B/R``;
    exits 1 if the checksum differs from ``X``.

S3 connection from the environment: ``STATEFERRY_S3_ENDPOINT`` (``http(s)://host:port``),
``STATEFERRY_S3_ACCESS_KEY``, ``STATEFERRY_S3_SECRET_KEY`` (from a Secret), ``STATEFERRY_S3_REGION``.

The tree checksum is the sha256 of one line per entry in sorted path order: ``D <path>`` for a
directory, ``F <path> <mode> <size> <sha256>`` for a file, ``L <path> <target>`` for a symlink.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

IGNORED = frozenset({"lost+found"})
PART_SIZE = 16 * 1024 * 1024


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_entries(root: Path) -> list[tuple[str, Path]]:
    """``(relative path, absolute path)`` of every entry under ``root``, sorted, lost+found excluded."""
    out: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d not in IGNORED]
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            out.append((rel, p))
    return sorted(out)


def tree_checksum(root: Path) -> dict[str, Any]:
    """Checksum, file count and byte count of the tree under ``root``."""
    h = hashlib.sha256()
    files = 0
    size = 0
    for rel, p in tree_entries(root):
        if p.is_symlink():
            h.update(f"L {rel} {os.readlink(p)}\n".encode())
        elif p.is_dir():
            h.update(f"D {rel}\n".encode())
        elif p.is_file():
            st = p.stat()
            h.update(f"F {rel} {st.st_mode & 0o7777:o} {st.st_size} {_file_sha(p)}\n".encode())
            files += 1
            size += st.st_size
    return {"sha256_tree": h.hexdigest(), "files": files, "bytes": size}


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


def pack(root: Path, bucket: str, key: str) -> dict[str, Any]:
    """Stream ``root`` as tar.gz to ``s3://bucket/key``; write and return the result record."""
    t0 = time.monotonic()
    client = s3_client()
    summary = tree_checksum(root)
    rfd, wfd = os.pipe()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            with os.fdopen(wfd, "wb") as w, tarfile.open(fileobj=w, mode="w|gz") as tar:
                for rel, p in tree_entries(root):
                    tar.add(str(p), arcname=rel, recursive=False)
        except BaseException as exc:  # reported after the upload ends
            errors.append(exc)

    th = threading.Thread(target=writer, daemon=True)
    th.start()
    with os.fdopen(rfd, "rb") as r:
        client.put_object(bucket, key, r, length=-1, part_size=PART_SIZE, content_type="application/gzip")
    th.join()
    if errors:
        raise errors[0]
    result = {**summary, "seconds": round(time.monotonic() - t0, 3), "key": key}
    _put_json(client, bucket, key + ".result.json", result)
    return result


def unpack(root: Path, bucket: str, key: str, expect: str | None, result_key: str) -> dict[str, Any]:
    """Fill ``root`` from ``s3://bucket/key``; verify the tree checksum; write the result record."""
    t0 = time.monotonic()
    client = s3_client()
    root.mkdir(parents=True, exist_ok=True)
    present = [rel for rel, _ in tree_entries(root)]
    if present:
        before = tree_checksum(root)
        if expect and before["sha256_tree"] == expect:
            result = {**before, "seconds": 0.0, "status": "already-present", "ok": True}
            _put_json(client, bucket, result_key, result)
            return result
        raise SystemExit(
            f"{root} is not empty ({len(present)} entries) and does not hold the expected data; "
            "refusing to overwrite: empty the volume or restore into a new PVC"
        )
    resp = client.get_object(bucket, key)
    try:
        with tarfile.open(fileobj=resp, mode="r|gz") as tar:
            tar.extractall(root, filter="data")
    finally:
        resp.close()
        resp.release_conn()
    after = tree_checksum(root)
    ok = expect is None or after["sha256_tree"] == expect
    result = {
        **after,
        "seconds": round(time.monotonic() - t0, 3),
        "status": "filled",
        "ok": ok,
        "expected": expect,
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
    u = sub.add_parser("unpack")
    u.add_argument("--dir", required=True, type=Path)
    u.add_argument("--bucket", required=True)
    u.add_argument("--key", required=True)
    u.add_argument("--expect-sha256", default=None)
    u.add_argument("--result-key", required=True)
    c = sub.add_parser("checksum")
    c.add_argument("--dir", required=True, type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "pack":
        print(json.dumps(pack(args.dir, args.bucket, args.key)))
        return 0
    if args.cmd == "unpack":
        res = unpack(args.dir, args.bucket, args.key, args.expect_sha256, args.result_key)
        print(json.dumps(res))
        return 0 if res.get("ok") else 1
    print(json.dumps(tree_checksum(args.dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
