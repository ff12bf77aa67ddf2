"""A consistent-enough snapshot of a cluster's objects, listed at the start of each reconcile pass."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sandbox.runtime.kube import Kube, Obj
from sandbox.runtime.objects import controller_uid, name_of, ns_of

KINDS = (
    "pods",
    "services",
    "endpoints",
    "endpointslices",
    "persistentvolumeclaims",
    "persistentvolumes",
    "statefulsets",
    "controllerrevisions",
    "deployments",
    "replicasets",
    "daemonsets",
    "jobs",
    "cronjobs",
)


@dataclass
class World:
    """Lists of every kind the controllers reconcile, plus indexes."""

    objs: dict[str, list[Obj]] = field(default_factory=dict)

    @classmethod
    def load(cls, kube: Kube) -> World:
        """List every kind in :data:`KINDS` (all namespaces)."""
        return cls({kind: kube.list(kind)[0] for kind in KINDS})

    def __getitem__(self, kind: str) -> list[Obj]:
        return self.objs.get(kind, [])

    def owned(self, kind: str, owner_uid: str) -> list[Obj]:
        """Objects of ``kind`` whose controller owner has ``owner_uid``."""
        return [o for o in self[kind] if controller_uid(o) == owner_uid]

    def by_name(self, kind: str) -> dict[tuple[str, str], Obj]:
        """Objects of ``kind`` keyed by (namespace, name)."""
        return {(ns_of(o), name_of(o)): o for o in self[kind]}

    def by_owner(self, kind: str) -> dict[str, list[Obj]]:
        """Objects of ``kind`` grouped by controller owner uid."""
        out: dict[str, list[Obj]] = defaultdict(list)
        for o in self[kind]:
            uid = controller_uid(o)
            if uid:
                out[uid].append(o)
        return out
