"""Receivers: where notifications go — Slack, email, webhooks and an existing Alertmanager.

A receiver is a named list of integrations (one per ``*_configs`` entry). The delivery worker
calls :meth:`Integration.send` once per attempt and owns every retry, wait and pacing decision;
an integration only says what happened (:class:`DeliveryError`).
"""

from __future__ import annotations

from ...config.alerting import ReceiverConfig
from .alertmanager import AlertmanagerIntegration
from .delivery import DeliveryError, Integration
from .email import EmailIntegration
from .slack import SlackIntegration
from .webhook import WebhookIntegration

__all__ = [
    "AlertmanagerIntegration",
    "DeliveryError",
    "EmailIntegration",
    "Integration",
    "SlackIntegration",
    "WebhookIntegration",
    "build_integrations",
]


def build_integrations(receiver: ReceiverConfig) -> list[Integration]:
    """The integrations of ``receiver`` in config order: Slack, email, webhook, Alertmanager.

    Raises ValueError (naming the integration key, never a URL) for a URL that is not http(s).
    """
    name = receiver.name
    return [
        *(SlackIntegration(name, i, c) for i, c in enumerate(receiver.slack_configs)),
        *(EmailIntegration(name, i, c) for i, c in enumerate(receiver.email_configs)),
        *(WebhookIntegration(name, i, c) for i, c in enumerate(receiver.webhook_configs)),
        *(AlertmanagerIntegration(name, i, c) for i, c in enumerate(receiver.alertmanager_configs)),
    ]
