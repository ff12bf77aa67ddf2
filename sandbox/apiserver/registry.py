"""REST semantics of one cluster: create/get/list/update/patch/delete with defaults, validation,
optimistic concurrency, subresources and allocations — what kube-apiserver's generic registry does.

The parts live in their own modules: served types (catalog.py), LIST paging (listing.py), request
bodies (requestbody.py), create-time admission (admission.py), Service allocations
(allocations.py), ``/scale`` (scale.py), DELETE with finalizers and propagation (deletion.py) and
server-side apply field ownership (fieldmanager.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from sandbox.apiserver import (
    config_rules,
    defaults,
    deletion,
    errors,
    fieldmanager,
    meta_rules,
    service_rules,
    validation,
)
from sandbox.apiserver.admission import INITIAL_STATUS, admit_namespace, admit_pod, review
from sandbox.apiserver.allocations import allocate_service, keep_allocations
from sandbox.apiserver.catalog import TypeCatalog
from sandbox.apiserver.crd import validate_custom
from sandbox.apiserver.deletion import DeleteOptions, should_remove
from sandbox.apiserver.errors import ApiError, FieldError
from sandbox.apiserver.listing import list_objects
from sandbox.apiserver.objmeta import deepcopy, now, same, view
from sandbox.apiserver.patch import json_patch, merge_patch, strategic_merge_patch
from sandbox.apiserver.requestbody import decode, decode_patched, parse_patch
from sandbox.apiserver.resources import REVIEWS, ResourceType
from sandbox.apiserver.scale import scale_of, scaled
from sandbox.apiserver.store import Obj, Store

_SERVER_META = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "selfLink",
)
# Kinds a PUT may create (AllowCreateOnUpdate in their REST strategies).
_CREATE_ON_UPDATE = {
    ("", "endpoints"),
    ("coordination.k8s.io", "leases"),
    ("rbac.authorization.k8s.io", "roles"),
    ("rbac.authorization.k8s.io", "rolebindings"),
    ("rbac.authorization.k8s.io", "clusterroles"),
    ("rbac.authorization.k8s.io", "clusterrolebindings"),
}


class Registry(TypeCatalog):
    """The object semantics of one emulated cluster."""

    def __init__(self, cluster: str, store: Store, service_cidr_base: str) -> None:
        super().__init__(store.lock)
        self.cluster = cluster
        self.store = store
        self.service_cidr_base = service_cidr_base
        self.on_namespace_created: Callable[[Obj], None] | None = None
        # /openapi/v3 documents, keyed by the served types (see openapi.py)
        self.openapi_cache: tuple[tuple[tuple[str, str, str], ...], dict[str, bytes]] | None = None

    # ---- reads -------------------------------------------------------------------------------------
    def get(self, rt: ResourceType, ns: str, name: str) -> Obj:
        """One object or 404."""
        obj = self.store.get(rt.key, ns if rt.namespaced else "", name)
        if obj is None:
            raise errors.not_found(rt.plural, rt.group, name)
        return view(rt, obj)

    # ---- create ------------------------------------------------------------------------------------
    def create(
        self,
        rt: ResourceType,
        ns: str,
        body: Any,
        *,
        dry_run: bool = False,
        strict: bool = False,
        manager: str | None = None,
        managed_fields: list[Obj] | None = None,
    ) -> Obj:
        """POST: decode, default, admit, validate, store.

        ``manager`` records an Update entry in managedFields; ``managed_fields`` (a server-side apply
        that creates) is stored as given."""
        decoded = decode(rt, body, strict)
        if rt.key in REVIEWS:
            return review(rt, decoded)
        obj: Obj = {"kind": rt.kind, "apiVersion": rt.api_version}
        obj.update((k, v) for k, v in decoded.items() if k not in ("kind", "apiVersion"))
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            meta = obj["metadata"] = {}
        if rt.namespaced:
            if meta.get("namespace") and meta["namespace"] != ns:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        if rt.key == ("", "secrets"):
            config_rules.secret_data(obj)
        with self.lock:
            if rt.namespaced:
                admit_namespace(self.store, rt, ns, meta.get("name") or "")
            if not meta.get("name") and meta.get("generateName"):
                for _ in range(20):
                    cand = meta["generateName"] + defaults.random_suffix()
                    if self.store.get(rt.key, ns if rt.namespaced else "", cand) is None:
                        meta["name"] = cand
                        break
            for k in _SERVER_META:
                meta.pop(k, None)
            sent_fields = meta.pop("managedFields", None)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now()
            if rt.has_generation:
                meta["generation"] = 1
            if rt.custom and rt.has_status:
                obj.pop("status", None)
            elif rt.has_status and rt.key != ("", "nodes"):
                obj["status"] = deepcopy(INITIAL_STATUS.get(rt.key, {}))
            if rt.key == ("", "namespaces") and obj.get("spec") is None:
                obj["spec"] = {}
            self._default(rt, obj)
            if rt.key == ("", "pods"):
                defaults.pod_admission(obj)
                admit_pod(self.store, obj)
            if rt.key == ("", "persistentvolumeclaims"):  # StorageObjectInUseProtection admission
                fins = meta.setdefault("finalizers", [])
                if "kubernetes.io/pvc-protection" not in fins:
                    fins.append("kubernetes.io/pvc-protection")
            errs = meta_rules.metadata(obj, rt.key, rt.custom)
            errs += self._validate(rt, obj, None)
            if errs:
                raise errors.invalid(rt.kind, rt.group, meta.get("name") or "", errs)
            if self.store.get(rt.key, ns if rt.namespaced else "", meta["name"]) is not None:
                raise errors.already_exists(rt.plural, rt.group, meta["name"])
            if managed_fields is None and manager:
                sent = {**obj, "metadata": {**meta, "managedFields": sent_fields}}
                managed_fields = fieldmanager.record_update(
                    None, sent, manager, rt.api_version, field_schema(rt)
                )
            if managed_fields:
                meta["managedFields"] = managed_fields
            if rt.key == ("", "services"):
                allocate_service(self.store, self.service_cidr_base, obj, None)
            if dry_run:
                return obj
            stored = self.store.commit(rt.key, obj, None)
        if rt.key == ("", "namespaces") and self.on_namespace_created is not None:
            self.on_namespace_created(stored)
        return stored

    def _default(self, rt: ResourceType, obj: Obj) -> None:
        fn = defaults.DEFAULTERS.get(rt.key)
        if fn is not None:
            fn(obj)

    def _validate(self, rt: ResourceType, obj: Obj, old: Obj | None) -> list[FieldError]:
        if rt.custom:
            return validate_custom(rt, obj)
        fn = validation.VALIDATORS.get(rt.key)
        return fn(obj, old) if fn is not None else []

    # ---- update / patch ----------------------------------------------------------------------------
    def update(
        self,
        rt: ResourceType,
        ns: str,
        name: str,
        body: Any,
        subresource: str | None = None,
        *,
        dry_run: bool = False,
        strict: bool = False,
        manager: str | None = None,
    ) -> Obj:
        """PUT of the object or its ``status``/``scale`` subresource (``manager``: see :meth:`create`)."""
        if subresource == "scale":
            return self._update_scale(rt, ns, name, body, dry_run, manager)
        new = decode(rt, body, strict)
        meta = new.get("metadata") or {}
        if meta.get("name") and meta["name"] != name:
            raise errors.bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
            )
        if rt.namespaced and meta.get("namespace") and meta["namespace"] != ns:
            raise errors.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        if rt.key == ("", "secrets"):
            config_rules.secret_data(new)
        with self.lock:
            old = self.store.get(rt.key, ns if rt.namespaced else "", name)
            if old is None:
                if rt.key in _CREATE_ON_UPDATE and subresource is None:
                    new.setdefault("metadata", {})["name"] = name
                    return self.create(rt, ns, new, dry_run=dry_run, strict=strict, manager=manager)
                raise errors.not_found(rt.plural, rt.group, name)
            rv = meta.get("resourceVersion")
            if rv and rv != old["metadata"]["resourceVersion"]:
                raise errors.conflict(rt.plural, rt.group, name)
            return self._write(rt, old, new, subresource, dry_run, manager=manager)

    def patch(
        self,
        rt: ResourceType,
        ns: str,
        name: str,
        content_type: str,
        raw: bytes,
        subresource: str | None = None,
        *,
        dry_run: bool = False,
        strict: bool = False,
        field_manager: str | None = None,
        force: bool = False,
        manager: str | None = None,
    ) -> tuple[Obj, bool]:
        """PATCH (json / merge / strategic / apply); returns (object, created).

        An apply (``application/apply-patch+yaml``) goes through field ownership (fieldmanager.py):
        409 on fields another manager owns unless ``force``; other patches record an Update by
        ``manager`` (the ``fieldManager`` query or the user agent's prefix)."""
        ctype, patch = parse_patch(rt, content_type, raw, subresource, field_manager, force)
        with self.lock:
            old = self.store.get(rt.key, ns if rt.namespaced else "", name)
            if old is None:
                if ctype == "application/apply-patch+yaml" and subresource is None:
                    patch.setdefault("metadata", {})["name"] = name
                    fs = field_schema(rt)
                    applied = fieldmanager.apply({}, patch, str(field_manager), rt.api_version, fs, force)
                    mf = applied["metadata"].pop("managedFields")
                    obj = self.create(rt, ns, applied, dry_run=dry_run, strict=strict, managed_fields=mf)
                    return obj, True
                raise errors.not_found(rt.plural, rt.group, name)
            if subresource == "scale":
                current: Obj = scale_of(rt, old)
            else:
                current = view(rt, old)
            if ctype == "application/json-patch+json":
                new = json_patch(current, patch)
            elif ctype == "application/merge-patch+json":
                new = merge_patch(current, patch)
            elif ctype == "application/apply-patch+yaml" and subresource is None:
                new = fieldmanager.apply(
                    current, patch, str(field_manager), rt.api_version, field_schema(rt), force
                )
            elif ctype == "application/apply-patch+yaml":
                new = merge_patch(current, patch)
            else:
                new = strategic_merge_patch(current, patch, rt.kind)
            if not isinstance(new, dict):
                raise ApiError(
                    422, "Invalid", "the server rejected our request due to an error in our request"
                )
            rv = (new.get("metadata") or {}).get("resourceVersion")
            if rv and rv != old["metadata"]["resourceVersion"]:
                raise errors.conflict(rt.plural, rt.group, name)
            if subresource == "scale":
                return self._apply_scale(rt, old, new, dry_run, manager), False
            new = decode_patched(rt, new, ctype, raw, strict)
            if rt.key == ("", "secrets"):
                config_rules.secret_data(new)
            if ctype == "application/apply-patch+yaml" and subresource is None:
                return self._write(rt, old, new, subresource, dry_run, applied=True), False
            return self._write(rt, old, new, subresource, dry_run, manager=manager), False

    def _write(
        self,
        rt: ResourceType,
        old: Obj,
        new: Obj,
        subresource: str | None,
        dry_run: bool,
        *,
        manager: str | None = None,
        applied: bool = False,
        via: str | None = None,
    ) -> Obj:
        """Shared tail of PUT and PATCH (caller holds the lock).

        managedFields: ``applied`` keeps those a server-side apply computed; ``manager`` records an
        Update (through subresource ``via`` or ``subresource``); neither keeps the live ones."""
        name = old["metadata"]["name"]
        sent_fields = (new.get("metadata") or {}).get("managedFields") if not applied else None
        if subresource == "status":
            out = deepcopy(old)
            if "status" in new:
                out["status"] = new["status"]
            else:
                out.pop("status", None)
            new = out
            errs = service_rules.service_status(new) if rt.key == ("", "services") else []
            if errs:
                raise errors.invalid(rt.kind, rt.group, name, errs)
        else:
            new["kind"] = rt.kind
            new["apiVersion"] = rt.api_version
            meta = new.get("metadata")
            if not isinstance(meta, dict):
                meta = new["metadata"] = {}
            ometa = old["metadata"]
            for k in (
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ):
                if k in ometa:
                    meta[k] = ometa[k]
                else:
                    meta.pop(k, None)
            meta["name"] = ometa["name"]
            if "namespace" in ometa:
                meta["namespace"] = ometa["namespace"]
            if not applied:
                meta.pop("managedFields", None)
            if rt.has_status:
                if "status" in old:
                    new["status"] = old["status"]
                else:
                    new.pop("status", None)
            if rt.key == ("", "namespaces"):
                new["spec"] = old.get("spec", {})
            if rt.key == ("", "services"):
                keep_allocations(new, old)
            self._default(rt, new)
            errs = meta_rules.metadata(new, rt.key, rt.custom) + self._validate(rt, new, old)
            if errs:
                raise errors.invalid(rt.kind, rt.group, name, errs)
        if not applied:
            self._record_update(rt, old, new, manager, via or subresource, sent_fields)
        if subresource != "status" and rt.key == ("", "services"):
            allocate_service(self.store, self.service_cidr_base, new, old)
        if same(new, old):
            return view(rt, old)
        if rt.has_generation and subresource != "status" and _spec_changed(rt, new, old):
            new["metadata"]["generation"] = int(old["metadata"].get("generation") or 1) + 1
        if dry_run:
            return new
        if should_remove(rt.key, new):
            return self.store.remove(rt.key, new)
        return self.store.commit(rt.key, new, old)

    def _record_update(
        self, rt: ResourceType, old: Obj, new: Obj, manager: str | None, via: str | None, sent: Any
    ) -> None:
        meta = new["metadata"]
        if manager:
            body = {**new, "metadata": {**meta, "managedFields": sent}} if via is None else new
            fields = fieldmanager.record_update(old, body, manager, rt.api_version, field_schema(rt), via)
        else:
            fields = old["metadata"].get("managedFields") or []
        if fields:
            meta["managedFields"] = fields
        else:
            meta.pop("managedFields", None)

    # ---- scale -------------------------------------------------------------------------------------
    def get_scale(self, rt: ResourceType, ns: str, name: str) -> Obj:
        """GET ``/scale``."""
        obj = self.store.get(rt.key, ns, name)
        if obj is None:
            raise errors.not_found(rt.plural, rt.group, name)
        return scale_of(rt, obj)

    def _update_scale(
        self, rt: ResourceType, ns: str, name: str, body: Any, dry_run: bool, manager: str | None = None
    ) -> Obj:
        if not isinstance(body, dict):
            raise errors.bad_request('Scale in version "v1" cannot be handled as a Scale')
        with self.lock:
            old = self.store.get(rt.key, ns, name)
            if old is None:
                raise errors.not_found(rt.plural, rt.group, name)
            rv = (body.get("metadata") or {}).get("resourceVersion")
            if rv and rv != old["metadata"]["resourceVersion"]:
                raise errors.conflict(rt.plural, rt.group, name)
            return self._apply_scale(rt, old, body, dry_run, manager)

    def _apply_scale(
        self, rt: ResourceType, old: Obj, scale: Obj, dry_run: bool, manager: str | None = None
    ) -> Obj:
        new = scaled(rt, old, scale)
        out = self._write(rt, old, new, None, dry_run, manager=manager, via="scale")
        result = scale_of(rt, out)
        result["status"] = scale_of(rt, old)["status"]
        return result

    # ---- delete ------------------------------------------------------------------------------------
    def delete(self, rt: ResourceType, ns: str, name: str, opts: DeleteOptions) -> tuple[Obj, bool]:
        """DELETE (deletion.py); returns (body, is_object)."""
        return deletion.delete(self.store, rt, ns, name, opts)

    def delete_collection(
        self, rt: ResourceType, ns: str | None, label_selector: str, field_selector: str, opts: DeleteOptions
    ) -> Obj:
        """DELETE on a collection: delete every match; answer the list of what was deleted."""
        listing = list_objects(self.store, rt, ns, label_selector, field_selector)
        deleted = []
        for item in listing["items"]:
            try:
                body, is_obj = self.delete(
                    rt, item["metadata"].get("namespace", ""), item["metadata"]["name"], opts
                )
            except ApiError:
                continue
            deleted.append(body if is_obj else item)
        listing["items"] = deleted
        return listing


def field_schema(rt: ResourceType) -> fieldmanager.Schema:
    """The field-ownership schema of a resource type."""
    crd = rt.crd_schemas.get("schema") if rt.custom and rt.crd_schemas else None
    return fieldmanager.Schema(rt.kind, rt.custom, rt.has_status, crd if isinstance(crd, dict) else None)


def _spec_changed(rt: ResourceType, new: Obj, old: Obj) -> bool:
    if rt.custom:
        strip = ("metadata", "status")
        return {k: v for k, v in new.items() if k not in strip} != {
            k: v for k, v in old.items() if k not in strip
        }
    return new.get("spec") != old.get("spec")
