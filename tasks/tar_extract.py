"""Extraction of a stored tar part: every member checked by :class:`TarGate` before GNU tar sees it."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import BinaryIO

from stateferry.errors import InputError
from stateferry.worker.tarcheck import TarGate, UnsafeArchive
from tasks.restore_ops import RestoreFailed, decompress_chunks
from tasks.tool_process import run_tool

#: GNU tar reading a checked stream; ``--listed-incremental=/dev/null`` applies an incremental
#: archive's deletions (``inc_files``), a plain archive is extracted as it is
_EXTRACT = ["--extract", "--delay-directory-restore", "--file=-"]


def extract_checked(fh: BinaryIO, dest: Path, *, incremental: bool) -> None:
    """Extract a compressed tar part into ``dest`` through :class:`TarGate` and GNU tar.

    Raises:
        InputError: field ``backup``: a member would leave ``dest`` (nothing of it is written).
        RestoreFailed: tar failed (truncated or corrupt archive).
    """
    gate = TarGate(dest)
    flags = [*_EXTRACT, "--listed-incremental=/dev/null"] if incremental else _EXTRACT
    refused: UnsafeArchive | None = None
    with run_tool(["tar", *flags, "-C", str(dest)], stdin=subprocess.PIPE, stdout=None) as tar:
        try:
            for chunk in decompress_chunks(fh):
                tar.stdin.write(gate.feed(chunk))
            if not gate.ended:
                raise RestoreFailed("the archive ends before its end-of-archive blocks (truncated)")
        except UnsafeArchive as exc:
            refused = exc
            tar.proc.kill()
        except BrokenPipeError:
            pass
    if refused is not None:
        raise InputError("backup", f"the archive is refused: {refused}", "restore another backup")
    if tar.returncode != 0:
        raise RestoreFailed(f"tar exited with status {tar.returncode}: {tar.stderr_text(800)}")
