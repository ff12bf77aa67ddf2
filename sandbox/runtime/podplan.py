"""What the kubelet hands the pod runtime: the pod plan, its containers, mounts and the identity
(securityContext) each container's processes run with."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sandbox.runtime.probes import Probe

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Mount:
    """A bind mount inside the pod: host ``source`` appears at ``target``."""

    source: str
    target: str
    read_only: bool = False


#: capabilities a container runtime (containerd, CRI-O) gives a container by default
DEFAULT_CAPS = (
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "NET_RAW",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
)


@dataclass(frozen=True)
class Identity:
    """The user, groups and capabilities a container's processes run with (``securityContext``).

    ``caps`` is the bounding set (None = every capability, ``privileged``); a root process gets
    exactly these, a non-root process none (no ambient capabilities, as with containerd).
    """

    uid: int = 0
    gid: int = 0
    groups: tuple[int, ...] = ()
    caps: tuple[str, ...] | None = DEFAULT_CAPS
    no_new_privs: bool = False

    def argv(self) -> list[str]:
        """``setpriv`` prefix that switches to this identity before exec."""
        out = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}"]
        out.append(f"--groups={','.join(map(str, self.groups))}" if self.groups else "--clear-groups")
        if self.caps is not None:
            out += [
                "--inh-caps=-all",
                "--bounding-set=" + ",".join(["-all", *(f"+{c.lower()}" for c in self.caps)]),
            ]
        if self.no_new_privs:
            out.append("--no-new-privs")
        return [*out, "--"]


@dataclass
class ContainerPlan:
    """What to run for one container.

    Attributes:
        name: container name.
        image: image reference (only informational).
        argv: command + args; empty for containers without a process (Running at once).
        env: the complete environment of the process.
        cwd: working directory inside the pod.
        readiness / liveness / startup: probes or None.
    """

    name: str
    image: str
    argv: list[str]
    env: dict[str, str]
    cwd: str = "/"
    readiness: Probe | None = None
    liveness: Probe | None = None
    startup: Probe | None = None
    probe_env: dict[str, str] = field(default_factory=dict)
    identity: Identity | None = None  # None: the sandbox's own user (root, every capability)
    exec_identity: Identity | None = None  # pods/exec: the securityContext even without a process


@dataclass
class PodPlan:
    """Everything the runtime needs to run a pod."""

    uid: str
    namespace: str
    name: str
    hostname: str
    pod_ip: str
    pod_dir: Path
    hosts_file: Path
    resolv_file: Path
    mounts: list[Mount]
    containers: list[ContainerPlan]
    restart_policy: str = "Always"
    init_containers: list[ContainerPlan] = field(default_factory=list)
    marker: str = ""
    extra_bin_links: dict[str, str] = field(default_factory=dict)
