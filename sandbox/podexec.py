"""Run a command inside a sandbox pod from the host, like ``kubectl exec`` without the API
(the API server's ``pods/exec`` is ``sandbox/apiserver/wsexec.py``)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from sandbox.runtime.podplan import DEFAULT_PATH
from sandbox.runtime.processes import POD_MARKER_ENV, SANDBOX_MARKER_ENV, etcdctl_env


class PodNotRunning(RuntimeError):
    """The pod is not running in the sandbox (unknown, or its sandbox process is gone)."""


def sandbox_id(state_dir: Path) -> str:
    """The sandbox marker of a state dir (see :func:`sandbox.cluster.sandbox_id`)."""
    from sandbox.cluster import sandbox_id as _sandbox_id

    return _sandbox_id(state_dir)


def pod_info(state_dir: Path, cluster: str, namespace: str, name: str) -> dict[str, object]:
    """Return the kubelet's record of a running pod: uid, pod_dir, holder_pid, pod_ip."""
    index_file = Path(state_dir) / cluster / "pods" / "index.json"
    try:
        index = json.loads(index_file.read_text())
    except (OSError, ValueError) as exc:
        raise PodNotRunning(
            f"no pods are running in cluster {cluster!r} of the sandbox in {state_dir}"
        ) from exc
    info = index.get(f"{namespace}/{name}")
    if not info or not info.get("holder_pid"):
        raise PodNotRunning(f"pod {namespace}/{name} is not running in cluster {cluster!r}")
    return dict(info)


def exec_in_pod(
    state_dir: Path,
    cluster: str,
    namespace: str,
    name: str,
    argv: list[str],
    *,
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in the pod's mount and UTS namespaces (its /etc/hosts, volumes, hostname).

    The environment has ``PATH``, ``HOSTNAME`` and ``ETCDCTL_ENDPOINTS=http://<pod-ip>:2379`` (the
    same deviation the exec probes get, see ``sandbox/runtime/README.md``) plus ``env``.

    Returns:
        The completed process (text mode, output captured).
    """
    info = pod_info(state_dir, cluster, namespace, name)
    pid = int(info["holder_pid"])  # type: ignore[call-overload]
    if not os.path.exists(f"/proc/{pid}"):
        raise PodNotRunning(f"pod {namespace}/{name}: its sandbox process {pid} is gone")
    full_env = {
        "PATH": DEFAULT_PATH,
        "HOSTNAME": name,
        "HOME": "/root",
        **etcdctl_env(argv, str(info["pod_ip"])),
        **(env or {}),
        # marked like the pod's own processes, so stopping the pod or the sandbox also ends these
        POD_MARKER_ENV: str(info["uid"]),
        SANDBOX_MARKER_ENV: sandbox_id(Path(state_dir).absolute()),
    }
    return subprocess.run(
        ["nsenter", "-m", "-u", "-t", str(pid), "--wd=/", "--", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        check=False,
    )
