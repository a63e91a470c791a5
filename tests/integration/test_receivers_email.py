"""The email receiver against a real aiosmtpd server on loopback: multipart text + HTML, subject,
threading of a group, escaping, STARTTLS / implicit TLS with certificate checks, AUTH, and how
SMTP failures are reported to the delivery worker (never with the password)."""

from __future__ import annotations

import ssl
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword
from alert_samples import alert
from smtp_server import smtp_server

from airflow_ops.alerts.model import Alert, AlertState, Notification
from airflow_ops.alerts.receivers import DeliveryError, build_integrations
from airflow_ops.alerts.receivers.email import EmailIntegration
from airflow_ops.config.alerting import ReceiverConfig
from airflow_ops.devstack.ports import free_port

HOSTILE_DAG = "etl<script>alert(1)</script>"
PASSWORD = "smtp-Pa55word-secret"
TO = ["oncall@example.com", "team@example.com"]


def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data == (b"alerts", PASSWORD.encode())
    return AuthResult(success=ok, handled=False)


def server_tls(self_signed: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*self_signed)
    return ctx


def mailer(port: int, **cfg: Any) -> EmailIntegration:
    config = {"to": TO, "from": "airflow-ops@ops.example", "smarthost": f"127.0.0.1:{port}", "tls": "none"}
    receiver = ReceiverConfig.model_validate({"name": "ops", "email_configs": [config | cfg]})
    [one] = build_integrations(receiver)
    assert isinstance(one, EmailIntegration)
    return one


def notification(a: Alert, *, reminder: bool = False, context: dict[str, Any] | None = None) -> Notification:
    return Notification(
        receiver="ops",
        group_key="{}:{dag_id=etl}",
        group_labels={"alertname": "DagFailing", "deployment": "prod", "dag_id": a.labels["dag_id"]},
        alerts=(a,),
        created_at=time.time(),
        reminder=reminder,
        context=context or {},
    )


def bodies(msg: EmailMessage) -> tuple[str, str]:
    assert msg.get_content_type() == "multipart/alternative"
    text, html = msg.get_body(("plain",)), msg.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


def test_a_group_threads_and_carries_text_html_and_the_failed_task() -> None:
    a = alert(HOSTILE_DAG)
    context = {
        a.fingerprint: {
            "failed_tasks": [{"task_id": "load", "try_number": 3, "log_tail": "</pre><b>x\nboom"}]
        }
    }
    with smtp_server() as (port, box):
        send = mailer(port)
        memo = send.send(notification(a, context=context), None)
        memo = send.send(notification(a, reminder=True), memo)
        send.send(notification(alert(HOSTILE_DAG, AlertState.RESOLVED)), memo)
    assert [rcpt for rcpt, _ in box.received] == [TO] * 3
    first, reminder, resolved = box.messages
    assert first["Subject"] == f"[FIRING:1] DagFailing deployment=prod dag_id={HOSTILE_DAG}"
    assert resolved["Subject"] == f"[RESOLVED] DagFailing deployment=prod dag_id={HOSTILE_DAG}"
    root = first["Message-ID"]
    assert root and first["In-Reply-To"] is None
    for later in (reminder, resolved):
        assert later["In-Reply-To"] == root and later["References"] == root and later["Message-ID"] != root
    assert first["From"] == "airflow-ops@ops.example" and first["Auto-Submitted"] == "auto-generated"
    text, html = bodies(first)
    assert HOSTILE_DAG in text and "load (try 3)" in text and "boom" in text
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "</pre><b>" not in html and "&lt;/pre&gt;&lt;b&gt;x" in html
    assert '<a href="https://rb.example/x"' in html
    assert "Reminder: still firing." in bodies(reminder)[0]


def test_the_thread_root_is_stable_per_group() -> None:
    with smtp_server() as (port, box):
        mailer(port).send(notification(alert()), None)
        mailer(port).send(notification(alert()), None)  # e.g. the memo was lost
    assert box.messages[0]["Message-ID"] == box.messages[1]["Message-ID"]  # a client shows one


def test_starttls_checks_the_certificate(self_signed: tuple[Path, Path]) -> None:
    with smtp_server(tls_context=server_tls(self_signed), require_starttls=True) as (port, box):
        mailer(port, tls="starttls", ca_file=str(self_signed[0])).send(notification(alert()), None)
        with pytest.raises(DeliveryError) as err:
            mailer(port, tls="starttls").send(notification(alert()), None)
        assert err.value.permanent and "certificate" in str(err.value)
        mailer(port, tls="starttls", verify_tls=False).send(notification(alert()), None)
    assert len(box.messages) == 2


def test_implicit_tls(self_signed: tuple[Path, Path]) -> None:
    with smtp_server(ssl_context=server_tls(self_signed)) as (port, box):
        mailer(port, tls="ssl", ca_file=str(self_signed[0])).send(notification(alert()), None)
    assert len(box.messages) == 1


def test_starttls_missing_is_permanent() -> None:
    with smtp_server() as (port, box), pytest.raises(DeliveryError) as err:
        mailer(port, tls="starttls").send(notification(alert()), None)
    assert err.value.permanent and "STARTTLS" in str(err.value) and box.messages == []


def test_auth_over_starttls_and_a_wrong_password_never_shown(self_signed: tuple[Path, Path]) -> None:
    options = {"tls_context": server_tls(self_signed), "authenticator": authenticate, "auth_required": True}
    tls = {"tls": "starttls", "ca_file": str(self_signed[0]), "auth_username": "alerts"}
    with smtp_server(**options) as (port, box):
        mailer(port, **tls, auth_password=PASSWORD).send(notification(alert()), None)
        with pytest.raises(DeliveryError) as err:
            mailer(port, **tls, auth_password=PASSWORD + "-wrong").send(notification(alert()), None)
        assert err.value.permanent and "535" in str(err.value) and PASSWORD not in str(err.value)
        with pytest.raises(DeliveryError) as err:
            mailer(port, tls="starttls", ca_file=str(self_signed[0])).send(notification(alert()), None)
        assert err.value.permanent and "530" in str(err.value)  # auth required, none given
    assert len(box.messages) == 1


def test_smtp_down_is_retryable_and_delivers_once_back_up() -> None:
    port = free_port()
    send = mailer(port)
    with pytest.raises(DeliveryError) as err:
        send.send(notification(alert()), None)
    assert not err.value.permanent and "refused" in str(err.value).lower()
    with smtp_server(port) as (_, box):
        send.send(notification(alert()), None)
    assert len(box.messages) == 1


def test_4xx_is_retryable_and_5xx_permanent() -> None:
    with smtp_server() as (port, box):
        box.reply = "451 4.3.0 Mailbox temporarily unavailable"
        with pytest.raises(DeliveryError) as err:
            mailer(port).send(notification(alert()), None)
        assert not err.value.permanent and "451" in str(err.value)
        box.reply = "554 5.7.1 Message rejected"
        with pytest.raises(DeliveryError) as err:
            mailer(port).send(notification(alert()), None)
        assert err.value.permanent and "554" in str(err.value)
