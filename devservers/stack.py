"""The local stack for the demo: a long-lived Prefect server (with UI) and two S3 stores.

``python -m devservers.stack up|down|status [--state-dir DIR]``. ``up`` reuses a running stack, replaces
a dead one, and records every process in ``<state-dir>/stack.json`` so ``down`` can stop it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from devservers.prefect_server import LocalPrefectServer
from devservers.s3 import SeaweedS3

DEFAULT_STATE_DIR = Path(".stateferry/stack")
DEMO_PREFECT_PORT = 4200


@dataclass
class StackInfo:
    """What a running stack offers."""

    prefect_api_url: str
    prefect_ui_url: str
    s3: dict[str, dict[str, str]]
    pids: list[int]

    def to_json(self) -> str:
        """Serialise."""
        return json.dumps(self.__dict__, indent=2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_state(state_dir: Path) -> StackInfo | None:
    """The recorded stack, if any."""
    path = state_dir / "stack.json"
    if not path.exists():
        return None
    return StackInfo(**json.loads(path.read_text()))


def status(state_dir: Path) -> tuple[str, StackInfo | None]:
    """``("running"|"stopped"|"half-dead", info)``."""
    info = read_state(state_dir)
    if info is None:
        return "stopped", None
    alive = [p for p in info.pids if _alive(p)]
    if len(alive) == len(info.pids):
        return "running", info
    return ("stopped" if not alive else "half-dead"), info


def down(state_dir: Path) -> None:
    """Stop every process of the stack (data kept)."""
    info = read_state(state_dir)
    if info is None:
        return
    for pid in info.pids:
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(p) for p in info.pids):
        time.sleep(0.2)
    for pid in info.pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    (state_dir / "stack.json").unlink(missing_ok=True)


def up(state_dir: Path, prefect_port: int | None = DEMO_PREFECT_PORT) -> StackInfo:
    """Start (or reuse) the stack and return where everything is."""
    state, current = status(state_dir)
    if state == "running" and current is not None:
        return current
    if state == "half-dead":
        down(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    from devservers.ports import wait_for_port

    port = prefect_port
    if port is not None and wait_for_port("127.0.0.1", port, 0.2):
        port = None  # 4200 is taken by something else: use a free port and say so
    server = LocalPrefectServer(state_dir / "prefect", port=port)
    stores = {
        "source": SeaweedS3(
            state_dir / "s3-source", access_key="demo-source", secret_key="demo-source-secret-key"
        ),
        "target": SeaweedS3(
            state_dir / "s3-target", access_key="demo-target", secret_key="demo-target-secret-key"
        ),
    }
    try:
        server.start()
        for s in stores.values():
            s.start()
    except BaseException:
        server.stop()
        for s in stores.values():
            s.stop()
        raise
    pids = [p.pid for p in [server.process, *(s.process for s in stores.values())] if p and p.pid]
    info = StackInfo(
        prefect_api_url=server.api_url,
        prefect_ui_url=server.ui_url,
        s3={
            name: {
                "endpoint": s.endpoint,
                "access_key": s.access_key,
                "secret_key_file": str(s.base_dir / "s3.json"),
            }
            for name, s in stores.items()
        },
        pids=pids,
    )
    path = state_dir / "stack.json"
    path.write_text(info.to_json())
    path.chmod(0o600)
    return info


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(prog="python -m devservers.stack")
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    args = parser.parse_args(argv)
    if args.action == "up":
        info = up(args.state_dir)
        print(f"Prefect UI:   {info.prefect_ui_url}")
        print(f"Prefect API:  {info.prefect_api_url}   (export PREFECT_API_URL={info.prefect_api_url})")
        for name, s3 in info.s3.items():
            print(f"S3 {name:7s}  http://{s3['endpoint']}  (access key {s3['access_key']})")
        return 0
    if args.action == "down":
        down(args.state_dir)
        print("stack stopped")
        return 0
    state, current = status(args.state_dir)
    print(state if current is None else f"{state}: UI {current.prefect_ui_url}")
    return 0 if state == "running" else 1


if __name__ == "__main__":
    sys.exit(main())
