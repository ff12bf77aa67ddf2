"""The pinned kubectl (``.venv/bin/kubectl``) against the sandbox API server."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import KUBECTL, ApiEnv

SEED = Path(__file__).parent / "data" / "etcd-stretch-seed.yaml"

ETCD_MANIFEST = """\
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: etcd
  labels:
    app: etcd
spec:
  serviceName: etcd
  selector:
    matchLabels:
      app: etcd
  replicas: 3
  template:
    metadata:
      labels:
        app: etcd
    spec:
      containers:
      - name: etcd
        image: quay.io/coreos/etcd:v3.4.18
        command: [sh]
        args: [-c, "etcd --name=$HOSTNAME"]
        env:
        - name: ETCD_DATA_DIR
          value: /var/lib/etcd
        - name: ETCD_HEARTBEAT_INTERVAL
          value: {heartbeat}
        - name: ETCD_ELECTION_TIMEOUT
          value: {election}
        resources:
          requests:
            cpu: 50m
            memory: 1Gi
        volumeMounts:
        - name: data
          mountPath: /var/lib/etcd
        ports:
        - name: etcd-server
          containerPort: 2380
        - name: etcd-client
          containerPort: 2379
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: [ "ReadWriteOnce" ]
      resources:
        requests:
          storage: 2Gi
---
apiVersion: v1
kind: Service
metadata:
  name: etcd
spec:
  clusterIP: None
  ports:
  - name: etcd-server
    port: 2380
  - name: etcd-client
    port: 2379
  selector:
    app: etcd
