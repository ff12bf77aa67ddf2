"""Apply sanitised objects to a cluster in restore order, one result per object.

The apply never stops at the first error: every object gets an :class:`ObjectResult` (created /
updated / unchanged / skipped-existing / failed, or would-* in a dry run, with the diff against the
live object), and the caller decides what a partial failure means. Live objects are read with one
LIST per type and namespace, not one GET per object.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from blocks.kube import KubeCluster
from planning.kube_redaction import Redactor
from planning.resources import (
    MANAGED_BY_LABEL,
    ApplyAction,
    ExistingPolicy,
    ResourceType,
    activation_patch,
    decide_apply,
    dry_run_diff,
    is_custom_resource,
    object_key,
)
from stateferry.errors import Conflict, PermanentError, PreconditionFailed, StateferryError
from stateferry.waiting import wait_until
from tasks.kube_export import KubeRest, discover_resource_types, resource_path
from tasks.retry import TRANSIENT_RETRY

__all__ = [
    "ObjectResult",
    "activate_workloads",
    "apply_objects",
    "apply_resources",
    "served_scopes",
    "summarize_results",
]


@dataclass
class ObjectResult:
    """What happened to one object.

    Attributes:
        key: ``Kind[.group] namespace/name``.
        kind: the object kind.
        namespace: target namespace ("" for cluster-scoped objects).
        name: object name.
        result: created | updated | unchanged | skipped-existing | failed | would-create | would-update.
        message: reason or error message.
        diff: per-field differences against the live target object (skip/update/dry run).
    """

    key: str
    kind: str
    namespace: str
    name: str
    result: str
    message: str = ""
    diff: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON form for reports."""
        return {
            "key": self.key,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "result": self.result,
            "message": self.message,
            "diff": self.diff,
        }


def _error_message(exc: BaseException, redactor: Redactor | None = None) -> str:
    text = redactor.scrub(str(exc)) if redactor is not None else str(exc)
    return text if len(text) < 600 else text[:597] + "..."


class _TypeIndex:
    """apiVersion/kind -> ResourceType of the target, refreshed when a CRD has just been created."""

    def __init__(self, rest: KubeRest) -> None:
        self.rest = rest
        self.by_gvk: dict[tuple[str, str], ResourceType] = {}
        self.refresh()

    def refresh(self) -> None:
        for t in discover_resource_types(self.rest):
            self.by_gvk.setdefault((t.api_version, t.kind), t)

    def get(self, api_version: str, kind: str, wait: float = 0.0) -> ResourceType | None:
        """The kind's resource type; re-discovers for up to ``wait`` seconds (a CRD just created)."""

        def found() -> ResourceType | None:
            self.refresh()
            return self.by_gvk.get((api_version, kind))

        t = self.by_gvk.get((api_version, kind))
        if t is not None or wait <= 0:
            return t
        try:
            return wait_until(found, timeout=wait, interval=0.5, describe=lambda: "")
        except PreconditionFailed:
            return None


#: Kinds applied one object at a time (each may change what the next one can do).
_SEQUENTIAL_KINDS = frozenset({"CustomResourceDefinition", "Namespace"})


