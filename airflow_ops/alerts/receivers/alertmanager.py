"""Forwarding to an existing Alertmanager (``POST /api/v2/alerts``), for teams whose routing
already lives there: airflow-ops evaluates, Alertmanager notifies."""

from __future__ import annotations

from typing import Any

from ...config.alerting import AlertmanagerForwardConfig
from ..model import Alert, AlertState, Notification
from .formatting import rfc3339
from .http_json import check_http_url, destination, post_json

# Alertmanager resolves an alert by itself at endsAt. Prometheus re-sends every minute; we send
# on notifications only (reminders every repeat_interval), so a firing alert is declared valid
# for a day — keep repeat_interval below that on routes that forward.
FIRING_VALIDITY = 24 * 3600.0


def postable_alert(a: Alert, now: float) -> dict[str, Any]:
    resolved = a.state is AlertState.RESOLVED
    ends_at = (a.resolved_at or now) if resolved else now + FIRING_VALIDITY
    body: dict[str, Any] = {
        "labels": dict(a.labels),
        "annotations": dict(a.annotations),
        "startsAt": rfc3339(a.fired_at or a.active_at),
        "endsAt": rfc3339(ends_at),
    }
    if a.generator_url:
        body["generatorURL"] = a.generator_url
    return body


class AlertmanagerIntegration:
    """One ``alertmanager_configs`` entry. Alertmanager dedups itself, so a repeated post is
    harmless, and it must hear of resolutions: ``send_resolved`` is always on."""

    min_interval = 0.0
    send_resolved = True

    def __init__(self, receiver: str, index: int, cfg: AlertmanagerForwardConfig) -> None:
        self.key = f"{receiver}/alertmanager[{index}]"
        self.receiver = receiver
        self._url = check_http_url(cfg.url, self.key).rstrip("/") + "/api/v2/alerts"
        self._what = f"alertmanager {destination(self._url)}"
        self.rate_key = f"http:{destination(self._url)}"
        self._timeout = cfg.timeout

    def send(self, n: Notification, memo: dict[str, Any] | None) -> dict[str, Any] | None:
        body = [postable_alert(a, n.created_at) for a in n.alerts]
        post_json(self._url, body, what=self._what, timeout=self._timeout)
        return None
