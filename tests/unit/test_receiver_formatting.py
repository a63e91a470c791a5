"""What the receivers put in a message: Slack Block Kit within Slack's limits, mrkdwn and HTML
escaping of hostile text, Alertmanager's subject and webhook JSON, failed-task context."""

from __future__ import annotations

import email.utils
import re
import time
from typing import Any

from airflow_ops.alerts.model import Alert, AlertState, Notification
from airflow_ops.alerts.receivers.alertmanager import FIRING_VALIDITY, postable_alert
from airflow_ops.alerts.receivers.delivery import http_error, retry_after_seconds
from airflow_ops.alerts.receivers.email import render_bodies
from airflow_ops.alerts.receivers.formatting import (
    build_view,
    mrkdwn_code_block,
    mrkdwn_escape,
    mrkdwn_fit,
    safe_url,
    tail,
    title,
)
from airflow_ops.alerts.receivers.slack import slack_message
from airflow_ops.alerts.receivers.webhook import ZERO_TIME, webhook_payload

T0 = 1_700_000_000.0
HOSTILE = "etl<!channel> <@U123ABC> <https://evil.example|click> & <script>alert(1)</script>"
OUR_LINK = re.compile(r"<https?://[^|<>\s]+\|[^<>]*>")


def make_alert(
    dag_id: str = "etl", state: AlertState = AlertState.FIRING, severity: str = "critical", **annotations: str
) -> Alert:
    return Alert(
        labels={"alertname": "DagFailing", "deployment": "prod", "dag_id": dag_id, "severity": severity},
        annotations={
            "summary": f"DAG {dag_id} is failing",
            "runbook_url": "https://ops.example/DagFailing.md",
        }
        | annotations,
        state=state,
        value=3700.0,
        active_at=T0,
        fired_at=T0 + 60,
        resolved_at=T0 + 7200 if state is AlertState.RESOLVED else None,
        generator_url="http://ops.example/rules",
    )


def make_notification(*alerts: Alert, context: dict[str, Any] | None = None, **group: str) -> Notification:
    return Notification(
        receiver="ops",
        group_key='{}:{alertname="DagFailing"}',
        group_labels=group or {"alertname": "DagFailing", "dag_id": "etl", "deployment": "prod"},
        alerts=alerts,
        created_at=T0 + 7300,
        external_url="http://airflow-ops.example:9000",
        context=context or {},
    )


def failure_context(a: Alert, log_tail: str, tasks: int = 1) -> dict[str, Any]:
    failed = [
        {
            "task_id": f"task_{i}",
            "try_number": 2,
            "log_tail": log_tail,
            "log_url": f"http://af.example/log/{i}",
        }
        for i in range(tasks)
    ]
    return {a.fingerprint: {"dag_id": "etl", "run_id": "scheduled__1", "dag_url": "http://af.example/dags/etl",
                            "failed_tasks": failed}}  # fmt: skip


def mrkdwn_texts(message: dict[str, Any]) -> list[str]:
    """Every text Slack parses as mrkdwn: the top-level text and the mrkdwn text objects."""
    out = [message["text"]]
    blocks = message["blocks"] + [b for a in message.get("attachments", []) for b in a["blocks"]]
    for block in blocks:
        objects = [block.get("text"), *block.get("elements", [])]
        out += [o["text"] for o in objects if isinstance(o, dict) and o.get("type") == "mrkdwn"]
    return out


def all_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    return message["blocks"] + [b for a in message.get("attachments", []) for b in a["blocks"]]


# --- escaping ---


def test_mrkdwn_escape_disarms_mentions_and_links() -> None:
    escaped = mrkdwn_escape(HOSTILE)
    assert "<" not in escaped and ">" not in escaped
    assert "&lt;!channel&gt;" in escaped and "&amp; " in escaped


def test_hostile_dag_id_leaves_no_mention_or_foreign_link_in_slack_message() -> None:
    a = make_alert(HOSTILE, description="boom <!here>")
    n = make_notification(a, context=failure_context(a, "Traceback\n<!everyone> ValueError"), dag_id=HOSTILE)
    message = slack_message(build_view(n))
    for text in mrkdwn_texts(message):
        rest = OUR_LINK.sub("", text)  # only links we built may remain
        assert "<" not in rest and ">" not in rest, text
        assert all(".example/" in link and "evil" not in link for link in OUR_LINK.findall(text))
    header = message["blocks"][0]["text"]["text"]
    assert "<" not in header and ">" not in header


