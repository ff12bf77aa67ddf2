"""The manifest check every restore runs first (pure): a manifest read back from storage is untrusted."""

from __future__ import annotations

import re
from typing import Any

from planning.backup_encryption import encrypted_suffix, manifest_encryption
from planning.backup_layout import EXTRA_PARTS, FIXED_PART, SUFFIX, pg_part
from stateferry.errors import InputError
from tasks.inventory import is_inventory

_MANIFEST_FIX = "restore another backup: this manifest was not written by stateferry (or was altered)"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_PG_DBNAME = re.compile(r"^[^/\\\x00-\x1f\x7f.][^/\\\x00-\x1f\x7f]{0,62}$")


def check_manifest(manifest: dict[str, Any]) -> None:
    """Refuse a manifest whose parts do not follow the backup layout (pure).

    A part's name must be the one the layout gives it (``mysql.sql``, ``files.tar``, ``snapshot.db``,
    ``<database>.pgdump`` / ``<database>.sql``, plus ``.gz`` or ``.zst`` as the manifest's
    ``compression`` says, plus ``.age`` when its ``encryption`` is ``age``), so it can never name a
    path outside the backup; sizes and digests must be well-formed.

    Raises:
        InputError: field ``backup``, naming the offending manifest field.
    """

    def bad(what: str) -> InputError:
        return InputError("backup", f"manifest {what}", _MANIFEST_FIX)

    engine = manifest.get("engine")
    parts = manifest.get("parts")
    compression = manifest.get("compression", "gzip")
    encrypted = encrypted_suffix(manifest_encryption(manifest))
    if engine not in FIXED_PART and engine != "postgres":
        raise bad(f"field 'engine' is {str(engine)[:40]!r}, not mysql/postgres/files/etcd/redis")
    if compression not in SUFFIX:
        raise bad(f"field 'compression' is {str(compression)[:20]!r}, not gzip/zstd")
    if not isinstance(parts, list) or not parts:
        raise bad(f"field 'parts' must list the {engine} backup's part(s)")
    extras = [p for p in parts if isinstance(p, dict) and "extra" in p]
    main = [p for p in parts if not (isinstance(p, dict) and "extra" in p)]
    if (engine != "postgres" and len(main) != 1) or not main or len(extras) > 1:
        raise bad(f"field 'parts' must list the {engine} backup's part(s)")
    for i, part in enumerate(parts):
        if not isinstance(part, dict):
            raise bad(f"parts[{i}] is not an object")
        name = part.get("name")
        if "extra" in part:
            kind, want = EXTRA_PARTS.get(engine, ("", ""))
            if part["extra"] != kind or not kind:
                raise bad(f"parts[{i}].extra {str(part['extra'])[:20]!r} does not fit a {engine} backup")
        elif engine == "postgres":
            database, fmt = part.get("database"), part.get("format")
            if not isinstance(database, str) or not _PG_DBNAME.match(database):
                raise bad(f"parts[{i}].database is not a database name")
            if fmt not in ("custom", "plain"):
                raise bad(f"parts[{i}].format must be custom or plain")
            want = pg_part(database, fmt)
        else:
            want = FIXED_PART[engine]
        want += SUFFIX[compression] + encrypted
        if name != want:
            raise bad(f"parts[{i}].name {str(name)[:80]!r} is not the layout's name {want!r}")
        if not isinstance(part.get("sha256"), str) or not _SHA256.match(part["sha256"]):
            raise bad(f"parts[{i}].sha256 is not a sha256 hex digest")
        if not isinstance(part.get("size"), int) or isinstance(part["size"], bool) or part["size"] < 0:
            raise bad(f"parts[{i}].size is not a byte count")
        if engine == "mysql" and "extra" not in part:
            dbs = part.get("databases")
            if not isinstance(dbs, list) or not dbs or not all(isinstance(d, str) and d for d in dbs):
                raise bad(f"parts[{i}].databases must list the dumped databases")
    if manifest.get("inventory") is not None and not is_inventory(manifest["inventory"]):
        raise bad("field 'inventory' is not an inventory")
    verification = manifest.get("verification")
    checks = verification.get("checks") if isinstance(verification, dict) else None
    if checks is not None and not is_inventory(checks):
        raise bad("field 'verification.checks' is not an inventory")


def main_parts(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The parts holding databases / files / the snapshot (not globals or users)."""
    return [p for p in manifest["parts"] if "extra" not in p]


def extra_part(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The globals (PostgreSQL) or users (MySQL) part, when the backup has one."""
    return next((p for p in manifest["parts"] if "extra" in p), None)


__all__ = ["check_manifest", "extra_part", "main_parts"]