"""


@pytest.fixture
def kns(api_env: ApiEnv, namespace: str) -> str:
    """A namespace for kubectl tests (kubectl runs with ``-n``)."""
    return namespace


def test_get_namespaces(api_env: ApiEnv) -> None:
    out = api_env.kubectl("get", "ns", check=True).stdout
    assert out.splitlines()[0].split() == ["NAME", "STATUS", "AGE"]
    assert re.search(r"^kube-system\s+Active\s", out, re.M)
    missing = api_env.kubectl("get", "cm", "nope")
    assert missing.returncode == 1
    assert 'Error from server (NotFound): configmaps "nope" not found' in missing.stderr


def test_apply_etcd_statefulset_rejects_non_string_env_then_accepts_fixed(api_env: ApiEnv, kns: str) -> None:
    bad = api_env.kubectl(
        "apply", "-n", kns, "-f", "-", stdin=ETCD_MANIFEST.format(heartbeat=200, election=2000)
    )
    assert bad.returncode == 1
    assert (
        'StatefulSet in version "v1" cannot be handled as a StatefulSet: json: cannot unmarshal number into '
        "Go struct field EnvVar.spec.template.spec.containers.env.value of type string"
    ) in bad.stderr
    assert "Error from server (BadRequest)" in bad.stderr

    good = ETCD_MANIFEST.format(heartbeat='"200"', election='"2000"')
    first = api_env.kubectl("apply", "-n", kns, "-f", "-", stdin=good, check=True)
    assert "statefulset.apps/etcd created" in first.stdout
    again = api_env.kubectl("apply", "-n", kns, "-f", "-", stdin=good, check=True)
    # volumeClaimTemplates is an atomic list that the server defaults (apiVersion, kind, status), so
    # kubectl's three-way diff re-sends it: "configured", exactly as against a real API server.
    assert "statefulset.apps/etcd configured" in again.stdout and "service/etcd unchanged" in again.stdout
    generation = api_env.kubectl(
        "get", "-n", kns, "sts", "etcd", "-o", "jsonpath={.metadata.generation}"
    ).stdout
    assert generation == "1"  # ... and the object does not change

    scaled = api_env.kubectl("scale", "-n", kns, "sts", "etcd", "--replicas=5", check=True)
    assert scaled.stdout.strip() == "statefulset.apps/etcd scaled"
    wrong = api_env.kubectl("scale", "-n", kns, "sts", "etcd", "--current-replicas=3", "--replicas=1")
    assert wrong.returncode == 1 and "Expected replicas to be 3, was 5" in wrong.stderr

    strategic = api_env.kubectl(
        "patch",
        "-n",
        kns,
        "sts",
        "etcd",
        "-p",
        '{"spec":{"template":{"spec":{"containers":[{"name":"etcd","image":"quay.io/coreos/etcd:v3.4.23"}]}}}}',
        check=True,
    )
    assert strategic.stdout.strip() == "statefulset.apps/etcd patched"
    merge = api_env.kubectl(
        "patch",
        "-n",
        kns,
        "sts",
        "etcd",
        "--type",
        "merge",
        "-p",
        '{"metadata":{"labels":{"tier":"db"}}}',
        check=True,
    )
    assert merge.stdout.strip() == "statefulset.apps/etcd patched"
    same = api_env.kubectl(
        "patch",
        "-n",
        kns,
        "sts",
        "etcd",
        "--type",
        "merge",
        "-p",
        '{"metadata":{"labels":{"tier":"db"}}}',
        check=True,
    )
    assert same.stdout.strip() == "statefulset.apps/etcd patched (no change)"
    invalid = api_env.kubectl(
        "patch", "-n", kns, "sts", "etcd", "--type", "merge", "-p", '{"spec":{"replicas":-1}}'
    )
    assert invalid.returncode == 1 and 'The StatefulSet "etcd" is invalid: spec.replicas' in invalid.stderr

    c0 = ".spec.template.spec.containers[0]"
    jsonpath = f"{{.spec.replicas}} {{{c0}.image}} {{{c0}.env[1].value}}"
    got = api_env.kubectl("get", "-n", kns, "sts", "etcd", "-o", f"jsonpath={jsonpath}", check=True).stdout
    assert got == "5 quay.io/coreos/etcd:v3.4.23 200"  # strategic patch kept env

    deleted = api_env.kubectl("delete", "-n", kns, "-f", "-", stdin=good, check=True)
    assert 'statefulset.apps "etcd" deleted' in deleted.stdout and 'service "etcd" deleted' in deleted.stdout
    again = api_env.kubectl("delete", "-n", kns, "-f", "-", stdin=good)
    assert again.returncode == 1 and "NotFound" in again.stderr
    quiet = api_env.kubectl("delete", "-n", kns, "-f", "-", "--ignore-not-found", stdin=good)
    assert quiet.returncode == 0 and quiet.stdout == ""


def test_seed_manifest_is_rejected_and_corrected_one_accepted(api_env: ApiEnv, kns: str) -> None:
    seed = SEED.read_text()
    bad = api_env.kubectl("apply", "-n", kns, "-f", "-", stdin=seed)
    # The seed has two errors a real API server rejects: numbers as env values and the quantity "1gi".
    # Go's decoder remembers the type error but aborts on the malformed quantity, so that one is reported.
    assert bad.returncode == 1
    assert (
        'Error from server (BadRequest): error when creating "STDIN": StatefulSet in version "v1" cannot be '
        "handled as a StatefulSet: quantities must match the regular expression"
    ) in bad.stderr
    env_fixed = seed.replace("value: 2000", 'value: "2000"').replace("value: 200\n", 'value: "200"\n')
    assert "quantities must match" in api_env.kubectl("apply", "-n", kns, "-f", "-", stdin=env_fixed).stderr
    memory_fixed = seed.replace("memory: 1gi", "memory: 1Gi")
    only_env = api_env.kubectl("apply", "-n", kns, "-f", "-", stdin=memory_fixed)
    assert "cannot unmarshal number into Go struct field EnvVar.spec.template.spec.containers.env.value" in (
        only_env.stderr
    )
    fixed = env_fixed.replace("memory: 1gi", "memory: 1Gi")
    ok = api_env.kubectl("apply", "-n", kns, "-f", "-", stdin=fixed, check=True)
    assert "statefulset.apps/etcd created" in ok.stdout


WEB = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
data:
  k: {value}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: LoadBalancer
  selector: {{app: web}}
  ports:
  - port: 80
"""


