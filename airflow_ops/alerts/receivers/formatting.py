"""What every receiver says about a notification, built once: a :class:`MessageView` (title, the
alerts with their DAG, value, links and failed tasks), plus the escaping and truncation the media
need. Slack renders the view as Block Kit mrkdwn; email through Jinja2 templates (HTML autoescaped).

All text from alerts — DAG ids, labels, annotations, log lines — is hostile until escaped by the
medium that shows it; links are kept only when they are http(s) URLs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from ..model import ALERTNAME, Alert, AlertState, Notification

SEVERITY_RANK = {"critical": 0, "error": 1, "warning": 2, "info": 3}
# Per failed task, kept from the end: the error is at the bottom of a log.
LOG_TAIL_MAX_CHARS = 8000
# Annotations are written by rule authors but expanded from labels; cap what a message repeats.
ANNOTATION_MAX_CHARS = 2000
# Labels shown in their own place in a message, not in the generic label list.
_SHOWN_APART = {ALERTNAME, "severity", "deployment", "dag_id"}
RESOLVED_COLOUR = "#2E7D32"
FIRING_COLOURS = {"critical": "#D32F2F", "error": "#D32F2F", "warning": "#F57C00", "info": "#1976D2"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")


@dataclass(frozen=True)
class Link:
    label: str
    url: str


@dataclass(frozen=True)
class FailedTask:
    task_id: str
    try_number: int | None
    log_tail: str
    log_url: str | None


@dataclass(frozen=True)
class AlertView:
    name: str
    status: str  # "firing" | "resolved"
    severity: str
    value: str
    dag_id: str | None
    run_id: str | None
    deployment: str | None
    summary: str
    description: str
    starts_at: str
    ends_at: str | None
    labels: tuple[tuple[str, str], ...]  # the rest, sorted
    links: tuple[Link, ...]
    failed_tasks: tuple[FailedTask, ...]


@dataclass(frozen=True)
class MessageView:
    receiver: str
    status: str  # of the notification: "firing" if any alert fires
    title: str  # "[FIRING:2] DagFailing deployment=prod dag_id=etl"
    firing: int
    resolved: int
    reminder: bool
    group_labels: tuple[tuple[str, str], ...]  # without alertname: the title names it
    alerts: tuple[AlertView, ...]  # firing first (most severe first), then resolved
    external_url: str | None

    @property
    def severity(self) -> str:
        """The most severe severity among firing alerts ("" when none fire)."""
        firing = [a.severity for a in self.alerts if a.status == "firing"]
        return min(firing, key=_severity_rank, default="")


def build_view(n: Notification, send_resolved: bool = True) -> MessageView:
    """The view of ``n``; without ``send_resolved`` its resolved alerts are left out."""
    alerts = [a for a in n.alerts if send_resolved or a.state is not AlertState.RESOLVED]
    alerts.sort(
        key=lambda a: (
            a.state is not AlertState.FIRING,
            _severity_rank(_sev(a)),
            a.labels.get(ALERTNAME, ""),
            sorted(a.labels.items()),
        )
    )
    external_url = safe_url(n.external_url)
    return MessageView(
        receiver=n.receiver,
        status=n.status,
        title=title(n),
        firing=len(n.firing),
        resolved=len(n.resolved) if send_resolved else 0,
        reminder=n.reminder,
        group_labels=tuple((k, v) for k, v in ordered_pairs(n.group_labels) if k != ALERTNAME),
        alerts=tuple(_alert_view(a, n.context.get(a.fingerprint), external_url) for a in alerts),
        external_url=external_url,
    )


def title(n: Notification) -> str:
    """Alertmanager's subject style: ``[FIRING:2] DagFailing deployment=prod dag_id=etl``."""
    status = f"FIRING:{len(n.firing)}" if n.firing else "RESOLVED"
    labels = dict(n.group_labels)
    name = labels.pop(ALERTNAME, None) or n.common_labels.get(ALERTNAME)
    parts = ([name] if name else []) + [f"{k}={v}" for k, v in ordered_pairs(labels)]
    return one_line(f"[{status}] " + " ".join(parts))


