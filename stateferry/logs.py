"""The logger of the current Prefect flow or task run (so every line reaches the run's log in the UI).

Code shared by tasks and plain helpers calls :func:`run_logger` at the time it logs: inside a flow or
task run it is Prefect's run logger (shipped to the API with the run id); outside one (a unit test, a
CLI helper) a plain ``stateferry`` logger, never an error.
"""

from __future__ import annotations

import logging
from typing import Any


def run_logger() -> Any:
    """``prefect.get_run_logger()`` inside a run, else ``logging.getLogger("stateferry")``."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("stateferry")
