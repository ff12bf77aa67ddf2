"""REST semantics of one cluster: create/get/list/update/patch/delete with defaults, validation,
optimistic concurrency, subresources and allocations — what kube-apiserver's generic registry does."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import yaml

from sandbox.apiserver import defaults, errors, fieldmanager, validation
from sandbox.apiserver.crd import crd_resource_types, prune, validate_custom
from sandbox.apiserver.decode import DecodeError, Decoder
from sandbox.apiserver.errors import ApiError, FieldError
from sandbox.apiserver.patch import json_patch, merge_patch, strategic_merge_patch
from sandbox.apiserver.resources import BUILTIN, REVIEWS, ResourceType
from sandbox.apiserver.selectors import (
    fields_match,
    labels_match,
    parse_field_selector,
    parse_label_selector,
    selector_string,
)
from sandbox.apiserver.store import Obj, Store

NODE_PORT_RANGE = (30000, 32767)
_SERVER_META = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "selfLink",
)
# Kinds whose DELETE answers the object even when it is gone at once.
_RETURN_DELETED = {("", "pods"), ("", "services")}
# Kinds a PUT may create (AllowCreateOnUpdate in their REST strategies).
_CREATE_ON_UPDATE = {
    ("", "endpoints"),
    ("coordination.k8s.io", "leases"),
    ("rbac.authorization.k8s.io", "roles"),
    ("rbac.authorization.k8s.io", "rolebindings"),
    ("rbac.authorization.k8s.io", "clusterroles"),
    ("rbac.authorization.k8s.io", "clusterrolebindings"),
}
# Kinds whose dependents are orphaned when DELETE names no propagation policy (batch/v1 Job keeps pods).
_DEFAULT_ORPHAN = {("batch", "jobs"), ("", "replicationcontrollers")}


def now() -> str:
    """RFC 3339 timestamp with second precision, as metav1.Time serialises."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def deepcopy(obj: Any) -> Any:
    """Fast deep copy of JSON data."""
    return orjson.loads(orjson.dumps(obj))


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