def ordered_pairs(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """Label pairs, ``deployment`` first (the widest scope), then by name: stable across the
    store's JSON round trip, which sorts keys."""
    return tuple(sorted(labels.items(), key=lambda kv: (kv[0] != "deployment", kv[0])))


def status_colour(status: str, severity: str) -> str:
    """Resolved green; firing red, orange or blue by severity (red when unknown)."""
    if status == "resolved":
        return RESOLVED_COLOUR
    return FIRING_COLOURS.get(severity, FIRING_COLOURS["critical"])


def _alert_view(a: Alert, context: Any, external_url: str | None) -> AlertView:
    ctx = context if isinstance(context, Mapping) else {}
    dag_url = safe_url(ctx.get("dag_url"))
    links = []
    if runbook := safe_url(a.annotations.get("runbook_url")):
        links.append(Link("Runbook", runbook))
    if dag_url:
        links.append(Link("Airflow UI", dag_url))
    elif external_url:
        links.append(Link("airflow-ops", external_url))
    resolved = a.state is AlertState.RESOLVED
    return AlertView(
        name=a.labels.get(ALERTNAME, ""),
        status="resolved" if resolved else "firing",
        severity=_sev(a),
        value=format_value(a.value),
        dag_id=a.labels.get("dag_id") or _str(ctx.get("dag_id")),
        run_id=_str(ctx.get("run_id")),
        deployment=a.labels.get("deployment"),
        summary=clip(a.annotations.get("summary", ""), ANNOTATION_MAX_CHARS),
        description=clip(a.annotations.get("description", ""), ANNOTATION_MAX_CHARS),
        starts_at=format_time(a.fired_at or a.active_at),
        ends_at=format_time(a.resolved_at) if resolved and a.resolved_at else None,
        labels=tuple((k, v) for k, v in sorted(a.labels.items()) if k not in _SHOWN_APART),
        links=tuple(links),
        failed_tasks=tuple(_failed_tasks(ctx.get("failed_tasks"))),
    )


def _failed_tasks(raw: Any) -> list[FailedTask]:
    if not isinstance(raw, list | tuple):
        return []
    out = []
    for t in raw:
        if not isinstance(t, Mapping) or not t.get("task_id"):
            continue
        try:
            try_number = int(t["try_number"]) if t.get("try_number") is not None else None
        except (TypeError, ValueError):
            try_number = None
        out.append(
            FailedTask(
                task_id=str(t["task_id"]),
                try_number=try_number,
                log_tail=tail(str(t.get("log_tail") or ""), LOG_TAIL_MAX_CHARS),
                log_url=safe_url(t.get("log_url")),
            )
        )
    return out


def _sev(a: Alert) -> str:
    return a.labels.get("severity", "")


def _severity_rank(severity: str) -> int:
    return SEVERITY_RANK.get(severity, len(SEVERITY_RANK))


def _str(v: Any) -> str | None:
    return None if v is None or v == "" else str(v)


# --- plain text ---------------------------------------------------------------------------------


def one_line(text: str) -> str:
    """``text`` without line breaks or control characters (headers, subjects, Slack headers)."""
    return " ".join(_CONTROL.sub(" ", text).split())


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, marked with an ellipsis when cut."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def tail(text: str, limit: int) -> str:
    """The end of ``text`` in at most ``limit`` characters, starting at a line boundary."""
    text = text.rstrip("\n")
    if len(text) <= limit:
        return text
    kept = text[len(text) - (limit - 2) :]
    newline = kept.find("\n")
    if 0 <= newline < len(kept) - 1:
        kept = kept[newline + 1 :]
    return "…\n" + kept


def format_value(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return f"{v:.4g}"


def format_time(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def rfc3339(ts: float) -> str:
    """Go's time.RFC3339 as Alertmanager writes it (UTC, ``Z``, sub-second digits when present)."""
    dt = datetime.fromtimestamp(ts, timezone.utc)
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if dt.microsecond:
        text += f".{dt.microsecond:06d}".rstrip("0")
    return text + "Z"


def safe_url(url: Any) -> str | None:
    """``url`` if it is an absolute http(s) URL (no ``javascript:`` or ``data:`` links), else None."""
    if not isinstance(url, str) or not url:
        return None
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or _CONTROL.search(url):
        return None
    return url.strip()


# --- Slack mrkdwn --------------------------------------------------------------------------------


def mrkdwn_escape(text: str) -> str:
    """Slack's three escapes. They also disarm ``<!channel>``, ``<@U…>`` mentions and ``<url|text>``
    links smuggled in through DAG ids, labels or error messages."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def plain_text(text: str) -> str:
    """Text for a Slack ``plain_text`` object: mrkdwn is not parsed there, but angle brackets are
    swapped for single guillemets so no ``<!channel>`` can survive whatever Slack does with it."""
    return one_line(text).replace("<", "\u2039").replace(">", "\u203a")


def mrkdwn_code(text: str) -> str:
    """Inline code: escaped, on one line, with backticks that would end the span replaced."""
    return "`" + mrkdwn_escape(one_line(text).replace("`", "\u02cb")) + "`"  # modifier grave accent


def mrkdwn_code_block(text: str) -> str:
    """A preformatted block; a ``` inside (which would end it) is broken with zero-width spaces."""
    body = mrkdwn_escape(text).replace("```", "`\u200b`\u200b`")
    return "```\n" + (body or " ") + "\n```"


def mrkdwn_link(url: str, label: str) -> str:
    """``<url|label>``; ``url`` must come from :func:`safe_url`."""
    return "<" + mrkdwn_escape(url).replace("|", "%7C") + "|" + mrkdwn_escape(one_line(label)) + ">"


_PARTIAL_ENTITY = re.compile(r"&[a-z]{0,3}$")


def mrkdwn_fit(text: str, limit: int) -> str:
    """Escaped mrkdwn cut to ``limit`` characters without leaving half an entity, half a link or
    an open code block behind."""
    if len(text) <= limit:
        return text
    cut = _PARTIAL_ENTITY.sub("", text[: limit - 1])
    if cut.rfind("<") > cut.rfind(">"):
        cut = cut[: cut.rfind("<")]
    if cut.count("```") % 2:
        cut = cut[: cut.rfind("```")]
    return cut + "…"
