"""A real SMTP server (aiosmtpd) on loopback that keeps the messages it accepts."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from airflow_ops.devstack.ports import free_port


class Mailbox:
    """An aiosmtpd handler that keeps what it accepts and answers DATA with ``reply``."""

    def __init__(self) -> None:
        self.reply = "250 Message accepted"
        self.received: list[tuple[list[str], EmailMessage]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.reply.startswith("250"):
            msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
            self.received.append((list(envelope.rcpt_tos), msg))
        return self.reply

    @property
    def messages(self) -> list[EmailMessage]:
        return [m for _, m in self.received]


@contextmanager
def smtp_server(port: int | None = None, **options: Any) -> Iterator[tuple[int, Mailbox]]:
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=port or free_port(), **options)
    controller.start()
    try:
        yield controller.port, box
    finally:
        controller.stop()
