"""The resource types one cluster serves: the built-in ones and those of Established CRDs, by
path and by (group, plural), with the served versions of every group."""

from __future__ import annotations

import threading

from sandbox.apiserver.crd import crd_resource_types
from sandbox.apiserver.resources import BUILTIN, ResourceType
from sandbox.apiserver.store import Obj


class TypeCatalog:
    """The served resource types of one cluster (the base of the registry)."""

    def __init__(self, lock: threading.RLock) -> None:
        self.lock = lock
        self.types: dict[tuple[str, str, str], ResourceType] = {}
        self.by_key: dict[tuple[str, str], ResourceType] = {}
        self.groups: dict[str, list[str]] = {}  # group -> served versions (preferred first)
        for rt in BUILTIN:
            self._add_type(rt)

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
