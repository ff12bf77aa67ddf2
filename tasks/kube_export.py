"""Export Kubernetes objects into a gzip tarball of JSON objects plus a manifest (archive layout v1).

Discovery walks ``/api`` and ``/apis`` (every group, the preferred version of each, custom resources
included) exactly as the dynamic client's discoverer does, but without its on-disk cache, so a CRD
created a second ago is seen. Objects are listed as raw JSON pages (``limit``/``continue``) and
streamed into the tarball page by page, so memory stays bounded by one page.

:class:`KubeRest` is the thin raw-JSON client of the export/backup reads only; every other
Kubernetes read and write (apply, cut-over, volume movers, hooks, the etcd migration's objects)
goes through the dynamic client (``tasks/kube_dynamic.py``).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from blocks.kube import KubeCluster
from planning.archive_layout import (
    TARBALL_NAME,
    ArchiveError,
    ArchiveRefused,
    Manifest,
    MemberPath,
    object_path,
    parse_object_path,
)
from planning.resources import (
    ResourceType,
    Selection,
    is_custom_resource,
    object_key,
    select_resource_types,
    skip_reason,
)
from stateferry.errors import InputError, NotFound, PermanentError, StateferryError, translate
from tasks.retry import TRANSIENT_RETRY

__all__ = [
    "ExportResult",
    "KubeRest",
    "discover_resource_types",
    "export_resources",
    "export_to_tarball",
    "read_archive",
    "read_tarball",
]

PAGE_SIZE = 500


class KubeRest:
    """Raw JSON access to one cluster through a ``kubernetes.client.ApiClient`` (auth, TLS, proxy of
    the kubeconfig are the client's). Errors come out as :mod:`stateferry.errors` types.

    Args:
        api_client: a configured ``kubernetes.client.ApiClient`` (``KubeCluster.api_client()``).
        name: how to call the cluster in messages (e.g. ``source``).
    """

    def __init__(self, api_client: Any, name: str = "cluster") -> None:
        self.api = api_client
        self.name = name

    @property
    def server(self) -> str:
        """The API server URL."""
        return str(self.api.configuration.host)

    def request(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        """Send one request; return the decoded JSON answer (None for an empty body).

        Raises:
            StateferryError: the translated client error (``TransientError`` for 5xx/429/connection
                problems, ``PermanentError`` for 4xx) carrying the server's Status message.
        """
        try:
            method_, url, headers, body_, _ = self.api.param_serialize(
                method,
                path,
                query_params=query or [],
                header_params={"Accept": "application/json", "Content-Type": content_type},
                body=body,
                auth_settings=["BearerToken"],
            )
            resp = self.api.call_api(method_, url, header_params=headers, body=body_, _request_timeout=60)
            data = resp.read()
            if not 200 <= resp.status <= 299:
                from kubernetes.client.exceptions import ApiException

                raise ApiException(http_resp=resp, body=data.decode("utf-8", "replace") if data else None)
        except Exception as exc:
            raise translate(exc, context=f"{method} {path} on {self.name}") from None
        return json.loads(data) if data else None

    def get_or_none(self, path: str) -> Any:
        """GET ``path``; None if it answers 404."""
        try:
            return self.request("GET", path)
        except NotFound:
            return None

    def list_pages(self, path: str, label_selector: str = "") -> Iterator[tuple[list[dict[str, Any]], str]]:
        """Yield ``(items, list resourceVersion)`` page by page."""
        cont = ""
        while True:
            q = [("limit", str(PAGE_SIZE))]
            if label_selector:
                q.append(("labelSelector", label_selector))
            if cont:
                q.append(("continue", cont))
            page = self.request("GET", path, query=q) or {}
            yield list(page.get("items") or []), str((page.get("metadata") or {}).get("resourceVersion", ""))
            cont = (page.get("metadata") or {}).get("continue") or ""
            if not cont:
                return


def resource_path(rtype: ResourceType, namespace: str | None = None, name: str | None = None) -> str:
    """URL path of a collection or an object of ``rtype``."""
    base = f"/apis/{rtype.group}/{rtype.version}" if rtype.group else f"/api/{rtype.version}"
    if rtype.namespaced and namespace:
        base += f"/namespaces/{quote(namespace)}"
    base += f"/{rtype.plural}"
    if name:
        base += f"/{quote(name)}"
    return base


def _resources_of(rest: KubeRest, group: str, version: str) -> list[ResourceType]:
    path = f"/apis/{group}/{version}" if group else f"/api/{version}"
    doc = rest.get_or_none(path) or {}
    out = []
    for r in doc.get("resources") or []:
        name = r.get("name", "")
        if "/" in name or "list" not in (r.get("verbs") or []):
            continue
        out.append(ResourceType(group, version, r["kind"], name, bool(r.get("namespaced"))))
    return out


def discover_resource_types(rest: KubeRest) -> list[ResourceType]:
    """Every listable resource type the server offers: core ``v1`` plus each group's preferred version
    (then its other versions, which :func:`select_resource_types` de-duplicates)."""
    types: list[ResourceType] = []
    for v in (rest.request("GET", "/api") or {}).get("versions") or ["v1"]:
        types.extend(_resources_of(rest, "", v))
    for g in (rest.request("GET", "/apis") or {}).get("groups") or []:
        preferred = (g.get("preferredVersion") or {}).get("version")
        versions = [v["version"] for v in g.get("versions") or []]
        for v in [preferred, *[x for x in versions if x != preferred]] if preferred else versions:
            types.extend(_resources_of(rest, g["name"], v))
    return types


@dataclass
class ExportResult:
    """What :func:`export_to_tarball` wrote.

    Attributes:
        manifest: the manifest (its ``tarball`` entry holds sha256 and size).
        tarball: path of the written tarball.
        objects: kind -> list of ``namespace/name`` (for reports).
        pvcs: ``(namespace, name)`` of the exported PersistentVolumeClaims.
        seconds: time taken.
    """

    manifest: Manifest
    tarball: Path
    objects: dict[str, list[str]] = field(default_factory=dict)
    pvcs: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


class _HashingWriter(io.RawIOBase):
    def __init__(self, fh: Any) -> None:
        self.fh = fh
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        mv = bytes(b)
        self.fh.write(mv)
        self.sha.update(mv)
        self.size += len(mv)
        return len(mv)


def _add_json(tar: tarfile.TarFile, name: str, obj: Any, mtime: float) -> None:
    data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(mtime)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _existing_namespaces(rest: KubeRest) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for items, _ in rest.list_pages("/api/v1/namespaces"):
        for ns in items:
            out[ns["metadata"]["name"]] = {"apiVersion": "v1", "kind": "Namespace", **ns}
    return out


def export_to_tarball(
    rest: KubeRest,
    selection: Selection,
    out_path: Path,
    *,
    backup_name: str,
    created_at: str,
    log: Any = None,
) -> ExportResult:
    """Discover, list, filter and stream the selected objects into ``out_path`` (gzip tarball).

    Raises:
        InputError: ``include_namespaces`` names a namespace the cluster does not have.
    """
    t0 = time.monotonic()
    namespaces = _existing_namespaces(rest)
    missing = [n for n in selection.include_namespaces if n != "*" and n not in namespaces]
    if missing:
        raise InputError(
            "include_namespaces",
            f"namespace {', '.join(missing)} does not exist in cluster {rest.name!r} ({rest.server}); "
            f"it has {', '.join(sorted(namespaces))}",
            "check the spelling or the cluster/context",
        )
    selected_ns = sorted(n for n in namespaces if selection.namespace_selected(n))
    types = select_resource_types(discover_resource_types(rest), selection)
    selector = selection.selector
    counts: Counter[str] = Counter()
    type_counts: Counter[ResourceType] = Counter()
    skipped: Counter[str] = Counter()
    objects: dict[str, list[str]] = {}
    pvcs: list[tuple[str, str]] = []
    cr_types_with_objects: set[str] = set()
    crd_type: ResourceType | None = None
    ns_type: ResourceType | None = None
    per_namespace = not selection.all_namespaces
    warnings: list[str] = []
    now = time.time()

    def keep(rtype: ResourceType, obj: dict[str, Any], tar: tarfile.TarFile) -> None:
        obj.setdefault("apiVersion", rtype.api_version)
        obj.setdefault("kind", rtype.kind)
        reason = skip_reason(obj)
        if reason:
            skipped[f"{rtype.kind}: {reason.split(':')[0]}"] += 1
            return
        meta = obj.get("metadata") or {}
        _add_json(
            tar,
            object_path(rtype.group, rtype.version, rtype.plural, meta.get("namespace"), meta["name"]),
            obj,
            now,
        )
        counts[rtype.group_kind] += 1
        type_counts[rtype] += 1
        objects.setdefault(rtype.group_kind, []).append(object_key(obj))
        if rtype.kind == "PersistentVolumeClaim":
            pvcs.append((meta.get("namespace", ""), meta["name"]))

    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "wb") as raw:
        hw = _HashingWriter(raw)
        with tarfile.open(fileobj=hw, mode="w|gz") as tar:
            for rtype in types:
                if (
                    rtype.kind == "CustomResourceDefinition"
                    and selection.include_cluster_resources is not True
                ):
                    crd_type = rtype  # later: only the CRDs whose resources were exported
                    continue
                if rtype.kind == "Namespace":
                    ns_type = rtype
                    continue
                if rtype.namespaced:
                    paths = (
                        [resource_path(rtype, ns) for ns in selected_ns]
                        if per_namespace
                        else [resource_path(rtype)]
                    )
                else:
                    paths = [resource_path(rtype)]
                for path in paths:
                    try:
                        for items, _rv in rest.list_pages(path, selector.text):
                            for obj in items:
                                ns = (obj.get("metadata") or {}).get("namespace")
                                if rtype.namespaced and not (ns and ns in selected_ns):
                                    continue
                                before = type_counts[rtype]
                                keep(rtype, obj, tar)
                                if type_counts[rtype] > before and _is_cr(rtype):
                                    cr_types_with_objects.add(f"{rtype.plural}.{rtype.group}")
                    except PermanentError as exc:  # e.g. 403 on one type: record it, keep going
                        warnings.append(f"cannot list {rtype.group_kind} ({path}): {exc}")
                        if log:
                            log.warning(warnings[-1])
            if crd_type is not None and cr_types_with_objects:
                for name in sorted(cr_types_with_objects):
                    crd = rest.get_or_none(resource_path(crd_type, None, name))
                    if crd:
                        keep(crd_type, crd, tar)
            if ns_type is not None:
                exported_ns = {
                    k.split(" ", 1)[1].split("/")[0] for v in objects.values() for k in v if "/" in k
                }
                for ns in selected_ns:
                    if ns in exported_ns or (ns in selection.include_namespaces and not selector):
                        keep(ns_type, dict(namespaces[ns]), tar)
    manifest = Manifest(
        backup_name=backup_name,
        created_at=created_at,
        source={"cluster": rest.name, "server": rest.server},
        selection=selection.to_dict(),
        resource_types=[{**t.to_dict(), "count": type_counts[t]} for t in types if type_counts[t]],
        counts=dict(sorted(counts.items())),
        total_objects=sum(counts.values()),
        namespaces=selected_ns,
        skipped=dict(sorted(skipped.items())),
        warnings=warnings,
        tarball={"key": TARBALL_NAME, "sha256": hw.sha.hexdigest(), "size": hw.size},
    )
    return ExportResult(manifest, out_path, objects, pvcs, time.monotonic() - t0)


def _is_cr(rtype: ResourceType) -> bool:
    return is_custom_resource(rtype.group)


#: Largest object member read (the API server refuses requests over 3 MiB; etcd values are 1.5 MiB).
MAX_MEMBER_BYTES = 4 << 20
#: Largest total of decompressed tarball bytes read (headers included).
MAX_TOTAL_BYTES = 1 << 30


class _CappedReader(io.RawIOBase):
    """Reads from ``fh`` and raises once more than ``limit`` bytes came out (a gzip bomb stops at
    the cap, whatever tarfile itself reads: pax headers, long names, padding)."""

    def __init__(self, fh: Any, limit: int, where: str) -> None:
        self.fh = fh
        self.limit = limit
        self.count = 0
        self.where = where

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self.fh.read(len(b))
        self.count += len(data)
        if self.count > self.limit:
            raise ArchiveRefused(
                "backup_name",
                f"{self.where} unpacks to more than {self.limit} bytes (the cap of a resource archive)",
                "restore another backup; this one is not a stateferry archive or was tampered with",
            )
        b[: len(data)] = data
        return len(data)


def read_archive(
    path: Path,
    *,
    max_member_bytes: int = MAX_MEMBER_BYTES,
    max_total_bytes: int = MAX_TOTAL_BYTES,
    max_members: int | None = None,
) -> Iterator[tuple[MemberPath, dict[str, Any]]]:
    """Yield ``(member path, object)`` for each member of a tarball written by
    :func:`export_to_tarball`, refusing anything else.

    Every member must be a regular file named by the layout (:func:`parse_object_path`: no absolute
    or ``..`` names, no links, devices, FIFOs or directories), at most ``max_member_bytes`` long,
    holding one JSON object; the decompressed stream stops at ``max_total_bytes`` and the member
    count at ``max_members``. Nothing is written to disk.

    Raises:
        ArchiveRefused: a member breaks one of these rules (an ``InputError`` on ``backup_name``).
        ArchiveError: not a gzip tarball, or a member is not JSON.
    """
    where = path.name
    fix = "restore another backup; this one is not a stateferry archive or was tampered with"
    count = 0
    try:
        with gzip.open(path, "rb") as gz:
            capped = io.BufferedReader(_CappedReader(gz, max_total_bytes, where), 1 << 16)
            with tarfile.open(fileobj=capped, mode="r|") as tar:
                for member in tar:
                    count += 1
                    if max_members is not None and count > max_members:
                        raise ArchiveRefused(
                            "backup_name", f"{where} holds more than {max_members} members", fix
                        )
                    if not member.isreg():
                        raise ArchiveRefused(
                            "backup_name",
                            f"archive member {member.name[:200]!r} is not a regular file "
                            "(a link, device, FIFO or directory)",
                            fix,
                        )
                    try:
                        mpath = parse_object_path(member.name)
                    except ArchiveError as exc:
                        raise ArchiveRefused("backup_name", str(exc), fix) from None
                    if member.size > max_member_bytes:
                        raise ArchiveRefused(
                            "backup_name",
                            f"archive member {member.name[:200]!r} is {member.size} bytes "
                            f"(more than the {max_member_bytes} bytes an object may have)",
                            fix,
                        )
                    fh = tar.extractfile(member)
                    data = fh.read(max_member_bytes + 1) if fh is not None else b""
                    try:
                        obj = json.loads(data)
                    except ValueError:
                        raise ArchiveError(
                            f"archive member {member.name[:200]} is not valid JSON: the archive is corrupt"
                        ) from None
                    if not isinstance(obj, dict):
                        raise ArchiveError(
                            f"archive member {member.name[:200]} is not a JSON object: the archive is corrupt"
                        )
                    yield mpath, obj
    except StateferryError:
        raise
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise ArchiveError(f"{where}: not a readable gzip tarball ({exc}); the archive is corrupt") from None


def read_tarball(path: Path, **caps: Any) -> Iterator[dict[str, Any]]:
    """Yield the JSON objects of a tarball written by :func:`export_to_tarball` (see
    :func:`read_archive` for what is refused)."""
    for _path, obj in read_archive(path, **caps):
        yield obj


@task(**TRANSIENT_RETRY, cache_policy=NO_CACHE)
def export_resources(
    cluster: KubeCluster,
    cluster_name: str,
    selection: Selection,
    out_path: Path,
    backup_name: str,
    created_at: str,
) -> ExportResult:
    """Prefect task around :func:`export_to_tarball` (retried on transient API errors)."""
    log = get_run_logger()
    result = export_to_tarball(
        KubeRest(cluster.api_client(), cluster_name),
        selection,
        out_path,
        backup_name=backup_name,
        created_at=created_at,
        log=log,
    )
    log.info(
        "exported %d objects (%s) in %.1fs; skipped %d",
        result.manifest.total_objects,
        ", ".join(f"{k}={v}" for k, v in result.manifest.counts.items()),
        result.seconds,
        sum(result.manifest.skipped.values()),
    )
    return result
