"""The pod sandbox: the setup script of the *holder* process that owns a pod's private mount (+UTS)
namespace — hostname, /etc/hosts, resolv.conf, /usr/local/bin, the volumes' bind mounts, the
stand-in image kept visible — and the ``nsenter`` command line that runs a process inside it."""

from __future__ import annotations

import itertools
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from sandbox.runtime.podplan import Identity, Mount, PodPlan

LOCAL_BIN_LINKS = {"etcd": "/usr/bin/etcd", "etcdctl": "/usr/bin/etcdctl"}


def mount_order(mounts: list[Mount]) -> list[Mount]:
    """Mounts in a safe order: one whose target hides another's source (an emptyDir on ``/tmp``
    while the sandbox's state lives under ``/tmp``) comes after it; parents before children."""

    def hides(m: Mount) -> bool:
        return any(o.source.startswith(m.target.rstrip("/") + "/") for o in mounts if o is not m)

    return sorted(mounts, key=lambda m: (hides(m), m.target.count("/") if hides(m) else 0))


#: The stand-in for the project image: the host's interpreter and this checkout (with its venv).
IMAGE_TREES = (Path(sys.base_prefix).resolve(), Path(__file__).resolve().parents[2])
#: A tmpfs of the pod's own mount namespace holding the image trees it re-exposes: never below a
#: directory that the setup is about to hide.
STASH_DIR = "/run/stateferry-sandbox-stash"
STASH_MOUNT = [f"mkdir -p {STASH_DIR}", f"mount -t tmpfs -o mode=0700,size=1m sandbox-stash {STASH_DIR}"]


def _image_for_everyone() -> list[str]:
    """Setup lines that let a non-root container run the stand-in image.

    The host's interpreter and this checkout may live below a directory only root can enter
    (``/root/.pyenv``, a ``mktemp -d`` clone). A real image's files are usable by its user, so in
    the pod's own mount namespace each such directory becomes a tmpfs (0755) holding only the
    image's trees. Needs :data:`STASH_MOUNT` first.
    """
    blocked: dict[Path, set[Path]] = {}
    for tree in IMAGE_TREES:
        chain = [*reversed(tree.parents), tree]
        for parent, child in itertools.pairwise(chain):
            if parent != Path("/") and not parent.stat().st_mode & 0o001:
                blocked.setdefault(parent, set()).add(child)
                break
    q = shlex.quote
    lines: list[str] = []
    for n, (parent, children) in enumerate(sorted(blocked.items(), key=lambda kv: len(kv[0].parts))):
        stashes = [(q(f"{STASH_DIR}/{n}-{m}"), child) for m, child in enumerate(sorted(children))]
        for stash, child in stashes:
            lines += [f"mkdir -p {stash}", f"mount --bind {q(str(child))} {stash}"]
        lines.append(f"mount -t tmpfs -o mode=0755,size=1m sandbox-image-{n} {q(str(parent))}")
        for stash, child in stashes:
            lines += [f"mkdir -p {q(str(child))}", f"mount --bind {stash} {q(str(child))}"]
    return lines


def _image_trees_hidden_by(targets: list[Path]) -> list[Path]:
    """The image trees that a volume mount would hide.

    A real image's files are never hidden by a volume mounted elsewhere (e.g. an emptyDir on
    ``/tmp``), but the stand-in image is the host's files: a checkout under ``/tmp`` would vanish
    under such a mount. The pod setup re-exposes these trees at their own paths after the mounts.
    """
    return [t for t in IMAGE_TREES if any(m == t or m in t.parents for m in targets)]


def setup_script(p: PodPlan) -> str:
    """The holder's shell script: set up the pod's mounts, print ``ready``, then sleep forever."""
    q = shlex.quote
    lines = ["set -e", f"hostname {q(p.hostname)}"]
    lines.append(f"mount --bind {q(str(p.hosts_file))} /etc/hosts")
    lines.append(f"mount --bind {q(str(p.resolv_file))} /etc/resolv.conf")
    # /usr/local/bin becomes a tmpfs with etcd/etcdctl, keeping links to what the host had there
    # (e.g. a python3 that the project's venv points to), seen through a private bind mount.
    host_bin = q(str(p.pod_dir / ".host-local-bin"))
    lines.append(f"mkdir -p {host_bin}")
    lines.append(f"mount --bind /usr/local/bin {host_bin}")
    lines.append("mount -t tmpfs -o mode=0755,size=1m sandbox-local-bin /usr/local/bin")
    lines.append(f"for f in {host_bin}/* {host_bin}/.[!.]*; do")
    lines.append('  if [ -e "$f" ]; then ln -s "$f" /usr/local/bin/; fi')
    lines.append("done")
    for name, target in {**LOCAL_BIN_LINKS, **p.extra_bin_links}.items():
        lines.append(f"ln -sf {q(target)} /usr/local/bin/{q(name)}")
    non_root = any(c.identity and c.identity.uid != 0 for c in p.containers + p.init_containers)
    readable = _image_for_everyone() if non_root else []
    hidden = _image_trees_hidden_by([Path(m.target) for m in p.mounts])
    if readable or hidden:
        lines += STASH_MOUNT
    lines += readable
    for n, tree in enumerate(hidden):
        lines += [
            f"mkdir -p {STASH_DIR}/hidden-{n}",
            f"mount --bind {q(str(tree))} {STASH_DIR}/hidden-{n}",
        ]
    for m in mount_order(p.mounts):
        # another pod may have removed a shared mount point since _ensure_mountpoints: recreate it
        if Path(m.source).is_dir():
            lines.append(f"[ -e {q(m.target)} ] || mkdir -p {q(m.target)}")
        else:
            parent = q(str(Path(m.target).parent))
            lines.append(f"[ -e {q(m.target)} ] || {{ mkdir -p {parent}; : > {q(m.target)}; }}")
        lines.append(f"mount --bind {q(m.source)} {q(m.target)}")
        if m.read_only:
            lines.append(f"mount -o remount,bind,ro {q(m.target)}")
    for n, tree in enumerate(hidden):
        lines += [f"mkdir -p {q(str(tree))}", f"mount --bind {STASH_DIR}/hidden-{n} {q(str(tree))}"]
    lines.append("echo ready")
    lines.append("exec sleep infinity")
    return "\n".join(lines) + "\n"


def nsenter_argv(holder_pid: int, cwd: str, identity: Identity | None, argv: Sequence[str]) -> list[str]:
    """The command line running ``argv`` in the pod's namespaces, in ``cwd``, as ``identity``."""
    as_user = identity.argv() if identity else []
    return ["nsenter", "-m", "-u", "-t", str(holder_pid), f"--wd={cwd}", "--", *as_user, *argv]
