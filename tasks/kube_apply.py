"""Apply sanitised objects to a cluster in restore order by server-side apply, one result per object.

Every read and write goes through ``kubernetes.dynamic.DynamicClient`` (``tasks/kube_dynamic.py``),
every write is a server-side apply as field manager ``stateferry``. An object that exists is first
applied with ``dryRun=All`` (forced, with the live ``resourceVersion`` as precondition): the live
object against that answer is the diff the plan, the approval and the report show, and the
managedFields of the two say which fields the apply would take from other managers
(:func:`planning.apply_decision.decide_existing`). The real apply carries the same precondition and
forces only what stateferry owns; a change the server refuses (an immutable field: 422) leaves the
object as it is and is reported, as is an object whose fields another tool manages (``conflict``).

The apply never stops at the first error: every object gets an :class:`ObjectResult` (created /
updated / unchanged / skipped-existing / conflict / failed, or would-* in a dry run), and the caller
decides what a partial failure means. Live objects are read with one LIST per type and namespace.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from blocks.kube import KubeCluster
from planning.apply_decision import decide_existing
from planning.kube_redaction import Redactor
from planning.resources import (
    MANAGED_BY_LABEL,
    ExistingPolicy,
    ResourceType,
    activation_patch,
    is_custom_resource,
    object_key,
)
from stateferry.errors import Conflict, Invalid, PermanentError, PreconditionFailed, StateferryError
from stateferry.waiting import wait_until
from tasks.kube_dynamic import (
    dynamic_client,
    get_or_none,
    list_objects,
    merge_patch,
    refresh_discovery,
    resource_for,
    resource_type,
    served_types,
    server_side_apply,
)
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
        result: created | updated | unchanged | skipped-existing | conflict | failed | would-create |
            would-update.
        message: reason or error message.
        diff: per-field differences against the live target object (from the server's dry run).
    """

    key: str
    kind: str
    namespace: str
    name: str
    result: str
    message: str = ""
    diff: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON form for reports (every field, under its own name)."""
        return asdict(self)


def _error_message(exc: BaseException, redactor: Redactor | None = None) -> str:
    text = redactor.scrub(str(exc)) if redactor is not None else str(exc)
    return text if len(text) < 600 else text[:597] + "..."


class _Types:
    """apiVersion/kind -> the served dynamic ``Resource`` and its :class:`ResourceType`."""

    def __init__(self, dyn: Any) -> None:
        self.dyn = dyn
        self.found: dict[tuple[str, str], tuple[Any, ResourceType]] = {}

    def get(self, api_version: str, kind: str, wait: float = 0.0) -> tuple[Any, ResourceType] | None:
        """The kind's resource; re-discovers for up to ``wait`` seconds (a CRD just created)."""
        key = (api_version, kind)

        def found() -> tuple[Any, ResourceType] | None:
            r = resource_for(self.dyn, api_version, kind)
            if r is not None:
                self.found[key] = (r, resource_type(r))
            return self.found.get(key)

        if key in self.found or wait <= 0:
            return self.found.get(key) or found()
        try:
            return wait_until(found, timeout=wait, interval=0.5, describe=lambda: "")
        except PreconditionFailed:
            return None


#: Kinds applied one object at a time (each may change what the next one can do).
_SEQUENTIAL_KINDS = frozenset({"CustomResourceDefinition", "Namespace"})


