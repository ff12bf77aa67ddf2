"""Control-plane loops that live inside kube-apiserver / kube-controller-manager and are about object
lifecycle: garbage collection through ownerReferences, namespace lifecycle (default ServiceAccount,
``kube-root-ca.crt``, Terminating -> gone) and CRD establishment."""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from sandbox.apiserver.deletion import DeleteOptions, should_remove
from sandbox.apiserver.errors import ApiError
from sandbox.apiserver.objmeta import deepcopy, now
from sandbox.apiserver.registry import Registry
from sandbox.apiserver.store import Event, Obj
from sandbox.runtime.timescale import scaled

# a real namespace controller takes ~5 s from DELETE to gone (k8s-fidelity.md, Controllers)
NAMESPACE_CLEANUP_SECONDS = 5.0
# the garbage collector's orphaning: "the object stays briefly with the `orphan` finalizer"
ORPHAN_SECONDS = 1.0
PVC_PROTECTION = "kubernetes.io/pvc-protection"

log = logging.getLogger(__name__)

ROOT_CA = (
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBdzCCAR2gAwIBAgIBADAKBggqhkjOPQQDAjAjMSEwHwYDVQQDDBhrM3Mtc2Fu\n"
    "ZGJveC1jYUBzdGF0ZWZlcnJ5MB4XDTI2MDEwMTAwMDAwMFoXDTM2MDEwMTAwMDAw\n"
    "MFowIzEhMB8GA1UEAwwYazNzLXNhbmRib3gtY2FAc3RhdGVmZXJyeTBZMBMGByqG\n"
    "-----END CERTIFICATE-----\n"
)


