"""The DNS tasks against the sandbox: names resolve inside pods after the patch, and not before.

CoreDNS (the ``kube-system/coredns`` Corefile ``hosts`` block) and Deckhouse (``ModuleConfig
kube-dns`` ``spec.settings.hosts``) are both exercised; re-running changes nothing and removing the
entries restores the original configuration.
"""

from __future__ import annotations

import time
from typing import Any

import kubernetes.client
import pytest

from etcd_migration.seed import SeedEtcd, core_api
from planning.etcd_dns_hosts import host_entries
from sandbox.testing import SandboxHandle
from tasks.kube_objects import patch_coredns_hosts, patch_module_config_hosts

pytestmark = pytest.mark.timeout(120)

MODULE_CONFIG_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "moduleconfigs.deckhouse.io"},
    "spec": {
        "group": "deckhouse.io",
        "scope": "Cluster",
        "names": {"plural": "moduleconfigs", "singular": "moduleconfig", "kind": "ModuleConfig"},
        "versions": [
            {
                "name": "v1alpha1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                },
            }
        ],
    },
}


def _resolves(sandbox: SandboxHandle, seed: SeedEtcd, name: str, ip: str, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        result: Any = sandbox.exec("source", seed.namespace, "etcd-0", ["getent", "hosts", name])
        if ip in result.stdout:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.3)


def test_coredns_hosts_resolve_in_pods_and_are_removed_cleanly(
    sandbox: SandboxHandle, seed_etcd: SeedEtcd
) -> None:
    core = core_api(seed_etcd.src)
    before = core.read_namespaced_config_map("coredns", "kube-system").data["Corefile"]
    entries = host_entries({"etcd-main-0": "127.61.250.7"}, "etcd-main", "far")
    assert not _resolves(sandbox, seed_etcd, "etcd-main-0.etcd-main", "127.61.250.7", timeout=0)
    key = f"test {seed_etcd.namespace}"
    assert patch_coredns_hosts.fn(seed_etcd.src, key, entries) == "patched"
    assert patch_coredns_hosts.fn(seed_etcd.src, key, entries) == "unchanged"
    for name in ("etcd-main-0", "etcd-main-0.etcd-main", "etcd-main-0.etcd-main.far.svc.cluster.local"):
        assert _resolves(sandbox, seed_etcd, name, "127.61.250.7"), name
    assert patch_coredns_hosts.fn(seed_etcd.src, key, []) == "patched"
    assert core.read_namespaced_config_map("coredns", "kube-system").data["Corefile"] == before


def test_deckhouse_module_config_hosts_resolve_in_pods(sandbox: SandboxHandle, seed_etcd: SeedEtcd) -> None:
    ext: Any = kubernetes.client.ApiextensionsV1Api(seed_etcd.src)
    try:
        ext.create_custom_resource_definition(MODULE_CONFIG_CRD)
    except kubernetes.client.ApiException as exc:
        assert exc.status == 409
    custom: Any = kubernetes.client.CustomObjectsApi(seed_etcd.src)
    deadline = time.monotonic() + 15  # like a real API server: served shortly after creation
    while True:
        try:
            custom.list_cluster_custom_object("deckhouse.io", "v1alpha1", "moduleconfigs")
            break
        except kubernetes.client.ApiException:
            assert time.monotonic() < deadline, "the ModuleConfig CRD was not served"
            time.sleep(0.2)
    entries = host_entries({"etcd-main-1": "127.61.250.8"}, "etcd-main", "far")
    names = [n for _, ns in entries for n in ns]
    assert patch_module_config_hosts.fn(seed_etcd.src, names, entries) in ("created", "patched")
    assert patch_module_config_hosts.fn(seed_etcd.src, names, entries) == "unchanged"
    assert _resolves(sandbox, seed_etcd, "etcd-main-1.etcd-main", "127.61.250.8")
    assert patch_module_config_hosts.fn(seed_etcd.src, names, []) == "patched"
    t0 = time.monotonic()
    while _resolves(sandbox, seed_etcd, "etcd-main-1.etcd-main", "127.61.250.8", timeout=0):
        assert time.monotonic() - t0 < 20, "still resolves 20 s after the entries were removed"
        time.sleep(0.5)
    print(f"gone after {time.monotonic() - t0:.1f}s")
