"""The Slack receiver through the real ``slack_sdk`` against a loopback server speaking Slack's
protocol: webhook and bot-token delivery, chat.update on resolution, Block Kit limits accepted by
the server, hostile text, and one attempt per send with errors mapped for the delivery worker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from alert_samples import alert
from slack_server import SlackServer

from airflow_ops.alerts.model import Alert, AlertState, Notification
from airflow_ops.alerts.receivers import DeliveryError, build_integrations
from airflow_ops.alerts.receivers.slack import SlackIntegration
from airflow_ops.config.alerting import ReceiverConfig
from airflow_ops.devstack.ports import free_port

HOSTILE_DAG = "etl<!channel><@U999AAA>"


def notification(*alerts: Alert, context: dict[str, Any] | None = None) -> Notification:
    return Notification(
        receiver="ops",
        group_key=f"{{}}:{{dag_id={alerts[0].labels['dag_id']!r}}}",
        group_labels={"alertname": "DagFailing", "deployment": "prod", "dag_id": alerts[0].labels["dag_id"]},
        alerts=alerts,
        created_at=time.time(),
        external_url="http://airflow-ops.example:9000",
        context=context or {},
    )


def integration(**slack: Any) -> SlackIntegration:
    [one] = build_integrations(ReceiverConfig.model_validate({"name": "ops", "slack_configs": [slack]}))
    assert isinstance(one, SlackIntegration)
    return one


@pytest.fixture
def slack() -> Iterator[SlackServer]:
    with SlackServer() as server:
        yield server


@pytest.fixture
def bot(slack: SlackServer) -> SlackIntegration:
    return integration(token=slack.token, channel="#alerts", api_url=slack.api_url)


@pytest.fixture
def hook(slack: SlackServer) -> SlackIntegration:
    return integration(webhook_url=slack.webhook_url)


def test_webhook_posts_firing_then_a_new_resolved_message(slack: SlackServer, hook: SlackIntegration) -> None:
    assert hook.key == "ops/slack[0]" and hook.min_interval == 1.0
    assert hook.send(notification(alert()), None) is None
    slack.rate_limit = False  # pacing is the worker's job; here only the content matters
    assert hook.send(notification(alert(state=AlertState.RESOLVED)), None) is None
    firing, resolved = slack.wait_for(2, timeout=5, channel=slack.webhook_channel)
    assert firing.via == "webhook" and firing.text.startswith(":red_circle: [FIRING:1] DagFailing")
    assert "https://rb.example/x|Runbook" in firing.all_text()
    assert resolved.text.startswith(":large_green_circle: [RESOLVED] DagFailing")
    assert firing.attachments[0]["color"] != resolved.attachments[0]["color"]


def test_bot_turns_the_firing_message_into_the_resolved_one(
    slack: SlackServer, bot: SlackIntegration
) -> None:
    memo = bot.send(notification(alert()), None)
    assert memo == {"channel": slack.channel_id("#alerts"), "ts": "1700000000.000100"}
    assert bot.send(notification(alert(state=AlertState.RESOLVED)), memo) is None
    [msg] = slack.messages("#alerts")
    assert msg.via == "api" and msg.updated_at is not None and len(msg.edits) == 1
    assert msg.edits[0]["text"].startswith(":red_circle: [FIRING:1]")
    assert msg.text.startswith(":large_green_circle: [RESOLVED] DagFailing")
    assert "RESOLVED" in msg.all_text() and "FIRING" not in msg.all_text()


def test_bot_posts_anew_when_the_stored_message_is_gone(slack: SlackServer, bot: SlackIntegration) -> None:
    gone = {"channel": slack.channel_id("#alerts"), "ts": "1600000000.000100"}
    assert bot.send(notification(alert(state=AlertState.RESOLVED)), gone) is None
    [msg] = slack.wait_for(1, timeout=5, channel="#alerts")
    assert msg.text.startswith(":large_green_circle: [RESOLVED]") and msg.updated_at is None


@pytest.mark.parametrize("kind", ["bot", "hook"])
def test_429_reports_retry_after_without_retrying(slack: SlackServer, kind: str, request: Any) -> None:
    target: SlackIntegration = request.getfixturevalue(kind)
    slack.script(1, status=429, retry_after=3)
    with pytest.raises(DeliveryError) as err:
        target.send(notification(alert()), None)
    assert err.value.retry_after == 3.0 and not err.value.permanent
    assert slack.requests == 1 and slack.rate_limited == 1 and slack.messages() == []
    target.send(notification(alert()), None)  # the worker's retry, after the wait
    assert len(slack.messages()) == 1


@pytest.mark.parametrize("fault", [{"status": 500}, {"status": 503}, {"close": True}])
@pytest.mark.parametrize("kind", ["bot", "hook"])
def test_server_errors_are_retryable_and_tried_once(
    slack: SlackServer, kind: str, fault: dict[str, Any], request: Any
) -> None:
    target: SlackIntegration = request.getfixturevalue(kind)
    slack.script(1, **fault)
    with pytest.raises(DeliveryError) as err:
        target.send(notification(alert()), None)
    assert not err.value.permanent and err.value.retry_after is None
    assert slack.requests == 1  # slack_sdk's own retry handlers are off: the worker retries


def test_bad_token_and_unknown_channel_are_permanent_and_name_no_secret(slack: SlackServer) -> None:
    wrong = integration(token="xoxb-wrong-secret", channel="#alerts", api_url=slack.api_url)
    with pytest.raises(DeliveryError) as err:
        wrong.send(notification(alert()), None)
    assert err.value.permanent and "invalid_auth" in str(err.value)
    assert "xoxb-wrong-secret" not in str(err.value)


def test_webhook_failures_never_show_the_url(slack: SlackServer) -> None:
    unknown = integration(webhook_url=slack.url + "/services/T000/B000/SECRETHOOK")
    with pytest.raises(DeliveryError) as err:
        unknown.send(notification(alert()), None)
    assert err.value.permanent and "no_service" in str(err.value) and "SECRETHOOK" not in str(err.value)
    down = integration(webhook_url=f"http://127.0.0.1:{free_port()}/services/T000/B000/SECRETHOOK")
    with pytest.raises(DeliveryError) as err:
        down.send(notification(alert()), None)
    assert (
        not err.value.permanent and "SECRETHOOK" not in str(err.value) and "127.0.0.1" not in str(err.value)
    )


def test_server_refuses_a_second_message_within_a_second_per_channel(
    slack: SlackServer, bot: SlackIntegration
) -> None:
    bot.send(notification(alert("a")), None)
    with pytest.raises(DeliveryError) as err:
        bot.send(notification(alert("b")), None)
    assert err.value.retry_after == 1.0
    other = integration(token=slack.token, channel="#other", api_url=slack.api_url)
    other.send(notification(alert("c")), None)  # another channel has its own budget
    assert slack.rate_limited == 1
    assert slack.max_per_second("#alerts") == 2 and slack.max_per_second("#other") == 1
    time.sleep(bot.min_interval)  # what the worker waits between two sends to one channel
    bot.send(notification(alert("b")), None)
    assert [m.channel_name for m in slack.messages()] == ["#alerts", "#other", "#alerts"]


def test_a_group_of_200_failures_is_accepted_within_slacks_limits(
    slack: SlackServer, bot: SlackIntegration
) -> None:
    alerts = [alert(f"dag_{i:03d}") for i in range(200)]
    log = "\n".join(f"[2024-01-01] line {j}: " + "x" * 100 for j in range(200))
    context = {
        a.fingerprint: {"failed_tasks": [{"task_id": "t", "try_number": 1, "log_tail": log}]} for a in alerts
    }
    bot.send(notification(*alerts, context=context), None)  # the server validates every limit
    [msg] = slack.messages("#alerts")
    assert len(msg.all_blocks()) <= 50 and msg.text.startswith(":red_circle: [FIRING:200]")
    assert "more (" in msg.all_text()


def test_hostile_dag_id_reaches_slack_escaped(slack: SlackServer, bot: SlackIntegration) -> None:
    a = alert(HOSTILE_DAG)
    log = "Traceback\n```\n<!here> ValueError: <b>"
    bot.send(
        notification(a, context={a.fingerprint: {"failed_tasks": [{"task_id": "t", "log_tail": log}]}}), None
    )
    [msg] = slack.messages("#alerts")
    everything = msg.all_text()
    for mention in ("<!channel>", "<@U999AAA>", "<!here>"):
        assert mention not in everything
    assert "&lt;!channel&gt;" in msg.text and "&lt;!here&gt;" in everything


def test_send_resolved_false_leaves_resolved_alerts_out(slack: SlackServer) -> None:
    quiet = integration(token=slack.token, channel="#alerts", api_url=slack.api_url, send_resolved=False)
    quiet.send(notification(alert("still"), alert("gone", state=AlertState.RESOLVED)), None)
    [msg] = slack.messages("#alerts")
    assert "`still`" in msg.all_text() and "gone" not in msg.all_text()
