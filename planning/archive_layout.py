"""The resource-backup archive layout (version 1) and its manifest schema.

One backup = two objects under ``<prefix>/<backup-name>/`` in an object-store bucket::

    <prefix>/<backup-name>/manifest.json       the manifest below (written LAST: a backup without
                                               a manifest is incomplete and never restored)
    <prefix>/<backup-name>/resources.tar.gz    gzip tarball of JSON objects, one file per object:
        resources/<group or "core">/<version>/<plural>/<namespace or "_cluster">/<name>.json

The manifest (JSON)::

    {
      "layout_version": 1,
      "kind": "stateferry.io/resource-backup",
      "backup_name": "nightly-20261122-0100",
      "created_at": "2026-11-22T01:00:00Z",
      "source": {"cluster": "source", "server": "https://..."},
      "selection": {... Selection.to_dict() ...},
      "resource_types": [{"group": "apps", "version": "v1", "kind": "Deployment",
                          "plural": "deployments", "namespaced": true, "count": 2}, ...],
      "counts": {"Deployment.apps": 2, "ConfigMap": 3, ...},
      "total_objects": 12,
      "namespaces": ["cms"],
      "skipped": {"owned by ReplicaSet ...": 2, ...},       # reason -> count
      "warnings": ["..."],
      "tarball": {"key": "resources.tar.gz", "sha256": "...", "size": 1234},
      "volumes": [{"namespace": "cms", "pvc": "mysql-data", "key": "volumes/cms/mysql-data.tar.gz",
                   "sha256_tree": "...", "files": 3, "bytes": 123}]   # optional (migrations)
    }

:func:`parse_manifest` validates it; :func:`object_path` / :func:`parse_object_path` name the
tarball members. Pure: no I/O.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from stateferry.errors import InputError, PermanentError

__all__ = [
    "LAYOUT_VERSION",
    "MANIFEST_KIND",
    "ArchiveError",
    "ArchiveRefused",
    "Manifest",
    "archive_prefix",
    "manifest_key",
    "object_path",
    "parse_manifest",
    "parse_object_path",
    "plan_archive_retention",
    "tarball_key",
    "validate_backup_name",
    "validate_prefix",
    "validate_retention",
]

LAYOUT_VERSION = 1
SUPPORTED_LAYOUT_VERSIONS = frozenset({1})
MANIFEST_KIND = "stateferry.io/resource-backup"
MANIFEST_NAME = "manifest.json"
TARBALL_NAME = "resources.tar.gz"
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$")


class ArchiveError(PermanentError):
    """A backup archive is missing, corrupt or written in a layout this version cannot read."""


class ArchiveRefused(ArchiveError, InputError):
    """An archive read back from storage holds something stateferry refuses to use (a member that
    is a link or too large, an object outside what its manifest selected): an :class:`InputError`
    naming the parameter that chose the archive and the fix, and an :class:`ArchiveError`."""

    def __init__(self, field: str, problem: str, fix: str) -> None:
        InputError.__init__(self, field, problem, fix)


_PREFIX_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


def validate_prefix(prefix: str, field_name: str = "prefix") -> str:
    """Return ``prefix`` stripped of outer ``/`` if every segment is a plain name.

    Raises:
        InputError: an empty segment (``a//b``), ``.``/``..``, or characters other than letters,
            digits, ``.``, ``_`` and ``-``.
    """
    text = (prefix or "").strip("/")
    for seg in text.split("/") if text else []:
        if not _PREFIX_SEGMENT.match(seg) or seg in (".", ".."):
            raise InputError(
                field_name,
                f"{prefix!r} has the segment {seg!r}",
                "use '/'-separated names of letters, digits, '.', '_' and '-', e.g. `resource-backups/prod`",
            )
    return text


def validate_retention(keep_last: int | None, ttl_days: float | None) -> None:
    """Refuse a retention that could delete every backup.

    Raises:
        InputError: ``keep_last`` < 1 or ``ttl_days`` < 1 (a backup younger than a day would be
            deleted by its own schedule's next run).
    """
    if keep_last is not None and (isinstance(keep_last, bool) or keep_last < 1):
        raise InputError(
            "keep_last", f"must be at least 1, got {keep_last}", "keep at least the newest backup"
        )
    if ttl_days is not None and not ttl_days >= 1:
        raise InputError(
            "ttl_days",
            f"must be at least 1 day, got {ttl_days}",
            "pass ttl_days >= 1, or use keep_last to limit the count",
        )


def validate_backup_name(name: str, field_name: str = "backup_name") -> str:
    """Return ``name`` if it is a valid backup name (DNS-1123, <= 63 chars), else raise InputError."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InputError(
            field_name,
            f"{name!r} is not a valid backup name",
            "use lower-case letters, digits, '-' and '.', starting and ending alphanumeric, "
            "at most 63 characters",
        )
    return name


def archive_prefix(prefix: str, backup_name: str) -> str:
    """``<prefix>/<backup-name>/`` (prefix may be empty)."""
    prefix = prefix.strip("/")
    return f"{prefix}/{backup_name}/" if prefix else f"{backup_name}/"


def manifest_key(prefix: str, backup_name: str) -> str:
    """Object key of a backup's manifest."""
    return archive_prefix(prefix, backup_name) + MANIFEST_NAME


def tarball_key(prefix: str, backup_name: str) -> str:
    """Object key of a backup's tarball."""
    return archive_prefix(prefix, backup_name) + TARBALL_NAME


def object_path(group: str, version: str, plural: str, namespace: str | None, name: str) -> str:
    """Tarball member name of one object."""
    return f"resources/{group or 'core'}/{version}/{plural}/{namespace or '_cluster'}/{name}.json"


@dataclass(frozen=True)
class MemberPath:
    """The parts of a tarball member name."""

    group: str
    version: str
    plural: str
    namespace: str | None
    name: str


_SEG = {
    "group": re.compile(r"^(core|[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?)$"),
    "version": re.compile(r"^v[0-9]+((alpha|beta)[0-9]+)?$"),
    "plural": re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"),
    "namespace": re.compile(r"^(_cluster|[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)$"),
}
#: Object names: what the API server accepts as a path segment (RBAC names carry ':'), minus
#: control characters, '/', '\\' and '%'; never '.' or '..'.
_OBJECT_NAME = re.compile(r"^[^\x00-\x1f\x7f/\\%]{1,253}$")


def parse_object_path(path: str) -> MemberPath:
    """Inverse of :func:`object_path`; raises :class:`ArchiveError` for a foreign member (wrong
    shape, an absolute path, ``.``/``..``, or a segment that is not a valid group / version /
    plural / namespace / object name)."""
    parts = path.split("/")
    bad = len(parts) != 6 or parts[0] != "resources" or not parts[5].endswith(".json")
    if not bad:
        name = parts[5][: -len(".json")]
        bad = (
            not all(rx.match(seg) for rx, seg in zip(_SEG.values(), parts[1:5], strict=True))
            or not _OBJECT_NAME.match(name)
            or name in (".", "..")
        )
    if bad:
        raise ArchiveError(
            f"archive member {path[:200]!r} does not follow layout {LAYOUT_VERSION} "
            "(resources/<group>/<version>/<plural>/<namespace>/<name>.json): the archive is corrupt or "
            "was not written by stateferry"
        )
    group = "" if parts[1] == "core" else parts[1]
    ns = None if parts[4] == "_cluster" else parts[4]
    return MemberPath(group, parts[2], parts[3], ns, parts[5][: -len(".json")])


@dataclass
class Manifest:
    """A parsed, validated manifest (see the module docstring for the JSON form)."""

    backup_name: str
    created_at: str
    selection: dict[str, Any]
    resource_types: list[dict[str, Any]]
    counts: dict[str, int]
    total_objects: int
    tarball: dict[str, Any]
    source: dict[str, Any] = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    volumes: list[dict[str, Any]] = field(default_factory=list)
    layout_version: int = LAYOUT_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "layout_version": self.layout_version,
            "kind": MANIFEST_KIND,
            "backup_name": self.backup_name,
            "created_at": self.created_at,
            "source": self.source,
            "selection": self.selection,
            "resource_types": self.resource_types,
            "counts": self.counts,
            "total_objects": self.total_objects,
            "namespaces": self.namespaces,
            "skipped": self.skipped,
            "warnings": self.warnings,
            "tarball": self.tarball,
            "volumes": self.volumes,
        }

    def to_json(self) -> bytes:
        """Serialised manifest (UTF-8, sorted keys)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True).encode()


def _req(data: Mapping[str, Any], key: str, typ: type | tuple[type, ...], where: str) -> Any:
    if key not in data:
        raise ArchiveError(
            f"{where}: manifest field {key!r} is missing; the archive is corrupt or incomplete"
        )
    value = data[key]
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        name = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
        raise ArchiveError(f"{where}: manifest field {key!r} must be {name}, found {type(value).__name__}")
    return value


def parse_manifest(raw: bytes | str, *, where: str = "manifest.json") -> Manifest:
    """Parse and validate a manifest.

    Args:
        raw: the manifest bytes.
        where: how to name the manifest in error messages (e.g. its bucket/key).

    Raises:
        ArchiveError: not JSON, not a stateferry manifest, an unknown ``layout_version`` (says which
            versions this stateferry reads and to upgrade), or a missing / mistyped field.
    """
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArchiveError(f"{where}: not valid JSON ({exc}); the archive is corrupt") from None
    if not isinstance(data, dict):
        raise ArchiveError(
            f"{where}: expected a JSON object, found {type(data).__name__}; the archive is corrupt"
        )
    if data.get("kind") != MANIFEST_KIND:
        raise ArchiveError(
            f"{where}: kind is {data.get('kind')!r}, expected {MANIFEST_KIND!r}; this is not a stateferry "
            "resource backup"
        )
    version = data.get("layout_version")
    if version not in SUPPORTED_LAYOUT_VERSIONS:
        raise ArchiveError(
            f"{where}: archive layout version {version!r} is not supported (this stateferry reads "
            f"{', '.join(str(v) for v in sorted(SUPPORTED_LAYOUT_VERSIONS))}); restore it with the "
            "stateferry "
            "version that wrote it or upgrade stateferry"
        )
    tarball = _req(data, "tarball", dict, where)
    for k, t in (("key", str), ("sha256", str), ("size", int)):
        _req(tarball, k, t, f"{where} tarball")
    if tarball["key"] != TARBALL_NAME:
        raise ArchiveError(f"{where}: tarball key must be {TARBALL_NAME!r}, found {tarball['key'][:100]!r}")
    counts = _req(data, "counts", dict, where)
    if not all(isinstance(v, int) for v in counts.values()):
        raise ArchiveError(f"{where}: manifest field 'counts' must map kinds to integers")
    total = _req(data, "total_objects", int, where)
    if sum(counts.values()) != total:
        raise ArchiveError(
            f"{where}: counts add up to {sum(counts.values())} but total_objects is {total}; "
            "the manifest is corrupt"
        )
    rtypes = _req(data, "resource_types", list, where)
    for rt in rtypes:
        if not isinstance(rt, dict) or not {"version", "kind", "plural", "namespaced"} <= set(rt):
            raise ArchiveError(f"{where}: resource_types entry {rt!r} lacks version/kind/plural/namespaced")
    return Manifest(
        backup_name=_req(data, "backup_name", str, where),
        created_at=_req(data, "created_at", str, where),
        selection=_req(data, "selection", dict, where),
        resource_types=rtypes,
        counts=counts,
        total_objects=total,
        tarball=tarball,
        source=data.get("source") or {},
        namespaces=list(data.get("namespaces") or []),
        skipped=dict(data.get("skipped") or {}),
        warnings=list(data.get("warnings") or []),
        volumes=list(data.get("volumes") or []),
        layout_version=version,
    )


def _parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _parse_created(value: str) -> dt.datetime | None:
    try:
        t = _parse_time(value)
    except (TypeError, ValueError):
        return None
    return t if t.tzinfo is not None else None


def plan_archive_retention(
    archives: list[tuple[str, str]],
    *,
    keep_last: int | None,
    ttl: dt.timedelta | None,
    now: dt.datetime,
    protect: Collection[str] = (),
) -> tuple[list[str], list[str]]:
    """Which backups to keep and which to delete: a backup is deleted when it is older than ``ttl``
    OR not among the newest ``keep_last``.

    Never deleted: the newest backup, the names in ``protect`` (the one this run wrote), names that
    are not valid backup names (not this layout's), and backups whose ``created_at`` cannot be read
    or lies in the future (nobody can tell their age).

    Args:
        archives: ``(backup name, created_at ISO-8601)`` pairs of complete backups of one schedule.
        keep_last: keep at most this many (>= 1); None = no count limit.
        ttl: delete backups older than this (>= 1 day); None = no age limit.
        now: the current time (passed in: planners read no clock).
        protect: names never deleted.

    Returns:
        ``(keep, delete)`` lists of backup names.
    """
    validate_retention(keep_last, ttl.total_seconds() / 86400 if ttl is not None else None)
    dated = []
    keep: list[str] = []
    for name, created_at in archives:
        t = _parse_created(created_at)
        if t is None or t > now or not _NAME_RE.match(name):
            keep.append(name)
        else:
            dated.append((t, name))
    ordered = sorted(dated, reverse=True)
    delete: list[str] = []
    for i, (t, name) in enumerate(ordered):
        too_many = keep_last is not None and i >= keep_last
        too_old = ttl is not None and now - t > ttl
        if i > 0 and name not in protect and (too_many or too_old):
            delete.append(name)
        else:
            keep.append(name)
    return keep, delete