def _wait_crd_established(dyn: Any, crd: Any, name: str, timeout: float) -> None:
    def established() -> bool:
        obj = get_or_none(dyn, crd, name, None) or {}
        conds = (obj.get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Established" and c.get("status") == "True" for c in conds)

    wait_until(
        established,
        timeout=timeout,
        interval=0.3,
        error=PermanentError,
        describe=lambda: f"CustomResourceDefinition {name} was not Established within {timeout:.0f}s",
    )


def _with_precondition(obj: Mapping[str, Any], live: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` carrying the live ``resourceVersion``: the apply fails (409) if the object changed."""
    rv = (live.get("metadata") or {}).get("resourceVersion")
    meta = {**(obj.get("metadata") or {}), **({"resourceVersion": rv} if rv else {})}
    return {**obj, "metadata": meta}


def _refused(exc: Invalid, redactor: Redactor, policy: ExistingPolicy) -> tuple[str, str]:
    """(result, message) of an update the server refuses (an immutable field, say)."""
    fields = ", ".join(sorted({c.field for c in exc.causes if c.field})) or "the object"
    if policy is ExistingPolicy.SKIP:
        return "skipped-existing", (
            f"exists, and the target would refuse the backup's version in place ({fields}); policy is skip"
        )
    return "failed", (
        f"the target refuses to change {fields} in place, so the object was left as it is "
        f"({_error_message(exc, redactor)}). Fix: to restore the backup's version, delete the object in "
        "the target (immutable fields such as a PVC's spec, a Job's template or a StatefulSet's "
        "volumeClaimTemplates change only by re-creation) and re-run"
    )


def apply_objects(
    api: Any,
    objects: Iterable[Mapping[str, Any]],
    *,
    policy: ExistingPolicy = ExistingPolicy.SKIP,
    dry_run: bool = False,
    namespace_labels: Mapping[str, str] | None = None,
    crd_wait_seconds: float = 30.0,
    parallelism: int = 8,
    on_progress: Callable[[int, str], None] | None = None,
    allowed_cluster_kinds: Collection[str] | None = None,
) -> list[ObjectResult]:
    """Apply sanitised ``objects`` (already in restore order) and report each one.

    Secret values never reach a result: diffs name changed keys only, and every message (API
    server errors included) is scrubbed of the Secret values seen in ``objects``, in the target and
    in the server's answers (:class:`planning.kube_redaction.Redactor`).

    Args:
        api: ``kubernetes.client.ApiClient`` of the target cluster.
        objects: sanitised objects, in restore order (:func:`planning.resources.sort_for_restore`).
        policy: what to do with objects that exist and differ (``skip`` | ``update``).
        dry_run: decide and diff only (the server's ``dryRun=All`` answers); nothing is written.
        namespace_labels: labels of namespaces created implicitly for objects whose Namespace
            object is not part of the backup.
        crd_wait_seconds: how long to wait for a just-created CRD to be served.
        parallelism: concurrent writes within one kind (kinds are still applied in order;
            Namespaces and CRDs one by one).
        on_progress: called after each kind with the number of objects handled so far and the kind.
        allowed_cluster_kinds: group kinds (``Namespace``, ``StorageClass.storage.k8s.io``) that
            may be written cluster-scoped; any other object the target serves cluster-scoped fails
            as refused. None = no restriction (a migration of a live, user-selected namespace).
    """
    objects = list(objects)
    redactor = Redactor(objects)
    dyn = dynamic_client(api)
    types = _Types(dyn)
    ns_type = types.get("v1", "Namespace")
    assert ns_type is not None, "every API server serves v1 Namespace"
    known_ns = {str(o["metadata"]["name"]) for o in list_objects(dyn, ns_type[0], None)}
    live_cache: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    planned_ns: set[str] = set()
    planned_crds: set[tuple[str, str]] = set()  # (group, kind) of CRDs a dry run would create
    missing_types: set[tuple[str, str]] = set()
    results: list[ObjectResult] = []

    def live_index(resource: Any, rtype: ResourceType, ns: str) -> dict[str, dict[str, Any]]:
        key = (f"{rtype.group}/{rtype.plural}", ns)
        if key not in live_cache:
            idx: dict[str, dict[str, Any]] = {}
            if not rtype.namespaced or ns in known_ns:
                for it in list_objects(dyn, resource, ns or None):
                    idx[it["metadata"]["name"]] = it
                    redactor.add(it)
            live_cache[key] = idx
        return live_cache[key]

    def prepare(obj: Mapping[str, Any], res: ObjectResult) -> tuple[Any, ResourceType, Any] | None:
        """Resolve the type, make sure the namespace exists, look up the live object."""
        ns, kind = res.namespace, res.kind
        api_version = str(obj.get("apiVersion", ""))
        group = api_version.split("/")[0] if "/" in api_version else ""
        # wait for a custom resource's type only once per kind, and never in a dry run
        wait = crd_wait_seconds if is_custom_resource(group) and not dry_run else 0.0
        if (api_version, kind) in missing_types:
            wait = 0.0
        found = types.get(api_version, kind, wait=wait)
        if found is None and dry_run and (group, kind) in planned_crds:
            res.result = "would-create"
            res.message = "its CustomResourceDefinition is created first"
            return None
        if found is None:
            missing_types.add((api_version, kind))
            res.message = (
                f"the target cluster does not serve {obj.get('apiVersion')} {kind}; "
                "restore its CustomResourceDefinition (include it in the backup) "
                "or install the operator first"
            )
            return None
        resource, rtype = found
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
                server_side_apply(dyn, ns_type[0], body)
                known_ns.add(ns)
        return resource, rtype, live_index(resource, rtype, ns).get(res.name)

    def dry_run_apply(resource: Any, obj: Mapping[str, Any], live: dict[str, Any]) -> tuple[Any, Any]:
        """(live, after): the server's forced dry-run answer; re-read once if the object moved on."""
        try:
            after = server_side_apply(dyn, resource, _with_precondition(obj, live), dry_run=True, force=True)
        except Conflict:  # forced: only the resourceVersion precondition can fail
            fresh = get_or_none(
                dyn, resource, str(obj["metadata"]["name"]), live["metadata"].get("namespace")
            )
            if fresh is None:
                raise
            redactor.add(fresh)
            live = fresh
            after = server_side_apply(dyn, resource, _with_precondition(obj, live), dry_run=True, force=True)
        redactor.add(after)
        return live, after

    def create(obj: Mapping[str, Any], res: ObjectResult, resource: Any, rtype: ResourceType) -> None:
        if dry_run:
            res.result = "would-create"
            if rtype.kind == "Namespace":
                planned_ns.add(res.name)
            if rtype.kind == "CustomResourceDefinition":
                spec = obj.get("spec") or {}
                planned_crds.add((str(spec.get("group", "")), str((spec.get("names") or {}).get("kind", ""))))
            return
        created = server_side_apply(dyn, resource, dict(obj))
        redactor.add(created)
        res.result = "created"
        live_index(resource, rtype, res.namespace)[res.name] = created
        if rtype.kind == "Namespace":
            known_ns.add(res.name)
        if rtype.kind == "CustomResourceDefinition":
            _wait_crd_established(dyn, resource, res.name, crd_wait_seconds)
            refresh_discovery(dyn)

    def write(
        obj: Mapping[str, Any], res: ObjectResult, resource: Any, rtype: ResourceType, live: Any
    ) -> None:
        """Decide from the server's dry run and (unless dry run) create / update one object."""
        if live is None:
            create(obj, res, resource, rtype)
            return
        try:
            live, after = dry_run_apply(resource, obj, live)
        except Invalid as exc:
            res.result, res.message = _refused(exc, redactor, policy)
            return
        decision = decide_existing(live, after, policy, dry_run=dry_run)
        res.result, res.message, res.diff = decision.result, decision.message, list(decision.diff)
        if decision.result != "update":
            return
        try:
            updated = server_side_apply(dyn, resource, _with_precondition(obj, live), force=decision.force)
        except Conflict as exc:
            res.result = "conflict"
            res.message = (
                f"{_error_message(exc, redactor)}; nothing was written. Fix: re-run (the object changed "
                "while it was being restored)"
            )
            return
        except Invalid as exc:
            res.result, res.message = _refused(exc, redactor, policy)
            return
        res.result = "updated"
        live_index(resource, rtype, res.namespace)[res.name] = updated
        if rtype.kind == "CustomResourceDefinition":
            refresh_discovery(dyn)

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
            prepared: list[tuple[Mapping[str, Any], ObjectResult, Any]] = []
            for obj in group_iter:
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
            jobs = [(o, r, *p) for o, r, p in prepared if p is not None]
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
    for t in served_types(dynamic_client(cluster.api_client())):
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
        cluster.api_client(),
        objects,
        policy=policy,
        dry_run=dry_run,
        namespace_labels={MANAGED_BY_LABEL: "stateferry", **(namespace_labels or {})},
        on_progress=progress,
        allowed_cluster_kinds=allowed_cluster_kinds,
    )
    log.info("applied %d objects to %s: %s", len(results), cluster_name, summarize_results(results))
    for r in results:
        if r.result in ("failed", "conflict"):
            log.warning("%s %s: %s", r.key, r.result, r.message)
    return results


def activate_workloads(cluster: KubeCluster, namespaces: Iterable[str]) -> list[ObjectResult]:
    """Scale Deployments/StatefulSets parked by a migration back to the replica count recorded in
    ``stateferry.io/migration-replicas`` (and remove the annotation). Objects without it are left
    alone (result ``unchanged``).

    A targeted change of two fields of a live object: a merge patch through the dynamic client as
    field manager ``stateferry`` (a server-side apply would have to repeat the whole configuration).
    """
    dyn = dynamic_client(cluster.api_client())
    results: list[ObjectResult] = []
    for ns in namespaces:
        for kind in ("Deployment", "StatefulSet"):
            resource = resource_for(dyn, "apps/v1", kind)
            for it in list_objects(dyn, resource, ns) if resource is not None else ():
                name = it["metadata"]["name"]
                res = ObjectResult(object_key(it), kind, ns, name, "unchanged")
                results.append(res)
                try:
                    patch = activation_patch(it)
                    if patch is None:
                        res.message = "not parked by a migration"
                        continue
                    merge_patch(dyn, resource, name, ns, patch)
                    res.result = "updated"
                    res.message = f"scaled to {patch['spec']['replicas']} replicas"
                except StateferryError as exc:
                    res.result = "failed"
                    res.message = _error_message(exc)
    return results