class Registry:
    """The object semantics of one emulated cluster."""

    def __init__(self, cluster: str, store: Store, service_cidr_base: str) -> None:
        self.cluster = cluster
        self.store = store
        self.service_cidr_base = service_cidr_base
        self.lock = store.lock
        self.types: dict[tuple[str, str, str], ResourceType] = {}
        self.by_key: dict[tuple[str, str], ResourceType] = {}
        self.groups: dict[str, list[str]] = {}  # group -> served versions (preferred first)
        for rt in BUILTIN:
            self._add_type(rt)
        self.on_namespace_created: Callable[[Obj], None] | None = None
        # /openapi/v3 documents, keyed by the served types (see openapi.py)
        self.openapi_cache: tuple[tuple[tuple[str, str, str], ...], dict[str, bytes]] | None = None

    # ---- types -------------------------------------------------------------------------------------
    def _add_type(self, rt: ResourceType) -> None:
        self.types[(rt.group, rt.version, rt.plural)] = rt
        self.by_key.setdefault(rt.key, rt)
        versions = self.groups.setdefault(rt.group, [])
        if rt.version not in versions:
            versions.append(rt.version)

    def register_crd(self, crd: Obj) -> None:
        """Serve the custom resources of an Established CRD (again, after it changed)."""
        with self.lock:
            self.unregister_crd(crd)
            for rt in crd_resource_types(crd):
                self.types[(rt.group, rt.version, rt.plural)] = rt
                if rt.key not in self.by_key or self.by_key[rt.key].custom:
                    storage = next(
                        (v["name"] for v in crd["spec"]["versions"] if v.get("storage")), rt.version
                    )
                    if rt.version == storage:
                        self.by_key[rt.key] = rt
                    else:
                        self.by_key.setdefault(rt.key, rt)
                versions = self.groups.setdefault(rt.group, [])
                if rt.version not in versions:
                    versions.append(rt.version)

    def unregister_crd(self, crd: Obj) -> None:
        """Stop serving the custom resources of a deleted CRD."""
        with self.lock:
            group = crd["spec"]["group"]
            plural = crd["spec"]["names"]["plural"]
            for k in [k for k, rt in self.types.items() if rt.custom and rt.key == (group, plural)]:
                del self.types[k]
            self.by_key.pop((group, plural), None)
            left = sorted({k[1] for k in self.types if k[0] == group})
            if left:
                self.groups[group] = left
            else:
                self.groups.pop(group, None)

    def type_for(self, group: str, version: str, plural: str) -> ResourceType | None:
        """The resource served at this path, if any."""
        return self.types.get((group, version, plural))

    # ---- reads -------------------------------------------------------------------------------------
    def get(self, rt: ResourceType, ns: str, name: str) -> Obj:
        """One object or 404."""
        obj = self.store.get(rt.key, ns if rt.namespaced else "", name)
        if obj is None:
            raise errors.not_found(rt.plural, rt.group, name)
        return self._view(rt, obj)

    def _view(self, rt: ResourceType, obj: Obj) -> Obj:
        if obj.get("apiVersion") == rt.api_version:
            return obj
        out = dict(obj)
        out["apiVersion"] = rt.api_version
        return out

    def list_objects(
        self,
        rt: ResourceType,
        ns: str | None,
        label_selector: str = "",
        field_selector: str = "",
        limit: int = 0,
        cont: str = "",
    ) -> Obj:
        """A ``<Kind>List`` with selectors and limit/continue applied."""
        lreqs = parse_label_selector(label_selector) if label_selector else []
        freqs = parse_field_selector(field_selector, rt.plural) if field_selector else []
        start = ""
        if cont:
            try:
                token = orjson.loads(base64.b64decode(cont))
                start = str(token["start"])
            except Exception:
                raise errors.bad_request(f"invalid continue token: {cont}") from None
        with self.lock:
            items = self.store.items(rt.key, ns if rt.namespaced else None)
            rv = str(self.store.rv)
        if lreqs:
            items = [o for o in items if labels_match(lreqs, o["metadata"].get("labels") or {})]
        if freqs:
            items = [o for o in items if fields_match(freqs, o)]
        if start:
            items = [o for o in items if _sort_key(o) > start]
        meta: Obj = {"resourceVersion": rv}
        if limit and len(items) > limit:
            remaining = len(items) - limit
            items = items[:limit]
            meta["continue"] = base64.b64encode(
                orjson.dumps({"v": "meta.k8s.io/v1", "rv": int(rv), "start": _sort_key(items[-1])})
            ).decode()
            if not lreqs and not freqs:
                meta["remainingItemCount"] = remaining
        if rt.custom:
            if any(o.get("apiVersion") != rt.api_version for o in items):
                items = [self._view(rt, o) for o in items]
        else:
            # typed lists of a real server carry no kind/apiVersion on their items (watch events do)
            items = [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")} for o in items]
        return {"kind": f"{rt.kind}List", "apiVersion": rt.api_version, "metadata": meta, "items": items}

    # ---- create ------------------------------------------------------------------------------------
    def decode(self, rt: ResourceType, body: Any, strict: bool = False) -> Obj:
        """Decode a request body into the Kind (400 on a type mismatch, unknown fields dropped)."""
        if not isinstance(body, dict):
            raise errors.bad_request(
                f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: json: cannot unmarshal '  # noqa: E501
                f"{type(body).__name__} into Go value of type {rt.kind}"
            )
        if rt.custom:
            return prune(rt, body)
        if rt.model is None:
            return body
        decoder = Decoder(strict=strict)
        try:
            out = decoder.decode(body, rt.model)
        except DecodeError as exc:
            raise errors.bad_request(
                f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: {exc}'
            ) from None
        if strict and decoder.unknown:
            fields = ", ".join(f'unknown field "{f}"' for f in decoder.unknown)
            raise errors.bad_request(f"strict decoding error: {fields}")
        return out

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
        decoded = self.decode(rt, body, strict)
        if rt.key in REVIEWS:
            return _review(rt, decoded)
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
            validation.secret_data(obj)
        with self.lock:
            if rt.namespaced:
                self._admit_namespace(rt, ns, meta.get("name") or "")
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
                obj["status"] = deepcopy(_INITIAL_STATUS.get(rt.key, {}))
            if rt.key == ("", "namespaces") and obj.get("spec") is None:
                obj["spec"] = {}
            self._default(rt, obj)
            if rt.key == ("", "pods"):
                defaults.pod_admission(obj)
                self._admit_pod(obj)
            if rt.key == ("", "persistentvolumeclaims"):  # StorageObjectInUseProtection admission
                fins = meta.setdefault("finalizers", [])
                if "kubernetes.io/pvc-protection" not in fins:
                    fins.append("kubernetes.io/pvc-protection")
            errs = validation.metadata(obj, rt.key, rt.custom)
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
                self._allocate_service(obj, None, dry_run)
            if dry_run:
                return obj
            stored = self.store.commit(rt.key, obj, None)
        if rt.key == ("", "namespaces") and self.on_namespace_created is not None:
            self.on_namespace_created(stored)
        return stored

    def _admit_namespace(self, rt: ResourceType, ns: str, name: str) -> None:
        nsobj = self.store.get(("", "namespaces"), "", ns)
        if nsobj is None:
            raise errors.not_found("namespaces", "", ns)
        if nsobj["metadata"].get("deletionTimestamp") and rt.key not in (("", "events"),):
            raise errors.forbidden(
                rt.plural,
                rt.group,
                name,
                f'{rt.plural} "{name}" is forbidden: unable to create new content in namespace {ns} because it '  # noqa: E501
                "is being terminated",
                [
                    errors.cause(
                        "metadata.namespace", "NamespaceTerminating", f"namespace {ns} is being terminated"
                    )
                ],
            )

    def _admit_pod(self, obj: Obj) -> None:
        ns = obj["metadata"]["namespace"]
        sa = obj["spec"].get("serviceAccountName") or "default"
        if self.store.get(("", "serviceaccounts"), ns, sa) is None:
            name = obj["metadata"].get("name") or ""
            raise errors.forbidden(
                "pods",
                "",
                name,
                f'pods "{name}" is forbidden: error looking up service account {ns}/{sa}: serviceaccount "{sa}" '  # noqa: E501
                "not found",
            )

    def _default(self, rt: ResourceType, obj: Obj) -> None:
        fn = defaults.DEFAULTERS.get(rt.key)
        if fn is not None:
            fn(obj)

    def _validate(self, rt: ResourceType, obj: Obj, old: Obj | None) -> list[FieldError]:
        if rt.custom:
            return validate_custom(rt, obj)
        fn = validation.VALIDATORS.get(rt.key)
        return fn(obj, old) if fn is not None else []

    # ---- service allocations -------------------------------------------------------------------------
    def _allocate_service(self, obj: Obj, old: Obj | None, dry_run: bool) -> None:
        spec = obj["spec"]
        stype = spec.get("type", "ClusterIP")
        errs: list[FieldError] = []
        used_ips: set[str] = set()
        used_ports: set[int] = set()
        for svc in self.store.items(("", "services"), None):
            if old is not None and svc["metadata"]["uid"] == old["metadata"]["uid"]:
                continue
            s = svc.get("spec") or {}
            used_ips.update(s.get("clusterIPs") or [])
            for p in s.get("ports") or []:
                if p.get("nodePort"):
                    used_ports.add(int(p["nodePort"]))
            if s.get("healthCheckNodePort"):
                used_ports.add(int(s["healthCheckNodePort"]))
        if stype == "ExternalName":
            spec.pop("clusterIP", None)
            spec.pop("clusterIPs", None)
        else:
            ip = spec.get("clusterIP") or (spec.get("clusterIPs") or [None])[0]
            if ip == "None":
                spec["clusterIP"] = "None"
                spec["clusterIPs"] = ["None"]
            elif ip:
                if ip.rsplit(".", 1)[0] != self.service_cidr_base:
                    errs.append(
                        FieldError(
                            "spec.clusterIPs",
                            "Invalid",
                            [ip],
                            f"failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The "  # noqa: E501
                            f"range of valid IPs is {self.service_cidr_base}.0/24",
                        )
                    )
                elif ip in used_ips:
                    errs.append(
                        FieldError(
                            "spec.clusterIPs",
                            "Invalid",
                            [ip],
                            f"failed to allocate IP {ip}: provided IP is already allocated",
                        )
                    )
                spec["clusterIP"] = ip
                spec["clusterIPs"] = [ip]
            else:
                for i in range(2, 255):
                    cand = f"{self.service_cidr_base}.{i}"
                    if cand not in used_ips:
                        spec["clusterIP"] = cand
                        spec["clusterIPs"] = [cand]
                        break
                else:
                    raise ApiError(500, "InternalError", "Internal error occurred: range is full")
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
        next_port = NODE_PORT_RANGE[0]

        def take() -> int:
            nonlocal next_port
            while next_port in used_ports:
                next_port += 1
            used_ports.add(next_port)
            return next_port

        if stype in ("NodePort", "LoadBalancer"):
            alloc_ports = stype == "NodePort" or spec.get("allocateLoadBalancerNodePorts", True)
            for i, p in enumerate(spec.get("ports") or []):
                np = p.get("nodePort")
                if np:
                    if not NODE_PORT_RANGE[0] <= int(np) <= NODE_PORT_RANGE[1]:
                        errs.append(
                            FieldError(
                                f"spec.ports[{i}].nodePort",
                                "Invalid",
                                np,
                                "provided port is not in the valid range. The range of valid ports is 30000-32767",  # noqa: E501
                            )
                        )
                    elif int(np) in used_ports and not (old and _node_ports(old).get(i) == np):
                        errs.append(
                            FieldError(
                                f"spec.ports[{i}].nodePort",
                                "Invalid",
                                np,
                                "provided port is already allocated",
                            )
                        )
                    used_ports.add(int(np))
                elif alloc_ports:
                    p["nodePort"] = take()
            local_lb = spec.get("externalTrafficPolicy") == "Local" and stype == "LoadBalancer"
            if local_lb and not spec.get("healthCheckNodePort"):
                spec["healthCheckNodePort"] = take()
        else:
            for p in spec.get("ports") or []:
                p.pop("nodePort", None)
        if errs:
            raise errors.invalid("Service", "", obj["metadata"]["name"], errs)

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
        new = self.decode(rt, body, strict)
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
            validation.secret_data(new)
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
        ctype = content_type.split(";")[0].strip().lower()
        accepted = [
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/apply-patch+yaml",
        ]
        if not rt.custom:
            accepted.append("application/strategic-merge-patch+json")
        if ctype not in accepted:
            raise errors.unsupported_media_type(accepted)
        if force and ctype != "application/apply-patch+yaml":
            raise errors.invalid(
                "PatchOptions",
                "meta.k8s.io",
                "",
                [FieldError("force", "Forbidden", None, "may not be specified for non-apply patch")],
            )
        if ctype == "application/apply-patch+yaml":
            if not field_manager:
                raise errors.invalid(
                    "PatchOptions",
                    "meta.k8s.io",
                    "",
                    [FieldError("fieldManager", "Required", None, "is required for apply patch")],
                )
            try:
                patch = yaml.safe_load(raw.decode() or "{}")
            except yaml.YAMLError as exc:
                raise errors.bad_request(f"error decoding YAML: {exc}") from None
            if not isinstance(patch, dict):
                raise errors.bad_request("error decoding YAML: the applied configuration is not an object")
            if subresource is None and patch.get("apiVersion") != rt.api_version:
                raise errors.bad_request(
                    "Incorrect version specified in apply patch. Specified patch version: "
                    f"{patch.get('apiVersion') or ''}, expected: {rt.api_version}"
                )
        else:
            try:
                patch = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise errors.bad_request("unexpected end of JSON input" if raw.strip() else "EOF") from None
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
                current: Obj = self.scale_of(rt, old)
            else:
                current = self._view(rt, old)
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
            if rt.model is not None:
                decoder = Decoder(strict=strict)
                try:
                    new = decoder.decode(new, rt.model)
                except DecodeError as exc:
                    detail = (
                        "cannot convert int64 to string"
                        if ctype == "application/strategic-merge-patch+json"
                        and "number" in str(exc)
                        and "of type string" in str(exc)
                        else str(exc)
                    )
                    # the real server echoes the patch; a Secret's patch is not echoed (secret data)
                    shown = (
                        '"<redacted>"' if rt.key == ("", "secrets") else orjson.dumps(raw.decode()).decode()
                    )
                    body = f"Invalid value: {shown}: {detail}"
                    raise ApiError(
                        422,
                        "Invalid",
                        f' "" is invalid: patch: {body}',
                        {"causes": [errors.cause("patch", "FieldValueInvalid", body)]},
                    ) from None
                if strict and decoder.unknown:
                    raise errors.bad_request(
                        "strict decoding error: " + ", ".join(f'unknown field "{f}"' for f in decoder.unknown)
                    )
            if rt.key == ("", "secrets"):
                validation.secret_data(new)
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
            errs = validation.service_status(new) if rt.key == ("", "services") else []
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
                _keep_allocations(new, old)
            self._default(rt, new)
            errs = validation.metadata(new, rt.key, rt.custom) + self._validate(rt, new, old)
            if errs:
                raise errors.invalid(rt.kind, rt.group, name, errs)
        if not applied:
            self._record_update(rt, old, new, manager, via or subresource, sent_fields)
        if subresource != "status" and rt.key == ("", "services"):
            self._allocate_service(new, old, dry_run)
        if _same(new, old):
            return self._view(rt, old)
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
    def scale_of(self, rt: ResourceType, obj: Obj) -> Obj:
        """The autoscaling/v1 Scale view of a scalable object."""
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        if rt.scale_paths is not None:
            spec_path, status_path, sel_path = rt.scale_paths
            replicas = _get_path(obj, spec_path)
            sreplicas = _get_path(obj, status_path) or 0
            selector = _get_path(obj, sel_path) if sel_path else None
        else:
            replicas = spec.get("replicas")
            sreplicas = status.get("replicas", 0)
            sel = spec.get("selector")
            selector = (
                selector_string(sel)
                if isinstance(sel, dict) and rt.key != ("", "replicationcontrollers")
                else (",".join(f"{k}={v}" for k, v in sorted((sel or {}).items())) if sel else None)
            )
        meta = obj["metadata"]
        scale: Obj = {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in meta
            },
            "spec": {"replicas": replicas} if replicas is not None else {},
            "status": {"replicas": sreplicas},
        }
        if selector:
            scale["status"]["selector"] = selector
        return scale

    def get_scale(self, rt: ResourceType, ns: str, name: str) -> Obj:
        """GET ``/scale``."""
        obj = self.store.get(rt.key, ns, name)
        if obj is None:
            raise errors.not_found(rt.plural, rt.group, name)
        return self.scale_of(rt, obj)

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
        replicas = (scale.get("spec") or {}).get("replicas", 0)
        name = old["metadata"]["name"]
        if not isinstance(replicas, int) or isinstance(replicas, bool):
            raise errors.bad_request(
                'Scale in version "v1" cannot be handled as a Scale: json: cannot unmarshal '
                "string into Go struct field ScaleSpec.spec.replicas of type int32"
            )
        if replicas < 0:
            raise errors.invalid(
                "Scale",
                "autoscaling",
                name,
                [FieldError("spec.replicas", "Invalid", replicas, "must be greater than or equal to 0")],
            )
        new = deepcopy(old)
        if rt.scale_paths is not None:
            _set_path(new, rt.scale_paths[0], replicas)
        else:
            new.setdefault("spec", {})["replicas"] = replicas
        out = self._write(rt, old, new, None, dry_run, manager=manager, via="scale")
        result = self.scale_of(rt, out)
        result["status"] = self.scale_of(rt, old)["status"]
        return result

    # ---- delete ------------------------------------------------------------------------------------
    def delete(self, rt: ResourceType, ns: str, name: str, opts: DeleteOptions) -> tuple[Obj, bool]:
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
        with self.lock:
            old = self.store.get(rt.key, ns if rt.namespaced else "", name)
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
                        new = self.store.commit(rt.key, new, old)
                return self._view(rt, new), True
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
                    self._add_gc_finalizer(rt, nmeta, opts)
                    if opts.dry_run:
                        return new, True
                    if nmeta.get("finalizers") or grace > 0:
                        return self.store.commit(rt.key, new, old), True
                    return self.store.remove(rt.key, new), True
            self._add_gc_finalizer(rt, nmeta, opts)
            if nmeta.get("finalizers"):
                if not nmeta.get("deletionTimestamp"):
                    nmeta["deletionTimestamp"] = now()
                    nmeta["deletionGracePeriodSeconds"] = 0
                if opts.dry_run:
                    return self._view(rt, new), True
                if _same(new, old):
                    return self._view(rt, old), True
                return self._view(rt, self.store.commit(rt.key, new, old)), True
            if opts.dry_run:  # noqa: SIM108
                final = new
            else:
                final = self.store.remove(rt.key, new)
            if rt.key in _RETURN_DELETED:
                return self._view(rt, final), True
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

    def _add_gc_finalizer(self, rt: ResourceType, nmeta: Obj, opts: DeleteOptions) -> None:
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

    def delete_collection(
        self, rt: ResourceType, ns: str | None, label_selector: str, field_selector: str, opts: DeleteOptions
    ) -> Obj:
        """DELETE on a collection: delete every match; answer the list of what was deleted."""
        listing = self.list_objects(rt, ns, label_selector, field_selector)
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


