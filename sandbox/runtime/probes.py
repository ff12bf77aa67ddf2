"""Container probes (exec, httpGet, tcpSocket) run for real, as the kubelet does."""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sandbox.runtime.timescale import scaled


@dataclass(frozen=True)
class Probe:
    """A probe of the pod spec with the kubelet's defaults filled in.

    ``initial_delay`` and ``period`` are already multiplied by the sandbox time scale.
    """

    kind: str  # "exec" | "http" | "tcp"
    command: tuple[str, ...] = ()
    host: str = ""
    port: int = 0
    path: str = "/"
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3
    extra: dict[str, str] = field(default_factory=dict)


def parse_probe(spec: Mapping[str, Any] | None, pod_ip: str, ports: Mapping[str, int]) -> Probe | None:
    """Translate a probe of the API (``readinessProbe`` ...) into a :class:`Probe`.

    Args:
        spec: the probe dict, or None.
        pod_ip: the pod's address (default host of httpGet / tcpSocket).
        ports: the container's named ports (``name`` -> ``containerPort``).

    Returns:
        The probe, or None when ``spec`` is empty or of an unsupported kind (grpc).
    """
    if not spec:
        return None
    common: dict[str, Any] = {
        "initial_delay": scaled(float(spec.get("initialDelaySeconds") or 0)),
        "period": max(0.2, scaled(float(spec.get("periodSeconds") or 10))),
        "timeout": float(spec.get("timeoutSeconds") or 1),
        "success_threshold": int(spec.get("successThreshold") or 1),
        "failure_threshold": int(spec.get("failureThreshold") or 3),
    }

    def port_of(value: Any) -> int:
        if isinstance(value, str) and not value.isdigit():
            return int(ports.get(value, 0))
        return int(value or 0)

    if spec.get("exec"):
        return Probe(kind="exec", command=tuple(str(c) for c in spec["exec"].get("command") or ()), **common)
    if spec.get("httpGet"):
        h = spec["httpGet"]
        headers = tuple((str(x["name"]), str(x["value"])) for x in h.get("httpHeaders") or ())
        return Probe(
            kind="http",
            host=str(h.get("host") or pod_ip),
            port=port_of(h.get("port")),
            path=str(h.get("path") or "/"),
            scheme=str(h.get("scheme") or "HTTP"),
            headers=headers,
            **common,
        )
    if spec.get("tcpSocket"):
        t = spec["tcpSocket"]
        return Probe(kind="tcp", host=str(t.get("host") or pod_ip), port=port_of(t.get("port")), **common)
    return None


ExecRunner = Callable[[Sequence[str], float], int]


def run_probe(probe: Probe, exec_runner: ExecRunner) -> bool:
    """Run a probe once; True on success.

    Args:
        probe: the probe.
        exec_runner: runs a command inside the container (argv, timeout) -> exit code; a timeout
            must count as failure (return non-zero).
    """
    try:
        if probe.kind == "exec":
            return exec_runner(list(probe.command), probe.timeout) == 0
        if probe.kind == "tcp":
            with socket.create_connection((probe.host, probe.port), timeout=probe.timeout):
                return True
        if probe.kind == "http":
            conn: http.client.HTTPConnection
            if probe.scheme.upper() == "HTTPS":  # the kubelet does not verify probe certificates
                ctx = ssl._create_unverified_context()
                conn = http.client.HTTPSConnection(probe.host, probe.port, timeout=probe.timeout, context=ctx)
            else:
                conn = http.client.HTTPConnection(probe.host, probe.port, timeout=probe.timeout)
            try:
                conn.request("GET", probe.path, headers=dict(probe.headers))
                status = conn.getresponse().status
            finally:
                conn.close()
            return 200 <= status < 400
    except (OSError, http.client.HTTPException, subprocess.SubprocessError):
        return False
    return False
