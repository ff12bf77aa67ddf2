"""The servers a backup benchmark runs against: a source server, a SeaweedFS S3 and a Prefect server
in one temporary directory, all removed afterwards, with the Prefect API URL set for this process
and the S3 store saved as the ObjectStore block ``bench-s3``."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Stack:
    """The running servers and their directory."""

    work: Path
    source: Any
    s3: Any
    prefect: Any


@contextlib.contextmanager
def bench_stack(prefix: str, source: Any) -> Iterator[Stack]:
    """Start ``source(work_dir)`` (e.g. ``LocalMariaDB``), S3 and Prefect; stop and remove them at the end.

    Args:
        prefix: the temporary directory's prefix.
        source: called with a directory, returns an unstarted server with ``start()``/``cleanup()``.
    """
    from pydantic import SecretStr

    from devservers.prefect_server import LocalPrefectServer
    from devservers.s3 import SeaweedS3

    work = Path(tempfile.mkdtemp(prefix=prefix))
    servers: list[Any] = []
    try:
        src = source(work / "source")
        s3 = SeaweedS3(work / "s3", access_key="bench", secret_key="bench-secret-" + "z" * 16)
        prefect = LocalPrefectServer(work / "prefect", ui=False)
        for server in (src, s3, prefect):
            server.start()
            servers.append(server)
        os.environ["PREFECT_API_URL"] = prefect.api_url
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        from blocks.object_store import ObjectStore

        ObjectStore(endpoint=s3.endpoint, access_key=s3.access_key, secret_key=SecretStr(s3.secret_key)).save(
            "bench-s3", overwrite=True
        )
        yield Stack(work, src, s3, prefect)
    finally:
        for server in reversed(servers):
            with contextlib.suppress(Exception):
                server.cleanup()
        shutil.rmtree(work, ignore_errors=True)
