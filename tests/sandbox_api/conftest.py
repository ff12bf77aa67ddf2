"""Fixtures of the sandbox API server tests: one real ApiServer per session, clients from a kubeconfig."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client, config

from sandbox.apiserver import ApiServer
from sandbox.kubeconfig import write_kubeconfig

KUBECTL = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "kubectl"


@dataclass
class ApiEnv:
    """A running API server and what tests need to talk to it."""

    server: ApiServer
    kubeconfig: Path
    cache_dir: Path
    api_client: client.ApiClient

    @property
    def core(self) -> Any:
        """Typed core/v1 API (typed ``Any`` so tests need not narrow every Optional)."""
        return client.CoreV1Api(self.api_client)

    @property
    def apps(self) -> Any:
        """Typed apps/v1 API (typed ``Any`` like :attr:`core`)."""
        return client.AppsV1Api(self.api_client)

    def request(
        self, method: str, path: str, body: object = None, content_type: str = "application/json"
    ) -> tuple[int, dict[str, Any]]:
        """Raw HTTP call (for content types and bodies the typed client cannot send)."""
        resp = httpx.request(
            method,
            self.server.url + path,
            content=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": content_type, "Accept": "application/json"},
            timeout=10,
        )
        if resp.headers.get("content-type", "").startswith("application/json"):
            return resp.status_code, resp.json()
        return resp.status_code, {"text": resp.text}

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run the pinned kubectl against context ``source``."""
        env = dict(os.environ, KUBECACHEDIR=str(self.cache_dir))
        proc = subprocess.run(
            [str(KUBECTL), "--kubeconfig", str(self.kubeconfig), "--context", "source", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
        return proc


@pytest.fixture(scope="session")
def api_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiEnv]:
    """A real sandbox ApiServer on a free loopback port, plus a kubeconfig with context ``source``."""
    root = tmp_path_factory.mktemp("sandbox-api")
    server = ApiServer("source", "127.0.0.1", 0, root / "state", service_cidr_base="127.251.96")
    server.start()
    try:
        kubeconfig = root / "kubeconfig"
        write_kubeconfig(kubeconfig, {"source": server.url})
        api_client = config.new_client_from_config(config_file=str(kubeconfig), context="source")
        yield ApiEnv(server, kubeconfig, root / "kube-cache", api_client)
        api_client.close()
    finally:
        server.stop()


@pytest.fixture
def namespace(api_env: ApiEnv) -> Iterator[str]:
    """A fresh namespace per test (deleted afterwards)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    api_env.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    try:
        api_env.core.delete_namespace(name)
    except client.ApiException:
        pass


@pytest.fixture
def wait_for() -> Callable[..., object]:
    """Poll ``fn`` until it returns a truthy value (or fail after ``timeout`` seconds)."""
    import time

    def _wait(fn: Callable[[], object], timeout: float = 5.0, interval: float = 0.02) -> object:
        deadline = time.monotonic() + timeout
        while True:
            value = fn()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout}s")
            time.sleep(interval)

    return _wait
