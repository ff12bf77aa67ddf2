# ruff: noqa: E501  (the seed manifest is quoted verbatim)
"""The seed etcd of the migration tests and benchmark: manifests and deployment helpers.

The sandbox (``sandbox.testing.running_sandbox``) runs on its own address plan (``127.60.x.x`` /
``127.61.x.x``) and state directory, so it never collides with other sandboxes on the machine.
Each test deploys the seed's StatefulSet + headless Service into a fresh namespace of ``source``
(env values fixed to strings, memory ``1Gi``, ``podManagementPolicy: Parallel`` and
``publishNotReadyAddresses`` so that a 3-member cluster can bootstrap under ``OrderedReady``-free
scheduling) and gets an empty namespace of the same name in ``target``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import yaml

from blocks.kube import KubeCluster
from sandbox.testing import SandboxHandle

SEED_STS = """
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: etcd
  labels:
    app: etcd
spec:
  serviceName: etcd
  podManagementPolicy: Parallel
  selector:
    matchLabels:
      app: etcd
  replicas: 3
  template:
    metadata:
      labels:
        app: etcd
    spec:
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector:
              matchExpressions:
              - key: app
                operator: In
                values:
                - etcd
            topologyKey: kubernetes.io/hostname
      imagePullSecrets:
      - name: registrysecret
      containers:
      - name: etcd
        image: quay.io/coreos/etcd:v3.4.18
        command:
        - sh
        args:
        - -c
        - |
          stop_handler() {
              >&2 echo "Caught SIGTERM signal!"
              kill -TERM "$child"
          }

          trap stop_handler SIGTERM SIGINT

          etcd \\
          --name=$HOSTNAME \\
          --initial-advertise-peer-urls=http://$HOSTNAME.etcd:2380 \\
          --initial-cluster-token=etcd-cortex-prod \\
          --initial-cluster etcd-0=http://etcd-0.etcd:2380,etcd-1=http://etcd-1.etcd:2380,etcd-2=http://etcd-2.etcd:2380 \\
          --advertise-client-urls=http://$HOSTNAME.etcd:2379 \\
          --listen-client-urls=http://0.0.0.0:2379 \\
          --listen-peer-urls=http://0.0.0.0:2380 \\
          --auto-compaction-mode=revision \\
          --auto-compaction-retention=1000 &
          child=$!
          wait "$child"
        env:
        - name: ETCD_DATA_DIR
          value: /var/lib/etcd
        - name: ETCD_HEARTBEAT_INTERVAL
          value: "200"
        - name: ETCD_ELECTION_TIMEOUT
          value: "2000"
        resources:
          requests:
            cpu: 50m
            memory: 1Gi
          limits:
            memory: 1Gi
        volumeMounts:
        - name: data
          mountPath: /var/lib/etcd
        ports:
        - name: etcd-server
          containerPort: 2380
        - name: etcd-client
          containerPort: 2379
        readinessProbe:
          exec:
            command:
            - /bin/bash
            - -c
            - /usr/local/bin/etcdctl endpoint health
          initialDelaySeconds: 10
          periodSeconds: 10
          timeoutSeconds: 10
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: [ "ReadWriteOnce" ]
      resources:
        requests:
          storage: 2Gi
"""

SEED_SVC = """
apiVersion: v1
kind: Service
metadata:
  name: etcd
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  ports:
  - name: etcd-server
    port: 2380
  - name: etcd-client
    port: 2379
  selector:
    app: etcd
"""


def core_api(api: Any) -> Any:
    """``CoreV1Api`` typed loosely (tests pass plain dict bodies and read optional fields)."""
    import kubernetes.client

    return kubernetes.client.CoreV1Api(api)


def apps_api(api: Any) -> Any:
    """``AppsV1Api`` typed loosely."""
    import kubernetes.client

    return kubernetes.client.AppsV1Api(api)


def client_lb(name: str, app: str) -> dict[str, Any]:
    """A client LoadBalancer Service (port 2379) over the ready pods labelled ``app``."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "type": "LoadBalancer",
            "ports": [{"name": "etcd-client", "port": 2379, "targetPort": 2379}],
            "selector": {"app": app},
        },
    }


@dataclass
class SeedEtcd:
    """A seed etcd deployed in ``namespace`` of ``source`` (the same namespace exists in ``target``)."""

    namespace: str
    src: Any
    tgt: Any
    source: KubeCluster
    target: KubeCluster

    def pod_endpoints(self) -> list[str]:
        """Client endpoints (pod IPs) of the source etcd pods."""

        core = core_api(self.src)
        pods = core.list_namespaced_pod(self.namespace, label_selector="app=etcd").items
        return sorted(f"{p.status.pod_ip}:2379" for p in pods if p.status.pod_ip)

    def lb_ip(self, api: Any, name: str, timeout: float = 30) -> str:
        """Wait for and return the LoadBalancer IP of Service ``name``."""

        core = core_api(api)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            svc = core.read_namespaced_service(name, self.namespace)
            ingress = (svc.status.load_balancer and svc.status.load_balancer.ingress) or []
            if ingress and ingress[0].ip:
                return str(ingress[0].ip)
            time.sleep(0.1)
        raise AssertionError(f"no LB IP for {name}")


