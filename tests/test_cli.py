"""The `stateferry` console script, run as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from devservers.prefect_server import LocalPrefectServer

STATEFERRY = str(Path(sys.executable).with_name("stateferry"))


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([STATEFERRY, *args], capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize(
    "args",
    [("--no-such-option",), ("frobnicate",), ("blocks", "explode"), ()],
    ids=["unknown option", "unknown command", "unknown subcommand", "no command"],
)
def test_unknown_arguments_print_usage_and_exit_2(args: tuple[str, ...]) -> None:
    result = run_cli(*args)
    assert result.returncode == 2, result
    assert "usage: stateferry" in result.stderr
    assert "error" in result.stderr


def test_blocks_without_subcommand_prints_usage() -> None:
    result = run_cli("blocks")
    assert result.returncode == 2
    assert "usage: stateferry blocks" in result.stderr
    assert "register" in result.stderr


def test_help_lists_blocks_command() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert "blocks" in result.stdout


def test_blocks_register_against_prefect_api(prefect_server: LocalPrefectServer) -> None:
    env = {**os.environ, "PREFECT_API_URL": prefect_server.api_url}
    result = run_cli("blocks", "register", env=env)
    assert result.returncode == 0, result.stderr
    for slug in (
        "stateferry-kube-cluster",
        "stateferry-object-store",
        "stateferry-etcd-cluster",
        "stateferry-database",
    ):
        assert slug in result.stdout
    assert prefect_server.api_url in result.stdout


def test_blocks_register_reports_unreachable_api_in_one_line(tmp_path: Path) -> None:
    from devservers.ports import free_port

    env = {
        **os.environ,
        "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api",
        "PREFECT_HOME": str(tmp_path),
    }
    result = run_cli("blocks", "register", env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("stateferry: error:")
    assert "Traceback" not in result.stderr
