"""tasks.tool_process: the frame every dump / restore tool runs in."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tasks.tool_process import TailBuffer, run_tool, stop_process


def test_tail_buffer_keeps_the_last_bytes_or_everything() -> None:
    tail = TailBuffer(4)
    for chunk in (b"ab", b"cdef", b"g"):
        tail.add(chunk)
    assert bytes(tail.data) == b"defg"
    whole = TailBuffer(None)
    for chunk in (b"ab", b"cdef", b"g"):
        whole.add(chunk)
    assert bytes(whole.data) == b"abcdefg"


def test_run_tool_streams_stdout_and_collects_stderr() -> None:
    script = "import sys; sys.stdout.write('out' * 3); sys.stderr.write('x' * 10000 + 'END'); sys.exit(3)"
    with run_tool([sys.executable, "-c", script], stderr_limit=100) as run:
        out = run.stdout.read()
    assert out == b"outoutout"
    assert run.returncode == 3
    assert len(run.stderr.data) == 100
    assert run.stderr_text(5) == "xxEND"


def test_run_tool_feeds_stdin_and_ends_it() -> None:
    script = "import sys; data = sys.stdin.buffer.read(); sys.exit(0 if data == b'abc' else 1)"
    with run_tool([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=None) as run:
        run.stdin.write(b"abc")  # not closed here: the frame ends the input
    assert run.returncode == 0


def test_run_tool_kills_the_tool_when_the_body_fails() -> None:
    with (
        pytest.raises(RuntimeError, match="stop"),
        run_tool([sys.executable, "-c", "import time; time.sleep(60)"]) as run,
    ):
        raise RuntimeError("stop")
    assert run.returncode is not None and run.returncode < 0


def test_stop_process_terminates_a_server() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    stop_process(proc, grace=5)
    assert proc.returncode is not None
    stop_process(proc, grace=5)  # already gone: nothing to do
