"""E-mail notifications (issue 15) through prefect-email's EmailServerCredentials block, against a
real SMTP server (aiosmtpd) that requires a login: the message names the job, storages, size and
duration and never a secret; a broken SMTP server never hides the backup's outcome."""

from __future__ import annotations

import email
import email.policy
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from devservers.ports import free_port
from flows.backup import scheduled_backup
from planning.notify_config import NotifyConfig
from stateferry.errors import StateferryError
from tasks.notify import send_notification

SMTP_USER = "stateferry-mailer"
SMTP_PASSWORD = "smtp-" + secrets.token_hex(12)


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], email.message.EmailMessage]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append((list(envelope.rcpt_tos), msg))
        return "250 OK"


def _login(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == SMTP_USER.encode()
        and auth_data.password == SMTP_PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False)  # not handled: aiosmtpd answers 535 like a real server


@pytest.fixture(scope="module")
def smtp() -> Iterator[tuple[int, _Inbox]]:
    """A real SMTP server on a free loopback port that only accepts mail after AUTH LOGIN/PLAIN."""
    inbox = _Inbox()
    port = free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=_login,
        auth_required=True,
        auth_require_tls=False,  # plain loopback here; real servers use SSL/STARTTLS (block setting)
    )
    controller.start()
    try:
        yield port, inbox
    finally:
        controller.stop()


def _save_credentials(port: int, password: str) -> str:
    from prefect_email import EmailServerCredentials

    name = f"smtp-{uuid.uuid4().hex[:8]}"
    EmailServerCredentials(
        username=SMTP_USER, password=password, smtp_server="127.0.0.1", smtp_type="INSECURE", smtp_port=port
    ).save(name, overwrite=True)
    return name


def test_email_failure_and_success_reach_the_inbox_without_secrets(
    prefect_server: Any, smtp: tuple[int, _Inbox], tmp_path: Path
) -> None:
    port, inbox = smtp
    before = len(inbox.messages)
    creds = _save_credentials(port, SMTP_PASSWORD)
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("hello")
    job: dict[str, Any] = {
        "job": f"mail-{uuid.uuid4().hex[:6]}",
        "type": "desc_files",
        "sources": [{"target": [str(tmp_path / "missing")]}],
        "storages": [{"storage": "local", "backup_dir": str(tmp_path / "b")}],
        "notify": {
            "email": {"credentials": creds, "to": ["oncall@example.org", "dba@example.org"]},
            "on_success": True,
        },
    }
    with pytest.raises(StateferryError):
        scheduled_backup(job)
    job["sources"] = [{"target": [str(data)]}]
    result = scheduled_backup(job)

    mails = inbox.messages[before:]
    assert len(mails) == 2
    (fail_to, fail), (ok_to, ok) = mails
    assert fail_to == ok_to == ["oncall@example.org", "dba@example.org"]
    assert fail["From"] == SMTP_USER and fail["Subject"] == f"stateferry backup {job['job']}: FAILED"
    fail_body = fail.get_content()
    assert "missing" in fail_body and "Storages: local" in fail_body and "Duration: " in fail_body
    assert ok["Subject"] == f"stateferry backup {job['job']}: completed"
    ok_body = ok.get_content()
    assert f"Backup: {result['backup_id']}" in ok_body and f"Size: {result['size']} bytes" in ok_body
    assert "Storages: local" in ok_body and "Duration: " in ok_body and "/flow-run/" in ok_body
    for _, msg in mails:
        assert SMTP_PASSWORD not in msg.as_string()


def test_email_rejected_login_is_reported_without_the_password(
    prefect_server: Any, smtp: tuple[int, _Inbox], caplog: pytest.LogCaptureFixture
) -> None:
    port, inbox = smtp
    before = len(inbox.messages)
    wrong = "wrong-" + secrets.token_hex(8)
    target = NotifyConfig.model_validate(
        {"email": {"credentials": _save_credentials(port, wrong), "to": ["oncall@example.org"]}}
    )
    with caplog.at_level("WARNING"):
        sent = send_notification(target, "job-x", "FAILED", "Error: boom")
    assert sent is False and len(inbox.messages) == before
    warnings = [r.getMessage() for r in caplog.records if "notification via email/" in r.getMessage()]
    assert warnings and "SMTPAuthenticationError" in warnings[0]
    assert all(wrong not in r.getMessage() for r in caplog.records)
