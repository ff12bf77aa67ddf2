"""The kubelet of a sandbox cluster's single Node: binds pods, runs them, reports their status."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

from kubernetes.client.exceptions import ApiException

from sandbox.runtime.dns import ClusterDns, resolv_conf, write_in_place
from sandbox.runtime.events import EventRecorder
from sandbox.runtime.ippool import IpPool
from sandbox.runtime.kube import Kube, Obj, path_of
from sandbox.runtime.node import node_object, node_status
from sandbox.runtime.objects import meta, name_of, ns_of, pod_phase, terminating, uid_of
from sandbox.runtime.pods import PodRuntime
from sandbox.runtime.podspec import PodConfigError, PodNotReady, build_plan
from sandbox.runtime.podstatus import pod_status, restarted_status, strip_times, waiting_status
from sandbox.runtime.world import World

log = logging.getLogger(__name__)


class Kubelet:
    """Runs the pods bound to one Node.

    Args:
        cluster: cluster name.
        kube: API access.
        cluster_dir: ``<state_dir>/<cluster>``; pods live under ``pods/``.
        node_name: the Node's name.
        node_ip: the Node's address (``status.hostIP``).
        api_ip: the API server's address (``KUBERNETES_SERVICE_HOST``).
        nameserver: the dead nameserver written into pods' resolv.conf.
        pod_pool: pod IP pool.
        marker: the sandbox marker put into every process's environment.
        kick: called after a status change so the controllers react.
    """

    def __init__(
        self,
        cluster: str,
        kube: Kube,
        cluster_dir: Path,
        *,
        node_name: str,
        node_ip: str,
        api_ip: str,
        nameserver: str,
        pod_pool: IpPool,
        marker: str,
        kick: Any,
    ) -> None:
        self.cluster = cluster
        self.kube = kube
        self.cluster_dir = cluster_dir
        self.node_name = node_name
        self.node_ip = node_ip
        self.api_ip = api_ip
        self.nameserver = nameserver
        self.pod_pool = pod_pool
        self.marker = marker
        self.kick = kick
        self.runtimes: dict[str, PodRuntime] = {}
        self.events = EventRecorder(kube, "kubelet", node_name)
        self.pods: dict[str, Obj] = {}  # last seen API object by uid
        self.waiting: dict[str, str] = {}  # uid -> reason the pod cannot start
        self.stopping: set[str] = set()
        self.dns = ClusterDns()
        self._pushed: dict[str, Any] = {}
        self._dirty: set[str] = set()
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._pusher = threading.Thread(target=self._push_loop, name=f"kubelet-status-{cluster}", daemon=True)
        self._pusher.start()

    # ------------------------------------------------------------------ node
    def register_node(self) -> None:
        """Create (or refresh) the Node object."""
        self.kube.create("nodes", None, node_object(self.node_name, self.pod_cidr), exist_ok=True)
        status = node_status(self.node_name, self.node_ip)
        self.kube.patch("nodes", None, self.node_name, {"status": status}, sub="status")

    def mark_pods_not_ready(self) -> int:
        """After a (re)start, no container of this node runs yet: report every Running pod NotReady.

        Returns:
            How many pods were updated.
        """
        count = 0
        for pod in self.kube.list("pods")[0]:
            status = pod.get("status") or {}
            if (pod.get("spec") or {}).get("nodeName") != self.node_name or status.get("phase") != "Running":
                continue
            body = {"status": restarted_status(status)}
            with contextlib.suppress(ApiException):
                self.kube.patch("pods", ns_of(pod), name_of(pod), body, sub="status")
                count += 1
        return count

    @property
    def pod_cidr(self) -> str:
        """The pod address range of the node."""
        parts = self.node_ip.split(".")
        return f"{parts[0]}.{parts[1]}.0.0/16"

    # ------------------------------------------------------------------ sync
    def sync(self, world: World, dns: ClusterDns) -> None:
        """Bind unbound pods, start new ones, stop deleted ones, refresh hosts files."""
        self.dns = dns
        seen: set[str] = set()
        for pod in world["pods"]:
            uid = uid_of(pod)
            seen.add(uid)
            with self._lock:
                self.pods[uid] = pod
            spec = pod.get("spec") or {}
            if not spec.get("nodeName"):
                if not terminating(pod):
                    self._bind(pod)
                continue
            if spec.get("nodeName") != self.node_name:
                continue
            if terminating(pod):
                self._terminate(pod)
                continue
            if uid in self.runtimes or uid in self.stopping:
                continue
            if pod_phase(pod) in ("Succeeded", "Failed"):
                continue
            self._start(pod)
        for uid in list(self.runtimes):
            if uid not in seen and uid not in self.stopping:
                self._terminate(self.pods.get(uid) or {"metadata": {"uid": uid}}, api_gone=True)
        for uid in list(self.waiting):
            if uid not in seen:
                self.waiting.pop(uid, None)
                self.pod_pool.release(uid)
        self.refresh_hosts()
        self._mark_all_dirty()

    def _bind(self, pod: Obj) -> None:
        """Schedule a pod onto the Node through the ``binding`` subresource, as the scheduler does."""
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name_of(pod), "namespace": ns_of(pod)},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name},
        }
        try:
            self.kube.request("POST", path_of("pods", ns_of(pod), name_of(pod), "binding"), binding)
            self.events.record(
                pod,
                "Scheduled",
                f"Successfully assigned {ns_of(pod)}/{name_of(pod)} to {self.node_name}",
                component="default-scheduler",
                kind="Pod",
                api_version="v1",
            )
        except ApiException as exc:
            if exc.status == 409:
                return  # bound meanwhile
            try:
                self.kube.patch("pods", ns_of(pod), name_of(pod), {"spec": {"nodeName": self.node_name}})
            except ApiException as exc2:
                log.warning("cannot bind pod %s/%s: %s", ns_of(pod), name_of(pod), exc2.reason)

    def _pod_dir(self, pod: Obj) -> Path:
        return self.cluster_dir / "pods" / f"{ns_of(pod)}_{name_of(pod)}_{uid_of(pod)}"

    def _getter(self, plural: str, namespace: str, name: str) -> Obj | None:
        return self.kube.get(plural, namespace or None, name)

    def _start(self, pod: Obj) -> None:
        uid = uid_of(pod)
        ip = (pod.get("status") or {}).get("podIP")
        if not (ip and self.pod_pool.reserve(uid, ip)):
            ip = self.pod_pool.allocate(uid)
        pod_dir = self._pod_dir(pod)
        try:
            plan = build_plan(
                pod,
                self._getter,
                pod_ip=ip,
                pod_dir=pod_dir,
                node_ip=self.node_ip,
                api_ip=self.api_ip,
                marker=self.marker,
            )
        except (PodNotReady, PodConfigError) as exc:
            reason = "ContainerCreating" if isinstance(exc, PodNotReady) else "CreateContainerConfigError"
            if self.waiting.get(uid) != f"{reason}:{exc}":
                self.waiting[uid] = f"{reason}:{exc}"
                self._push_waiting(pod, ip, reason, str(exc))
            return
        self.waiting.pop(uid, None)
        write_in_place(plan.resolv_file, resolv_conf(plan.namespace, self.nameserver))
        write_in_place(plan.hosts_file, self._hosts_for(plan.namespace, ip, plan.hostname, pod))
        runtime = PodRuntime(
            plan,
            on_change=lambda: self._dirty_add(uid),
            on_event=lambda reason, message, warning, field_path: self.events.record(
                pod, reason, message, warning=warning, field_path=field_path, kind="Pod", api_version="v1"
            ),
        )
        # a pod that ran before the supervisor restarted: its containers restart (like after a node reboot)
        previous = {cs.get("name"): cs for cs in (pod.get("status") or {}).get("containerStatuses") or []}
        was_running = pod_phase(pod) == "Running"
        for c in runtime.containers:
            prev = previous.get(c.plan.name) or {}
            if prev and was_running:
                c.state.restart_count = int(prev.get("restartCount") or 0) + 1
                c.state.last_terminated = (prev.get("lastState") or {}).get("terminated")
        with self._lock:
            self.runtimes[uid] = runtime
        runtime.start()
        self._write_pod_index()
        self._dirty_add(uid)

    def _hosts_for(self, namespace: str, ip: str, hostname: str, pod: Obj) -> str:
        subdomain = (pod.get("spec") or {}).get("subdomain")
        names = [hostname]
        if subdomain:
            # A real kubelet writes the FQDN and the hostname; the shorter forms resolve in a real cluster
            # through the search path as soon as the endpoints controller publishes the pod (at once for
            # publishNotReadyAddresses). Writing them here keeps a starting pod from waiting for the next
            # DNS refresh to resolve its own advertised name (etcd retries that only once a second).
            names = [
                f"{hostname}.{subdomain}.{namespace}.svc.{self.dns.domain}",
                f"{hostname}.{subdomain}.{namespace}.svc",
                f"{hostname}.{subdomain}.{namespace}",
                f"{hostname}.{subdomain}",
                hostname,
            ]
        return self.dns.render(namespace, own=(ip, names))

    def refresh_hosts(self) -> None:
        """Rewrite every running pod's /etc/hosts (in place) from the current DNS records."""
        with self._lock:
            runtimes = list(self.runtimes.items())
        for uid, rt in runtimes:
            pod = self.pods.get(uid) or {}
            with contextlib.suppress(OSError):
                write_in_place(
                    rt.plan.hosts_file,
                    self._hosts_for(rt.plan.namespace, rt.plan.pod_ip, rt.plan.hostname, pod),
                    create=False,
                )
        # a cluster-wide file with the fully qualified names, for diagnostics
        with contextlib.suppress(OSError):
            write_in_place(self.cluster_dir / "dns" / "hosts", self.dns.render(None))

    def _terminate(self, pod: Obj, api_gone: bool = False) -> None:
        uid = uid_of(pod)
        if uid in self.stopping:
            return
        with self._lock:
            runtime = self.runtimes.get(uid)
            self.stopping.add(uid)
        md = meta(pod)
        grace = md.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)

        def run() -> None:
            try:
                if runtime is not None:
                    runtime.stop(grace=float(grace))
                    self._dirty_add(uid)
                    self._push_one(uid)
                if not api_gone:
                    self.kube.delete("pods", ns_of(pod), name_of(pod), grace=0, uid=uid)
            except Exception as exc:
                log.warning("terminating pod %s: %s", name_of(pod), exc)
            finally:
                with self._lock:
                    self.runtimes.pop(uid, None)
                    self.stopping.discard(uid)
                    self.pods.pop(uid, None)
                    self._pushed.pop(uid, None)
                    if runtime is not None:
                        used = {m.target for rt in self.runtimes.values() for m in rt.plan.mounts}
                        runtime.remove_mountpoints(used)
                        shutil.rmtree(runtime.plan.pod_dir, ignore_errors=True)
                self.pod_pool.release(uid)
                self._write_pod_index()
                self.kick()

        threading.Thread(target=run, name=f"terminate-{name_of(pod)}", daemon=True).start()

    def _write_pod_index(self) -> None:
        with self._lock:
            index = {
                f"{rt.plan.namespace}/{rt.plan.name}": {
                    "uid": uid,
                    "pod_dir": str(rt.plan.pod_dir),
                    "holder_pid": rt.holder_pid,
                    "pod_ip": rt.plan.pod_ip,
                }
                for uid, rt in self.runtimes.items()
            }
        with contextlib.suppress(OSError):
            (self.cluster_dir / "pods").mkdir(parents=True, exist_ok=True)
            tmp = self.cluster_dir / "pods" / "index.json.tmp"
            tmp.write_text(json.dumps(index, indent=1, sort_keys=True))
            tmp.replace(self.cluster_dir / "pods" / "index.json")

    def exec_process(
        self, namespace: str, pod: str, container: str, argv: list[str], stdin: bool
    ) -> subprocess.Popen[bytes]:
        """Start a ``pods/exec`` process in a running container (see :meth:`PodRuntime.spawn`).

        Raises:
            RuntimeError: the pod or container is not running (the message says which).
        """
        with self._lock:
            runtime = next(
                (
                    rt
                    for rt in self.runtimes.values()
                    if rt.plan.namespace == namespace and rt.plan.name == pod
                ),
                None,
            )
        if runtime is None:
            raise RuntimeError(f'container not found ("{container}")')
        return runtime.spawn(argv, container=container, stdin=stdin)

    def read_log(
        self, namespace: str, pod: str, container: str, tail: int | None, previous: bool
    ) -> str | None:
        """The log of a container (``kubectl logs``); None while it has not started."""
        with self._lock:
            runtime = next(
                (
                    rt
                    for rt in self.runtimes.values()
                    if rt.plan.namespace == namespace and rt.plan.name == pod
                ),
                None,
            )
        if runtime is not None:
            pod_dir = runtime.plan.pod_dir
        else:  # a finished pod from before a supervisor restart
            dirs = sorted(
                (self.cluster_dir / "pods").glob(f"{namespace}_{pod}_*"), key=lambda p: p.stat().st_mtime
            )
            if not dirs:
                return None
            pod_dir = dirs[-1]
        suffix = ".previous.log" if previous else ".log"
        try:
            text = (pod_dir / f"{container}{suffix}").read_text(errors="replace")
        except OSError:
            return None
        if tail is not None:
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-tail:]) if tail > 0 else ""
        return text

    def all_pids(self) -> list[int]:
        """Every process the kubelet runs (holders and container main processes)."""
        with self._lock:
            return [pid for rt in self.runtimes.values() for pid in rt.pids()]

    # ------------------------------------------------------------------ status
    def _dirty_add(self, uid: str) -> None:
        with self._lock:
            self._dirty.add(uid)
        self._wake.set()

    def _mark_all_dirty(self) -> None:
        with self._lock:
            self._dirty.update(self.runtimes)
        self._wake.set()

    def _push_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            with self._lock:
                dirty, self._dirty = self._dirty, set()
            pushed = False
            for uid in dirty:
                try:
                    pushed |= self._push_one(uid)
                except Exception as exc:
                    log.debug("status push %s: %s", uid, exc)
            if pushed:
                self._write_pod_index()
                self.kick()

    def _push_one(self, uid: str) -> bool:
        with self._lock:
            runtime = self.runtimes.get(uid)
            pod = self.pods.get(uid)
        if runtime is None or pod is None:
            return False
        status = pod_status(pod, runtime, self.node_ip)
        cmp = json.dumps(strip_times(status), sort_keys=True)
        if self._pushed.get(uid) == cmp:
            return False
        try:
            self.kube.patch("pods", ns_of(pod), name_of(pod), {"status": status}, sub="status")
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        self._pushed[uid] = cmp
        return True

    def _push_waiting(self, pod: Obj, ip: str, reason: str, message: str) -> None:
        status = waiting_status(pod, self.node_ip, reason, message)
        with contextlib.suppress(ApiException):
            self.kube.patch("pods", ns_of(pod), name_of(pod), {"status": status}, sub="status")

    def stop_all(self, grace: float = 5.0) -> None:
        """Stop every pod (supervisor shutdown); pods stay in the API and restart on the next ``up``."""
        self._stop.set()
        with self._lock:
            runtimes = list(self.runtimes.values())
        threads = [threading.Thread(target=rt.stop, args=(grace,), daemon=True) for rt in runtimes]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=grace + 10)
