"""Translate an API Pod into a :class:`PodPlan`: images, env (valueFrom), volumes, probes.

Deviations from a real container runtime, because pods share the host's network namespace:
``0.0.0.0`` in command/args/env is rewritten to the pod IP, and exec probes get
``ETCDCTL_ENDPOINTS=http://<pod-ip>:2379`` (see README.md).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sandbox.runtime.podplan import DEFAULT_PATH, ContainerPlan, Mount, PodPlan
from sandbox.runtime.probes import parse_probe
from sandbox.runtime.security import SecurityConfigError, apply_fs_group, container_identity

Obj = dict[str, Any]
Getter = Callable[[str, str, str], Obj | None]  # (plural, namespace, name) -> object

ETCD_ENTRYPOINT = ["/usr/local/bin/etcd"]
PROJECT_ENTRYPOINT = ["stateferry"]


class PodNotReady(Exception):
    """The pod cannot start yet (e.g. an unbound claim); the kubelet retries."""


class PodConfigError(Exception):
    """The pod's configuration is broken (missing ConfigMap key ...): CreateContainerConfigError."""


def image_kind(image: str) -> str:
    """``etcd`` (runs /usr/bin/etcd), ``project`` (runs this project's Python) or ``none`` (no process)."""
    repo = image.split("@", 1)[0].rsplit(":", 1)[0] if "/" in image or ":" in image else image
    if image.startswith("stateferry/") or repo == "stateferry":
        return "project"
    if "etcd" in repo.rsplit("/", 1)[-1] or "etcd" in image:
        return "etcd"
    return "none"