def test_html_email_escapes_hostile_text_and_text_part_keeps_it() -> None:
    a = make_alert(HOSTILE, description='"quoted" <b>bold</b>')
    n = make_notification(a, context=failure_context(a, "</pre><script>steal()</script>"), dag_id=HOSTILE)
    text, html = render_bodies(build_view(n))
    assert "<script>" not in html and "</pre><script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>bold</b>" not in html
    assert HOSTILE in text and "</pre><script>steal()</script>" in text


def test_only_http_links_survive() -> None:
    assert safe_url("javascript:alert(1)") is None
    assert safe_url("data:text/html,x") is None
    assert safe_url("http://a.example/x\nInjected: 1") is None
    assert safe_url("https://a.example/runbook") == "https://a.example/runbook"
    a = make_alert(runbook_url="javascript:alert(1)")
    message = slack_message(build_view(make_notification(a)))
    _, html = render_bodies(build_view(make_notification(a)))
    assert all("javascript:" not in t for t in mrkdwn_texts(message))
    assert "javascript:" not in html


def test_mrkdwn_fit_never_leaves_half_an_entity_or_link() -> None:
    text = mrkdwn_escape("x" * 95 + "<<<<<")  # entities straddle the cut
    for limit in range(95, 110):
        cut = mrkdwn_fit(text, limit)
        assert len(cut) <= limit
        assert not re.search(r"&[a-z]*…$", cut), cut
    linked = "a" * 90 + "<https://x.example/long/path|Runbook>"
    assert mrkdwn_fit(linked, 100) == "a" * 90 + "…"


# --- Slack limits ---


def test_group_of_200_alerts_fits_slack_limits_and_says_how_many_more() -> None:
    alerts = []
    context: dict[str, Any] = {}
    for i in range(200):
        a = make_alert(f"dag_{i:03d}", description="d" * 5000, summary="s" * 5000)
        alerts.append(a)
        context.update(failure_context(a, "\n".join(f"line {j} " + "x" * 80 for j in range(400)), tasks=3))
    message = slack_message(build_view(make_notification(*alerts, context=context, alertname="DagFailing")))
    blocks = all_blocks(message)
    assert len(blocks) <= 50
    assert message["text"].startswith(":red_circle: [FIRING:200] DagFailing")
    header = message["blocks"][0]
    assert header["type"] == "header" and len(header["text"]["text"]) <= 150
    for block in blocks:
        for obj in [block.get("text"), *block.get("elements", [])]:
            if isinstance(obj, dict):
                assert 0 < len(obj["text"]) <= 3000
    sections = [b for b in blocks if b["type"] == "section" and "*DagFailing*" in b["text"]["text"]]
    more = blocks[-1]["elements"][0]["text"]
    assert more.startswith(f"…and {200 - len(sections)} more (")
    assert len(sections) >= 35  # the budget goes to naming alerts, not to every alert's logs
    assert sum("*Log tail of*" in t for t in mrkdwn_texts(message)) == 10


def test_top_level_text_is_always_present() -> None:
    for state in (AlertState.FIRING, AlertState.RESOLVED):
        message = slack_message(build_view(make_notification(make_alert(state=state))))
        assert message["text"].strip()
    empty = slack_message(
        build_view(make_notification(make_alert(state=AlertState.RESOLVED)), send_resolved=False)
    )
    assert empty["text"].strip() and "attachments" not in empty


def test_status_colour_by_severity_and_resolution() -> None:
    def colour(*alerts: Alert) -> str:
        return slack_message(build_view(make_notification(*alerts)))["attachments"][0]["color"]

    warning, critical = make_alert("a", severity="warning"), make_alert("b", severity="critical")
    assert colour(warning) != colour(critical)
    assert colour(warning, critical) == colour(critical)
    assert colour(make_alert(state=AlertState.RESOLVED)) not in (colour(warning), colour(critical))


def test_send_resolved_false_leaves_resolved_alerts_out_of_a_mixed_message() -> None:
    n = make_notification(make_alert("up"), make_alert("gone", state=AlertState.RESOLVED))
    shown = [a.dag_id for a in build_view(n, send_resolved=False).alerts]
    assert shown == ["up"]
    assert [a.dag_id for a in build_view(n).alerts] == ["up", "gone"]


# --- failed-task context ---


def test_hostile_log_tail_stays_inside_one_code_block_and_keeps_its_end() -> None:
    noise = [f"noise {i} ```<!channel>``` " + "y" * 60 for i in range(300)]
    log = "\n".join(["start", *noise, "FINAL ERROR"])
    a = make_alert()
    message = slack_message(build_view(make_notification(a, context=failure_context(a, log))))
    [log_section] = [
        b for b in all_blocks(message) if b.get("text", {}).get("text", "").startswith("*Log tail")
    ]
    text = log_section["text"]["text"]
    assert len(text) <= 3000
    assert text.count("```") == 2 and text.endswith("FINAL ERROR\n```")
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text
    assert "`task_0` (try 2) <http://af.example/log/0|log>" in text