def delete_namespaces(seed: SeedEtcd) -> None:
    """Delete the seed's namespace in both clusters (best effort: a test's cleanup)."""
    for api in (seed.src, seed.tgt):
        try:
            core_api(api).delete_namespace(seed.namespace)
        except Exception:
            pass


def _create_namespace(api: Any, name: str) -> None:

    core_api(api).create_namespace({"metadata": {"name": name}})


def wait_ready(api: Any, namespace: str, selector: str, count: int, timeout: float = 90) -> None:
    """Wait until ``count`` pods matching ``selector`` are Ready."""

    core = core_api(api)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pods = core.list_namespaced_pod(namespace, label_selector=selector).items
        ready = [
            p
            for p in pods
            if any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))
        ]
        if len(ready) == count:
            return
        time.sleep(0.2)
    raise AssertionError(f"{count} pods {selector} not ready in {namespace} within {timeout}s")


def deploy_seed(sandbox: SandboxHandle, blocks: tuple[KubeCluster, KubeCluster]) -> SeedEtcd:
    """Deploy the seed etcd into a fresh namespace and wait until its 3 pods are Ready."""

    namespace = f"mig-{uuid.uuid4().hex[:6]}"
    src, tgt = blocks[0].api_client(), blocks[1].api_client()
    _create_namespace(src, namespace)
    _create_namespace(tgt, namespace)
    core_api(src).create_namespaced_service(namespace, yaml.safe_load(SEED_SVC))
    apps_api(src).create_namespaced_stateful_set(namespace, yaml.safe_load(SEED_STS))
    wait_ready(src, namespace, "app=etcd", 3)
    return SeedEtcd(namespace, src, tgt, blocks[0], blocks[1])


def fqdn_manifests(namespace: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The seed etcd as Helm charts and operators write it: StatefulSet ``kv-store``, headless Service
    ``kv-peers``, pods labelled ``app: kv``, full names built from ``$(POD_NAME)``/``$(POD_NAMESPACE)``
    (``<pod>.kv-peers.<ns>.svc.cluster.local``)."""
    fqdn = "$(POD_NAME).kv-peers.$(POD_NAMESPACE).svc.cluster.local"
    members = ",".join(
        f"kv-store-{i}=http://kv-store-{i}.kv-peers.{namespace}.svc.cluster.local:2380" for i in range(3)
    )
    text = (
        SEED_STS.replace("name: etcd\n  labels:\n    app: etcd", "name: kv-store\n  labels:\n    app: kv")
        .replace("serviceName: etcd", "serviceName: kv-peers")
        .replace("app: etcd", "app: kv")
        .replace("- etcd\n            topologyKey", "- kv\n            topologyKey")
        .replace("--name=$HOSTNAME", "--name=$(POD_NAME)")
        .replace("http://$HOSTNAME.etcd:2380", f"http://{fqdn}:2380")
        .replace("http://$HOSTNAME.etcd:2379", f"http://{fqdn}:2379")
        .replace(
            "etcd-0=http://etcd-0.etcd:2380,etcd-1=http://etcd-1.etcd:2380,etcd-2=http://etcd-2.etcd:2380",
            members,
        )
        .replace(
            "        env:\n",
            "        env:\n"
            "        - name: POD_NAME\n          valueFrom:\n            fieldRef:\n              fieldPath: metadata.name\n"
            "        - name: POD_NAMESPACE\n          valueFrom:\n            fieldRef:\n"
            "              fieldPath: metadata.namespace\n",
        )
    )
    sts = yaml.safe_load(text)
    svc = yaml.safe_load(
        SEED_SVC.replace("metadata:\n  name: etcd\n", "metadata:\n  name: kv-peers\n").replace(
            "app: etcd", "app: kv"
        )
    )
    return sts, svc


def deploy_fqdn_seed(sandbox: SandboxHandle, blocks: tuple[KubeCluster, KubeCluster]) -> SeedEtcd:
    """Deploy the full-name variant (:func:`fqdn_manifests`) into a fresh namespace; wait until Ready."""
    namespace = f"fq-{uuid.uuid4().hex[:6]}"
    src, tgt = blocks[0].api_client(), blocks[1].api_client()
    _create_namespace(src, namespace)
    _create_namespace(tgt, namespace)
    sts, svc = fqdn_manifests(namespace)
    core_api(src).create_namespaced_service(namespace, svc)
    apps_api(src).create_namespaced_stateful_set(namespace, sts)
    wait_ready(src, namespace, "app=kv", 3)
    return SeedEtcd(namespace, src, tgt, blocks[0], blocks[1])