_VAR_RE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.\-]*)\)")


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion (``$$`` escapes; unknown references stay as they are)."""

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return _VAR_RE.sub(repl, value)


def _field_ref(pod: Obj, path: str, node_ip: str) -> str:
    md = pod.get("metadata") or {}
    status = pod.get("status") or {}
    spec = pod.get("spec") or {}
    simple = {
        "metadata.name": md.get("name"),
        "metadata.namespace": md.get("namespace"),
        "metadata.uid": md.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName") or "default",
        "status.podIP": status.get("podIP"),
        "status.hostIP": node_ip,
    }
    if path in simple:
        return str(simple[path] or "")
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return str((md.get(m.group(1)) or {}).get(m.group(2), ""))
    if path in ("metadata.labels", "metadata.annotations"):
        items = md.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    raise PodConfigError(f"unsupported fieldRef fieldPath {path!r}")


def _key_of(getter: Getter, kind: str, ns: str, ref: Obj) -> str | None:
    plural = "configmaps" if kind == "configMap" else "secrets"
    obj = getter(plural, ns, str(ref.get("name")))
    optional = bool(ref.get("optional"))
    if obj is None:
        if optional:
            return None
        raise PodConfigError(f'{kind} "{ref.get("name")}" not found')
    key = str(ref.get("key"))
    if kind == "configMap":
        data = obj.get("data") or {}
        if key in data:
            return str(data[key])
        binary = obj.get("binaryData") or {}
        if key in binary:
            return base64.b64decode(binary[key]).decode(errors="replace")
    else:
        sdata = obj.get("data") or {}
        if key in sdata:
            return base64.b64decode(sdata[key]).decode(errors="replace")
    if optional:
        return None
    raise PodConfigError(f"couldn't find key {key} in {plural[:-1].capitalize()} {ns}/{ref.get('name')}")


def etcd_localhost_defaults(argv: list[str], env: dict[str, str], pod_ip: str) -> dict[str, str]:
    """Listen URLs for an etcd container that leaves them at etcd's ``localhost`` defaults.

    In a real pod ``localhost:2379/2380`` is private to the pod; here pods share the host's network,
    so two such pods (or a host etcd) would collide. The pod IP stands in for the pod's localhost.
    """
    text = " ".join(argv)
    out: dict[str, str] = {}
    for flag, var, port in (
        ("listen-client-urls", "ETCD_LISTEN_CLIENT_URLS", 2379),
        ("listen-peer-urls", "ETCD_LISTEN_PEER_URLS", 2380),
    ):
        if flag not in text and var not in env:
            out[var] = f"http://{pod_ip}:{port}"
    return out


def container_env(
    pod: Obj, container: Obj, getter: Getter, *, node_ip: str, api_ip: str, kind: str
) -> dict[str, str]:
    """The process environment of a container, as the kubelet builds it."""
    ns = str((pod.get("metadata") or {}).get("namespace"))
    spec = pod.get("spec") or {}
    hostname = spec.get("hostname") or (pod.get("metadata") or {}).get("name")
    path = DEFAULT_PATH
    if kind == "project":
        path = f"{Path(sys.executable).parent}:{DEFAULT_PATH}"
    env: dict[str, str] = {"PATH": path, "HOSTNAME": str(hostname), "HOME": "/root"}
    if kind == "project":
        env["LANG"] = "C.UTF-8"
        env["PYTHONUNBUFFERED"] = "1"
    env["KUBERNETES_SERVICE_HOST"] = api_ip
    env["KUBERNETES_SERVICE_PORT"] = "6443"
    for src in container.get("envFrom") or []:
        prefix = str(src.get("prefix") or "")
        for kind_key, plural in (("configMapRef", "configmaps"), ("secretRef", "secrets")):
            ref = src.get(kind_key)
            if not ref:
                continue
            obj = getter(plural, ns, str(ref.get("name")))
            if obj is None:
                if ref.get("optional"):
                    continue
                raise PodConfigError(f'{plural[:-1]} "{ref.get("name")}" not found')
            for k, v in (obj.get("data") or {}).items():
                env[prefix + k] = (
                    base64.b64decode(v).decode(errors="replace") if plural == "secrets" else str(v)
                )
    for item in container.get("env") or []:
        name = str(item.get("name"))
        if "value" in item and item["value"] is not None:
            env[name] = expand(str(item["value"]), env)
            continue
        vf = item.get("valueFrom") or {}
        value: str | None = ""
        if vf.get("fieldRef"):
            value = _field_ref(pod, str(vf["fieldRef"].get("fieldPath")), node_ip)
        elif vf.get("configMapKeyRef"):
            value = _key_of(getter, "configMap", ns, vf["configMapKeyRef"])
        elif vf.get("secretKeyRef"):
            value = _key_of(getter, "secret", ns, vf["secretKeyRef"])
        elif vf.get("resourceFieldRef"):
            value = "0"
        if value is not None:
            env[name] = value
    return env


def _write_files(target: Path, files: dict[str, bytes], mode: int | None) -> None:
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for rel, data in files.items():
        p = target / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        if mode is not None:
            os.chmod(p, mode)


def _keyed_files(obj: Obj | None, items: list[Obj] | None, secret: bool) -> dict[str, bytes]:
    if obj is None:
        return {}
    data: dict[str, bytes] = {}
    for k, v in (obj.get("data") or {}).items():
        data[k] = base64.b64decode(v) if secret else str(v).encode()
    for k, v in (obj.get("binaryData") or {}).items():
        data[k] = base64.b64decode(v)
    if items:
        return {str(i["path"]): data[i["key"]] for i in items if i.get("key") in data}
    return data


def _fs_group(pod: Obj, root: Path, read_only: bool) -> None:
    psc = (pod.get("spec") or {}).get("securityContext") or {}
    if psc.get("fsGroup") is not None and not read_only:
        apply_fs_group(root, int(psc["fsGroup"]), policy=str(psc.get("fsGroupChangePolicy") or "Always"))


def volume_sources(pod: Obj, getter: Getter, pod_dir: Path, node_ip: str) -> dict[str, tuple[str, bool]]:
    """Materialise each volume of the pod; return volume name -> (host path, read-only)."""
    ns = str((pod.get("metadata") or {}).get("namespace"))
    out: dict[str, tuple[str, bool]] = {}
    for vol in (pod.get("spec") or {}).get("volumes") or []:
        name = str(vol.get("name"))
        vdir = pod_dir / "volumes" / name
        if vol.get("persistentVolumeClaim") is not None:
            claim = str(vol["persistentVolumeClaim"].get("claimName"))
            pvc = getter("persistentvolumeclaims", ns, claim)
            if pvc is None:
                raise PodNotReady(f'persistentvolumeclaim "{claim}" not found')
            pv_name = (pvc.get("spec") or {}).get("volumeName")
            if not pv_name or (pvc.get("status") or {}).get("phase") != "Bound":
                raise PodNotReady(f'pod has unbound immediate PersistentVolumeClaims ("{claim}")')
            pv = getter("persistentvolumes", "", str(pv_name))
            pv_spec = (pv or {}).get("spec") or {}
            path = (pv_spec.get("hostPath") or pv_spec.get("local") or {}).get("path")
            if not path:
                raise PodNotReady(f'persistentvolume "{pv_name}" has no local path')
            Path(path).mkdir(parents=True, exist_ok=True)
            out[name] = (str(path), bool(vol["persistentVolumeClaim"].get("readOnly")))
            _fs_group(pod, Path(path), out[name][1])
        elif vol.get("emptyDir") is not None:
            vdir.mkdir(parents=True, exist_ok=True)
            vdir.chmod(0o777)  # as the kubelet's emptyDir plugin leaves it
            out[name] = (str(vdir), False)
            _fs_group(pod, vdir, False)
        elif vol.get("hostPath") is not None:
            path = str(vol["hostPath"].get("path"))
            if vol["hostPath"].get("type") == "DirectoryOrCreate":
                Path(path).mkdir(parents=True, exist_ok=True)
            out[name] = (path, False)
        elif vol.get("configMap") is not None or vol.get("secret") is not None:
            secret = vol.get("secret") is not None
            ref = vol.get("secret") if secret else vol.get("configMap")
            assert ref is not None
            obj_name = str(ref.get("secretName") if secret else ref.get("name"))
            obj = getter("secrets" if secret else "configmaps", ns, obj_name)
            if obj is None and not ref.get("optional"):
                raise PodNotReady(f'{"secret" if secret else "configmap"} "{obj_name}" not found')
            _write_files(vdir, _keyed_files(obj, ref.get("items"), secret), ref.get("defaultMode"))
            out[name] = (str(vdir), True)
        elif vol.get("projected") is not None or vol.get("downwardAPI") is not None:
            files: dict[str, bytes] = {}
            sources = (vol.get("projected") or {}).get("sources") or []
            if vol.get("downwardAPI") is not None:
                sources = [{"downwardAPI": vol["downwardAPI"]}]
            for src in sources:
                if src.get("serviceAccountToken") is not None:
                    files[str(src["serviceAccountToken"].get("path") or "token")] = b"sandbox-token"
                for key, plural in (("configMap", "configmaps"), ("secret", "secrets")):
                    if src.get(key) is not None:
                        obj = getter(plural, ns, str(src[key].get("name")))
                        files.update(_keyed_files(obj, src[key].get("items"), plural == "secrets"))
                if src.get("downwardAPI") is not None:
                    for item in src["downwardAPI"].get("items") or []:
                        if item.get("fieldRef"):
                            value = _field_ref(pod, str(item["fieldRef"].get("fieldPath")), node_ip)
                            files[str(item["path"])] = value.encode()
            _write_files(vdir, files, None)
            out[name] = (str(vdir), True)
        else:
            vdir.mkdir(parents=True, exist_ok=True)  # unsupported volume types: an empty directory
            out[name] = (str(vdir), False)
    return out


def build_plan(
    pod: Obj,
    getter: Getter,
    *,
    pod_ip: str,
    pod_dir: Path,
    node_ip: str,
    api_ip: str,
    marker: str,
) -> PodPlan:
    """Build the runtime plan of a pod (raises :class:`PodNotReady` / :class:`PodConfigError`)."""
    md = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    vols = volume_sources(pod, getter, pod_dir, node_ip)
    mounts: list[Mount] = []
    seen_targets: set[str] = set()

    def plan_of(c: Obj) -> ContainerPlan:
        kind = image_kind(str(c.get("image") or ""))
        env = container_env(pod, c, getter, node_ip=node_ip, api_ip=api_ip, kind=kind)
        try:
            identity = container_identity(pod, c, kind)
        except SecurityConfigError as exc:
            raise PodConfigError(str(exc)) from None
        if identity.uid != 0 and env.get("HOME") == "/root":
            env["HOME"] = "/"  # a user without a home in the image's /etc/passwd
        env = {k: v.replace("0.0.0.0", pod_ip) for k, v in env.items()}
        argv: list[str] = []
        if kind != "none":
            command = [str(x) for x in c.get("command") or []]
            args = [str(x) for x in c.get("args") or []]
            if not command:
                command = ETCD_ENTRYPOINT if kind == "etcd" else PROJECT_ENTRYPOINT
            argv = [expand(a, env).replace("0.0.0.0", pod_ip) for a in command + args]
        if kind == "etcd":
            env.update(etcd_localhost_defaults(argv, env, pod_ip))
        ports = {str(p["name"]): int(p["containerPort"]) for p in c.get("ports") or [] if p.get("name")}
        for vm in c.get("volumeMounts") or []:
            src = vols.get(str(vm.get("name")))
            if src is None:
                raise PodConfigError(f'volumeMount "{vm.get("name")}" refers to no volume of the pod')
            target = str(vm.get("mountPath"))
            if target in seen_targets:
                continue  # containers share the pod's mount namespace: the first mount wins
            seen_targets.add(target)
            source = src[0]
            if vm.get("subPath"):
                source = str(Path(source) / str(vm["subPath"]))
                if not Path(source).exists():
                    Path(source).mkdir(parents=True)
            mounts.append(Mount(source, target, bool(vm.get("readOnly")) or src[1]))
        return ContainerPlan(
            name=str(c.get("name")),
            image=str(c.get("image") or ""),
            argv=argv,
            env=env,
            cwd=str(c.get("workingDir") or "/"),
            readiness=parse_probe(c.get("readinessProbe"), pod_ip, ports),
            liveness=parse_probe(c.get("livenessProbe"), pod_ip, ports),
            startup=parse_probe(c.get("startupProbe"), pod_ip, ports),
            identity=identity if kind != "none" else None,
            exec_identity=identity,
        )

    init_containers = [plan_of(c) for c in spec.get("initContainers") or []]
    containers = [plan_of(c) for c in spec.get("containers") or []]
    hostname = str(spec.get("hostname") or md.get("name"))
    pod_dir.mkdir(parents=True, exist_ok=True)
    (pod_dir / "pod.json").write_text(json.dumps({"namespace": md.get("namespace"), "name": md.get("name")}))
    return PodPlan(
        uid=str(md.get("uid")),
        namespace=str(md.get("namespace")),
        name=str(md.get("name")),
        hostname=hostname,
        pod_ip=pod_ip,
        pod_dir=pod_dir,
        hosts_file=pod_dir / "hosts",
        resolv_file=pod_dir / "resolv.conf",
        mounts=mounts,
        containers=containers,
        init_containers=init_containers,
        restart_policy=str(spec.get("restartPolicy") or "Always"),
        marker=marker,
    )
