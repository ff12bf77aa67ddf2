"""``pods/exec`` of the sandbox API server: kubectl (v5 websockets) and the Python client (v4)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.stream import stream

from blocks.kube import KubeCluster
from tasks.kube_export import KubeRest

pytestmark = pytest.mark.timeout(180)
KUBECTL = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "kubectl"
NS = "exec-t"


@pytest.fixture(scope="module")
def exec_pod(source_rest: KubeRest) -> str:
    """A running pod with two containers; ``app`` runs as uid/gid 4321, ``side`` (an image the
    sandbox runs no process for) as uid 555."""
    source_rest.request("POST", "/api/v1/namespaces", body={"metadata": {"name": NS}})
    sleep = {"image": "stateferry/worker:latest", "command": ["sleep", "3600"]}
    source_rest.request(
        "POST",
        f"/api/v1/namespaces/{NS}/pods",
        body={
            "metadata": {"name": "p"},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {"name": "app", **sleep, "securityContext": {"runAsUser": 4321, "runAsGroup": 4321}},
                    {"name": "side", "image": "nginx:1.27", "securityContext": {"runAsUser": 555}},
                ],
            },
        },
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        pod = source_rest.request("GET", f"/api/v1/namespaces/{NS}/pods/p")
        if pod.get("status", {}).get("phase") == "Running":
            return "p"
        time.sleep(0.2)
    raise AssertionError(f"pod did not start: {json.dumps(pod.get('status'))}")


def _kubectl(sb: Any, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KUBECTL), "--kubeconfig", str(sb.kubeconfig_path), "--context", "source", "-n", NS, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_kubectl_exec_runs_as_the_container_user_and_returns_the_exit_code(
    rsandbox: Any, exec_pod: str
) -> None:
    out = _kubectl(
        rsandbox, "exec", exec_pod, "-c", "app", "--", "sh", "-c", "id -u; id -g; echo oops >&2; exit 3"
    )
    assert out.returncode == 3, out.stderr
    assert out.stdout.split() == ["4321", "4321"]
    assert "oops" in out.stderr and "command terminated with exit code 3" in out.stderr
    # stdin reaches the process and its end (v5 CLOSE signal) ends `cat`
    piped = _kubectl(rsandbox, "exec", "-i", exec_pod, "-c", "side", "--", "cat", stdin="hello\nworld\n")
    assert (piped.returncode, piped.stdout) == (0, "hello\nworld\n"), piped.stderr
    side = _kubectl(rsandbox, "exec", exec_pod, "-c", "side", "--", "id", "-u")
    assert (side.returncode, side.stdout.strip()) == (0, "555"), side.stderr
    bad = _kubectl(rsandbox, "exec", exec_pod, "-c", "nope", "--", "true")
    assert bad.returncode != 0 and "container nope is not valid for pod p" in bad.stderr


def test_python_client_exec_error_channel(source_kube: KubeCluster, exec_pod: str) -> None:
    api = client.CoreV1Api(source_kube.api_client())
    resp = stream(
        api.connect_get_namespaced_pod_exec,
        exec_pod,
        NS,
        container="app",
        command=["sh", "-c", "printf out; printf err >&2; exit 7"],
        stdout=True,
        stderr=True,
        stdin=False,
        tty=False,
        _preload_content=False,
    )
    resp.run_forever(timeout=60)
    assert resp.returncode == 7
    assert resp.read_stdout() == "out" and resp.read_stderr() == "err"
    ok = stream(
        api.connect_get_namespaced_pod_exec, exec_pod, NS, container="app", command=["id", "-u"],
        stdout=True, stderr=True, stdin=False, tty=False,
    )  # fmt: skip
    assert ok.strip() == "4321"
    with pytest.raises(Exception) as e:  # two containers, none named: refused before the upgrade
        stream(api.connect_get_namespaced_pod_exec, exec_pod, NS, command=["true"], stdout=True, stderr=True)
    assert "400" in str(e.value)
