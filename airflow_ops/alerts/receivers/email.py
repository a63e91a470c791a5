"""Email over SMTP (STARTTLS, implicit TLS or plain; optional AUTH): multipart/alternative with a
text and an HTML part rendered from one view by the Jinja2 templates in ``alerts/templates``.

A group's messages form one thread: the first carries a Message-ID derived from (integration
key, group key) and every later one points at it with ``In-Reply-To``/``References``. The memo
records that the root went out, so the root id is never reused as a new message's id.
"""

from __future__ import annotations

import email.policy
import hashlib
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from ...config.alerting import EmailConfig
from ..model import Notification
from .delivery import DeliveryError, redact
from .formatting import MessageView, build_view, clip, status_colour

SUBJECT_MAX = 200
# Headers unfolded up to RFC 5322's hard limit: the stdlib folds some subjects right after
# "Subject:", which readers then show with a leading space.
_POLICY = email.policy.default.clone(max_line_length=998)


@cache
def templates() -> Environment:
    # Autoescape for .html only: the text part must show a DAG id like "a<b" as written.
    env = Environment(
        loader=PackageLoader("airflow_ops.alerts", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False, default=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.globals["status_colour"] = status_colour
    return env


def render_bodies(view: MessageView) -> tuple[str, str]:
    """(text, html) of one notification, from the same view."""
    env = templates()
    return env.get_template("email.txt").render(view=view), env.get_template("email.html").render(view=view)


def root_message_id(key: str, group_key: str, domain: str) -> str:
    """The stable Message-ID a group's thread hangs on."""
    digest = hashlib.sha256(f"{key}\x00{group_key}".encode()).hexdigest()[:32]
    return f"<{digest}.group@{domain}>"


def build_email(view: MessageView, cfg: EmailConfig, *, root_id: str, first: bool) -> EmailMessage:
    text, html = render_bodies(view)
    msg = EmailMessage(policy=_POLICY)
    msg["Subject"] = clip(view.title, SUBJECT_MAX)  # one_line() already: no header injection
    msg["From"] = cfg.from_
    msg["To"] = ", ".join(cfg.to)
    msg["Date"] = formatdate(localtime=False)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: keeps vacation responders quiet
    if first:
        msg["Message-ID"] = root_id
    else:
        msg["Message-ID"] = make_msgid(domain=_domain(cfg.from_))
        msg["In-Reply-To"] = root_id
        msg["References"] = root_id
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return msg


def _domain(address: str) -> str:
    domain = address.rpartition("@")[2].strip(" >")
    return domain or "airflow-ops.invalid"


class EmailIntegration:
    """One ``email_configs`` entry: one SMTP session per ``send``."""

    min_interval = 0.0

    def __init__(self, receiver: str, index: int, cfg: EmailConfig) -> None:
        self.key = f"{receiver}/email[{index}]"
        self.receiver = receiver
        self.send_resolved = cfg.send_resolved
        self.rate_key = f"smtp:{cfg.smarthost}"
        self._cfg = cfg
        host, _, port = cfg.smarthost.rpartition(":")
        self._host, self._port = host.strip("[]"), int(port)
        self._password = cfg.auth_password.value if cfg.auth_password is not None else None

    def send(self, n: Notification, memo: dict[str, Any] | None) -> dict[str, Any] | None:
        root_id = root_message_id(self.key, n.group_key, _domain(self._cfg.from_))
        first = not (memo and memo.get("root_id") == root_id)
        msg = build_email(build_view(n, self.send_resolved), self._cfg, root_id=root_id, first=first)
        self._deliver(msg)
        return {"root_id": root_id}

    def _deliver(self, msg: EmailMessage) -> None:
        cfg = self._cfg
        what = f"smtp {cfg.smarthost}"
        try:
            smtp = self._connect()
        except (OSError, smtplib.SMTPException) as e:
            raise self._error(what, e) from None
        try:
            if cfg.tls == "starttls":
                smtp.ehlo()
                if not smtp.has_extn("starttls"):
                    raise DeliveryError(f"{what}: the server does not offer STARTTLS", permanent=True)
                smtp.starttls(context=self._tls_context())
                smtp.ehlo()
            if cfg.auth_username:
                smtp.login(cfg.auth_username, self._password or "")
            smtp.send_message(msg)  # refused recipients among several are not worth a resend
        except (OSError, smtplib.SMTPException) as e:
            raise self._error(what, e) from None
        finally:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                smtp.close()

    def _connect(self) -> smtplib.SMTP:
        cfg = self._cfg
        if cfg.tls == "ssl":
            return smtplib.SMTP_SSL(self._host, self._port, timeout=cfg.timeout, context=self._tls_context())
        return smtplib.SMTP(self._host, self._port, timeout=cfg.timeout)

    def _tls_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self._cfg.ca_file)
        if not self._cfg.verify_tls:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def _error(self, what: str, e: BaseException) -> DeliveryError:
        """SMTP 4xx and network trouble are worth a retry; 5xx and bad TLS/auth setup are not."""
        if isinstance(e, smtplib.SMTPRecipientsRefused):
            codes = [code for code, _ in e.recipients.values()]
            text = f"{what}: all recipients refused ({', '.join(map(str, sorted(set(codes))))})"
            return DeliveryError(text, permanent=all(code >= 500 for code in codes))
        if isinstance(e, smtplib.SMTPResponseException):
            reply = e.smtp_error
            if isinstance(reply, bytes):
                reply = reply.decode("utf-8", "replace")
            text = redact(f"{what}: {e.smtp_code} {' '.join(str(reply).split())}"[:300], self._password)
            return DeliveryError(text, permanent=e.smtp_code >= 500)
        if isinstance(e, smtplib.SMTPNotSupportedError):
            return DeliveryError(f"{what}: {redact(str(e), self._password)}", permanent=True)
        if isinstance(e, ssl.SSLCertVerificationError):
            text = f"{what}: TLS certificate not trusted ({e.verify_message})"
            return DeliveryError(f"{text}; set ca_file to its CA, or verify_tls: false", permanent=True)
        return DeliveryError(f"{what}: {redact(str(e) or type(e).__name__, self._password)}")
