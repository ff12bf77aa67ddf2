"""Progress of a mirror pass as a Prefect progress artifact, written beside the pass."""

from __future__ import annotations

import contextvars
import threading
from typing import Any

__all__ = ["PassProgress"]


class PassProgress:
    """A Prefect progress artifact, written by a background thread (best effort, never raises).

    The transfer loop only records the latest value; the API calls (create, then at most one update
    a second) run beside it, so a slow API server never slows a pass down. :meth:`finish` writes 100 %
    and waits (bounded) for the writer.
    """

    def __init__(self, description: str) -> None:
        self.description = description
        self.artifact_id: Any = None
        self._pending: float | None = None
        self._closed = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def __call__(self, done: int, total: int) -> None:
        pct = 100.0 * done / total if total else 100.0
        with self._cond:
            self._pending = pct
            if self._thread is None:
                context = contextvars.copy_context()  # the artifact belongs to this flow/task run
                self._thread = threading.Thread(
                    target=context.run, args=(self._write,), daemon=True, name="mirror-progress"
                )
                self._thread.start()
            self._cond.notify()

    def _write(self) -> None:
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._cond.wait()
                if self._pending is None:
                    return
                pct, self._pending = self._pending, None
            try:
                if self.artifact_id is None:
                    self.artifact_id = create_progress_artifact(progress=pct, description=self.description)
                else:
                    update_progress_artifact(self.artifact_id, pct)
            except Exception:
                pass
            with self._cond:
                if not self._closed:
                    self._cond.wait(1.0)

    def finish(self) -> None:
        """Write 100 % (when a pass reported progress) and stop the writer."""
        if self._thread is None:
            return
        self(1, 1)
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=30)
