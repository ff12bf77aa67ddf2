"""The sandbox end to end: kubectl and the Python client, real etcd pods, LB, DNS, faults."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.dynamic
import yaml
from kubernetes import watch

from sandbox.cluster import Sandbox
from sandbox.podexec import exec_in_pod, pod_info
from sandbox.runtime.dns import corefile_with_hosts, parse_corefile_hosts
from sandbox.runtime.pods import SANDBOX_MARKER_ENV, processes_with_env
from sandbox.testing import SandboxHandle

REPO = Path(__file__).resolve().parents[2]
KUBECTL = REPO / ".venv" / "bin" / "kubectl"

ETCD_SCRIPT = """stop_handler() {
    >&2 echo "Caught SIGTERM signal!"
    kill -TERM "$child"
}

trap stop_handler SIGTERM SIGINT

etcd \\
--name=$HOSTNAME \\
--initial-advertise-peer-urls=http://$HOSTNAME.etcd:2380 \\
--initial-cluster-token=etcd-cortex-prod \\
--initial-cluster etcd-0=http://etcd-0.etcd:2380,etcd-1=http://etcd-1.etcd:2380,\
etcd-2=http://etcd-2.etcd:2380 \\
--advertise-client-urls=http://$HOSTNAME.etcd:2379 \\
--listen-client-urls=http://0.0.0.0:2379 \\
--listen-peer-urls=http://0.0.0.0:2380 \\
--auto-compaction-mode=revision \\
--auto-compaction-retention=1000 &
child=$!
wait "$child"
"""


def etcd_manifest(*, corrected: bool = True) -> str:
    """The seed's etcd StatefulSet + headless Service (etcd-stretch-migration.ru.txt).

    Two changes a real cluster needs as well: the env values are strings, and the peers must find
    each other before they are Ready (``podManagementPolicy: Parallel`` and
    ``publishNotReadyAddresses``) — with OrderedReady, ``etcd-0`` alone never passes its health probe.
    """
    heartbeat: Any = "200" if corrected else 200
    election: Any = "2000" if corrected else 2000
    sts = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "etcd", "labels": {"app": "etcd"}},
        "spec": {
            "serviceName": "etcd",
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": "etcd"}},
            "replicas": 3,
            "template": {
                "metadata": {"labels": {"app": "etcd"}},
                "spec": {
                    "containers": [
                        {
                            "name": "etcd",
                            "image": "quay.io/coreos/etcd:v3.4.18",
                            "command": ["sh"],
                            "args": ["-c", ETCD_SCRIPT],
                            "env": [
                                {"name": "ETCD_DATA_DIR", "value": "/var/lib/etcd"},
                                {"name": "ETCD_HEARTBEAT_INTERVAL", "value": heartbeat},
                                {"name": "ETCD_ELECTION_TIMEOUT", "value": election},
                            ],
                            "resources": {
                                "requests": {"cpu": "50m", "memory": "1Gi"},
                                "limits": {"memory": "1Gi"},
                            },
                            "volumeMounts": [{"name": "data", "mountPath": "/var/lib/etcd"}],
                            "ports": [
                                {"name": "etcd-server", "containerPort": 2380},
                                {"name": "etcd-client", "containerPort": 2379},
                            ],
                            "readinessProbe": {
                                "exec": {
                                    "command": ["/bin/bash", "-c", "/usr/local/bin/etcdctl endpoint health"]
                                },
                                "initialDelaySeconds": 10,
                                "periodSeconds": 10,
                                "timeoutSeconds": 10,
                            },
                        }
                    ]
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}},
                }
            ],
        },
    }
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "etcd"},
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "ports": [{"name": "etcd-server", "port": 2380}, {"name": "etcd-client", "port": 2379}],
            "selector": {"app": "etcd"},
        },
    }
    return yaml.safe_dump_all([svc, sts], sort_keys=False)


def kubectl(
    sb: SandboxHandle, context: str, *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(KUBECTL), "--kubeconfig", str(sb.kubeconfig_path), "--context", context, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    timeout *= 3  # generous: CI machines run many servers at once (returns as soon as it holds)
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def new_namespace(sb: SandboxHandle, context: str, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    kubectl(
        sb,
        context,
        "apply",
        "-f",
        "-",
        stdin=json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
    )
    wait_until(
        lambda: kubectl(sb, context, "get", "sa", "default", "-n", name, check=False).returncode == 0,
        10,
        "default ServiceAccount",
    )
    return name


def pods_json(sb: SandboxHandle, context: str, ns: str, selector: str = "") -> list[dict[str, Any]]:
    args = ["get", "pods", "-n", ns, "-o", "json"]
    if selector:
        args += ["-l", selector]
    return list(json.loads(kubectl(sb, context, *args).stdout)["items"])


def ready_names(items: list[dict[str, Any]]) -> set[str]:
    out = set()
    for p in items:
        conds = {c["type"]: c["status"] for c in p.get("status", {}).get("conditions", [])}
        if conds.get("Ready") == "True" and not p["metadata"].get("deletionTimestamp"):
            out.add(p["metadata"]["name"])
    return out


# ------------------------------------------------------------------------------------------- kubectl
def test_kubectl_etcd_statefulset_round_trip(sandbox: SandboxHandle) -> None:
    sb = sandbox
    assert {"default", "kube-system"} <= set(
        kubectl(sb, "source", "get", "ns", "-o", "name").stdout.split()
    ) | {n.split("/")[-1] for n in kubectl(sb, "source", "get", "ns", "-o", "name").stdout.split()}
    ns = new_namespace(sb, "source", "etcd")

    bad = kubectl(
        sb, "source", "apply", "-n", ns, "-f", "-", stdin=etcd_manifest(corrected=False), check=False
    )
    assert bad.returncode != 0
    assert "StatefulSet" in bad.stderr and ("string" in bad.stderr or "unmarshal" in bad.stderr), bad.stderr
    assert kubectl(sb, "source", "get", "sts", "-n", ns, "-o", "name").stdout.strip() == ""

    out = kubectl(sb, "source", "apply", "-n", ns, "-f", "-", stdin=etcd_manifest()).stdout
    assert "statefulset.apps/etcd created" in out  # the Service was valid and applied the first time

    # kubectl get pods -w until the three pods are Ready
    watcher = subprocess.Popen(
        [
            str(KUBECTL),
            "--kubeconfig",
            str(sb.kubeconfig_path),
            "--context",
            "source",
            "get",
            "pods",
            "-n",
            ns,
            "-w",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    ready: set[str] = set()
    killer = threading.Timer(180, watcher.kill)  # readline() must not block forever
    killer.start()
    try:
        deadline = time.monotonic() + 180
        assert watcher.stdout is not None
        while ready != {"etcd-0", "etcd-1", "etcd-2"} and time.monotonic() < deadline:
            line = watcher.stdout.readline()
            cols = line.split()
            if len(cols) >= 3 and cols[1] == "1/1" and cols[2] == "Running":
                ready.add(cols[0])
    finally:
        killer.cancel()
        watcher.kill()
        watcher.wait()
    assert ready == {"etcd-0", "etcd-1", "etcd-2"}

    # etcdctl inside a pod (names resolve through the cluster DNS): one healthy 3-member cluster
    health = exec_in_pod(sb.state_dir, "source", ns, "etcd-0", ["etcdctl", "endpoint", "health", "--cluster"])
    assert health.returncode == 0, health.stderr
    assert (health.stdout + health.stderr).count("is healthy") == 3
    members = exec_in_pod(sb.state_dir, "source", ns, "etcd-1", ["etcdctl", "member", "list"])
    assert sorted(line.split(", ")[2] for line in members.stdout.splitlines()) == [
        "etcd-0",
        "etcd-1",
        "etcd-2",
    ]
    # and from the host through the pod IP
    pod_ip = str(pod_info(sb.state_dir, "source", ns, "etcd-0")["pod_ip"])
    host_list = subprocess.run(
        ["etcdctl", "--endpoints", f"{pod_ip}:2379", "member", "list", "-w", "json"],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    assert len(json.loads(host_list.stdout)["members"]) == 3

    # scale down keeps the claim; scale up reattaches the same volume
    pv_before = kubectl(
        sb, "source", "get", "pvc", "data-etcd-2", "-n", ns, "-o", "jsonpath={.spec.volumeName}"
    ).stdout
    assert (
        "statefulset.apps/etcd scaled"
        in kubectl(sb, "source", "scale", "sts", "etcd", "-n", ns, "--replicas=2").stdout
    )
    wait_until(
        lambda: {p["metadata"]["name"] for p in pods_json(sb, "source", ns)} == {"etcd-0", "etcd-1"},
        30,
        "scale down",
    )
    assert kubectl(sb, "source", "get", "pvc", "data-etcd-2", "-n", ns, "-o", "name").stdout.strip()
    kubectl(sb, "source", "scale", "sts", "etcd", "-n", ns, "--replicas=3")
    wait_until(
        lambda: ready_names(pods_json(sb, "source", ns)) == {"etcd-0", "etcd-1", "etcd-2"}, 40, "scale up"
    )
    pod2 = json.loads(kubectl(sb, "source", "get", "pod", "etcd-2", "-n", ns, "-o", "json").stdout)
    claim = next(v for v in pod2["spec"]["volumes"] if v["name"] == "data")["persistentVolumeClaim"][
        "claimName"
    ]
    assert claim == "data-etcd-2"
    pv_after = kubectl(
        sb, "source", "get", "pvc", "data-etcd-2", "-n", ns, "-o", "jsonpath={.spec.volumeName}"
    ).stdout
    assert pv_after == pv_before

    # merge patch (metadata) and strategic merge patch (template -> rolling replacement)
    patched_out = kubectl(
        sb,
        "source",
        "patch",
        "sts",
        "etcd",
        "-n",
        ns,
        "--type",
        "merge",
        "-p",
        '{"metadata":{"labels":{"tier":"db"}}}',
    )
    assert "patched" in patched_out.stdout
    old_rev = kubectl(
        sb, "source", "get", "sts", "etcd", "-n", ns, "-o", "jsonpath={.status.updateRevision}"
    ).stdout
    new_env = {"name": "ETCD_SNAPSHOT_COUNT", "value": "5000"}
    smp = json.dumps({"spec": {"template": {"spec": {"containers": [{"name": "etcd", "env": [new_env]}]}}}})
    kubectl(sb, "source", "patch", "sts", "etcd", "-n", ns, "-p", smp)
    sts = json.loads(kubectl(sb, "source", "get", "sts", "etcd", "-n", ns, "-o", "json").stdout)
    env_names = [e["name"] for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]]
    assert "ETCD_SNAPSHOT_COUNT" in env_names and "ETCD_DATA_DIR" in env_names  # merged by name, not replaced

    def rolled() -> bool:
        s = json.loads(kubectl(sb, "source", "get", "sts", "etcd", "-n", ns, "-o", "json").stdout)["status"]
        return (
            s.get("updateRevision") != old_rev
            and s.get("currentRevision") == s.get("updateRevision")
            and (s.get("readyReplicas") == 3)
        )

    wait_until(rolled, 60, "rolling update")
    hashes = {p["metadata"]["labels"]["controller-revision-hash"] for p in pods_json(sb, "source", ns)}
    assert hashes == {sts_rev(sb, ns)}
    members = exec_in_pod(sb.state_dir, "source", ns, "etcd-0", ["etcdctl", "member", "list"])
    assert len(members.stdout.splitlines()) == 3  # data survived the rolling replacement

    assert (
        'statefulset.apps "etcd" deleted' in kubectl(sb, "source", "delete", "sts", "etcd", "-n", ns).stdout
    )
    wait_until(lambda: pods_json(sb, "source", ns) == [], 30, "pods of the deleted StatefulSet to go")
    assert len(kubectl(sb, "source", "get", "pvc", "-n", ns, "-o", "name").stdout.split()) == 3


def sts_rev(sb: SandboxHandle, ns: str) -> str:
    return kubectl(
        sb, "source", "get", "sts", "etcd", "-n", ns, "-o", "jsonpath={.status.updateRevision}"
    ).stdout


# ------------------------------------------------------------------------------------------- Python client
def test_python_client_typed_and_dynamic(sandbox: SandboxHandle) -> None:
    api = sandbox.api_client("target")
    assert isinstance(api, kubernetes.client.ApiClient)
    core, apps = kubernetes.client.CoreV1Api(api), kubernetes.client.AppsV1Api(api)
    ns = f"py-{uuid.uuid4().hex[:6]}"
    core.create_namespace(kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=ns)))
    labels = {"app": "web"}
    sts = kubernetes.client.V1StatefulSet(
        metadata=kubernetes.client.V1ObjectMeta(name="web"),
        spec=kubernetes.client.V1StatefulSetSpec(
            service_name="web",
            replicas=2,
            selector=kubernetes.client.V1LabelSelector(match_labels=labels),
            template=kubernetes.client.V1PodTemplateSpec(
                metadata=kubernetes.client.V1ObjectMeta(labels=labels),
                spec=kubernetes.client.V1PodSpec(
                    containers=[kubernetes.client.V1Container(name="nginx", image="nginx:1.25")]
                ),
            ),
        ),
    )
    wait_until(lambda: core.list_namespaced_service_account(ns).items, 10, "default ServiceAccount")
    apps.create_namespaced_stateful_set(ns, sts)
    w = watch.Watch()
    ready: set[str] = set()
    for event in w.stream(core.list_namespaced_pod, ns, label_selector="app=web", timeout_seconds=30):
        pod = event["object"]
        if pod.metadata.name == "web-1" and event["type"] == "ADDED":
            assert "web-0" in ready  # OrderedReady: web-1 is created only once web-0 is Ready
        if any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or [])):
            ready.add(pod.metadata.name)
        if ready == {"web-0", "web-1"}:
            w.stop()
    assert ready == {"web-0", "web-1"}
    pod0: Any = core.read_namespaced_pod("web-0", ns)
    assert pod0.metadata.owner_references[0].kind == "StatefulSet"
    assert pod0.spec.hostname == "web-0" and pod0.spec.subdomain == "web"
    assert pod0.status.pod_ip.startswith("127.") and pod0.spec.node_name

    scale: Any = apps.patch_namespaced_stateful_set_scale("web", ns, {"spec": {"replicas": 3}})
    assert scale.spec.replicas == 3
    wait_until(lambda: (_sts(apps, ns).status.ready_replicas or 0) == 3, 20, "3 ready")
    apps.patch_namespaced_stateful_set("web", ns, {"metadata": {"annotations": {"owner": "py"}}})
    assert _sts(apps, ns).metadata.annotations["owner"] == "py"

    # dynamic client: a Deployment -> ReplicaSet -> Pods chain
    dyn = kubernetes.dynamic.DynamicClient(api)
    deployments = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    deployments.create(
        namespace=ns,
        body={
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "api"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "api"}},
                "template": {
                    "metadata": {"labels": {"app": "api"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]},
                },
            },
        },
    )

    def available() -> bool:
        d = deployments.get(name="api", namespace=ns)
        conds = {c.type: c.reason for c in (d.status.conditions or [])}
        return conds.get("Available") == "MinimumReplicasAvailable" and d.status.readyReplicas == 2

    wait_until(available, 20, "Deployment available")
    rs = dyn.resources.get(api_version="apps/v1", kind="ReplicaSet").get(namespace=ns).items
    assert len(rs) == 1 and rs[0].metadata.name.startswith("api-")
    assert rs[0].metadata.annotations["deployment.kubernetes.io/revision"] == "1"
    pods = dyn.resources.get(api_version="v1", kind="Pod").get(namespace=ns, label_selector="app=api").items
    assert {p.metadata.ownerReferences[0].name for p in pods} == {rs[0].metadata.name}
    # a template change: a second ReplicaSet (revision 2) takes over, the first is scaled to 0
    deployments.patch(
        name="api",
        namespace=ns,
        body={"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox:1.37"}]}}}},
        content_type="application/strategic-merge-patch+json",
    )

    def rolled() -> dict[str, int]:
        sets = dyn.resources.get(api_version="apps/v1", kind="ReplicaSet").get(namespace=ns).items
        by_rev = {s.metadata.annotations["deployment.kubernetes.io/revision"]: s.spec.replicas for s in sets}
        return by_rev if by_rev == {"1": 0, "2": 2} and available() else {}

    wait_until(rolled, 20, "the rollout to a second ReplicaSet")
    deployments.delete(name="api", namespace=ns)

    daemonsets = dyn.resources.get(api_version="apps/v1", kind="DaemonSet")
    daemonsets.create(
        namespace=ns,
        body={
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "agent"},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {
                    "metadata": {"labels": {"app": "agent"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]},
                },
            },
        },
    )
    wait_until(
        lambda: daemonsets.get(name="agent", namespace=ns).status.numberReady == 1, 20, "DaemonSet pod"
    )
    agent = (
        dyn.resources.get(api_version="v1", kind="Pod").get(namespace=ns, label_selector="app=agent").items
    )
    assert len(agent) == 1 and agent[0].spec.nodeName == pod0.spec.node_name
    daemonsets.delete(name="agent", namespace=ns)
    apps.delete_namespaced_stateful_set("web", ns)
    wait_until(lambda: not core.list_namespaced_pod(ns).items, 30, "pods to be garbage collected")


def _sts(apps: kubernetes.client.AppsV1Api, ns: str) -> Any:
    return apps.read_namespaced_stateful_set("web", ns)


# ------------------------------------------------------------------------------------------- LB + DNS
def test_loadbalancer_and_coredns_hosts(sandbox: SandboxHandle) -> None:
    sb = sandbox
    ns = new_namespace(sb, "target", "lb")
    manifest = [
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "etcd-main"},
            "spec": {
                "serviceName": "etcd-main",
                "replicas": 1,
                "selector": {"matchLabels": {"app": "etcd-main"}},
                "template": {
                    "metadata": {"labels": {"app": "etcd-main"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "etcd",
                                "image": "quay.io/coreos/etcd:v3.4.18",
                                "command": ["/usr/local/bin/etcd"],
                                "args": [
                                    "--name=etcd-main-0",
                                    "--listen-client-urls=http://0.0.0.0:2379",
                                    "--advertise-client-urls=http://etcd-main-0.etcd-main:2379",
                                    "--listen-peer-urls=http://0.0.0.0:2380",
                                    "--initial-advertise-peer-urls=http://etcd-main-0.etcd-main:2380",
                                    "--initial-cluster=etcd-main-0=http://etcd-main-0.etcd-main:2380",
                                    "--data-dir=/var/lib/etcd",
                                ],
                                "readinessProbe": {"tcpSocket": {"port": 2379}, "periodSeconds": 1},
                                "volumeMounts": [{"name": "data", "mountPath": "/var/lib/etcd"}],
                            }
                        ],
                        "volumes": [{"name": "data", "emptyDir": {}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "etcd-main"},
            "spec": {
                "clusterIP": "None",
                "publishNotReadyAddresses": True,
                "ports": [{"name": "etcd-client", "port": 2379}],
                "selector": {"app": "etcd-main"},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "etcd-main-0"},
            "spec": {
                "type": "LoadBalancer",
                "externalTrafficPolicy": "Local",
                "ports": [{"name": "etcd-server", "port": 2380}, {"name": "etcd-client", "port": 2379}],
                "selector": {"statefulset.kubernetes.io/pod-name": "etcd-main-0"},
            },
        },
    ]
    kubectl(sb, "target", "apply", "-n", ns, "-f", "-", stdin=yaml.safe_dump_all(manifest))
    lb_ip = wait_until(
        lambda: (
            kubectl(
                sb,
                "target",
                "get",
                "svc",
                "etcd-main-0",
                "-n",
                ns,
                "-o",
                "jsonpath={.status.loadBalancer.ingress[0].ip}",
            ).stdout
        ),
        20,
        "LoadBalancer IP",
    )
    assert lb_ip.startswith(f"127.{_octet(sb.target_url)}.200.")
    wait_until(lambda: ready_names(pods_json(sb, "target", ns)) == {"etcd-main-0"}, 30, "etcd-main-0 Ready")

    def put_via_lb() -> bool:
        r = subprocess.run(
            ["etcdctl", "--endpoints", f"{lb_ip}:2379", "put", "greeting", "hello"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return r.returncode == 0

    wait_until(put_via_lb, 15, "a TCP client on the host to reach the pod through the LB")
    svc = json.loads(kubectl(sb, "target", "get", "svc", "etcd-main-0", "-n", ns, "-o", "json").stdout)
    node_port = next(p["nodePort"] for p in svc["spec"]["ports"] if p["port"] == 2379)
    node_ip = sb.target_url.split("//", 1)[1].split(":")[0]
    for addr in ((lb_ip, 2379), (svc["spec"]["clusterIP"], 2379), (node_ip, node_port)):  # LB, kube-proxy
        with socket.create_connection(addr, timeout=5) as s:
            s.sendall(b"GET /health HTTP/1.0\r\n\r\n")
            assert b'"health":"true"' in s.recv(4096), addr

    # a long-running pod of the project image in source to resolve names from
    src_ns = new_namespace(sb, "source", "dns")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "client"},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "stateferry/stateferry:dev",
                    "command": ["python", "-c", "import time; time.sleep(3600)"],
                }
            ]
        },
    }
    kubectl(sb, "source", "apply", "-n", src_ns, "-f", "-", stdin=json.dumps(pod))
    wait_until(lambda: ready_names(pods_json(sb, "source", src_ns)) == {"client"}, 20, "client pod")

    def resolve() -> subprocess.CompletedProcess[str]:
        return exec_in_pod(
            sb.state_dir, "source", src_ns, "client", ["getent", "hosts", "etcd-main-0.etcd-main"]
        )

    assert resolve().returncode == 2  # not before the CoreDNS hosts block names it
    core = kubernetes.client.CoreV1Api(sb.api_client("source"))
    cm: Any = core.read_namespaced_config_map("coredns", "kube-system")
    corefile = cm.data["Corefile"]
    assert parse_corefile_hosts(corefile) == []
    from sandbox.runtime.dns import StaticHost

    patched = corefile_with_hosts(corefile, [StaticHost(lb_ip, ("etcd-main-0.etcd-main",))])
    core.patch_namespaced_config_map("coredns", "kube-system", {"data": {"Corefile": patched}})
    try:
        answer = wait_until(lambda: resolve().stdout, 10, "the name to resolve in source pods")
        assert answer.split() == [lb_ip, "etcd-main-0.etcd-main"]
        got = exec_in_pod(
            sb.state_dir,
            "source",
            src_ns,
            "client",
            [
                "etcdctl",
                "--endpoints",
                "http://etcd-main-0.etcd-main:2379",
                "get",
                "greeting",
                "--print-value-only",
            ],
        )
        assert got.stdout.strip() == "hello"  # cross-cluster traffic through the LB, by name
        # the name still does not resolve in target (its DNS is separate)
        kubectl(sb, "target", "delete", "svc", "etcd-main-0", "-n", ns)
        wait_until(lambda: not _connects(lb_ip, 2379), 10, "the LB address to be released")
    finally:
        core.patch_namespaced_config_map("coredns", "kube-system", {"data": {"Corefile": corefile}})
    wait_until(lambda: resolve().returncode == 2, 10, "the name to stop resolving")


def _octet(url: str) -> str:
    return url.split("//", 1)[1].split(".")[1]


def _connects(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


# ------------------------------------------------------------------------------------------- faults
def test_killed_etcd_process_restarts_the_container(sandbox: SandboxHandle) -> None:
    sb = sandbox
    ns = new_namespace(sb, "target", "crash")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "solo"},
        "spec": {
            "containers": [
                {
                    "name": "etcd",
                    "image": "quay.io/coreos/etcd:v3.4.18",
                    "command": ["sh", "-c", "etcd --listen-client-urls=http://0.0.0.0:2379 $ADVERTISE"],
                    "env": [
                        {"name": "ADVERTISE", "value": "--advertise-client-urls=http://solo:2379"},
                        {"name": "ETCD_DATA_DIR", "value": "/var/lib/etcd"},
                    ],
                    "volumeMounts": [{"name": "data", "mountPath": "/var/lib/etcd"}],
                    "readinessProbe": {
                        "exec": {"command": ["etcdctl", "endpoint", "health"]},
                        "periodSeconds": 2,
                    },
                }
            ],
            "volumes": [{"name": "data", "emptyDir": {}}],
        },
    }
    kubectl(sb, "target", "apply", "-n", ns, "-f", "-", stdin=json.dumps(pod))
    wait_until(lambda: ready_names(pods_json(sb, "target", ns)) == {"solo"}, 30, "solo Ready")
    uid = str(pod_info(sb.state_dir, "target", ns, "solo")["uid"])
    etcd_pids = [p for p in processes_with_env("STATEFERRY_SANDBOX_POD", uid) if _comm(p) == "etcd"]
    assert len(etcd_pids) == 1
    os.kill(etcd_pids[0], signal.SIGKILL)

    def restarted() -> bool:
        p = json.loads(kubectl(sb, "target", "get", "pod", "solo", "-n", ns, "-o", "json").stdout)
        cs = p["status"]["containerStatuses"][0]
        return cs["restartCount"] == 1 and cs["ready"] and cs["lastState"]["terminated"]["exitCode"] == 137

    wait_until(restarted, 30, "the container to restart and be Ready again")
    # kubectl logs: the current instance, and -p the killed one
    assert "ready to serve client requests" in kubectl(sb, "target", "logs", "solo", "-n", ns, "-p").stdout
    wait_until(
        lambda: "ready to serve client requests" in kubectl(sb, "target", "logs", "solo", "-n", ns).stdout,
        10,
        "log",
    )

    def reasons() -> list[str]:
        events = json.loads(kubectl(sb, "target", "get", "events", "-n", ns, "-o", "json").stdout)["items"]
        return [e["reason"] for e in events if e["involvedObject"]["name"] == "solo"]

    got = wait_until(lambda: (r := reasons()).count("Started") >= 2 and r, 10, "kubelet events")
    assert {"Scheduled", "Pulled", "Created", "Started"} <= set(got)
    assert 'pod "solo" deleted' in kubectl(sb, "target", "delete", "pod", "solo", "-n", ns).stdout  # waits
    assert pods_json(sb, "target", ns) == []
    assert processes_with_env("STATEFERRY_SANDBOX_POD", uid) == []


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _mounts_mentioning(text: str) -> list[str]:
    hits = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if text in Path(f"/proc/{entry}/mountinfo").read_text():
                    hits.append(entry)
            except OSError:
                continue
    return hits


def test_down_after_supervisor_crash_leaves_nothing(tmp_path: Path) -> None:
    state = tmp_path / "crashy"
    cli = [str(REPO / ".venv" / "bin" / "stateferry"), "sandbox"]
    env = {**os.environ, "STATEFERRY_SANDBOX_TIME_SCALE": "0.2"}
    up = subprocess.run(
        [*cli, "up", "--state-dir", str(state), "--base-octet", "45"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip() == str(state / "kubeconfig")
    sb = Sandbox(state)
    try:
        handle = SandboxHandle(state, state / "kubeconfig", sb.url("source"), sb.url("target"))
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p"},
            "spec": {
                "containers": [
                    {
                        "name": "etcd",
                        "image": "quay.io/coreos/etcd:v3.4.18",
                        "command": [
                            "etcd",
                            "--listen-client-urls=http://0.0.0.0:2379",
                            "--advertise-client-urls=http://p:2379",
                            "--data-dir=/var/lib/etcd",
                        ],
                        "volumeMounts": [{"name": "d", "mountPath": "/var/lib/etcd"}],
                    }
                ],
                "volumes": [{"name": "d", "emptyDir": {}}],
            },
        }
        wait_until(
            lambda: kubectl(handle, "source", "get", "sa", "default", check=False).returncode == 0, 10, "sa"
        )
        kubectl(handle, "source", "apply", "-f", "-", stdin=json.dumps(pod))
        wait_until(lambda: ready_names(pods_json(handle, "source", "default")) == {"p"}, 20, "pod p")
        assert _mounts_mentioning(str(state))  # the pod's namespace has its bind mounts ...
        assert str(state) not in Path("/proc/self/mountinfo").read_text()  # ... the host has none
        # The sandbox API server batches its writes to disk (at most 5 per second): a crash within that
        # window loses the newest writes (a documented deviation from etcd-backed durability).
        objects = state / "source" / "api" / "objects.json"

        def persisted_running() -> bool:  # the pod's Running status on disk, not only its creation
            data = json.loads(objects.read_bytes())
            pods = [e["items"] for e in data["objects"] if (e["group"], e["plural"]) == ("", "pods")]
            return any(
                p["metadata"]["name"] == "p" and (p.get("status") or {}).get("phase") == "Running"
                for items in pods
                for p in items
            )

        wait_until(persisted_running, 5, "pod p persisted as Running")
        os.kill(int((state / "supervisor.pid").read_text()), signal.SIGKILL)
        time.sleep(0.3)
        status = subprocess.run(
            [*cli, "status", "--state-dir", str(state)], capture_output=True, text=True, check=False
        )
        assert status.returncode == 3 and "orphaned" in status.stdout
        again = subprocess.run(
            [*cli, "up", "--state-dir", str(state)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert again.returncode == 1
        assert "half-dead" in again.stderr and f"stateferry sandbox down --state-dir {state}" in again.stderr
        assert "--wipe" in again.stderr
    finally:
        down = subprocess.run(
            [*cli, "down", "--state-dir", str(state)], capture_output=True, text=True, timeout=60, check=False
        )
    assert down.returncode == 0
    assert processes_with_env(SANDBOX_MARKER_ENV, sb.marker) == []
    assert _mounts_mentioning(str(state)) == []
    assert (state / "source" / "api").is_dir()  # state kept without --wipe

    # up again over the kept state: the pod comes back like after a node reboot
    try:
        again = subprocess.run(
            [*cli, "up", "--state-dir", str(state)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        assert again.returncode == 0, again.stderr

        seen: list[dict[str, Any]] = []

        def back() -> bool:
            pod = json.loads(kubectl(handle, "source", "get", "pod", "p", "-o", "json").stdout)
            cs = pod["status"]["containerStatuses"][0]
            seen[:] = [cs]
            # restarted at least once: a loaded machine may see the first start fail (as a node can)
            return bool(cs["ready"]) and cs["restartCount"] >= 1

        try:
            wait_until(back, 20, "the pod to restart after the sandbox restart")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last container status: {seen}") from None
    finally:
        subprocess.run([*cli, "down", "--wipe", "--state-dir", str(state)], check=True, capture_output=True)
    assert not state.exists()


# ------------------------------------------------------------------------------------------- Jobs
def test_project_image_jobs_run_to_completion(sandbox: SandboxHandle) -> None:
    sb = sandbox
    ns = new_namespace(sb, "source", "jobs")
    script = (
        "import os, socket, pathlib, stateferry; "
        "ip = socket.gethostbyname('kubernetes.default.svc'); "
        "prep = pathlib.Path('/mnt/init.txt').read_text(); "
        "words = [prep, os.environ['TOKEN'], os.environ['POD'], ip]; "
        "pathlib.Path('/mnt/out.txt').write_text(' '.join(words))"
    )
    objs = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds"},
            "stringData": {"token": "s3cr3t"},
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "work"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        },
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "mover"},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        # the image runs as uid 10001: the claim is writable through fsGroup
                        "securityContext": {"fsGroup": 2000},
                        "initContainers": [
                            {
                                "name": "prep",
                                "image": "stateferry/stateferry:dev",
                                "command": ["python", "-c", "open('/mnt/init.txt', 'w').write('prepared')"],
                                "volumeMounts": [{"name": "work", "mountPath": "/mnt"}],
                            }
                        ],
                        "containers": [
                            {
                                "name": "mover",
                                "image": "stateferry/stateferry:dev",
                                "command": ["python", "-c", script],
                                "env": [
                                    {
                                        "name": "TOKEN",
                                        "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}},
                                    },
                                    {
                                        "name": "POD",
                                        "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                                    },
                                ],
                                "volumeMounts": [{"name": "work", "mountPath": "/mnt"}],
                            }
                        ],
                        "volumes": [{"name": "work", "persistentVolumeClaim": {"claimName": "work"}}],
                    }
                },
            },
        },
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "broken"},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {
                                "name": "c",
                                "image": "stateferry/stateferry:dev",
                                "command": ["stateferry", "no-such-command"],
                            }
                        ],
                    }
                },
            },
        },
    ]
    kubectl(sb, "source", "apply", "-n", ns, "-f", "-", stdin=yaml.safe_dump_all(objs))

    def condition(job: str) -> str | None:
        j = json.loads(kubectl(sb, "source", "get", "job", job, "-n", ns, "-o", "json").stdout)
        conds = [c for c in j.get("status", {}).get("conditions") or [] if c["status"] == "True"]
        return f"{conds[0]['type']}:{conds[0].get('reason', '')}" if conds else None

    assert wait_until(lambda: condition("mover"), 30, "mover to finish") == "Complete:"
    assert wait_until(lambda: condition("broken"), 30, "broken to fail") == "Failed:BackoffLimitExceeded"
    mover = json.loads(kubectl(sb, "source", "get", "job", "mover", "-n", ns, "-o", "json").stdout)
    assert mover["status"]["succeeded"] == 1
    pods = pods_json(sb, "source", ns, "job-name=mover")
    assert len(pods) == 1 and pods[0]["status"]["phase"] == "Succeeded"
    pv = kubectl(sb, "source", "get", "pvc", "work", "-n", ns, "-o", "jsonpath={.spec.volumeName}").stdout
    kubernetes_ip = kubectl(
        sb, "source", "get", "svc", "kubernetes", "-n", "default", "-o", "jsonpath={.spec.clusterIP}"
    ).stdout
    out = (sb.state_dir / "source" / "pv" / pv / "out.txt").read_text()
    assert out == f"prepared s3cr3t {pods[0]['metadata']['name']} {kubernetes_ip}"
    init_status = pods[0]["status"]["initContainerStatuses"][0]
    assert init_status["name"] == "prep" and init_status["state"]["terminated"]["exitCode"] == 0
    assert not Path("/mnt/out.txt").exists()  # written into the PV, not onto the host
    broken = pods_json(sb, "source", ns, "job-name=broken")
    assert broken[0]["status"]["phase"] == "Failed"
    assert broken[0]["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 2


def test_security_context_identity_capabilities_and_fs_group(sandbox: SandboxHandle) -> None:
    """Containers run as their securityContext says (user, groups, capabilities), as on a real node."""
    sb = sandbox
    ns = new_namespace(sb, "source", "secctx")
    script = (
        "import os; st = open('/proc/self/status').read(); "
        "cap = st.split('CapEff:')[1].split()[0]; "
        "d = os.stat('/scratch'); "
        "print(os.getuid(), os.getgid(), sorted(os.getgroups()), int(cap, 16), "
        "d.st_gid, oct(d.st_mode & 0o7777))"
    )

    def pod(name: str, pod_sc: dict[str, Any] | None, c_sc: dict[str, Any] | None) -> dict[str, Any]:
        container: dict[str, Any] = {
            "name": "c",
            "image": "stateferry/stateferry:dev",
            "command": ["python", "-c", script],
            "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
        }
        if c_sc:
            container["securityContext"] = c_sc
        spec: dict[str, Any] = {
            "restartPolicy": "Never",
            "containers": [container],
            "volumes": [{"name": "scratch", "emptyDir": {}}],
        }
        if pod_sc:
            spec["securityContext"] = pod_sc
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}

    objs = [
        pod("image-user", None, None),
        pod(
            "root-one-cap", {"runAsUser": 0}, {"capabilities": {"drop": ["ALL"], "add": ["DAC_READ_SEARCH"]}}
        ),
        pod(
            "workload",
            {"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000, "supplementalGroups": [4000]},
            None,
        ),
        pod("refused", {"runAsUser": 0, "runAsNonRoot": True}, None),
    ]
    kubectl(sb, "source", "apply", "-n", ns, "-f", "-", stdin=yaml.safe_dump_all(objs))

    def output(name: str) -> str | None:
        pods = {p["metadata"]["name"]: p for p in pods_json(sb, "source", ns)}
        p = pods.get(name)
        if not p or p["status"].get("phase") != "Succeeded":
            return None
        log = sb.state_dir / "source" / "pods" / f"{ns}_{name}_{p['metadata']['uid']}" / "c.log"
        return log.read_text().strip()

    # the image's USER (10001), no capabilities in effect; an emptyDir is 0777
    assert wait_until(lambda: output("image-user"), 30, "image-user") == "10001 10001 [] 0 0 0o777"
    # root with only CAP_DAC_READ_SEARCH (bit 2)
    assert wait_until(lambda: output("root-one-cap"), 30, "root-one-cap") == "0 0 [] 4 0 0o777"
    # runAsUser/runAsGroup, fsGroup + supplementalGroups; the emptyDir belongs to fsGroup (setgid, g+rwx)
    assert wait_until(lambda: output("workload"), 30, "workload") == "1000 3000 [2000, 4000] 0 2000 0o2777"

    def refused() -> str:
        p = next(p for p in pods_json(sb, "source", ns) if p["metadata"]["name"] == "refused")
        waiting = p["status"].get("containerStatuses", [{}])[0].get("state", {}).get("waiting", {})
        return f"{waiting.get('reason')}: {waiting.get('message')}" if waiting.get("message") else ""

    assert "CreateContainerConfigError: container has runAsNonRoot and image will run as root" in wait_until(
        refused, 30, "refused pod"
    )
