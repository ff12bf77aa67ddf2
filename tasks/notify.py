"""Backup notifications through a saved Prefect notification block (webhook / Slack / email ...).

The message carries the job, the outcome, the error and a link to the flow run — never a secret:
every text is passed through the caller's redactor, and the job's parameters are not included.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

log = logging.getLogger(__name__)


def flow_run_link() -> str:
    """The UI link of the current flow run ("" outside a flow run)."""
    try:
        from prefect.runtime import flow_run

        return str(flow_run.ui_url or "")
    except Exception:
        return ""


def render_message(job: str, outcome: str, detail: str, link: str) -> tuple[str, str]:
    """Subject and body of a notification."""
    subject = f"stateferry backup {job}: {outcome}"
    body = f"Backup job: {job}\nOutcome: {outcome}\n{detail.strip()}\n"
    if link:
        body += f"Flow run: {link}\n"
    return subject, body


@task(name="send_notification", cache_policy=NO_CACHE)
def send_notification(
    block_slug: str, job: str, outcome: str, detail: str, *, redact: Callable[[str], str] = lambda s: s
) -> bool:
    """Send one notification; never raises (a broken notifier must not hide the backup's outcome).

    Args:
        block_slug: ``<block-type-slug>/<name>`` of a saved notification block.
        job: job name.
        outcome: e.g. "FAILED" / "completed".
        detail: error or summary text (redacted here again).
        redact: scrubs secrets.

    Returns:
        True when the block accepted the message.
    """
    from prefect.blocks.core import Block

    subject, body = render_message(job, outcome, redact(detail), flow_run_link())
    try:
        block: Any = Block.load(block_slug)
        block.notify(body=body, subject=subject)
        return True
    except Exception as exc:
        log.warning("notification via %s failed: %s", block_slug, redact(f"{type(exc).__name__}: {exc}"))
        return False
