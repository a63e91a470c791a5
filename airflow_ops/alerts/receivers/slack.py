"""Slack through the real ``slack_sdk``: an incoming webhook, or a bot token with
``chat.postMessage`` and ``chat.update`` (the firing message is turned into the resolved one).

The message is Block Kit inside Slack's limits: a top-level ``text`` (all a phone notification
shows), a header ≤150 characters, sections ≤3000, ≤50 blocks in all (a big group ends with
"…and N more"), and a colour bar for the status. Every piece of alert text is mrkdwn-escaped.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
from collections.abc import Callable
from typing import Any
from urllib.error import URLError
from urllib.parse import urlsplit

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web import SlackResponse
from slack_sdk.webhook import WebhookClient

from ...config.alerting import SlackConfig
from ..model import Notification
from .delivery import DeliveryError, connection_error, header, http_error, redact, retry_after_seconds
from .formatting import (
    AlertView,
    FailedTask,
    MessageView,
    build_view,
    clip,
    mrkdwn_code,
    mrkdwn_code_block,
    mrkdwn_escape,
    mrkdwn_fit,
    mrkdwn_link,
    one_line,
    plain_text,
    status_colour,
    tail,
)

HEADER_MAX = 150
SECTION_MAX = 3000
MAX_BLOCKS = 50
TEXT_MAX = 3000  # the top-level text: a notification preview, not the whole message
CONTEXT_MAX = 2000
LOG_SECTIONS_PER_ALERT = 2
# In a big group the block budget goes to naming more alerts: only the first few show logs.
ALERTS_WITH_LOGS = 5

_ICONS = {"critical": ":red_circle:", "error": ":red_circle:", "warning": ":large_orange_circle:"}
_RESOLVED_ICON = ":large_green_circle:"
_FIRING_ICON = ":red_circle:"

# chat.update answers these when the stored message cannot be edited: post a new one instead.
_NOT_UPDATABLE = {"message_not_found", "cant_update_message", "edit_window_closed", "channel_not_found"}
_RETRYABLE_API_ERRORS = {"internal_error", "fatal_error", "service_unavailable", "request_timeout"}

# slack_sdk logs a webhook's URL (a secret) at DEBUG and repeats every error at ERROR; the
# DeliveryError we raise says what matters, so keep the SDK's own logger quiet.
_SDK_LOGGER = logging.getLogger(__name__ + ".sdk")
_SDK_LOGGER.setLevel(logging.CRITICAL)


def slack_message(view: MessageView) -> dict[str, Any]:
    """The chat.postMessage / webhook payload (``text``, ``blocks``, one coloured attachment)."""
    icon = _icon(view.status, view.severity)
    text = f"{icon} {mrkdwn_escape(view.title)}"
    if len(view.alerts) == 1 and view.alerts[0].summary:
        text += ": " + mrkdwn_escape(one_line(view.alerts[0].summary))
    header = clip(plain_text(f"{icon} {view.title}"), HEADER_MAX)
    head: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": True}},
        _context(_group_line(view)),
    ]
    room = MAX_BLOCKS - len(head) - 1  # one block kept for "…and N more"
    body: list[dict[str, Any]] = []
    shown = 0
    for alert in view.alerts:
        if len(body) >= room:
            break
        body += _alert_blocks(alert, with_logs=shown < ALERTS_WITH_LOGS)[: room - len(body)]
        shown += 1
    if shown < len(view.alerts):
        body.append(_context(_more_line(view.alerts[shown:], view.external_url)))
    message: dict[str, Any] = {
        "text": mrkdwn_fit(text, TEXT_MAX),
        "blocks": head,
        # Runbook and Airflow links would otherwise unfold into large previews.
        "unfurl_links": False,
        "unfurl_media": False,
    }
    if body:
        message["attachments"] = [{"color": status_colour(view.status, view.severity), "blocks": body}]
    return message


def _icon(status: str, severity: str) -> str:
    return _RESOLVED_ICON if status == "resolved" else _ICONS.get(severity, _FIRING_ICON)


def _context(mrkdwn: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": mrkdwn_fit(mrkdwn, CONTEXT_MAX)}]}


def _group_line(view: MessageView) -> str:
    parts = [f"*{view.firing}* firing"] if view.firing else []
    if view.resolved:
        parts.append(f"*{view.resolved}* resolved")
    if view.group_labels:
        parts.append("group " + " ".join(mrkdwn_code(f"{k}={v}") for k, v in view.group_labels))
    if view.reminder:
        parts.append("reminder: still firing")
    return " · ".join(parts) or mrkdwn_escape(view.receiver)


def _more_line(rest: tuple[AlertView, ...], external_url: str | None) -> str:
    firing = sum(a.status == "firing" for a in rest)
    line = f"…and {len(rest)} more ({firing} firing, {len(rest) - firing} resolved)"
    return line + (f" · {mrkdwn_link(external_url, 'all alerts')}" if external_url else "")


def _alert_blocks(a: AlertView, with_logs: bool) -> list[dict[str, Any]]:
    tasks = [t for t in a.failed_tasks if t.log_tail][:LOG_SECTIONS_PER_ALERT] if with_logs else []
    return [_section(_alert_text(a))] + [_section(_log_text(t)) for t in tasks]


def _section(mrkdwn: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": mrkdwn_fit(mrkdwn, SECTION_MAX)}}


def _alert_text(a: AlertView) -> str:
    status = "RESOLVED" if a.status == "resolved" else "FIRING"
    first = f"{_icon(a.status, a.severity)} *{mrkdwn_escape(a.name)}* · {status}"
    if a.severity:
        first += f" · {mrkdwn_escape(a.severity)}"
    facts = []
    if a.dag_id:
        facts.append(f"*DAG:* {mrkdwn_code(a.dag_id)}")
    if a.run_id:
        facts.append(f"*Run:* {mrkdwn_code(a.run_id)}")
    if a.deployment:
        facts.append(f"*Deployment:* {mrkdwn_code(a.deployment)}")
    facts.append(f"*Value:* {mrkdwn_escape(a.value)}")
    when = f"*Since:* {a.starts_at}" + (f" · *Resolved:* {a.ends_at}" if a.ends_at else "")
    lines = [first, "   ".join(facts), when]
    if a.links:
        lines.append(" · ".join(mrkdwn_link(link.url, link.label) for link in a.links))
    if a.failed_tasks:
        lines.append("*Failed tasks:* " + ", ".join(_task_ref(t) for t in a.failed_tasks))
    if a.labels:
        lines.append(mrkdwn_fit("*Labels:* " + " ".join(mrkdwn_code(f"{k}={v}") for k, v in a.labels), 600))
    # Free text last: when a section overflows, the cut falls there and the links survive.
    if a.summary:
        lines.append(f"*Summary:* {mrkdwn_escape(a.summary)}")
    if a.description and a.description != a.summary:
        lines.append(f"*Description:* {mrkdwn_escape(a.description)}")
    return "\n".join(lines)


def _task_ref(t: FailedTask) -> str:
    ref = mrkdwn_code(t.task_id) + (f" (try {t.try_number})" if t.try_number is not None else "")
    return ref + (f" {mrkdwn_link(t.log_url, 'log')}" if t.log_url else "")


def _log_text(t: FailedTask) -> str:
    head = f"*Log tail of* {_task_ref(t)}\n"
    block = mrkdwn_code_block(t.log_tail)
    if len(head) + len(block) > SECTION_MAX:
        # Cut the escaped text (not the raw one) so the budget is exact; keep the end of the log.
        body = block[len("```\n") : -len("\n```")]
        block = "```\n" + tail(body, SECTION_MAX - len(head) - len("```\n\n```")) + "\n```"
    return head + block


class SlackIntegration:
    """One ``slack_configs`` entry. ``send`` makes exactly one HTTP request to Slack (two when a
    stored message can no longer be updated and a new one is posted instead)."""

    def __init__(self, receiver: str, index: int, cfg: SlackConfig) -> None:
        self.key = f"{receiver}/slack[{index}]"
        self.receiver = receiver
        self.send_resolved = cfg.send_resolved
        self.min_interval = cfg.min_interval
        self._secrets = tuple(s.value for s in (cfg.webhook_url, cfg.token) if s is not None)
        # retry_handlers=[]: one attempt per call — the worker schedules retries and honours
        # Retry-After; the SDK's default handler would silently retry connection errors.
        if cfg.webhook_url is not None:
            if urlsplit(cfg.webhook_url.value).scheme not in ("http", "https"):
                raise ValueError(f"{self.key}: webhook_url must be an http(s) URL")
            self._webhook: WebhookClient | None = WebhookClient(
                cfg.webhook_url.value, timeout=cfg.timeout, retry_handlers=[], logger=_SDK_LOGGER
            )
            self._client: WebClient | None = None
            self._channel = ""
            # The webhook URL is the destination (one channel) but a secret: key on a digest.
            digest = hashlib.sha256(cfg.webhook_url.value.encode()).hexdigest()[:16]
            self.rate_key = f"slack-webhook:{digest}"
        else:
            assert cfg.token is not None and cfg.channel  # guaranteed by SlackConfig
            api_url = cfg.api_url if cfg.api_url.endswith("/") else cfg.api_url + "/"
            self._webhook = None
            self._client = WebClient(
                token=cfg.token.value,
                base_url=api_url,
                timeout=cfg.timeout,
                retry_handlers=[],
                logger=_SDK_LOGGER,
            )
            self._channel = cfg.channel
            self.rate_key = f"slack:{urlsplit(api_url).netloc}:{cfg.channel}"

    def send(self, n: Notification, memo: dict[str, Any] | None) -> dict[str, Any] | None:
        message = slack_message(build_view(n, self.send_resolved))
        if self._webhook is not None:
            self._post_webhook(message)
            return None  # a webhook message cannot be edited later: nothing to remember
        if n.status == "resolved" and memo and memo.get("channel") and memo.get("ts"):
            channel, ts = memo["channel"], memo["ts"]
            try:
                self._api("chat.update", lambda c: c.chat_update(channel=channel, ts=ts, **message))
                return None  # the group's story is told; its next firing starts a new message
            except _NotUpdatable:
                pass  # deleted or too old to edit: say it in a new message
        posted = self._api("chat.postMessage", lambda c: c.chat_postMessage(channel=self._channel, **message))
        if n.status == "firing":
            return {"channel": posted.get("channel"), "ts": posted.get("ts")}
        return None

    def _post_webhook(self, message: dict[str, Any]) -> None:
        assert self._webhook is not None
        what = "slack webhook"
        try:
            response = self._webhook.send_dict(message)
        except (URLError, OSError, http.client.HTTPException) as e:
            raise connection_error(what, e) from None
        except SlackClientError as e:
            raise DeliveryError(f"{what}: {redact(str(e), *self._secrets)}", permanent=True) from None
        if response.status_code != 200:
            raise http_error(
                what,
                response.status_code,
                retry_after=header(response.headers, "Retry-After"),
                detail=redact(response.body or "", *self._secrets),
            )

    def _api(self, method: str, call: Callable[[WebClient], SlackResponse]) -> dict[str, Any]:
        assert self._client is not None
        what = f"slack {method}"
        try:
            response = call(self._client)
        except SlackApiError as e:
            raise self._api_error(what, method, e) from None
        except (URLError, OSError, http.client.HTTPException) as e:
            raise connection_error(what, e) from None
        except SlackClientError as e:
            raise DeliveryError(f"{what}: {redact(str(e), *self._secrets)}", permanent=True) from None
        return response.data if isinstance(response.data, dict) else {}

    def _api_error(self, what: str, method: str, e: SlackApiError) -> DeliveryError:
        status = e.response.status_code
        data = e.response.data if isinstance(e.response.data, dict) else {}
        error = redact(str(data.get("error") or f"HTTP {status}"), *self._secrets)[:200]
        if status == 429 or error == "ratelimited":
            wait = retry_after_seconds(header(e.response.headers, "Retry-After"))
            return DeliveryError(f"{what}: rate limited", retry_after=wait)
        if status >= 500 or error in _RETRYABLE_API_ERRORS:
            return DeliveryError(f"{what}: {error}")
        if method == "chat.update" and error in _NOT_UPDATABLE:
            return _NotUpdatable(f"{what}: {error}", permanent=True)
        return DeliveryError(f"{what}: {error}", permanent=True)


class _NotUpdatable(DeliveryError):
    """chat.update refused for the stored message itself (gone, too old): post anew instead."""