def test_apply_unchanged_configured_and_diff(api_env: ApiEnv, kns: str) -> None:
    first = api_env.kubectl("apply", "-n", kns, "-f", "-", stdin=WEB.format(value="v1"), check=True)
    assert first.stdout.splitlines() == [
        "configmap/web-config created",
        "deployment.apps/web created",
        "service/web created",
    ]
    again = api_env.kubectl("apply", "-n", kns, "-f", "-", stdin=WEB.format(value="v1"), check=True)
    assert again.stdout.splitlines() == [
        "configmap/web-config unchanged",
        "deployment.apps/web unchanged",
        "service/web unchanged",
    ]
    diff = api_env.kubectl("diff", "-n", kns, "-f", "-", stdin=WEB.format(value="v2"))
    assert diff.returncode == 1 and "-  k: v1" in diff.stdout and "+  k: v2" in diff.stdout
    changed = api_env.kubectl("apply", "-n", kns, "-f", "-", stdin=WEB.format(value="v2"), check=True)
    assert "configmap/web-config configured" in changed.stdout
    server_side = api_env.kubectl(
        "apply", "--server-side", "-n", kns, "-f", "-", stdin=WEB.format(value="v3"), check=True
    )
    assert "configmap/web-config serverside-applied" in server_side.stdout
    got = api_env.kubectl("get", "-n", kns, "cm", "web-config", "-o", "jsonpath={.data.k}", check=True)
    assert got.stdout == "v3"


def test_get_watch_streams_changes(api_env: ApiEnv, kns: str) -> None:
    env_cmd = [str(KUBECTL), "--kubeconfig", str(api_env.kubeconfig), "--context", "source"]
    cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {}\n"
    api_env.kubectl("apply", "-n", kns, "-f", "-", stdin=cm.format("first"), check=True)
    proc = subprocess.Popen(
        [*env_cmd, "get", "-n", kns, "cm", "-w", "--request-timeout=10s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"KUBECACHEDIR": str(api_env.cache_dir), "PATH": "/usr/bin:/bin"},
    )
    try:
        time.sleep(0.5)
        api_env.kubectl("apply", "-n", kns, "-f", "-", stdin=cm.format("second"), check=True)
        time.sleep(0.5)
    finally:
        proc.terminate()
        out, _err = proc.communicate(timeout=10)
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "DATA", "AGE"]
    assert any(line.startswith("first ") for line in lines)
    assert any(line.startswith("second ") for line in lines)


def test_kubectl_create_generators_send_protobuf(api_env: ApiEnv) -> None:
    """``kubectl create <kind>`` / ``kubectl run`` use protobuf bodies; the server decodes them."""
    ns = "gen-" + str(int(time.time() * 1000) % 100000)
    assert api_env.kubectl("create", "ns", ns, check=True).stdout.strip() == f"namespace/{ns} created"
    api_env.kubectl("create", "configmap", "cfg", "-n", ns, "--from-literal=a=1", check=True)
    api_env.kubectl("create", "secret", "generic", "sec", "-n", ns, "--from-literal=pw=s3cret", check=True)
    api_env.kubectl("create", "deployment", "web", "-n", ns, "--image=nginx:1.27", "--replicas=2", check=True)
    api_env.kubectl("run", "solo", "-n", ns, "--image=busybox", "--env=X=1", "--", "sleep", "10", check=True)
    api_env.kubectl("create", "job", "j", "-n", ns, "--image=busybox", "--", "echo", "hi", check=True)
    core, apps = api_env.core, api_env.apps
    assert core.read_namespaced_config_map("cfg", ns).data == {"a": "1"}
    assert core.read_namespaced_secret("sec", ns).data == {"pw": "czNjcmV0"}
    web = apps.read_namespaced_deployment("web", ns)
    assert web.spec.replicas == 2 and web.spec.template.spec.containers[0].image == "nginx:1.27"
    assert web.spec.template.metadata.creation_timestamp is None
    solo = core.read_namespaced_pod("solo", ns)
    assert solo.spec.containers[0].args == ["sleep", "10"]
    assert [(e.name, e.value) for e in solo.spec.containers[0].env] == [("X", "1")]
    assert (
        api_env.kubectl(
            "get", "job", "j", "-n", ns, "-o", "jsonpath={.spec.template.spec.restartPolicy}", check=True
        ).stdout
        == "Never"
    )
    api_env.kubectl("delete", "ns", ns, "--wait=false", check=True)


def test_kubectl_auth_and_discovery(api_env: ApiEnv) -> None:
    assert api_env.kubectl("auth", "can-i", "create", "pods", check=True).stdout.strip() == "yes"
    resources = api_env.kubectl("api-resources", "-o", "name", check=True).stdout.split()
    assert {"statefulsets.apps", "pods", "customresourcedefinitions.apiextensions.k8s.io"} <= set(resources)
    unknown = api_env.kubectl("get", "--raw", "/apis/nope.example.com/v1")
    assert unknown.returncode == 1 and "NotFound" in unknown.stderr
