"""A pod's ``securityContext`` as the kubelet and the container runtime apply it.

- user and group: ``runAsUser``/``runAsGroup`` (container over pod), else the image's user
  (the project's image runs as 10001:10001 like its Dockerfile's ``USER``; etcd images as root);
  ``runAsNonRoot`` with uid 0 -> CreateContainerConfigError;
- supplementary groups: ``supplementalGroups`` plus ``fsGroup``;
- capabilities: the runtime's default set, ``drop``/``add`` (``ALL`` allowed), everything when
  ``privileged``; a non-root process has none in effect (no ambient capabilities);
- ``allowPrivilegeEscalation: false`` -> no_new_privs;
- ``fsGroup`` on writable PVC and emptyDir volumes: group-owned by fsGroup, ``g+rw`` (+``x`` and
  setgid on directories), recursively, skipped with ``fsGroupChangePolicy: OnRootMismatch`` when the
  root already matches (the kubelet's ``SetVolumeOwnership``).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from sandbox.runtime.podplan import DEFAULT_CAPS, Identity

IMAGE_USERS = {"project": (10001, 10001), "etcd": (0, 0), "none": (0, 0)}
ALL_CAPS = [
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYSLOG",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "WAKE_ALARM",
]


class SecurityConfigError(Exception):
    """The securityContext cannot be satisfied (CreateContainerConfigError)."""


def _cap(name: Any) -> str:
    return str(name).upper().removeprefix("CAP_")


def container_identity(pod: dict[str, Any], container: dict[str, Any], kind: str) -> Identity:
    """The identity a container's processes get (see the module docstring)."""
    psc = (pod.get("spec") or {}).get("securityContext") or {}
    csc = container.get("securityContext") or {}
    img_uid, img_gid = IMAGE_USERS.get(kind, (0, 0))
    uid = int(csc.get("runAsUser", psc.get("runAsUser", img_uid)))
    gid = int(csc.get("runAsGroup", psc.get("runAsGroup", img_gid if uid == img_uid else 0)))
    if csc.get("runAsNonRoot", psc.get("runAsNonRoot")) and uid == 0:
        name = (pod.get("metadata") or {}).get("name")
        raise SecurityConfigError(
            f"container has runAsNonRoot and image will run as root (pod: {name!r}, container: "
            f"{container.get('name')})"
        )
    groups = {int(g) for g in psc.get("supplementalGroups") or []}
    if psc.get("fsGroup") is not None:
        groups.add(int(psc["fsGroup"]))
    caps: tuple[str, ...] | None
    if csc.get("privileged"):
        caps = None
    else:
        wanted = (csc.get("capabilities") or {}) if isinstance(csc.get("capabilities"), dict) else {}
        drop = {_cap(c) for c in wanted.get("drop") or []}
        add = {_cap(c) for c in wanted.get("add") or []}
        have = set() if "ALL" in drop else set(DEFAULT_CAPS) - drop
        have |= set(ALL_CAPS) if "ALL" in add else add & set(ALL_CAPS)
        caps = tuple(sorted(have))
    return Identity(
        uid=uid,
        gid=gid,
        groups=tuple(sorted(groups)),
        caps=caps,
        no_new_privs=csc.get("allowPrivilegeEscalation") is False,
    )


def _needs_change(root: Path, gid: int, read_only: bool) -> bool:
    st = os.lstat(root)
    mask = (0o440 if read_only else 0o660) | 0o110 | stat.S_ISGID
    return st.st_gid != gid or (st.st_mode & mask) != mask


def apply_fs_group(root: Path, gid: int, *, read_only: bool = False, policy: str = "Always") -> None:
    """Give a volume to ``fsGroup`` like the kubelet's ``SetVolumeOwnership``."""
    if policy == "OnRootMismatch" and not _needs_change(root, gid, read_only):
        return
    mask = 0o440 if read_only else 0o660
    for dirpath, dirnames, filenames in os.walk(root):
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        for p in [dirpath, *(os.path.join(dirpath, n) for n in [*filenames, *links])]:
            st = os.lstat(p)
            os.lchown(p, -1, gid)
            if stat.S_ISLNK(st.st_mode):
                continue
            extra = 0o110 | stat.S_ISGID if stat.S_ISDIR(st.st_mode) else 0
            os.chmod(p, stat.S_IMODE(st.st_mode) | mask | extra)
