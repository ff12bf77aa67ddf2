"""Run quiesce exec hooks (``planning/hooks.py``) in the source's pods through ``pods/exec``.

The commands go as argv lists (``command=`` query parameters of the exec WebSocket, the Python
client's ``stream``): no shell is involved unless the user's argv starts one. A command's exit code
comes from the error channel's Status. Output is never logged or returned (it may hold data of the
application); an error message carries the exit code and the last line of stderr, shortened.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from blocks.kube import KubeCluster
from planning.hooks import Hook
from stateferry.errors import PreconditionFailed, translate
from tasks.kube_dynamic import dynamic_client, list_selected, served_resource

__all__ = ["HookFailed", "HookRun", "hook_pods", "run_hook_phase"]


class HookFailed(PreconditionFailed):
    """A pre or post exec hook failed (non-zero exit, timeout, pod or container gone).

    Attributes:
        runs: the commands run so far (report rows).
    """

    def __init__(self, message: str, runs: list[HookRun] | None = None) -> None:
        super().__init__(message)
        self.runs = list(runs or [])

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.runs))


@dataclass(frozen=True)
class HookRun:
    """One command run in one pod."""

    hook: int
    phase: str
    pod: str
    argv0: str
    exit_code: int | None
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Report row."""
        return {
            "hook": self.hook,
            "phase": self.phase,
            "pod": self.pod,
            "command": self.argv0,
            "exit_code": self.exit_code,
            "message": self.message,
        }


@task(cache_policy=NO_CACHE)
def hook_pods(cluster: KubeCluster, hooks: list[Hook]) -> dict[int, list[str]]:
    """The running pods (``namespace/name``) each hook selects.

    Raises:
        HookFailed: a hook selects no running pod, or a selected pod has no such container.
    """
    dyn = dynamic_client(cluster.api_client())
    pods = served_resource(dyn, "v1", "Pod")
    out: dict[int, list[str]] = {}
    for h in hooks:
        running = [
            p
            for p in list_selected(dyn, pods, h.namespace, h.selector)
            if (p.get("status") or {}).get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")
        ]
        if not running:
            raise HookFailed(
                f"{h.field}: no running pod in namespace {h.namespace} matches {h.selector!r}. "
                "Fix: correct the selector/namespace or start the application; nothing was stopped"
            )
        for p in running:
            names = [c.get("name") for c in (p.get("spec") or {}).get("containers") or []]
            if h.container not in names:
                raise HookFailed(
                    f"{h.field}: pod {h.namespace}/{p['metadata']['name']} has no container {h.container!r} "
                    f"(it has {names}). Fix: correct {h.field}.container; nothing was stopped"
                )
        out[h.index] = sorted(f"{h.namespace}/{p['metadata']['name']}" for p in running)
    return out


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    return last if len(last) <= 200 else last[:197] + "..."


def _exec(
    api: Any, ns: str, pod: str, container: str, argv: tuple[str, ...], timeout: int
) -> tuple[int | None, str]:
    from kubernetes.stream import stream

    resp = stream(
        api.connect_get_namespaced_pod_exec, pod, ns, container=container, command=list(argv),
        stdout=True, stderr=True, stdin=False, tty=False, _preload_content=False,
    )  # fmt: skip
    try:
        resp.run_forever(timeout=timeout)
        code = resp.returncode if not resp.is_open() else None
        return code, _last_line(resp.read_stderr() if code else "")
    finally:
        resp.close()


@task(cache_policy=NO_CACHE)
def run_hook_phase(
    cluster: KubeCluster, hooks: list[Hook], pods: dict[int, list[str]], phase: str
) -> list[HookRun]:
    """Run every ``phase`` (``pre``/``post``) command of every hook in each of its pods, in order.

    ``pre`` stops at the first failure (raising :class:`HookFailed` with the runs so far in its
    ``runs`` attribute); ``post`` runs everything and raises at the end if anything failed.
    """
    from kubernetes import client

    log = get_run_logger()
    api = client.CoreV1Api(cluster.api_client())
    runs: list[HookRun] = []
    failures: list[str] = []
    for h in hooks:
        for key in pods.get(h.index, []):
            ns, name = key.split("/", 1)
            for argv in h.pre if phase == "pre" else h.post:
                try:
                    code, err = _exec(api, ns, name, h.container, argv, h.timeout_seconds)
                except Exception as exc:
                    code, err = None, str(translate(exc, context=f"exec in {key}"))
                if code is None and not err:
                    err = f"no exit status within {h.timeout_seconds}s"
                run = HookRun(h.index, phase, key, argv[0], code, "" if code == 0 else err)
                runs.append(run)
                log.info("%s %s hook %r in %s: exit %s", h.field, phase, argv[0], key, code)
                if code != 0:
                    failures.append(
                        f"{h.field} {phase} command {argv[0]!r} in pod {key} (container {h.container}) "
                        f"{'exited with ' + str(code) if code is not None else 'failed'}"
                        f"{': ' + err if err else ''}"
                    )
                    if phase == "pre":
                        raise HookFailed(failures[0], runs)
    if failures:
        raise HookFailed("; ".join(failures), runs)
    return runs