class Controllers:
    """Runs the lifecycle loops on a worker thread fed by the store's events."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.store = registry.store
        self.queue: queue.SimpleQueue[Event | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="apiserver-controllers", daemon=True)
        self.store.listeners.append(self.queue.put)
        registry.on_namespace_created = self.namespace_created
        self._due: dict[str, float] = {}  # uid of an object waiting on a controller -> monotonic time

    def start(self) -> None:
        """Start the worker and reconcile whatever a previous run left half done."""
        with self.store.lock:
            for crd in self.store.items(("apiextensions.k8s.io", "customresourcedefinitions"), None):
                if _established(crd):
                    self.registry.register_crd(crd)
        self.thread.start()
        self.resync()

    def stop(self) -> None:
        """Stop the worker."""
        self.queue.put(None)
        self.thread.join(timeout=5)

    def resync(self) -> None:
        """Re-examine everything pending (after a restart)."""
        with self.store.lock:
            for key, objs in list(self.store.objects.items()):
                for obj in list(objs.values()):
                    self.queue.put(Event(self.store.rv, key, "MODIFIED", obj, None))

    # ---- worker ------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            event = self.queue.get()
            if event is None:
                return
            try:
                self._handle(event)
            except Exception:  # a controller must never die
                log.exception("controller failed on %s %s", event.type, event.key)

    def _handle(self, event: Event) -> None:
        key, obj = event.key, event.obj
        meta = obj["metadata"]
        if event.type == "DELETED":
            self._gc_dependents(meta["uid"])
            for ref in meta.get("ownerReferences") or []:
                owner = self.store.by_uid_get(ref.get("uid", ""))
                if owner is not None and "foregroundDeletion" in (owner["metadata"].get("finalizers") or []):
                    self._foreground(owner)
            ns = meta.get("namespace")
            if ns:
                nsobj = self.store.get(("", "namespaces"), "", ns)
                if nsobj is not None and nsobj["metadata"].get("deletionTimestamp"):
                    self._namespace_terminating(nsobj)
            if key == ("apiextensions.k8s.io", "customresourcedefinitions"):
                self.registry.unregister_crd(obj)
            if key == ("", "pods") and ns:
                self._release_claims(ns)
            return
        current = self.store.get(key, meta.get("namespace", ""), meta["name"])
        if current is None or current["metadata"]["uid"] != meta["uid"]:
            return
        cmeta = current["metadata"]
        if cmeta.get("deletionTimestamp"):
            fins = cmeta.get("finalizers") or []
            if "orphan" in fins:
                if self._is_due(current, key, ORPHAN_SECONDS):
                    self._orphan(current)
            elif "foregroundDeletion" in fins:
                self._foreground(current)
            if key == ("", "namespaces"):
                self._namespace_terminating(current)
            elif key == ("apiextensions.k8s.io", "customresourcedefinitions"):
                self._crd_cleanup(current)
            elif key == ("", "persistentvolumeclaims") and PVC_PROTECTION in fins:
                self._release_claims(cmeta["namespace"])
            return
        if key == ("", "pods") and (current.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            self._release_claims(cmeta["namespace"])  # a finished pod no longer holds its claims
        if key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            if not _established(current):
                self._establish(current)
            else:
                self.registry.register_crd(current)  # versions, schemas or columns may have changed
        refs = cmeta.get("ownerReferences") or []
        if refs and event.type == "ADDED":
            alive = [r for r in refs if self.store.by_uid_get(r.get("uid", "")) is not None]
            if not alive:
                self._delete(current, "Background")

    # ---- helpers -----------------------------------------------------------------------------------
    def _rt(self, key: tuple[str, str]) -> Any:
        return self.registry.by_key.get(key)

    def _delete(self, obj: Obj, policy: str | None) -> None:
        loc = self.store.by_uid.get(obj["metadata"]["uid"])
        if loc is None:
            return
        rt = self._rt(loc[0])
        if rt is None:
            return
        try:
            self.registry.delete(rt, loc[1][0], loc[1][1], DeleteOptions(propagation=policy))
        except ApiError:
            pass

    def _replace(self, obj: Obj, new: Obj) -> None:
        loc = self.store.by_uid.get(obj["metadata"]["uid"])
        if loc is None:
            return
        rt = self._rt(loc[0])
        with self.store.lock:
            cur = self.store.get(loc[0], *loc[1])
            if cur is None or cur["metadata"]["resourceVersion"] != obj["metadata"]["resourceVersion"]:
                return
            if should_remove(loc[0], new):
                self.store.remove(loc[0], new)
            elif rt is not None:
                self.store.commit(loc[0], new, cur)

    def _dependents(self, uid: str) -> list[Obj]:
        out = []
        with self.store.lock:
            for objs in self.store.objects.values():
                for o in objs.values():
                    for ref in o["metadata"].get("ownerReferences") or ():
                        if ref.get("uid") == uid:
                            out.append(o)
                            break
        return out

    # ---- garbage collector -------------------------------------------------------------------------
    def _gc_dependents(self, uid: str) -> None:
        for dep in self._dependents(uid):
            refs = dep["metadata"].get("ownerReferences") or []
            alive = [
                r for r in refs if r.get("uid") != uid and self.store.by_uid_get(r.get("uid", "")) is not None
            ]
            if alive:
                new = deepcopy(dep)
                new["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
                self._replace(dep, new)
            elif not dep["metadata"].get("deletionTimestamp"):
                self._delete(dep, "Background")

    def _orphan(self, owner: Obj) -> None:
        uid = owner["metadata"]["uid"]
        for dep in self._dependents(uid):
            new = deepcopy(dep)
            refs = [r for r in dep["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
            if refs:
                new["metadata"]["ownerReferences"] = refs
            else:
                new["metadata"].pop("ownerReferences", None)
            self._replace(dep, new)
        with self.store.lock:
            cur = self.store.by_uid_get(uid)
            if cur is None:
                return
            new = deepcopy(cur)
            fins = [f for f in new["metadata"].get("finalizers") or [] if f != "orphan"]
            if fins:
                new["metadata"]["finalizers"] = fins
            else:
                new["metadata"].pop("finalizers", None)
            self._replace(cur, new)

    def _foreground(self, owner: Obj) -> None:
        uid = owner["metadata"]["uid"]
        blocking = False
        for dep in self._dependents(uid):
            ref = next(r for r in dep["metadata"]["ownerReferences"] if r.get("uid") == uid)
            if ref.get("blockOwnerDeletion"):
                blocking = True
            if not dep["metadata"].get("deletionTimestamp"):
                self._delete(dep, "Foreground")
        if blocking:
            with self.store.lock:
                blocking = any(
                    any(
                        r.get("uid") == uid and r.get("blockOwnerDeletion")
                        for r in d["metadata"]["ownerReferences"]
                    )
                    for d in self._dependents(uid)
                )
        if blocking:
            return
        with self.store.lock:
            cur = self.store.by_uid_get(uid)
            if cur is None or "foregroundDeletion" not in (cur["metadata"].get("finalizers") or []):
                return
            new = deepcopy(cur)
            fins = [f for f in new["metadata"]["finalizers"] if f != "foregroundDeletion"]
            if fins:
                new["metadata"]["finalizers"] = fins
            else:
                new["metadata"].pop("finalizers", None)
            self._replace(cur, new)

    # ---- namespaces --------------------------------------------------------------------------------
    def namespace_created(self, ns: Obj) -> None:
        """ServiceAccount ``default`` and ConfigMap ``kube-root-ca.crt`` in every new namespace."""
        name = ns["metadata"]["name"]
        reg = self.registry
        for rt_key, body in (
            (("", "serviceaccounts"), {"metadata": {"name": "default", "namespace": name}}),
            (
                ("", "configmaps"),
                {
                    "metadata": {
                        "name": "kube-root-ca.crt",
                        "namespace": name,
                        "annotations": {
                            "kubernetes.io/description": "Contains a CA bundle that can be used to verify the "  # noqa: E501
                            "kube-apiserver when using internal endpoints such as the internal service IP or "
                            "kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes "  # noqa: E501
                            "clusters."
                        },
                    },
                    "data": {"ca.crt": ROOT_CA},
                },
            ),
        ):
            try:
                reg.create(reg.by_key[rt_key], name, body)
            except ApiError:
                pass

    def _namespace_terminating(self, nsobj: Obj) -> None:
        name = nsobj["metadata"]["name"]
        keys = [key for key, rt in list(self.registry.by_key.items()) if rt.namespaced]
        for key in keys:
            for obj in self.store.items(key, name):
                if not obj["metadata"].get("deletionTimestamp"):
                    self._delete(obj, "Background")
        if any(self.store.items(key, name) for key in keys):
            return  # bound pods wait for their kubelet, objects with finalizers for their controllers
        if not self._is_due(nsobj, ("", "namespaces"), NAMESPACE_CLEANUP_SECONDS):
            return
        with self.store.lock:
            cur = self.store.get(("", "namespaces"), "", name)
            if cur is None or cur["metadata"]["uid"] != nsobj["metadata"]["uid"]:
                return
            new = deepcopy(cur)
            new["spec"]["finalizers"] = [
                f for f in (new.get("spec") or {}).get("finalizers") or [] if f != "kubernetes"
            ]
            if not new["spec"]["finalizers"]:
                new["spec"].pop("finalizers")
            self._replace(cur, new)

    def _is_due(self, obj: Obj, key: tuple[str, str], seconds: float) -> bool:
        """True once a deleted object has waited the (time-scaled) delay of its controller.

        Until then a timer re-queues it, so a Terminating namespace stays for a few seconds and an
        orphaning delete keeps its object briefly, as on a real cluster.
        """
        uid = obj["metadata"]["uid"]
        due = self._due.setdefault(uid, time.monotonic() + scaled(seconds))
        left = due - time.monotonic()
        if left <= 0:
            self._due.pop(uid, None)
            return True
        timer = threading.Timer(left, self.queue.put, (Event(self.store.rv, key, "MODIFIED", obj, None),))
        timer.daemon = True
        timer.start()
        return False

    # ---- PVC protection ----------------------------------------------------------------------------
    def _release_claims(self, ns: str) -> None:
        """Drop ``kubernetes.io/pvc-protection`` from Terminating claims no live pod mounts."""
        with self.store.lock:
            used = {
                v["persistentVolumeClaim"].get("claimName")
                for p in self.store.items(("", "pods"), ns)
                if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
                for v in (p.get("spec") or {}).get("volumes") or []
                if isinstance(v, dict) and isinstance(v.get("persistentVolumeClaim"), dict)
            }
            claims = [
                c
                for c in self.store.items(("", "persistentvolumeclaims"), ns)
                if c["metadata"].get("deletionTimestamp")
                and PVC_PROTECTION in (c["metadata"].get("finalizers") or [])
                and c["metadata"]["name"] not in used
            ]
        for claim in claims:
            new = deepcopy(claim)
            fins = [f for f in new["metadata"]["finalizers"] if f != PVC_PROTECTION]
            if fins:
                new["metadata"]["finalizers"] = fins
            else:
                new["metadata"].pop("finalizers")
            self._replace(claim, new)

    # ---- CRDs --------------------------------------------------------------------------------------
    def _establish(self, crd: Obj) -> None:
        new = deepcopy(crd)
        ts = now()
        names = dict(crd["spec"]["names"])
        names.setdefault("singular", names["kind"].lower())
        names.setdefault("listKind", names["kind"] + "List")
        new["status"] = {
            "acceptedNames": names,
            "conditions": [
                {
                    "type": "NamesAccepted",
                    "status": "True",
                    "lastTransitionTime": ts,
                    "reason": "NoConflicts",
                    "message": "no conflicts found",
                },
                {
                    "type": "Established",
                    "status": "True",
                    "lastTransitionTime": ts,
                    "reason": "InitialNamesAccepted",
                    "message": "the initial names have been accepted",
                },
            ],
            "storedVersions": [v["name"] for v in crd["spec"]["versions"] if v.get("storage")],
        }
        new["metadata"].setdefault("finalizers", [])
        if "customresourcecleanup.apiextensions.k8s.io" not in new["metadata"]["finalizers"]:
            new["metadata"]["finalizers"].append("customresourcecleanup.apiextensions.k8s.io")
        self.registry.register_crd(new)
        self._replace(crd, new)

    def _crd_cleanup(self, crd: Obj) -> None:
        key = (crd["spec"]["group"], crd["spec"]["names"]["plural"])
        for obj in self.store.items(key, None):
            if not obj["metadata"].get("deletionTimestamp"):
                self._delete(obj, "Background")
        if self.store.items(key, None):
            return
        self.registry.unregister_crd(crd)
        new = deepcopy(crd)
        fins = [
            f
            for f in new["metadata"].get("finalizers") or []
            if f != "customresourcecleanup.apiextensions.k8s.io"
        ]
        if fins:
            new["metadata"]["finalizers"] = fins
        else:
            new["metadata"].pop("finalizers", None)
        self._replace(crd, new)


def _established(crd: Obj) -> bool:
    return any(
        c.get("type") == "Established" and c.get("status") == "True"
        for c in (crd.get("status") or {}).get("conditions") or []
    )