def test_context_names_failed_tasks_run_and_links_in_both_media() -> None:
    a = make_alert()
    n = make_notification(a, context=failure_context(a, "ERROR: boom", tasks=2))
    slack = "\n".join(mrkdwn_texts(slack_message(build_view(n))))
    assert "`task_0` (try 2)" in slack and "`task_1` (try 2)" in slack and "`scheduled__1`" in slack
    assert "<http://af.example/dags/etl|Airflow UI>" in slack
    assert "<https://ops.example/DagFailing.md|Runbook>" in slack
    text, html = render_bodies(build_view(n))
    assert "task_1 (try 2)" in text and "ERROR: boom" in text and "http://af.example/dags/etl" in text
    assert '<a href="https://ops.example/DagFailing.md"' in html and "<pre" in html


def test_tail_starts_at_a_line_boundary() -> None:
    assert tail("aaaa\nbbbb\ncccc", 9) == "…\ncccc"
    assert tail("short", 10) == "short"


def test_code_block_cannot_be_closed_from_inside() -> None:
    block = mrkdwn_code_block("a```b")
    assert block.count("```") == 2


# --- subject and webhook JSON ---


def test_title_is_alertmanagers_subject() -> None:
    n = make_notification(make_alert("etl"), make_alert("etl", severity="warning"))
    assert title(n) == "[FIRING:2] DagFailing deployment=prod dag_id=etl"
    resolved = make_notification(make_alert(state=AlertState.RESOLVED))
    assert title(resolved) == "[RESOLVED] DagFailing deployment=prod dag_id=etl"
    injected = make_notification(make_alert(), alertname="X", dag_id="a\r\nBcc: victim@example.com")
    assert "\n" not in title(injected) and "\r" not in title(injected)


def test_webhook_json_is_alertmanager_version_4() -> None:
    firing, resolved = make_alert("etl"), make_alert("etl", state=AlertState.RESOLVED, severity="warning")
    body = webhook_payload(make_notification(firing, resolved))
    assert set(body) == {
        "version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels",
        "commonLabels", "commonAnnotations", "externalURL", "alerts",
    }  # fmt: skip
    assert body["version"] == "4" and body["status"] == "firing" and body["truncatedAlerts"] == 0
    assert body["commonLabels"] == {"alertname": "DagFailing", "deployment": "prod", "dag_id": "etl"}
    first, second = body["alerts"]
    assert set(first) == {
        "status",
        "labels",
        "annotations",
        "startsAt",
        "endsAt",
        "generatorURL",
        "fingerprint",
    }
    assert first["status"] == "firing" and first["endsAt"] == ZERO_TIME
    assert first["startsAt"] == "2023-11-14T22:14:20Z"
    assert second["status"] == "resolved" and second["endsAt"] == "2023-11-15T00:13:20Z"
    assert first["fingerprint"] == firing.fingerprint


def test_webhook_truncation_and_send_resolved() -> None:
    alerts = [make_alert(f"d{i}") for i in range(5)] + [make_alert("r", state=AlertState.RESOLVED)]
    body = webhook_payload(make_notification(*alerts), max_alerts=2)
    assert len(body["alerts"]) == 2 and body["truncatedAlerts"] == 4
    body = webhook_payload(make_notification(*alerts), send_resolved=False)
    assert [a["status"] for a in body["alerts"]] == ["firing"] * 5
    assert body["commonLabels"]["severity"] == "critical"


def test_alertmanager_alert_ends_at_resolution_or_stays_valid() -> None:
    now = T0 + 7300
    firing = postable_alert(make_alert(), now)
    assert firing["endsAt"] > firing["startsAt"] and "fingerprint" not in firing
    assert firing["endsAt"] == "2023-11-16T00:15:00Z" and now + FIRING_VALIDITY == 1_700_093_700
    assert postable_alert(make_alert(state=AlertState.RESOLVED), now)["endsAt"] == "2023-11-15T00:13:20Z"


# --- delivery errors ---


def test_retry_after_and_status_mapping() -> None:
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    assert 25 < retry_after_seconds(email.utils.formatdate(time.time() + 30, usegmt=True)) <= 30
    assert retry_after_seconds(email.utils.formatdate(T0, usegmt=True)) == 0.0  # past: now
    e429 = http_error("x", 429, retry_after="3")
    assert e429.retry_after == 3.0 and not e429.permanent
    assert not http_error("x", 503).permanent
    assert http_error("x", 404).permanent and http_error("x", 400).permanent
