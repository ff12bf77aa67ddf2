"""Defaults a real API server fills in (see k8s-fidelity.md, "Defaults filled in by the server")."""

from __future__ import annotations

import base64
import random
from collections.abc import Callable
from typing import Any

Obj = dict[str, Any]

SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def random_suffix(n: int = 5) -> str:
    """A ``<5>`` suffix from the alphabet Kubernetes uses for generated names."""
    return "".join(random.choice(SUFFIX_ALPHABET) for _ in range(n))


def _probe(probe: Obj | None) -> None:
    if not isinstance(probe, dict):
        return
    probe.setdefault("timeoutSeconds", 1)
    probe.setdefault("periodSeconds", 10)
    probe.setdefault("successThreshold", 1)
    probe.setdefault("failureThreshold", 3)
    for handler in ("httpGet",):
        if isinstance(probe.get(handler), dict):
            probe[handler].setdefault("path", "/")
            probe[handler].setdefault("scheme", "HTTP")


def _container(c: Obj) -> None:
    image = str(c.get("image") or "")
    if "imagePullPolicy" not in c and image:
        last = image.rsplit("/", 1)[-1]
        tagged = ":" in last and not last.endswith(":latest")
        c["imagePullPolicy"] = "IfNotPresent" if (tagged or "@" in last) else "Always"
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    c.setdefault("resources", {})
    for port in c.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
    for env in c.get("env") or []:
        if isinstance(env, dict) and isinstance(env.get("valueFrom"), dict):
            ref = env["valueFrom"].get("fieldRef")
            if isinstance(ref, dict):
                ref.setdefault("apiVersion", "v1")
    for name in ("livenessProbe", "readinessProbe", "startupProbe"):
        _probe(c.get(name))


