"""Names inside a backup storage (pure): backup ids and part names come from strict patterns.

Everything listed back from a storage is untrusted: a key such as ``<job>//x`` or a manifest part
named ``../../etc/cron.d/x`` must never become a path, a deletion prefix or a restore target. Ids and
part names that do not match these patterns are ignored when listing and refused when used.
"""

from __future__ import annotations

import re

from stateferry.errors import InputError

#: ``YYYYMMDDTHHMMSSZ-xxxxxx`` as written by ``new_backup_id``.
BACKUP_ID_RE = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}$")
#: one path component (no ``/`` or ``\\``, no control character, no leading dot), ending in ``.gz`` or
#: ``.zst`` (the job's compression), then ``.age`` when encrypted: ``mysql.sql.gz``, ``files.tar.zst``,
#: ``<database>.pgdump.gz.age``, ...
PART_NAME_RE = re.compile(r"^[^./\\\x00-\x1f\x7f][^/\\\x00-\x1f\x7f]{0,200}\.(gz|zst)(\.age)?$")
#: compression -> part name suffix
SUFFIX = {"gzip": ".gz", "zstd": ".zst"}


#: part names without the compression suffix, per engine (PostgreSQL: one part per database)
FIXED_PART = {
    "mysql": "mysql.sql",
    "files": "files.tar",
    "etcd": "snapshot.db",
    "redis": "dump.rdb",
    "pvc": "volume.tar",
    "mysql_physical": "mariadb.xbstream",
}
#: optional extra parts: PostgreSQL globals (``pg_dumpall --globals-only``; the suffix is not one a
#: database part can have) and MySQL users and grants.
PG_GLOBALS_PART = "globals.pgdumpall"
MYSQL_USERS_PART = "users.sql"
#: ``inc_files``: the GNU tar snapshot (``--listed-incremental``) next to each archive of the chain
FILES_SNAPSHOT_PART = "files.snar"
#: engine -> (the manifest's ``extra`` kind, part name without suffix) of its one optional extra part
EXTRA_PARTS = {
    "postgres": ("globals", PG_GLOBALS_PART),
    "mysql": ("users", MYSQL_USERS_PART),
    "files": ("snapshot", FILES_SNAPSHOT_PART),
}


def pg_part(database: str, fmt: str) -> str:
    """The part of one PostgreSQL database (without suffix): ``<db>.pgdump`` (custom) / ``<db>.sql``."""
    return f"{database}.{'pgdump' if fmt == 'custom' else 'sql'}"


def part_name(base: str, compression: str, encryption: str | None = None) -> str:
    """``base`` (e.g. ``mysql.sql``) with the suffix of ``compression`` (``gzip`` | ``zstd``), then
    ``.age`` when ``encryption`` is ``age``."""
    return base + SUFFIX[compression] + (".age" if encryption == "age" else "")


def is_backup_id(value: object) -> bool:
    """True when ``value`` is a backup id of this layout."""
    return isinstance(value, str) and bool(BACKUP_ID_RE.match(value))


def check_backup_id(value: object, field: str = "backup_id") -> str:
    """Return the id or raise :class:`InputError` (a listing or manifest was tampered with)."""
    if not is_backup_id(value):
        raise InputError(
            field, f"{value!r} is not a stateferry backup id", "use an id of the form 20260101T000000Z-abcdef"
        )
    return str(value)


def check_part_name(value: object, field: str = "manifest.parts[].name") -> str:
    """Return the part name or raise :class:`InputError` (it would be a path, not a name)."""
    if not isinstance(value, str) or not PART_NAME_RE.match(value):
        raise InputError(
            field,
            f"{str(value)[:80]!r} is not a part name"
            " (one file name ending in .gz or .zst (+ .age), no '/', no leading '.')",
            "the manifest was altered; restore another backup or from another storage",
        )
    return value
