"""Pod processes: a private mount (+UTS) namespace per pod, containers, probes and restarts.

A pod is a *holder* process (``unshare --mount --uts --propagation private``) that sets up the
pod's mounts and then sleeps, like the pause container of a real pod sandbox. Containers and exec
probes enter its mount namespace with ``nsenter``; volumes therefore survive container restarts,
and every mount vanishes with the namespace when the last process of the pod is gone. Nothing is
mounted on the host.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from sandbox.runtime import mountpoints
from sandbox.runtime.containers import Container, ContainerState, now
from sandbox.runtime.podplan import DEFAULT_PATH, ContainerPlan, Mount, PodPlan
from sandbox.runtime.podsandbox import nsenter_argv, setup_script
from sandbox.runtime.probes import Probe, run_probe
from sandbox.runtime.processes import (
    POD_MARKER_ENV,
    SANDBOX_MARKER_ENV,
    etcdctl_env,
    kill_marked,
    processes_with_env,
    terminate,
    terminate_soon,
)
from sandbox.runtime.timescale import scaled

# the plan types and process helpers are importable from here too (tests, older callers)
__all__ = [
    "DEFAULT_PATH",
    "POD_MARKER_ENV",
    "SANDBOX_MARKER_ENV",
    "ContainerPlan",
    "Mount",
    "PodPlan",
    "PodRuntime",
    "processes_with_env",
]

log = logging.getLogger(__name__)


class PodRuntime:
    """Runs one pod. Thread-safe; ``on_change`` is called (from runtime threads) on every change.

    Args:
        plan: the pod plan.
        on_change: callback without arguments, e.g. to make the kubelet push the pod status.
    """

    def __init__(
        self,
        plan: PodPlan,
        on_change: Callable[[], None] = lambda: None,
        on_event: Callable[[str, str, bool, str], None] | None = None,
    ) -> None:
        self.plan = plan
        self.on_change = on_change
        self.on_event = on_event
        self.holder: subprocess.Popen[bytes] | None = None
        self.containers = [Container(c) for c in plan.containers]
        self.init_containers = [Container(c, init=True) for c in plan.init_containers]
        self.error: str | None = None
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._created_dirs: list[Path] = []
        self.sandbox_ready = False

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Create the pod sandbox (holder + mounts) and start the container loop in a thread."""
        self._thread = threading.Thread(target=self._run, name=f"pod-{self.plan.name}", daemon=True)
        self._thread.start()

    def _marker_env(self) -> dict[str, str]:
        env = {POD_MARKER_ENV: self.plan.uid}
        if self.plan.marker:
            env[SANDBOX_MARKER_ENV] = self.plan.marker
        return env

    def _ensure_mountpoints(self) -> None:
        for m in self.plan.mounts:
            self._created_dirs.extend(mountpoints.ensure(Path(m.target), directory=Path(m.source).is_dir()))

    def _start_holder(self) -> None:
        p = self.plan
        p.pod_dir.mkdir(parents=True, exist_ok=True)
        self._ensure_mountpoints()
        script = p.pod_dir / "sandbox-setup.sh"
        script.write_text(setup_script(p))
        log_file = open(p.pod_dir / "sandbox.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            self.holder = subprocess.Popen(
                ["unshare", "--mount", "--uts", "--propagation", "private", "--", "/bin/sh", str(script)],
                stdout=subprocess.PIPE,
                stderr=log_file,
                stdin=subprocess.DEVNULL,
                env={"PATH": DEFAULT_PATH, **self._marker_env()},
                start_new_session=True,
            )
        finally:
            log_file.close()
        assert self.holder.stdout is not None
        line = self.holder.stdout.readline()
        if line.strip() != b"ready":
            self.holder.wait(timeout=5)
            err = (p.pod_dir / "sandbox.log").read_text(errors="replace")[-800:]
            raise RuntimeError(f"pod sandbox setup failed: {err.strip()}")
        self.holder.stdout.close()

    def _run(self) -> None:
        try:
            self._start_holder()
        except Exception as exc:
            log.warning("pod %s/%s: %s", self.plan.namespace, self.plan.name, exc)
            with self._lock:
                self.error = str(exc)
                for c in self.containers:
                    c.state.reason = "CreateContainerError"
            self.on_change()
            return
        with self._lock:
            self.sandbox_ready = True
        self.on_change()
        while not self._stopping.is_set():
            changed = False
            pending_init = next((c for c in self.init_containers if not c.done), None)
            if pending_init is not None:
                changed |= self._tick(pending_init)
            elif not self.init_failed:
                for c in self.containers:
                    changed |= self._tick(c)
            if changed:
                self.on_change()
            self._stopping.wait(0.1)

    def _tick(self, c: Container) -> bool:
        with self._lock:
            if c.done or self._stopping.is_set():
                return False
            if c.proc is None:
                if time.monotonic() < c.next_start:
                    return False
                self._start_container(c)
                return True
            code = c.proc.poll()
            if code is None:
                return False
            self._on_exit(c, code)
            return True

    def _event(self, c: Container, reason: str, message: str, warning: bool = False) -> None:
        if self.on_event is not None:
            kind = "initContainers" if c.init else "containers"
            try:
                self.on_event(reason, message, warning, f"spec.{kind}{{{c.plan.name}}}")
            except Exception as exc:
                log.debug("event: %s", exc)

    def _start_container(self, c: Container) -> None:
        c.generation += 1
        c.last_start = time.monotonic()
        self._event(c, "Pulled", f'Container image "{c.plan.image}" already present on machine')
        self._event(c, "Created", f"Created container {c.plan.name}")
        self._event(c, "Started", f"Started container {c.plan.name}")
        c.state.started_at = now()
        c.state.finished_at = None
        c.state.exit_code = None
        if not c.plan.argv:
            if self.plan.restart_policy == "Always" and not c.init:
                c.state.state, c.state.reason = "running", ""
                c.state.started = True
                c.state.ready = True
            else:  # a run-to-completion pod of an image without a process: succeeds at once
                c.state.state, c.state.reason, c.state.exit_code = "terminated", "Completed", 0
                c.state.finished_at = now()
                c.done = True
            return
        log_path = self.plan.pod_dir / f"{c.plan.name}.log"
        if c.generation > 1 and log_path.exists():  # keep the previous instance's log (kubectl logs -p)
            log_path.replace(self.plan.pod_dir / f"{c.plan.name}.previous.log")
        log_file = open(log_path, "ab")  # noqa: SIM115
        assert self.holder is not None
        try:
            c.proc = subprocess.Popen(
                nsenter_argv(self.holder.pid, c.plan.cwd, c.plan.identity, c.plan.argv),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**c.plan.env, **self._marker_env()},
                start_new_session=True,
            )
        except OSError as exc:
            c.state.state, c.state.reason = "waiting", "RunContainerError"
            c.next_start = time.monotonic() + scaled(10)
            log.warning("pod %s: container %s: %s", self.plan.name, c.plan.name, exc)
            return
        finally:
            log_file.close()
        c.state.pid = c.proc.pid
        c.state.state, c.state.reason = "running", ""
        if c.init:
            return  # init containers have no probes and are never ready
        c.state.ready = c.plan.readiness is None and c.plan.startup is None
        c.state.started = c.plan.startup is None
        threading.Thread(target=self._probe_loop, args=(c, c.generation), daemon=True).start()

    def _on_exit(self, c: Container, code: int) -> None:
        assert c.proc is not None
        pgid = c.proc.pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)  # the container's other processes die with PID 1
        c.proc = None
        if code < 0:
            code = 128 - code  # killed by a signal: 128 + signo, as the runtime reports it
        reason = "Completed" if code == 0 else "Error"
        if code == 137:
            reason = "Error"
        finished = now()
        c.state.ready = False
        c.state.started = False
        policy = self.plan.restart_policy
        restart = policy == "Always" or (policy == "OnFailure" and code != 0)
        if c.init:
            restart = code != 0 and policy != "Never"
        if self._stopping.is_set():
            restart = False
        if restart:
            c.state.last_terminated = {
                "exitCode": code,
                "reason": reason,
                "startedAt": c.state.started_at,
                "finishedAt": finished,
            }
            c.state.restart_count += 1
            ran_for = time.monotonic() - c.last_start
            if ran_for > scaled(600):
                backoff = 0.0
            else:
                backoff = (
                    0.0 if c.state.restart_count <= 1 else min(300.0, 10.0 * 2 ** (c.state.restart_count - 2))
                )
            c.next_start = time.monotonic() + scaled(backoff)
            c.state.state = "waiting"
            c.state.reason = "CrashLoopBackOff" if backoff else "ContainerCreating"
            if backoff:
                self._event(
                    c,
                    "BackOff",
                    f"Back-off restarting failed container {c.plan.name} in pod "
                    f"{self.plan.name}_{self.plan.namespace}({self.plan.uid})",
                    warning=True,
                )
        else:
            c.done = True
            c.state.state, c.state.reason = "terminated", reason
            c.state.exit_code, c.state.finished_at = code, finished

    # ------------------------------------------------------------------ probes
    def _alive(self, c: Container, generation: int) -> bool:
        return not self._stopping.is_set() and c.generation == generation and c.proc is not None

    def _probe_loop(self, c: Container, generation: int) -> None:
        plan = c.plan
        start = time.monotonic()

        def runner(argv: Sequence[str], timeout: float) -> int:
            extra = {**plan.probe_env, **etcdctl_env(argv, self.plan.pod_ip)}
            return self.exec(list(argv), timeout=timeout, container=plan.name, extra_env=extra).returncode

        counters = {"readiness": [0, 0], "liveness": [0, 0], "startup": [0, 0]}  # successes, failures
        next_due = {
            name: start + p.initial_delay
            for name, p in (
                ("readiness", plan.readiness),
                ("liveness", plan.liveness),
                ("startup", plan.startup),
            )
            if p is not None
        }
        while self._alive(c, generation):
            now = time.monotonic()
            for name in list(next_due):
                if name != "startup" and "startup" in next_due and not c.state.started:
                    continue
                if now < next_due[name]:
                    continue
                probe: Probe = getattr(plan, name)
                ok = run_probe(probe, runner)
                if not self._alive(c, generation):
                    return
                next_due[name] = time.monotonic() + probe.period
                succ_fail = counters[name]
                if ok:
                    succ_fail[0] += 1
                    succ_fail[1] = 0
                else:
                    succ_fail[1] += 1
                    succ_fail[0] = 0
                    self._event(c, "Unhealthy", f"{name.capitalize()} probe failed", warning=True)
                self._apply_probe(c, generation, name, probe, succ_fail, next_due)
            self._stopping.wait(0.05)

    def _apply_probe(
        self,
        c: Container,
        generation: int,
        name: str,
        probe: Probe,
        succ_fail: list[int],
        due: dict[str, float],
    ) -> None:
        changed = False
        with self._lock:
            if not self._alive(c, generation):
                return
            if name == "readiness":
                if succ_fail[0] >= probe.success_threshold and not c.state.ready and c.state.started:
                    c.state.ready, changed = True, True
                elif succ_fail[1] >= probe.failure_threshold and c.state.ready:
                    c.state.ready, changed = False, True
            elif name == "startup":
                if succ_fail[0] >= 1:
                    c.state.started, changed = True, True
                    c.state.ready = c.plan.readiness is None
                    due.pop("startup", None)
                    now = time.monotonic()
                    for other in ("readiness", "liveness"):
                        if other in due:
                            due[other] = now + getattr(c.plan, other).initial_delay
                elif succ_fail[1] >= probe.failure_threshold:
                    self._kill_container(c)
            elif name == "liveness" and succ_fail[1] >= probe.failure_threshold:
                self._kill_container(c)
        if changed:
            self.on_change()

    def _kill_container(self, c: Container) -> None:
        if c.proc is not None:
            terminate_soon(c.proc)

    # ------------------------------------------------------------------ exec / status
    def exec(
        self,
        argv: list[str],
        *,
        timeout: float = 30.0,
        container: str | None = None,
        extra_env: dict[str, str] | None = None,
        input_data: bytes | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a command inside the pod (its mount namespace, the container's env), like ``kubectl exec``.

        Returns:
            The completed process; a timeout yields returncode 124 (as ``timeout(1)`` does).
        """
        if self.holder is None or self.holder.poll() is not None:
            raise RuntimeError(f"pod {self.plan.namespace}/{self.plan.name} has no running sandbox")
        plan = next(
            (c.plan for c in self.containers + self.init_containers if container in (None, c.plan.name)), None
        )
        env = dict(plan.env) if plan else {"PATH": DEFAULT_PATH}
        env.update(extra_env or {})
        env.update(self._marker_env())
        cwd = plan.cwd if plan else "/"
        proc = subprocess.Popen(
            nsenter_argv(self.holder.pid, cwd, plan.identity if plan else None, argv),
            stdin=subprocess.PIPE if input_data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(input=input_data, timeout=timeout)
            return subprocess.CompletedProcess(argv, proc.returncode, out, err)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            return subprocess.CompletedProcess(argv, 124, out, err)

    def spawn(self, argv: list[str], *, container: str, stdin: bool) -> subprocess.Popen[bytes]:
        """Start ``argv`` in a running container (pod mount namespace, the container's env, cwd and
        securityContext identity) with piped stdout/stderr, for ``pods/exec``.

        Raises:
            RuntimeError: the pod or the container is not running.
        """
        if self.holder is None or self.holder.poll() is not None:
            raise RuntimeError(f"pod {self.plan.namespace}/{self.plan.name} has no running sandbox")
        run = next((c for c in self.containers if c.plan.name == container), None)
        if run is None or (run.plan.argv and (run.proc is None or run.proc.poll() is not None)):
            raise RuntimeError(f'container not found ("{container}")')
        plan = run.plan
        env = {**plan.env, **self._marker_env()}
        who = plan.exec_identity or plan.identity
        return subprocess.Popen(
            nsenter_argv(self.holder.pid, plan.cwd, who, argv),
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )

    @property
    def holder_pid(self) -> int | None:
        """PID of the process holding the pod's namespaces."""
        return self.holder.pid if self.holder is not None else None

    def snapshot(self) -> list[ContainerState]:
        """Return a copy of every container's state."""
        with self._lock:
            return [ContainerState(**vars(c.state)) for c in self.containers]

    def init_snapshot(self) -> list[ContainerState]:
        """Return a copy of every init container's state."""
        with self._lock:
            return [ContainerState(**vars(c.state)) for c in self.init_containers]

    @property
    def init_done(self) -> bool:
        """True when every init container completed successfully."""
        return all(c.done and c.state.exit_code == 0 for c in self.init_containers)

    @property
    def init_failed(self) -> bool:
        """True when an init container failed for good (restartPolicy Never)."""
        return any(c.done and c.state.exit_code not in (0, None) for c in self.init_containers)

    def pids(self) -> list[int]:
        """PIDs of the holder and of running container main processes."""
        with self._lock:
            out = [self.holder.pid] if self.holder is not None else []
            out.extend(c.proc.pid for c in self.containers + self.init_containers if c.proc is not None)
            return out

    # ------------------------------------------------------------------ termination
    def stop(self, grace: float = 30.0) -> None:
        """Terminate the pod: SIGTERM to each container, SIGKILL after ``grace`` seconds, then the sandbox."""
        self._stopping.set()
        with self._lock:
            procs = [c.proc for c in self.containers + self.init_containers if c.proc is not None]
            for c in self.containers + self.init_containers:
                if c.proc is not None:
                    self._event(c, "Killing", f"Stopping container {c.plan.name}")
        terminate(procs, grace)
        with self._lock:
            for c in self.containers:
                if c.proc is not None:
                    code = c.proc.returncode
                    c.state.exit_code = 128 - code if code is not None and code < 0 else code
                    c.proc = None
                c.state.state, c.state.ready = "terminated", False
                if c.state.exit_code is None:  # never ran, or a container without a process
                    c.state.exit_code = 0 if not c.plan.argv else 137
                c.state.reason = "Completed" if c.state.exit_code == 0 else "Error"
                c.state.finished_at = c.state.finished_at or now()
        if self.holder is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.holder.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.holder.wait(timeout=5)
        kill_marked(POD_MARKER_ENV, self.plan.uid)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def remove_mountpoints(self, still_used: set[str]) -> None:
        """Remove the mount points this pod created on the host that no pod on the machine still uses."""
        mountpoints.remove_unused(self._created_dirs, still_used)
