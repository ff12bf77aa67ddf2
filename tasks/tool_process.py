"""Dump and restore tools run as child processes: stderr drained on a thread, killed on failure.

Every tool the backups and restores stream through (mysqldump, pg_dump, redis-cli, mysql, psql,
tar …) runs the same way: its stderr is read on a thread so a chatty tool never blocks on a full
pipe, an exception while streaming kills it, and it is always waited for before its exit status and
stderr are read. :func:`run_tool` is that frame; :func:`stop_process` ends a helper server.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import threading
from collections.abc import Iterator
from typing import IO, cast

#: how much stderr the drain thread reads at once
_STDERR_READ = 4096


class TailBuffer:
    """The last ``limit`` bytes written to it (every byte when ``limit`` is None)."""

    def __init__(self, limit: int | None = 8192) -> None:
        self.limit = limit
        self.data = bytearray()

    def add(self, chunk: bytes) -> None:
        """Append a chunk, dropping what falls out of the window."""
        self.data += chunk
        if self.limit is not None and len(self.data) > self.limit:
            del self.data[: -self.limit]


class ToolRun:
    """A tool started by :func:`run_tool`: its process, its stderr and, once the ``with`` ends, its exit
    status."""

    def __init__(self, proc: subprocess.Popen[bytes], stderr_limit: int | None) -> None:
        assert proc.stderr is not None
        self.proc = proc
        self.stderr = TailBuffer(stderr_limit)
        self.returncode: int | None = None
        self._drain = threading.Thread(target=self._read, args=(proc.stderr,), daemon=True)
        self._drain.start()

    @property
    def stdin(self) -> IO[bytes]:
        """The tool's stdin (started with ``stdin=PIPE``)."""
        assert self.proc.stdin is not None
        return self.proc.stdin

    @property
    def stdout(self) -> io.BufferedReader:
        """The tool's stdout (started with ``stdout=PIPE``)."""
        return cast(io.BufferedReader, self.proc.stdout)

    def _read(self, pipe: IO[bytes]) -> None:
        for chunk in iter(lambda: pipe.read(_STDERR_READ), b""):
            self.stderr.add(chunk)

    def stderr_text(self, limit: int) -> str:
        """The last ``limit`` characters of the tool's stderr, decoded and stripped."""
        return self.stderr.data.decode(errors="replace").strip()[-limit:]

    def join(self) -> None:
        """Wait (a bounded time) for the stderr drain to reach the end of the pipe."""
        self._drain.join(timeout=10)


@contextlib.contextmanager
def run_tool(
    argv: list[str],
    *,
    stdin: int | None = subprocess.DEVNULL,
    stdout: int | None = subprocess.PIPE,
    env: dict[str, str] | None = None,
    stderr_limit: int | None = None,
) -> Iterator[ToolRun]:
    """Run ``argv`` for the body of the ``with``, its stderr collected on a thread.

    Args:
        argv: the command (never containing a password).
        stdin / stdout: as for :class:`subprocess.Popen` (``PIPE``, ``DEVNULL`` or None); by
            default a producer's: nothing in, stdout piped.
        env: environment for the tool.
        stderr_limit: keep only the last this many bytes of stderr (None: all of it).

    Yields:
        The :class:`ToolRun`; its ``returncode`` is set once the ``with`` ends.

    An exception in the body kills the tool and propagates; either way the tool's stdin is closed
    (end of input), the tool is waited for and the stderr drain joined before the ``with`` ends.
    """
    proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, env=env)
    run = ToolRun(proc, stderr_limit)
    try:
        yield run
    except BaseException:
        proc.kill()
        raise
    finally:
        if proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError):  # the tool may have stopped reading
                proc.stdin.close()
        run.returncode = proc.wait()
        run.join()


def stop_process(proc: subprocess.Popen[bytes], *, grace: float) -> None:
    """Stop a helper server (scratch mariadbd / redis-server): SIGTERM, then SIGKILL after ``grace``."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
