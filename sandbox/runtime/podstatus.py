"""The status the kubelet reports for a pod: phase, conditions and container statuses of a running
pod, of one waiting to start, and of one that ran before the supervisor restarted."""

from __future__ import annotations

from sandbox.runtime.kube import Obj
from sandbox.runtime.objects import now_iso, pod_phase
from sandbox.runtime.pods import PodRuntime


def restarted_status(status: Obj) -> Obj:
    """The status of a Running pod whose containers do not run yet (after a supervisor restart):
    NotReady, each running container terminated with exit code 255 and waiting again."""
    statuses = []
    for cs in status.get("containerStatuses") or []:
        cs = {**cs, "ready": False, "started": False}
        if "running" in (cs.get("state") or {}):
            cs["lastState"] = {
                "terminated": {
                    "exitCode": 255,
                    "reason": "Unknown",
                    "startedAt": cs["state"]["running"].get("startedAt"),
                    "finishedAt": now_iso(),
                }
            }
            cs["state"] = {"waiting": {"reason": "ContainerCreating"}}
        statuses.append(cs)
    return {
        "conditions": conditions(status, scheduled=True, initialized=True, ready=False),
        "containerStatuses": statuses or None,
    }


def waiting_status(pod: Obj, node_ip: str, reason: str, message: str) -> Obj:
    """The status of a pod whose containers cannot start yet (``reason``: ContainerCreating or
    CreateContainerConfigError)."""
    prev = pod.get("status") or {}
    now = now_iso()
    # a pod that already ran keeps its phase, restart counts and last states while a container
    # waits to start again (as a kubelet after a node reboot); only a new pod is Pending
    before = {cs.get("name"): cs for cs in prev.get("containerStatuses") or []}
    statuses = [
        {
            "name": c.get("name"),
            "image": c.get("image"),
            "imageID": "",
            "ready": False,
            "started": False,
            "restartCount": int(was.get("restartCount") or 0),
            "state": {"waiting": {"reason": reason, "message": message}},
            "lastState": was.get("lastState") or {},
        }
        for c in (pod.get("spec") or {}).get("containers") or []
        for was in [before.get(c.get("name")) or {}]
    ]
    status = {
        "phase": "Running" if pod_phase(pod) == "Running" else "Pending",
        "hostIP": node_ip,
        "startTime": prev.get("startTime") or now,
        "conditions": conditions(prev, scheduled=True, initialized=True, ready=False),
        "containerStatuses": statuses,
        "qosClass": prev.get("qosClass") or "BestEffort",
    }
    return status


def pod_status(pod: Obj, runtime: PodRuntime, node_ip: str) -> Obj:
    """The status of a pod the runtime runs: phase, conditions, container and init container statuses."""
    prev = pod.get("status") or {}
    states = runtime.snapshot()
    init_states = runtime.init_snapshot()
    initialized = runtime.init_done
    ready = initialized and bool(states) and all(s.ready for s in states)
    policy = runtime.plan.restart_policy
    if runtime.error:
        phase = "Pending"
    elif runtime.init_failed:
        phase = "Failed"
    elif not initialized:
        phase = "Pending"
    elif (
        states
        and all(s.state == "terminated" for s in states)
        and (policy == "Never" or (policy == "OnFailure" and all(s.exit_code == 0 for s in states)))
    ):
        phase = "Succeeded" if all(s.exit_code == 0 for s in states) else "Failed"
    elif not runtime.sandbox_ready:
        phase = "Pending"
    else:
        phase = "Running"
    if phase in ("Succeeded", "Failed"):
        ready = False
    now = now_iso()
    container_statuses = [s.as_status() for s in states]
    if runtime.error:
        for cs in container_statuses:
            cs["state"] = {"waiting": {"reason": "CreateContainerError", "message": runtime.error}}
    if not initialized:
        for cs in container_statuses:
            if "waiting" in cs["state"]:
                cs["state"] = {"waiting": {"reason": "PodInitializing"}}
    status: Obj = {
        "phase": phase,
        "hostIP": node_ip,
        "hostIPs": [{"ip": node_ip}],
        "podIP": runtime.plan.pod_ip,
        "podIPs": [{"ip": runtime.plan.pod_ip}],
        "startTime": prev.get("startTime") or now,
        "conditions": conditions(prev, scheduled=True, initialized=initialized, ready=ready),
        "containerStatuses": container_statuses,
        "qosClass": prev.get("qosClass") or "BestEffort",
    }
    if init_states:
        status["initContainerStatuses"] = [s.as_status() for s in init_states]
    return status


def conditions(prev: Obj, *, scheduled: bool, initialized: bool, ready: bool) -> list[Obj]:
    """The pod conditions, keeping each one's lastTransitionTime while its status is unchanged."""
    old = {c.get("type"): c for c in prev.get("conditions") or []}
    now = now_iso()

    def cond(ctype: str, ok: bool) -> Obj:
        st = "True" if ok else "False"
        before = old.get(ctype) or {}
        out: Obj = {
            "type": ctype,
            "status": st,
            "lastProbeTime": None,
            "lastTransitionTime": before.get("lastTransitionTime") if before.get("status") == st else now,
        }
        if not ok and ctype in ("Ready", "ContainersReady"):
            out["reason"] = "ContainersNotReady"
        if not ok and ctype == "Initialized":
            out["reason"] = "ContainersNotInitialized"
        return out

    return [
        cond("Initialized", initialized),
        cond("Ready", ready),
        cond("ContainersReady", ready),
        cond("PodScheduled", scheduled),
    ]


def strip_times(status: Obj) -> Obj:
    """The status without the conditions' transition times (to compare statuses)."""
    out = dict(status)
    out["conditions"] = [
        {k: v for k, v in c.items() if k != "lastTransitionTime"} for c in status["conditions"]
    ]
    return out
