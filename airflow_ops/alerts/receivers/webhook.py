"""A webhook receiving Alertmanager's webhook JSON (version 4), so anything written for
Alertmanager's webhook receiver works unchanged."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ...config.alerting import WebhookConfig
from ..model import Alert, AlertState, Notification
from .formatting import rfc3339
from .http_json import check_http_url, destination, post_json

# What Go's zero time.Time marshals to: Alertmanager's endsAt for a firing alert.
ZERO_TIME = "0001-01-01T00:00:00Z"


def alert_json(a: Alert) -> dict[str, Any]:
    resolved = a.state is AlertState.RESOLVED
    return {
        "status": "resolved" if resolved else "firing",
        "labels": dict(a.labels),
        "annotations": dict(a.annotations),
        "startsAt": rfc3339(a.fired_at or a.active_at),
        "endsAt": rfc3339(a.resolved_at) if resolved and a.resolved_at else ZERO_TIME,
        "generatorURL": a.generator_url,
        "fingerprint": a.fingerprint,
    }


def webhook_payload(n: Notification, *, send_resolved: bool = True, max_alerts: int = 0) -> dict[str, Any]:
    """Alertmanager's webhook body. Without ``send_resolved`` the resolved alerts are left out
    (common labels are computed over what is sent, as Alertmanager does); ``max_alerts`` > 0
    keeps that many and counts the rest in ``truncatedAlerts``."""
    alerts = list(n.alerts) if send_resolved else n.firing
    sent = replace(n, alerts=tuple(alerts))
    kept = alerts[:max_alerts] if max_alerts else alerts
    return {
        "version": "4",
        "groupKey": n.group_key,
        "truncatedAlerts": len(alerts) - len(kept),
        "status": n.status,
        "receiver": n.receiver,
        "groupLabels": dict(n.group_labels),
        "commonLabels": sent.common_labels,
        "commonAnnotations": sent.common_annotations,
        "externalURL": n.external_url,
        "alerts": [alert_json(a) for a in kept],
    }


class WebhookIntegration:
    """One ``webhook_configs`` entry."""

    min_interval = 0.0

    def __init__(self, receiver: str, index: int, cfg: WebhookConfig) -> None:
        self.key = f"{receiver}/webhook[{index}]"
        self.receiver = receiver
        self.send_resolved = cfg.send_resolved
        self._url = check_http_url(cfg.url.value, self.key)
        self._what = f"webhook {destination(self._url)}"
        self.rate_key = f"http:{destination(self._url)}"
        self._cfg = cfg

    def send(self, n: Notification, memo: dict[str, Any] | None) -> dict[str, Any] | None:
        cfg = self._cfg
        token = cfg.bearer_token.value if cfg.bearer_token is not None else None
        post_json(
            self._url,
            webhook_payload(n, send_resolved=cfg.send_resolved, max_alerts=cfg.max_alerts),
            what=self._what,
            timeout=cfg.timeout,
            headers={"Authorization": f"Bearer {token}"} if token else None,
            secrets=(token,),
        )
        return None