def pod_spec(spec: Obj) -> None:
    """Defaults of a PodSpec (pods and every pod template)."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for key in ("containers", "initContainers"):
        for c in spec.get(key) or []:
            if isinstance(c, dict):
                _container(c)
    for vol in spec.get("volumes") or []:
        if not isinstance(vol, dict):
            continue
        for src in ("configMap", "secret"):
            if isinstance(vol.get(src), dict):
                vol[src].setdefault("defaultMode", 420)
        if isinstance(vol.get("hostPath"), dict):
            vol["hostPath"].setdefault("type", "")
        if len([k for k in vol if k != "name"]) == 0:
            vol["emptyDir"] = {}


def pod_template(tmpl: Obj | None) -> None:
    """Defaults of a PodTemplateSpec."""
    if not isinstance(tmpl, dict):
        return
    meta = tmpl.setdefault("metadata", {})
    if isinstance(meta, dict):
        meta.setdefault("creationTimestamp", None)
    spec = tmpl.get("spec")
    if isinstance(spec, dict):
        pod_spec(spec)


def pod(obj: Obj) -> None:
    """Pod defaults (on every write)."""
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    pod_spec(spec)
    if spec.get("serviceAccountName") or spec.get("serviceAccount"):
        sa = spec.get("serviceAccountName") or spec.get("serviceAccount")
        spec["serviceAccountName"] = sa
        spec["serviceAccount"] = sa
    spec.setdefault("enableServiceLinks", True)
    status = obj.setdefault("status", {})
    status.setdefault("phase", "Pending")
    status.setdefault("qosClass", _qos(spec))


def pod_admission(obj: Obj) -> None:
    """What admission plugins add to a new pod: service account (+ token volume), priority, tolerations."""
    spec = obj["spec"]
    sa = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    spec["serviceAccountName"] = sa
    spec["serviceAccount"] = sa
    spec.setdefault("priority", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    tolerations = spec.setdefault("tolerations", [])
    if isinstance(tolerations, list):
        keys = {t.get("key") for t in tolerations if isinstance(t, dict)}
        for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
            if key not in keys:
                tolerations.append(
                    {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
                )
    if spec.get("automountServiceAccountToken") is not False:
        vols = spec.setdefault("volumes", [])
        if isinstance(vols, list) and not any(
            isinstance(v, dict) and str(v.get("name", "")).startswith("kube-api-access-") for v in vols
        ):
            name = f"kube-api-access-{random_suffix()}"
            vols.append(
                {
                    "name": name,
                    "projected": {
                        "defaultMode": 420,
                        "sources": [
                            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                            {
                                "configMap": {
                                    "name": "kube-root-ca.crt",
                                    "items": [{"key": "ca.crt", "path": "ca.crt"}],
                                }
                            },
                            {
                                "downwardAPI": {
                                    "items": [
                                        {
                                            "path": "namespace",
                                            "fieldRef": {
                                                "apiVersion": "v1",
                                                "fieldPath": "metadata.namespace",
                                            },
                                        }
                                    ]
                                }
                            },
                        ],
                    },
                }
            )
            for c in spec.get("containers") or []:
                if isinstance(c, dict):
                    c.setdefault("volumeMounts", []).append(
                        {
                            "name": name,
                            "readOnly": True,
                            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                        }
                    )


def _qos(spec: Obj) -> str:
    requests: list[Obj] = []
    limits: list[Obj] = []
    for c in spec.get("containers") or []:
        if isinstance(c, dict):
            res = c.get("resources") or {}
            requests.append(res.get("requests") or {})
            limits.append(res.get("limits") or {})
    if not any(requests) and not any(limits):
        return "BestEffort"
    guaranteed = all(
        lim.get("cpu") and lim.get("memory") and (not req or req == lim)
        for req, lim in zip(requests, limits, strict=True)
    )
    return "Guaranteed" if guaranteed else "Burstable"


def _pvc_spec(spec: Obj) -> None:
    spec.setdefault("volumeMode", "Filesystem")


def statefulset(obj: Obj) -> None:
    """StatefulSet defaults."""
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("podManagementPolicy", "OrderedReady")
    spec.setdefault("revisionHistoryLimit", 10)
    strategy = spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
    if strategy.get("type", "RollingUpdate") == "RollingUpdate":
        strategy["type"] = "RollingUpdate"
        strategy.setdefault("rollingUpdate", {}).setdefault("partition", 0)
    spec.setdefault("persistentVolumeClaimRetentionPolicy", {"whenDeleted": "Retain", "whenScaled": "Retain"})
    pod_template(spec.get("template"))
    for vct in spec.get("volumeClaimTemplates") or []:
        if isinstance(vct, dict):
            vct.setdefault("apiVersion", "v1")
            vct.setdefault("kind", "PersistentVolumeClaim")
            vct.setdefault("metadata", {}).setdefault("creationTimestamp", None)
            _pvc_spec(vct.setdefault("spec", {}))
            vct.setdefault("status", {"phase": "Pending"})


def deployment(obj: Obj) -> None:
    """Deployment defaults."""
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    strategy = spec.setdefault("strategy", {})
    if strategy.get("type", "RollingUpdate") == "RollingUpdate":
        strategy["type"] = "RollingUpdate"
        ru = strategy.setdefault("rollingUpdate", {})
        ru.setdefault("maxUnavailable", "25%")
        ru.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    pod_template(spec.get("template"))


def replicaset(obj: Obj) -> None:
    """ReplicaSet defaults."""
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    pod_template(spec.get("template"))


def daemonset(obj: Obj) -> None:
    """DaemonSet defaults."""
    spec = obj.setdefault("spec", {})
    strategy = spec.setdefault("updateStrategy", {})
    if strategy.get("type", "RollingUpdate") == "RollingUpdate":
        strategy["type"] = "RollingUpdate"
        ru = strategy.setdefault("rollingUpdate", {})
        ru.setdefault("maxUnavailable", 1)
        ru.setdefault("maxSurge", 0)
    spec.setdefault("revisionHistoryLimit", 10)
    pod_template(spec.get("template"))


def replicationcontroller(obj: Obj) -> None:
    """ReplicationController defaults."""
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    tmpl = spec.get("template") or {}
    labels = (tmpl.get("metadata") or {}).get("labels")
    if "selector" not in spec and labels:
        spec["selector"] = dict(labels)
    pod_template(spec.get("template"))


def job(obj: Obj) -> None:
    """Job defaults (selector and labels carry the Job's uid)."""
    spec = obj.setdefault("spec", {})
    uid = obj["metadata"]["uid"]
    name = obj["metadata"]["name"]
    spec.setdefault("parallelism", 1)
    if "completions" not in spec:
        spec["completions"] = 1
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    tmpl = spec.setdefault("template", {})
    if isinstance(tmpl, dict) and not spec.get("manualSelector"):
        labels = tmpl.setdefault("metadata", {}).setdefault("labels", {})
        labels.setdefault("controller-uid", uid)
        labels.setdefault("job-name", name)
        labels.setdefault("batch.kubernetes.io/controller-uid", uid)
        labels.setdefault("batch.kubernetes.io/job-name", name)
        spec.setdefault("selector", {"matchLabels": {"controller-uid": uid}})
    if isinstance(tmpl, dict):
        spec_ = tmpl.get("spec")
        if isinstance(spec_, dict) and "restartPolicy" not in spec_:
            spec_["restartPolicy"] = "Always"  # then rejected by validation, as on a real server
    pod_template(tmpl)
    obj["metadata"].setdefault("annotations", {}).setdefault("batch.kubernetes.io/job-tracking", "")


def cronjob(obj: Obj) -> None:
    """CronJob defaults."""
    spec = obj.setdefault("spec", {})
    spec.setdefault("concurrencyPolicy", "Allow")
    spec.setdefault("suspend", False)
    spec.setdefault("successfulJobsHistoryLimit", 3)
    spec.setdefault("failedJobsHistoryLimit", 1)
    jt = spec.get("jobTemplate")
    if isinstance(jt, dict):
        jt.setdefault("metadata", {}).setdefault("creationTimestamp", None)
        jspec = jt.setdefault("spec", {})
        jspec.setdefault("backoffLimit", 6)
        jspec.setdefault("completionMode", "NonIndexed")
        jspec.setdefault("suspend", False)
        pod_template(jspec.get("template"))
    obj.setdefault("status", {})


def service(obj: Obj) -> None:
    """Service defaults (cluster IPs and node ports are allocated by the registry)."""
    spec = obj.setdefault("spec", {})
    stype = spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if stype != "ExternalName":
        spec.setdefault("internalTrafficPolicy", "Cluster")
    for port in spec.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
            if "targetPort" not in port and "port" in port:
                port["targetPort"] = port["port"]
    if stype in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    if stype == "LoadBalancer":
        spec.setdefault("allocateLoadBalancerNodePorts", True)
    obj.setdefault("status", {"loadBalancer": {}})


def secret(obj: Obj) -> None:
    """Secret defaults: ``stringData`` merged into base64 ``data``; ``type`` Opaque."""
    obj.setdefault("type", "Opaque")
    string_data = obj.pop("stringData", None)
    if isinstance(string_data, dict) and string_data:
        data = obj.get("data") or {}
        for k, v in string_data.items():
            data[k] = base64.b64encode(str(v).encode()).decode()
        obj["data"] = data


def namespace(obj: Obj) -> None:
    """Namespace defaults."""
    name = obj["metadata"].get("name")
    if name:  # a missing name is left to validation (422 FieldValueRequired), never a 500
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
    spec = obj.setdefault("spec", {})
    spec.setdefault("finalizers", ["kubernetes"])
    obj.setdefault("status", {}).setdefault("phase", "Active")


def pvc(obj: Obj) -> None:
    """PersistentVolumeClaim defaults."""
    _pvc_spec(obj.setdefault("spec", {}))
    obj.setdefault("status", {}).setdefault("phase", "Pending")


def pv(obj: Obj) -> None:
    """PersistentVolume defaults."""
    spec = obj.setdefault("spec", {})
    spec.setdefault("persistentVolumeReclaimPolicy", "Retain")
    spec.setdefault("volumeMode", "Filesystem")
    obj.setdefault("status", {}).setdefault("phase", "Pending")


def podtemplate(obj: Obj) -> None:
    """PodTemplate defaults."""
    pod_template(obj.get("template"))


DEFAULTERS: dict[tuple[str, str], Callable[[Obj], None]] = {
    ("", "pods"): pod,
    ("", "services"): service,
    ("", "secrets"): secret,
    ("", "namespaces"): namespace,
    ("", "persistentvolumeclaims"): pvc,
    ("", "persistentvolumes"): pv,
    ("", "podtemplates"): podtemplate,
    ("", "replicationcontrollers"): replicationcontroller,
    ("apps", "statefulsets"): statefulset,
    ("apps", "deployments"): deployment,
    ("apps", "replicasets"): replicaset,
    ("apps", "daemonsets"): daemonset,
    ("batch", "jobs"): job,
    ("batch", "cronjobs"): cronjob,
}
