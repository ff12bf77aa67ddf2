"""PVC -> PV binding with dynamic provisioning of a directory per volume."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from sandbox.runtime.events import emit
from sandbox.runtime.kube import Kube, Obj
from sandbox.runtime.objects import meta, name_of, ns_of, terminating, uid_of
from sandbox.runtime.world import World

log = logging.getLogger(__name__)

PROVISIONER = "sandbox.stateferry.io/hostpath"
DEFAULT_STORAGE_CLASS = "standard"
PV_PROTECTION = "kubernetes.io/pv-protection"


def default_storage_class() -> Obj:
    """The cluster's default StorageClass (created at startup)."""
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": DEFAULT_STORAGE_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }


def sync_volumes(kube: Kube, world: World, pv_root: Path) -> None:
    """Provision and bind PVs for pending claims; release / delete PVs whose claim is gone."""
    pvs = {name_of(pv): pv for pv in world["persistentvolumes"]}
    claims = {uid_of(c): c for c in world["persistentvolumeclaims"]}
    for pvc in world["persistentvolumeclaims"]:
        try:
            if terminating(pvc):
                continue  # the apiserver's pvc-protection controller lets it go once no pod mounts it
            _bind(kube, pvc, pvs, pv_root)
        except Exception as exc:
            log.warning("pvc %s/%s: %s", ns_of(pvc), name_of(pvc), exc)
    for pv in world["persistentvolumes"]:
        try:
            _reclaim(kube, pv, claims, pv_root)
        except Exception as exc:
            log.warning("pv %s: %s", name_of(pv), exc)


def _bind(kube: Kube, pvc: Obj, pvs: dict[str, Obj], pv_root: Path) -> None:
    spec = pvc.get("spec") or {}
    status = pvc.get("status") or {}
    pv_name = spec.get("volumeName") or f"pvc-{uid_of(pvc)}"
    pv = pvs.get(pv_name)
    if pv is None and spec.get("volumeName"):
        return  # pre-bound to a PV that does not exist (yet): stays Pending, as in a real cluster
    storage = str(((spec.get("resources") or {}).get("requests") or {}).get("storage") or "1Gi")
    modes = spec.get("accessModes") or ["ReadWriteOnce"]
    sc = spec.get("storageClassName") or DEFAULT_STORAGE_CLASS
    if pv is None:
        path = pv_root / pv_name
        path.mkdir(parents=True, exist_ok=True)
        body = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {
                "name": pv_name,
                "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
                "finalizers": [PV_PROTECTION],
            },
            "spec": {
                "capacity": {"storage": storage},
                "accessModes": modes,
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": sc,
                "volumeMode": spec.get("volumeMode") or "Filesystem",
                "hostPath": {"path": str(path), "type": "Directory"},
                "claimRef": {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "namespace": ns_of(pvc),
                    "name": name_of(pvc),
                    "uid": uid_of(pvc),
                },
            },
        }
        created = kube.create("persistentvolumes", None, body, exist_ok=True)
        if created is not None:
            emit(
                kube,
                pvc,
                "ProvisioningSucceeded",
                f"Successfully provisioned volume {pv_name}",
                component=f"{PROVISIONER}_sandbox",
                kind="PersistentVolumeClaim",
                api_version="v1",
            )
        pv = created or kube.get("persistentvolumes", None, pv_name)
        if pv is None:
            return
    if ((pv.get("status") or {}).get("phase")) != "Bound":
        kube.patch("persistentvolumes", None, pv_name, {"status": {"phase": "Bound"}}, sub="status")
    if spec.get("volumeName") != pv_name:
        kube.patch(
            "persistentvolumeclaims",
            ns_of(pvc),
            name_of(pvc),
            {
                "metadata": {
                    "annotations": {
                        "pv.kubernetes.io/bind-completed": "yes",
                        "pv.kubernetes.io/bound-by-controller": "yes",
                        "volume.beta.kubernetes.io/storage-provisioner": PROVISIONER,
                        "volume.kubernetes.io/storage-provisioner": PROVISIONER,
                    }
                },
                "spec": {"volumeName": pv_name},
            },
        )
    want: dict[str, Any] = {
        "phase": "Bound",
        "accessModes": modes,
        "capacity": {"storage": ((pv.get("spec") or {}).get("capacity") or {}).get("storage") or storage},
    }
    if {k: status.get(k) for k in want} != want:
        kube.patch("persistentvolumeclaims", ns_of(pvc), name_of(pvc), {"status": want}, sub="status")


def _reclaim(kube: Kube, pv: Obj, claims: dict[str, Obj], pv_root: Path) -> None:
    ref = (pv.get("spec") or {}).get("claimRef") or {}
    if not ref.get("uid") or ref.get("uid") in claims:
        return  # still claimed (pv-protection keeps a terminating PV until the claim is gone)
    policy = (pv.get("spec") or {}).get("persistentVolumeReclaimPolicy") or "Retain"
    if terminating(pv) or policy == "Delete":
        path = Path(((pv.get("spec") or {}).get("hostPath") or {}).get("path") or "")
        if path.is_relative_to(pv_root) and path != pv_root:
            shutil.rmtree(path, ignore_errors=True)
        if not terminating(pv):
            kube.delete("persistentvolumes", None, name_of(pv))
        fins = meta(pv).get("finalizers") or []
        if PV_PROTECTION in fins:
            kube.patch("persistentvolumes", None, name_of(pv), {"metadata": {"finalizers": None}})
    elif ((pv.get("status") or {}).get("phase")) != "Released":
        kube.patch("persistentvolumes", None, name_of(pv), {"status": {"phase": "Released"}}, sub="status")
