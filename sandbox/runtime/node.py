"""The Node object of a sandbox cluster's single node and the status its kubelet reports."""

from __future__ import annotations

from sandbox.runtime.kube import Obj
from sandbox.runtime.objects import now_iso


def node_object(node_name: str, pod_cidr: str) -> Obj:
    """The Node to create: hostname/os/arch/control-plane labels and the pod CIDR."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node_name,
            "labels": {
                "kubernetes.io/hostname": node_name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node-role.kubernetes.io/control-plane": "",
            },
        },
        "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]},
    }


def node_status(node_name: str, node_ip: str) -> Obj:
    """A Ready node status with its addresses, capacity and node info."""
    now = now_iso()
    status: Obj = {
        "addresses": [
            {"type": "InternalIP", "address": node_ip},
            {"type": "Hostname", "address": node_name},
        ],
        "capacity": {"cpu": "2", "memory": "16Gi", "pods": "110", "ephemeral-storage": "100Gi"},
        "allocatable": {"cpu": "2", "memory": "16Gi", "pods": "110", "ephemeral-storage": "100Gi"},
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "kubelet is posting ready status",
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            }
        ],
        "nodeInfo": {
            "kubeletVersion": "v1.24.0-sandbox",
            "containerRuntimeVersion": "sandbox://1.0",
            "operatingSystem": "linux",
            "architecture": "amd64",
            "osImage": "stateferry sandbox",
            "kernelVersion": "",
            "kubeProxyVersion": "v1.24.0-sandbox",
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
        },
    }
    return status
