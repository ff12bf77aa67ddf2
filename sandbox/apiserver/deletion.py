"""DELETE: preconditions, graceful pod deletion, finalizers and the garbage collector's
propagation policies (orphan / foreground / background), and when a deleted object goes."""

from __future__ import annotations

import datetime as dt

from sandbox.apiserver import errors
from sandbox.apiserver.errors import ApiError, FieldError
from sandbox.apiserver.objmeta import deepcopy, now, same, view
from sandbox.apiserver.resources import ResourceType
from sandbox.apiserver.store import Obj, Store

# Kinds whose DELETE answers the object even when it is gone at once.
_RETURN_DELETED = {("", "pods"), ("", "services")}
# Kinds whose dependents are orphaned when DELETE names no propagation policy (batch/v1 Job keeps pods).
_DEFAULT_ORPHAN = {("batch", "jobs"), ("", "replicationcontrollers")}


class DeleteOptions:
    """The parts of metav1.DeleteOptions the sandbox honours."""

    def __init__(
        self,
        propagation: str | None = None,
        grace: int | None = None,
        uid: str | None = None,
        rv: str | None = None,
        dry_run: bool = False,
    ) -> None:
        self.propagation = propagation
        self.grace = grace
        self.uid = uid
        self.rv = rv
        self.dry_run = dry_run


def should_remove(key: tuple[str, str], obj: Obj) -> bool:
    """An object being deleted goes once no finalizer is left and its grace period is over."""
    meta = obj["metadata"]
    if not meta.get("deletionTimestamp") or meta.get("finalizers"):
        return False
    if key == ("", "namespaces") and (obj.get("spec") or {}).get("finalizers"):
        return False
    return not meta.get("deletionGracePeriodSeconds")


def delete(store: Store, rt: ResourceType, ns: str, name: str, opts: DeleteOptions) -> tuple[Obj, bool]:
    """DELETE; returns (body, is_object). ``is_object`` False means a ``Status`` Success body."""
    if opts.propagation not in (None, "Orphan", "Foreground", "Background"):
        raise errors.invalid(
            "DeleteOptions",
            "meta.k8s.io",
            "",
            [
                FieldError(
                    "propagationPolicy",
                    "NotSupported",
                    opts.propagation,
                    'supported values: "Foreground", "Background", "Orphan", "nil"',
                )
            ],
        )
    with store.lock:
        old = store.get(rt.key, ns if rt.namespaced else "", name)
        if old is None:
            raise errors.not_found(rt.plural, rt.group, name)
        meta = old["metadata"]
        if opts.uid and opts.uid != meta["uid"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {rt.plural} "{name}": Precondition failed: UID in '
                f"precondition: {opts.uid}, UID in object meta: {meta['uid']}",
                {"name": name, "group": rt.group, "kind": rt.kind}
                if rt.group
                else {"name": name, "kind": rt.kind},
            )
        if opts.rv and opts.rv != meta["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {rt.plural} "{name}": Precondition failed: '
                f"ResourceVersion in precondition: {opts.rv}, ResourceVersion in object meta: "
                f"{meta['resourceVersion']}",
                {"name": name, "group": rt.group, "kind": rt.kind}
                if rt.group
                else {"name": name, "kind": rt.kind},
            )
        new = deepcopy(old)
        nmeta = new["metadata"]
        if rt.key == ("", "namespaces"):
            if not nmeta.get("deletionTimestamp"):
                nmeta["deletionTimestamp"] = now()
                nmeta["deletionGracePeriodSeconds"] = 0
                new.setdefault("status", {})["phase"] = "Terminating"
                if not opts.dry_run:
                    new = store.commit(rt.key, new, old)
            return view(rt, new), True
        if rt.key == ("", "pods"):
            grace = opts.grace
            if grace is None:
                grace = int((old.get("spec") or {}).get("terminationGracePeriodSeconds", 30) or 0)
            phase = (old.get("status") or {}).get("phase")
            if not (old.get("spec") or {}).get("nodeName") or phase in ("Succeeded", "Failed"):
                grace = 0
            if grace > 0 or nmeta.get("finalizers"):
                if grace > 0 and (
                    nmeta.get("deletionGracePeriodSeconds") is None
                    or grace < nmeta["deletionGracePeriodSeconds"]
                ):
                    nmeta["deletionTimestamp"] = (
                        dt.datetime.now(dt.UTC) + dt.timedelta(seconds=grace)
                    ).strftime("%Y-%m-%dT%H:%M:%SZ")
                    nmeta["deletionGracePeriodSeconds"] = grace
                elif grace == 0:
                    nmeta.setdefault("deletionTimestamp", now())
                    nmeta["deletionGracePeriodSeconds"] = 0
                _add_gc_finalizer(rt, nmeta, opts)
                if opts.dry_run:
                    return new, True
                if nmeta.get("finalizers") or grace > 0:
                    return store.commit(rt.key, new, old), True
                return store.remove(rt.key, new), True
        _add_gc_finalizer(rt, nmeta, opts)
        if nmeta.get("finalizers"):
            if not nmeta.get("deletionTimestamp"):
                nmeta["deletionTimestamp"] = now()
                nmeta["deletionGracePeriodSeconds"] = 0
            if opts.dry_run:
                return view(rt, new), True
            if same(new, old):
                return view(rt, old), True
            return view(rt, store.commit(rt.key, new, old)), True
        if opts.dry_run:  # noqa: SIM108
            final = new
        else:
            final = store.remove(rt.key, new)
        if rt.key in _RETURN_DELETED:
            return view(rt, final), True
        details: Obj = {"name": name}
        if rt.group:
            details["group"] = rt.group
        details["kind"] = rt.plural
        details["uid"] = meta["uid"]
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": details,
        }, False


def _add_gc_finalizer(rt: ResourceType, nmeta: Obj, opts: DeleteOptions) -> None:
    policy = opts.propagation
    if policy is None and rt.key in _DEFAULT_ORPHAN:
        policy = "Orphan"
    fins: list[str] = list(nmeta.get("finalizers") or [])
    if policy == "Orphan":
        fins = [f for f in fins if f != "foregroundDeletion"]
        if "orphan" not in fins:
            fins.append("orphan")
    elif policy == "Foreground":
        fins = [f for f in fins if f != "orphan"]
        if "foregroundDeletion" not in fins:
            fins.append("foregroundDeletion")
    elif policy == "Background":
        fins = [f for f in fins if f not in ("orphan", "foregroundDeletion")]
    if fins:
        nmeta["finalizers"] = fins
    else:
        nmeta.pop("finalizers", None)
