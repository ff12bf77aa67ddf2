"""The containers of a running pod: their observed state (``containerStatuses``) and the
runtime's bookkeeping of each one's process, restarts and back-off."""

from __future__ import annotations

import datetime as dt
import subprocess
from dataclasses import dataclass
from typing import Any

from sandbox.runtime.podplan import ContainerPlan


def now() -> str:
    """RFC 3339 timestamp with second precision (container start and finish times)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ContainerState:
    """Observed state of one container (what the kubelet reports in ``containerStatuses``)."""

    name: str
    image: str
    state: str = "waiting"  # waiting | running | terminated
    reason: str = "ContainerCreating"
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    restart_count: int = 0
    ready: bool = False
    started: bool = False
    last_terminated: dict[str, Any] | None = None
    pid: int | None = None

    def as_status(self) -> dict[str, Any]:
        """Render as a ``ContainerStatus`` dict of the API."""
        state: dict[str, Any]
        if self.state == "running":
            state = {"running": {"startedAt": self.started_at}}
        elif self.state == "terminated":
            state = {
                "terminated": {
                    "exitCode": self.exit_code,
                    "reason": self.reason,
                    "startedAt": self.started_at,
                    "finishedAt": self.finished_at,
                }
            }
        else:
            state = {"waiting": {"reason": self.reason}}
        out: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "imageID": "",
            "containerID": f"sandbox://{self.pid}" if self.pid else None,
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": state,
            "lastState": {"terminated": self.last_terminated} if self.last_terminated else {},
        }
        if out["containerID"] is None:
            del out["containerID"]
        return out


class Container:
    """One container of a running pod: its plan, state and current process."""

    def __init__(self, plan: ContainerPlan, init: bool = False) -> None:
        self.plan = plan
        self.init = init
        self.state = ContainerState(name=plan.name, image=plan.image)
        self.proc: subprocess.Popen[bytes] | None = None
        self.next_start = 0.0
        self.generation = 0
        self.done = False  # will not be restarted
        self.last_start = 0.0