# What a zero-valued Go status struct serialises to (fields without omitempty).
_INITIAL_STATUS: dict[tuple[str, str], Obj] = {
    ("apps", "statefulsets"): {"replicas": 0, "availableReplicas": 0},
    ("apps", "replicasets"): {"replicas": 0},
    ("", "replicationcontrollers"): {"replicas": 0},
    ("", "services"): {"loadBalancer": {}},
    ("apps", "daemonsets"): {
        "currentNumberScheduled": 0,
        "numberMisscheduled": 0,
        "desiredNumberScheduled": 0,
        "numberReady": 0,
    },
    ("policy", "poddisruptionbudgets"): {
        "disruptionsAllowed": 0,
        "currentHealthy": 0,
        "desiredHealthy": 0,
        "expectedPods": 0,
    },
}


def _review(rt: ResourceType, body: Obj) -> Obj:
    """Answer an access/rules/self review: everything is allowed for the sandbox's single admin user."""
    out: Obj = {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": {"creationTimestamp": None}}
    out["spec"] = body.get("spec") or {}
    if rt.plural == "selfsubjectreviews":
        out.pop("spec")
        out["status"] = {
            "userInfo": {"username": "admin", "groups": ["system:masters", "system:authenticated"]}
        }
    elif rt.plural == "selfsubjectrulesreviews":
        out["status"] = {
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": False,
        }
    else:
        out["status"] = {"allowed": True, "reason": "the stateferry sandbox authorizes every request"}
    return out


def field_schema(rt: ResourceType) -> fieldmanager.Schema:
    """The field-ownership schema of a resource type."""
    crd = rt.crd_schemas.get("schema") if rt.custom and rt.crd_schemas else None
    return fieldmanager.Schema(rt.kind, rt.custom, rt.has_status, crd if isinstance(crd, dict) else None)


def should_remove(key: tuple[str, str], obj: Obj) -> bool:
    """An object being deleted goes once no finalizer is left and its grace period is over."""
    meta = obj["metadata"]
    if not meta.get("deletionTimestamp") or meta.get("finalizers"):
        return False
    if key == ("", "namespaces") and (obj.get("spec") or {}).get("finalizers"):
        return False
    return not meta.get("deletionGracePeriodSeconds")


def _sort_key(obj: Obj) -> str:
    meta = obj["metadata"]
    return f"{meta.get('namespace', '')}/{meta['name']}"


def _same(new: Obj, old: Obj) -> bool:
    a = dict(
        new,
        metadata={k: v for k, v in new["metadata"].items() if k != "resourceVersion"},
    )
    b = dict(
        old,
        metadata={k: v for k, v in old["metadata"].items() if k != "resourceVersion"},
    )
    return a == b


def _spec_changed(rt: ResourceType, new: Obj, old: Obj) -> bool:
    if rt.custom:
        strip = ("metadata", "status")
        return {k: v for k, v in new.items() if k not in strip} != {
            k: v for k, v in old.items() if k not in strip
        }
    return new.get("spec") != old.get("spec")


def _node_ports(svc: Obj) -> dict[int, Any]:
    return {i: p.get("nodePort") for i, p in enumerate((svc.get("spec") or {}).get("ports") or [])}


def _keep_allocations(new: Obj, old: Obj) -> None:
    """An update that omits clusterIP / nodePorts keeps the allocated ones (as the real server does)."""
    spec = new.setdefault("spec", {})
    ospec = old.get("spec") or {}
    if spec.get("type", "ClusterIP") != "ExternalName" and ospec.get("type", "ClusterIP") != "ExternalName":
        if not spec.get("clusterIP") and ospec.get("clusterIP"):
            spec["clusterIP"] = ospec["clusterIP"]
        same_ip = spec.get("clusterIP") in (None, ospec.get("clusterIP"))
        if not spec.get("clusterIPs") and ospec.get("clusterIPs") and same_ip:
            spec["clusterIPs"] = list(ospec["clusterIPs"])
    old_ports = {
        (p.get("port"), p.get("protocol", "TCP")): p.get("nodePort") for p in ospec.get("ports") or []
    }
    for p in spec.get("ports") or []:
        if isinstance(p, dict) and not p.get("nodePort"):
            np = old_ports.get((p.get("port"), p.get("protocol", "TCP")))
            if np and spec.get("type") in ("NodePort", "LoadBalancer"):
                p["nodePort"] = np
    local = spec.get("externalTrafficPolicy") == "Local"
    if local and not spec.get("healthCheckNodePort") and ospec.get("healthCheckNodePort"):
        spec["healthCheckNodePort"] = ospec["healthCheckNodePort"]


def _get_path(obj: Obj, path: str | None) -> Any:
    if not path:
        return None
    cur: Any = obj
    for part in path.lstrip(".").split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def _set_path(obj: Obj, path: str, value: Any) -> None:
    parts = path.lstrip(".").split(".")
    cur = obj
    for part in parts[:-1]:
        cur = cur.setdefault(part, {})
    cur[parts[-1]] = value
