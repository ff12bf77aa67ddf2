"""Helpers shared by the backup tests (real servers; no mocks)."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from blocks.database import Database


def mysql_block(server: Any, password: str | None = None) -> Database:
    """A Database block for a LocalMariaDB."""
    return Database(
        engine="mysql",
        host=server.host,
        port=server.port,
        user=server.user,
        password=SecretStr(password or server.password),
    )


def pg_block(server: Any, password: str | None = None) -> Database:
    """A Database block for a LocalPostgres."""
    return Database(
        engine="postgres",
        host=server.host,
        port=server.port,
        user=server.user,
        password=SecretStr(password or server.password),
    )


def mysql_exec(db: Database, *statements: str, database: str | None = None) -> list[tuple[Any, ...]]:
    """Run statements; return the last one's rows."""
    conn = db.connect(database)
    rows: list[tuple[Any, ...]] = []
    try:
        with conn.cursor() as cur:
            for s in statements:
                cur.execute(s)
                rows = list(cur.fetchall())
    finally:
        conn.close()
    return rows


def pg_exec(db: Database, *statements: str, database: str | None = None) -> list[tuple[Any, ...]]:
    """Run statements; return the last one's rows (if any)."""
    conn = db.connect(database)
    rows: list[tuple[Any, ...]] = []
    try:
        with conn.cursor() as cur:
            for s in statements:
                cur.execute(s)
                rows = list(cur.fetchall()) if cur.description else []
    finally:
        conn.close()
    return rows


def local_manifests(root: Path, job: str) -> dict[str, dict[str, Any]]:
    """backup id -> manifest of the published local backups."""
    out = {}
    d = root / job
    if d.is_dir():
        for entry in d.iterdir():
            m = entry / "manifest.json"
            if m.is_file():
                out[entry.name] = json.loads(m.read_text())
    return out


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def s3_keys(store: Any, bucket: str, prefix: str) -> list[str]:
    """Every key under a prefix."""
    client = store.minio_client()
    if not client.bucket_exists(bucket):
        return []
    return sorted(o.object_name for o in client.list_objects(bucket, prefix=prefix, recursive=True))


def make_tree(root: Path) -> None:
    """A small tree: text, binary, nested, empty dir, symlink, and files to exclude."""
    (root / "docs" / "deep").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "docs" / "a.txt").write_text("hello\n")
    (root / "docs" / "deep" / "b.bin").write_bytes(os.urandom(300_000))
    (root / "top.dat").write_bytes(bytes(range(256)) * 40)
    (root / "scratch.tmp").write_text("excluded")
    (root / "cache").mkdir()
    (root / "cache" / "x").write_text("excluded too")
    os.symlink("docs/a.txt", root / "link")


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.received.append({"path": self.path, "body": body.decode(errors="replace")})
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def webhook_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A loopback HTTP server recording POSTed bodies; yields (url, received)."""
    received: list[dict[str, Any]] = []
    handler = type("Hook", (_Hook,), {"received": received})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/hook", received
    finally:
        srv.shutdown()
        srv.server_close()
