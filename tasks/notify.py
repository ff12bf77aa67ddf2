"""Backup notifications: a saved Prefect notification block (webhook, Slack, ...) or e-mail.

E-mail goes through a saved ``prefect-email`` ``EmailServerCredentials`` block (host, port,
SSL/STARTTLS, login); the addresses come from the job (validated in planning/notify_config.py).
The message carries the job, the outcome, the storages, the size, the duration and a link to the
flow run — never a secret: every text is passed through the caller's redactor (and the SMTP
password is scrubbed from SMTP errors), and the job's parameters are not included.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from planning.notify_config import NotifyConfig

#: How long one e-mail may take (connect, TLS, login, send) before it is reported as failed.
SMTP_TIMEOUT_SECONDS = 60


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


def _send_email(target: NotifyConfig, subject: str, body: str) -> Callable[[str], str]:
    """Send one e-mail; returns a scrubber for the SMTP password (for the caller's error text)."""
    from prefect_email import EmailServerCredentials

    assert target.email is not None
    creds: Any = EmailServerCredentials.load(target.email.credentials)
    password = creds.password.get_secret_value() if creds.password else ""

    def scrub(text: str) -> str:
        return text.replace(password, "***") if password else text

    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = target.email.sender or creds.username or "stateferry@localhost"
    msg["To"] = ", ".join(target.email.to)
    msg.set_content(body)
    outcome: list[BaseException | None] = []

    def send() -> None:
        try:
            server = creds.get_server()  # connected, TLS as configured, logged in when a password is set
            try:
                server.send_message(msg)
            finally:
                server.quit()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    # The block opens its connection without a timeout: a server that stops answering must not hold
    # the backup's run (its outcome is already decided), so the send runs in a daemon thread.
    sender = threading.Thread(target=send, name="smtp-send", daemon=True)
    sender.start()
    sender.join(SMTP_TIMEOUT_SECONDS)
    if not outcome:
        raise TimeoutError(f"the SMTP server did not answer within {SMTP_TIMEOUT_SECONDS} s")
    if outcome[0] is not None:
        raise RuntimeError(scrub(f"{type(outcome[0]).__name__}: {outcome[0]}")) from None
    return scrub


@task(name="send_notification", cache_policy=NO_CACHE)
def send_notification(
    target: NotifyConfig,
    job: str,
    outcome: str,
    detail: str,
    *,
    redact: Callable[[str], str] = lambda s: s,
) -> bool:
    """Send one notification; never raises (a broken notifier must not hide the backup's outcome).

    Args:
        target: the job's ``notify`` (a notification block or e-mail recipients).
        job: job name.
        outcome: e.g. "FAILED" / "completed".
        detail: error or summary text (storages, size, duration; redacted here again).
        redact: scrubs secrets.

    Returns:
        True when the block or the SMTP server accepted the message.
    """
    from prefect.blocks.core import Block

    subject, body = render_message(job, outcome, redact(detail), flow_run_link())
    try:
        if target.email is not None:
            _send_email(target, subject, body)
        else:
            block: Any = Block.load(str(target.block))
            block.notify(body=body, subject=subject)
        return True
    except Exception as exc:
        get_run_logger().warning(
            "notification via %s failed: %s", target.label, redact(f"{type(exc).__name__}: {exc}")
        )
        return False
