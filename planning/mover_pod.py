"""The data-mover Job a real cluster accepts (pure: builds the manifest, no I/O).

Identity (``mover_security``):

- ``root`` (default): ``runAsUser: 0`` with every capability dropped except what the copy needs:
  ``DAC_READ_SEARCH`` to read any file (pack; the claim is mounted read-only), ``CHOWN``,
  ``DAC_OVERRIDE``, ``FOWNER``, ``FSETID`` to write owners, modes and times (fill). No privilege
  escalation, read-only root filesystem (``/tmp`` is an emptyDir).
- ``workload``: the ``runAsUser``/``runAsGroup``/``fsGroup``/``supplementalGroups`` of the pod that
  uses the claim (for clusters whose policy refuses root pods; the copy keeps only what that user
  may read and write), all capabilities dropped.
- ``image``: no securityContext, the image's unprivileged user (uid 10001) — what the first
  version did; it cannot read a database's 0700 data directory.

Placement: a ReadWriteOnce claim can only be mounted on the node where it is attached, so the
mover gets a required node affinity to the node of a running pod that uses the claim (none when
the workload is scaled down).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from planning.resources import FLOW_RUN_LABEL, MANAGED_BY_LABEL
from stateferry.errors import InputError

#: Image of the data-mover Jobs (GNU tar, sha256sum, the S3 client; see the Dockerfile).
WORKER_IMAGE = "stateferry/worker:latest"
MOUNT = "/stateferry-volume"
PACK_CAPS = ["DAC_READ_SEARCH"]
FILL_CAPS = ["CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID"]
TTL_SECONDS = 600
_IDENTITY_KEYS = ("runAsUser", "runAsGroup", "fsGroup", "supplementalGroups")


class MoverSecurity(enum.Enum):
    """Who the mover runs as (see the module docstring)."""

    ROOT = "root"
    WORKLOAD = "workload"
    IMAGE = "image"

    @classmethod
    def parse(cls, value: str, field_name: str) -> MoverSecurity:
        """Parse a flow parameter; raises :class:`InputError` naming the choices."""
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            raise InputError(
                field_name, f"is {value!r}", "use 'root' (default), 'workload' or 'image'"
            ) from None


@dataclass
class Placement:
    """Where and as whom the mover of one claim runs, from the pods that use the claim."""

    node: str = ""
    pod_security: dict[str, Any] = field(default_factory=dict)

    def identity(self, mode: MoverSecurity) -> dict[str, Any]:
        """The identity the mover pod gets (reported, and reused by the target's fill)."""
        if mode is MoverSecurity.ROOT:
            return {"runAsUser": 0, "runAsGroup": 0}
        if mode is MoverSecurity.WORKLOAD:
            return dict(self.pod_security)
        return {}


def pod_placement(pods: list[dict[str, Any]]) -> Placement:
    """The node and security identity of the pods using a claim (running ones first)."""
    ordered = sorted(
        pods, key=lambda p: ((p.get("status") or {}).get("phase") != "Running", p["metadata"]["name"])
    )
    out = Placement()
    for pod in ordered:
        spec = pod.get("spec") or {}
        if not out.node and (pod.get("status") or {}).get("phase") == "Running":
            out.node = str(spec.get("nodeName") or "")
        if not out.pod_security:
            sc = {k: v for k, v in (spec.get("securityContext") or {}).items() if k in _IDENTITY_KEYS}
            for c in spec.get("containers") or []:  # a container's own runAsUser/runAsGroup win
                csc = c.get("securityContext") or {}
                sc.update({k: csc[k] for k in ("runAsUser", "runAsGroup") if k in csc})
                break
            out.pod_security = sc
    return out


def _security(
    mode: MoverSecurity, placement: Placement, write: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    if mode is MoverSecurity.IMAGE:
        return {}, {}
    container: dict[str, Any] = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True}
    if mode is MoverSecurity.ROOT:
        container["capabilities"] = {"drop": ["ALL"], "add": FILL_CAPS if write else PACK_CAPS}
        return {"runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": False}, container
    container["capabilities"] = {"drop": ["ALL"]}
    pod = dict(placement.pod_security)
    if "fsGroup" in pod:
        pod["fsGroupChangePolicy"] = "OnRootMismatch"
    if pod.get("runAsUser") not in (None, 0):
        pod["runAsNonRoot"] = True
    return pod, container


def mover_job_body(
    name: str,
    ns: str,
    pvc: str,
    args: list[str],
    endpoint: str,
    region: str,
    image: str,
    run_id: str,
    secret: str,
    *,
    mode: MoverSecurity = MoverSecurity.ROOT,
    placement: Placement | None = None,
    write: bool = False,
    timeout: float = 600.0,
) -> dict[str, Any]:
    """The suspended data-mover Job (started once its credentials Secret exists)."""
    placement = placement or Placement()

    def secret_env(var: str, key: str) -> dict[str, Any]:
        return {"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}

    labels = {MANAGED_BY_LABEL: "stateferry", FLOW_RUN_LABEL: run_id[:63], "stateferry.io/mover": "volume"}
    pod_sc, container_sc = _security(mode, placement, write)
    container: dict[str, Any] = {
        "name": "mover",
        "image": image,
        "command": ["python", "-m", "stateferry.worker.volume", *args],
        "env": [
            {"name": "STATEFERRY_S3_ENDPOINT", "value": endpoint},
            {"name": "STATEFERRY_S3_REGION", "value": region},
            secret_env("STATEFERRY_S3_ACCESS_KEY", "access_key"),
            secret_env("STATEFERRY_S3_SECRET_KEY", "secret_key"),
        ],
        "volumeMounts": [
            {"name": "data", "mountPath": MOUNT, "readOnly": not write},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    if container_sc:
        container["securityContext"] = container_sc
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": pvc, "readOnly": not write}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    if pod_sc:
        pod_spec["securityContext"] = pod_sc
    if placement.node:
        pod_spec["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchFields": [
                                {"key": "metadata.name", "operator": "In", "values": [placement.node]}
                            ]
                        }
                    ]
                }
            }
        }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "suspend": True,
            "backoffLimit": 0,
            "activeDeadlineSeconds": int(timeout) + 60,
            "ttlSecondsAfterFinished": TTL_SECONDS,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def mover_secret_name(body: dict[str, Any]) -> str:
    """Name of the credentials Secret a mover Job refers to."""
    for env in body["spec"]["template"]["spec"]["containers"][0]["env"]:
        ref = (env.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            return str(ref["name"])
    raise ValueError("mover Job without a credentials Secret")