def _wait_crd_established(rest: KubeRest, crd_type: ResourceType, name: str, timeout: float = 30.0) -> None:

    def established() -> bool:
        crd = rest.get_or_none(resource_path(crd_type, None, name)) or {}
        conds = (crd.get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Established" and c.get("status") == "True" for c in conds)

    wait_until(
        established,
        timeout=timeout,
        interval=0.3,
        error=PermanentError,
        describe=lambda: f"CustomResourceDefinition {name} was not Established within {timeout:.0f}s",
    )


def apply_objects(
    rest: KubeRest,
    objects: Iterable[Mapping[str, Any]],
    *,
    policy: ExistingPolicy = ExistingPolicy.SKIP,
    dry_run: bool = False,
    namespace_labels: Mapping[str, str] | None = None,
    crd_wait_seconds: float = 30.0,
    parallelism: int = 8,
    on_progress: Callable[[int, str], None] | None = None,
    allowed_cluster_kinds: Collection[str] | None = None,
    server_dry_run: bool = True,
) -> list[ObjectResult]:
    """Apply sanitised ``objects`` (already in restore order) and report each one.

    Secret values never reach a result: diffs name changed keys only, and every message (API
    server errors included) is scrubbed of the Secret values seen in ``objects`` and in the
    target (:class:`planning.kube_redaction.Redactor`).

    Args:
        rest: the target cluster.
        objects: sanitised objects, in restore order (:func:`planning.resources.sort_for_restore`).
        policy: what to do with objects that exist and differ (``skip`` | ``update``).
        dry_run: decide and diff only; nothing is written.
        namespace_labels: labels of namespaces created implicitly for objects whose Namespace
            object is not part of the backup.
        crd_wait_seconds: how long to wait for a just-created CRD to be served.
        parallelism: concurrent writes within one kind (kinds are still applied in order;
            Namespaces and CRDs one by one).
        on_progress: called after each kind with the number of objects handled so far and the kind.
        allowed_cluster_kinds: group kinds (``Namespace``, ``StorageClass.storage.k8s.io``) that
            may be written cluster-scoped; any other object the target serves cluster-scoped fails
            as refused. None = no restriction (a migration of a live, user-selected namespace).
        server_dry_run: in a dry run, send each update to the server with ``dryRun=All`` and diff
            the live object against its answer (defaults, validation and removed fields included);
            False = the client-side diff only.
    """
    objects = list(objects)
    redactor = Redactor(objects)
    types = _TypeIndex(rest)
    live_cache: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    known_ns: set[str] = set()
    for items, _ in rest.list_pages("/api/v1/namespaces"):
        known_ns.update(i["metadata"]["name"] for i in items)
    planned_ns: set[str] = set()
    planned_crds: set[tuple[str, str]] = set()  # (group, kind) of CRDs a dry run would create
    missing_types: set[tuple[str, str]] = set()
    results: list[ObjectResult] = []

    def live_index(rtype: ResourceType, ns: str) -> dict[str, dict[str, Any]]:
        key = (f"{rtype.group}/{rtype.plural}", ns)
        if key not in live_cache:
            idx: dict[str, dict[str, Any]] = {}
            if not rtype.namespaced or ns in known_ns:
                for items, _ in rest.list_pages(resource_path(rtype, ns or None)):
                    for it in items:
                        it.setdefault("apiVersion", rtype.api_version)
                        it.setdefault("kind", rtype.kind)
                        idx[it["metadata"]["name"]] = it
                        redactor.add(it)
            live_cache[key] = idx
        return live_cache[key]

    def prepare(obj: Mapping[str, Any], res: ObjectResult) -> tuple[ResourceType, Any] | None:
        """Resolve the type, make sure the namespace exists, look up the live object."""
        ns, kind = res.namespace, res.kind
        api_version = str(obj.get("apiVersion", ""))
        group = api_version.split("/")[0] if "/" in api_version else ""
        # wait for a custom resource's type only once per kind, and never in a dry run
        wait = crd_wait_seconds if is_custom_resource(group) and not dry_run else 0.0
        if (api_version, kind) in missing_types:
            wait = 0.0
        rtype = types.get(api_version, kind, wait=wait)
        if rtype is None and dry_run and (group, kind) in planned_crds:
            res.result = "would-create"
            res.message = "its CustomResourceDefinition is created first"
            return None
        if rtype is None:
            missing_types.add((api_version, kind))
            res.message = (
                f"the target cluster does not serve {obj.get('apiVersion')} {kind}; "
                "restore its CustomResourceDefinition (include it in the backup) "
                "or install the operator first"
            )
            return None
        if rtype.namespaced and not ns:
            res.message = "namespaced object without a namespace in the backup"
            return None
        if (
            not rtype.namespaced
            and allowed_cluster_kinds is not None
            and (rtype.group_kind not in allowed_cluster_kinds or ns)
        ):
            res.message = (
                f"refused: {rtype.group_kind} is cluster-scoped in the target and was not selected "
                "(name it in include_cluster_kinds)"
            )
            return None
        if rtype.namespaced and ns not in known_ns and ns not in planned_ns:
            if dry_run:
                planned_ns.add(ns)
            else:
                ns_meta: dict[str, Any] = {"name": ns}
                if namespace_labels:
                    ns_meta["labels"] = dict(namespace_labels)
                body = {"apiVersion": "v1", "kind": "Namespace", "metadata": ns_meta}
                try:
                    rest.request("POST", "/api/v1/namespaces", body=body)
                except Conflict:  # created meanwhile
                    pass
                known_ns.add(ns)
        return rtype, live_index(rtype, ns).get(res.name)

    def write(obj: Mapping[str, Any], res: ObjectResult, rtype: ResourceType, live: Any) -> None:
        """Decide and (unless dry run) create / update one object."""
        ns, name = res.namespace, res.name
        decision = decide_apply(obj, live, policy)
        res.diff = list(decision.diff)
        if decision.action is ApplyAction.UNCHANGED:
            res.result = "unchanged"
        elif decision.action is ApplyAction.SKIP_EXISTING:
            res.result = "skipped-existing"
            res.message = f"exists and differs in {len(decision.diff)} field(s); policy is skip"
        elif dry_run:
            res.result = "would-create" if decision.action is ApplyAction.CREATE else "would-update"
            if decision.action is ApplyAction.UPDATE and server_dry_run:
                would = rest.request(
                    "PUT",
                    resource_path(rtype, ns or None, name),
                    query=[("dryRun", "All")],
                    body=decision.body,
                )
                res.diff = dry_run_diff(live, would or {}) or res.diff
                res.message = "diff from a server-side dry run of the update"
            if rtype.kind == "Namespace":
                planned_ns.add(name)
            if rtype.kind == "CustomResourceDefinition":
                spec = obj.get("spec") or {}
                planned_crds.add((str(spec.get("group", "")), str((spec.get("names") or {}).get("kind", ""))))
        elif decision.action is ApplyAction.CREATE:
            created = rest.request("POST", resource_path(rtype, ns or None), body=decision.body)
            res.result = "created"
            live_index(rtype, ns)[name] = created or dict(obj)
            if rtype.kind == "Namespace":
                known_ns.add(name)
            if rtype.kind == "CustomResourceDefinition":
                _wait_crd_established(rest, rtype, name, crd_wait_seconds)
                types.refresh()
        else:
            updated = rest.request("PUT", resource_path(rtype, ns or None, name), body=decision.body)
            res.result = "updated"
            live_index(rtype, ns)[name] = updated or dict(obj)
            if rtype.kind == "CustomResourceDefinition":
                types.refresh()

    def guarded(fn: Any, *args: Any) -> Any:
        res: ObjectResult = args[1]
        try:
            return fn(*args)
        except StateferryError as exc:
            res.result = "failed"
            res.message = _error_message(exc, redactor)
            return None

    def kind_of(o: Mapping[str, Any]) -> tuple[str, str]:
        return str(o.get("apiVersion", "")), str(o.get("kind", ""))

    with ThreadPoolExecutor(max(1, parallelism)) as pool:
        for (_api, kind), group_iter in itertools.groupby(objects, key=kind_of):
            group = list(group_iter)
            prepared: list[tuple[Mapping[str, Any], ObjectResult, tuple[ResourceType, Any] | None]] = []
            for obj in group:
                meta = obj.get("metadata") or {}
                res = ObjectResult(
                    object_key(obj),
                    kind,
                    str(meta.get("namespace") or ""),
                    str(meta.get("name", "")),
                    "failed",
                )
                results.append(res)
                prepared.append((obj, res, guarded(prepare, obj, res)))
            jobs = [(o, r, p[0], p[1]) for o, r, p in prepared if p is not None]
            if kind in _SEQUENTIAL_KINDS or parallelism <= 1 or len(jobs) < 8:
                for job in jobs:
                    guarded(write, *job)
            else:  # objects of one kind do not depend on each other: write them concurrently
                list(pool.map(lambda job: guarded(write, *job), jobs))
            if on_progress is not None:
                on_progress(len(results), kind)
    for r in results:
        r.message = redactor.scrub(r.message)
        r.diff = [redactor.scrub(line) for line in r.diff]
    return results


@task(**TRANSIENT_RETRY, cache_policy=NO_CACHE)
def served_scopes(cluster: KubeCluster, cluster_name: str) -> dict[tuple[str, str], bool]:
    """``(group, kind) -> namespaced`` for every resource type ``cluster`` serves (its discovery:
    what decides whether a restored object is cluster-scoped, whatever an archive claims)."""
    out: dict[tuple[str, str], bool] = {}
    for t in discover_resource_types(KubeRest(cluster.api_client(), cluster_name)):
        out.setdefault((t.group, t.kind), t.namespaced)
    return out


def summarize_results(results: Iterable[ObjectResult]) -> dict[str, int]:
    """Count results by outcome."""
    out: dict[str, int] = {}
    for r in results:
        out[r.result] = out.get(r.result, 0) + 1
    return dict(sorted(out.items()))


@task(**TRANSIENT_RETRY, cache_policy=NO_CACHE)
def apply_resources(
    cluster: KubeCluster,
    cluster_name: str,
    objects: list[dict[str, Any]],
    policy: ExistingPolicy = ExistingPolicy.SKIP,
    dry_run: bool = False,
    namespace_labels: dict[str, str] | None = None,
    allowed_cluster_kinds: frozenset[str] | None = None,
) -> list[ObjectResult]:
    """Prefect task around :func:`apply_objects`; logs a one-line summary (no Secret value)."""
    log = get_run_logger()
    rest = KubeRest(cluster.api_client(), cluster_name)
    total = max(1, len(objects))
    progress_id: Any = create_progress_artifact(
        0.0, description=f"{'dry run: ' if dry_run else ''}applying {len(objects)} objects to {cluster_name}"
    )

    def progress(done: int, kind: str) -> None:
        try:  # progress is best effort: never fail an apply over it
            update_progress_artifact(
                progress_id, 100.0 * done / total, description=f"{done}/{total} objects, at {kind}"
            )
        except Exception as exc:
            log.debug("progress artifact update failed: %s", exc)

    results = apply_objects(
        rest,
        objects,
        policy=policy,
        dry_run=dry_run,
        namespace_labels={MANAGED_BY_LABEL: "stateferry", **(namespace_labels or {})},
        on_progress=progress,
        allowed_cluster_kinds=allowed_cluster_kinds,
    )
    log.info("applied %d objects to %s: %s", len(results), cluster_name, summarize_results(results))
    for r in results:
        if r.result == "failed":
            log.warning("%s failed: %s", r.key, r.message)
    return results


def activate_workloads(rest: KubeRest, namespaces: Iterable[str]) -> list[ObjectResult]:
    """Scale Deployments/StatefulSets parked by a migration back to the replica count recorded in
    ``stateferry.io/migration-replicas`` (and remove the annotation). Objects without it are left
    alone (result ``unchanged``)."""
    results: list[ObjectResult] = []
    for ns in namespaces:
        for plural, kind in (("deployments", "Deployment"), ("statefulsets", "StatefulSet")):
            rtype = ResourceType("apps", "v1", kind, plural, True)
            for items, _ in rest.list_pages(resource_path(rtype, ns)):
                for it in items:
                    it.setdefault("kind", kind)
                    it.setdefault("apiVersion", "apps/v1")
                    name = it["metadata"]["name"]
                    res = ObjectResult(object_key(it), kind, ns, name, "unchanged")
                    results.append(res)
                    try:
                        patch = activation_patch(it)
                        if patch is None:
                            res.message = "not parked by a migration"
                            continue
                        rest.request(
                            "PATCH",
                            resource_path(rtype, ns, name),
                            body=patch,
                            content_type="application/merge-patch+json",
                        )
                        res.result = "updated"
                        res.message = f"scaled to {patch['spec']['replicas']} replicas"
                    except StateferryError as exc:
                        res.result = "failed"
                        res.message = _error_message(exc)
    return results
