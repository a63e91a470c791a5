"""The outbox worker against a real SQLite ops store and real integrations (the real slack_sdk
against a loopback Slack, a real aiosmtpd, a loopback webhook): each queued notification is
delivered once, in order per group, paced per destination, retried after failures and waits
(``Retry-After`` pauses only its destination), and never dropped.

Time is the worker's injectable clock wherever a wait matters, so the tests step over waits
instead of sleeping; only the Slack pacing test runs on the real clock, because the loopback
Slack enforces its per-channel rate in real time.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alert_samples import alert
from slack_server import SlackServer
from smtp_server import smtp_server
from webhook_sink import WebhookSink

from airflow_ops.alerts.model import AlertState, Notification, OutboxItem
from airflow_ops.alerts.outbox import ORPHAN_RETRY, OutboxWorker, backoff
from airflow_ops.alerts.receivers import Integration, build_integrations
from airflow_ops.config.alerting import ReceiverConfig
from airflow_ops.store import OpsStore, open_store

CHANNEL = "#alerts"
DEPLOYMENT = "prod"
T0 = 1_800_000_000.0


class Clock:
    """The worker's clock, moved by hand."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def store(tmp_path: Path) -> Iterator[OpsStore]:
    with open_store(f"sqlite:///{tmp_path}/ops.db") as s:
        yield s


@pytest.fixture
def hook() -> Iterator[WebhookSink]:
    server = WebhookSink()
    yield server
    server.close()


@pytest.fixture
def slack() -> Iterator[SlackServer]:
    # The worker's clock is fake in most tests: the server's real-time rate limit is off here and
    # on in the pacing test, which runs on the real clock.
    with SlackServer(rate_limit=False) as server:
        yield server


def integrations(name: str = "ops", **configs: list[dict[str, Any]]) -> list[Integration]:
    return build_integrations(ReceiverConfig.model_validate({"name": name, **configs}))


def bot(slack: SlackServer, channel: str = CHANNEL, **extra: Any) -> dict[str, Any]:
    return {"token": slack.token, "channel": channel, "api_url": slack.api_url, "timeout": "5s", **extra}


def group_key(dag_id: str) -> str:
    return f'{{}}:{{alertname="DagFailing", dag_id="{dag_id}", deployment="{DEPLOYMENT}"}}'


def queue(
    store: OpsStore,
    integration: Integration,
    dag_id: str,
    state: AlertState = AlertState.FIRING,
    at: float = T0,
) -> int:
    """Queue a notification about ``dag_id``'s group for ``integration``, as the dispatcher does."""
    n = Notification(
        receiver=integration.receiver,
        group_key=group_key(dag_id),
        group_labels={"alertname": "DagFailing", "deployment": DEPLOYMENT, "dag_id": dag_id},
        alerts=(alert(dag_id, state, now=T0),),
        created_at=at,
    )
    item = OutboxItem(0, n.receiver, integration.key, n.group_key, n.to_json(), at, next_attempt_at=at)
    [item_id] = store.record_notifications([], [item])
    return item_id


def pending(store: OpsStore) -> list[OutboxItem]:
    """Every undelivered item, due or not."""
    return store.outbox_due(float("inf"), limit=1000)


def outcomes(worker: OutboxWorker, receiver: str = "ops") -> dict[str, int]:
    return {o: n for (dep, r, o), n in worker.stats.outcomes.items() if dep == DEPLOYMENT and r == receiver}


def test_each_item_is_delivered_once_and_marked_delivered(
    store: OpsStore, slack: SlackServer, hook: WebhookSink
) -> None:
    with smtp_server() as (smtp_port, mailbox):
        email = {
            "to": ["oncall@example.com"],
            "from": "ops@example.com",
            "smarthost": f"127.0.0.1:{smtp_port}",
        }
        ints = integrations(
            slack_configs=[bot(slack)],
            email_configs=[{**email, "tls": "none", "timeout": "5s"}],
            webhook_configs=[{"url": hook.url}],
        )
        for i in ints:
            queue(store, i, "etl")
        clock = Clock()
        worker = OutboxWorker(store, ints, clock)

        assert worker.deliver_due() == 3
        assert pending(store) == [] and store.outbox_pending_count() == 0
        [msg] = slack.messages(CHANNEL)
        assert "etl" in msg.all_text() and "DagFailing" in msg.text
        [mail] = mailbox.messages
        assert mail["Subject"].startswith("[FIRING:1] DagFailing") and "etl" in mail["Subject"]
        assert hook.groups() == [(group_key("etl"), "firing")]

        # Later rounds (a restart included) find nothing to send again.
        clock.t += 3600
        assert worker.deliver_due() == 0
        assert OutboxWorker(store, ints, clock).deliver_due() == 0
        assert len(slack.messages()) == 1 and len(mailbox.messages) == 1 and len(hook.bodies) == 1
        assert outcomes(worker) == {"delivered": 3}
        assert sum(sum(h.counts) for h in worker.stats.latency.values()) == 3


def test_retry_after_pauses_only_its_destination_and_the_item_waits_it_out(
    store: OpsStore, slack: SlackServer, hook: WebhookSink
) -> None:
    [slack_int] = integrations(slack_configs=[bot(slack)])
    [hook_int] = integrations(name="hooks", webhook_configs=[{"url": hook.url}])
    first = queue(store, slack_int, "etl_a")
    queue(store, slack_int, "etl_b")  # another group, same channel: paused with it
    queue(store, hook_int, "etl_c")  # due at the same time, another destination
    slack.script(1, status=429, retry_after=30)
    clock = Clock()
    worker = OutboxWorker(store, [slack_int, hook_int], clock)

    assert worker.deliver_due() == 1
    assert hook.groups() == [(group_key("etl_c"), "firing")]  # delivered meanwhile
    assert slack.requests == 1 and slack.rate_limited == 1  # etl_b was not even tried
    waiting = {i.id: i for i in pending(store)}
    assert waiting[first].attempts == 1 and "rate limited" in (waiting[first].last_error or "")
    assert waiting[first].next_attempt_at == T0 + 30

    clock.t = T0 + 29.9  # not before the wait is over
    assert worker.deliver_due() == 0
    assert slack.requests == 1 and slack.messages() == []

    clock.t = T0 + 30
    assert worker.deliver_due() == 1
    [a] = slack.messages(CHANNEL)
    assert "etl_a" in a.all_text()
    # The second group to the channel follows min_interval (1 s) later, not in the same instant.
    assert worker.deliver_due() == 0
    clock.t = T0 + 31
    assert worker.deliver_due() == 1
    assert ["etl_a" in m.all_text() for m in slack.messages(CHANNEL)] == [True, False]
    assert "etl_b" in slack.messages(CHANNEL)[1].all_text()
    assert slack.requests == 3 and pending(store) == []
    assert outcomes(worker) == {"rate_limited": 1, "delivered": 2}
    assert outcomes(worker, "hooks") == {"delivered": 1}


def test_a_resolved_item_never_overtakes_its_groups_failed_firing_item(
    store: OpsStore, hook: WebhookSink
) -> None:
    [hook_int] = integrations(webhook_configs=[{"url": hook.url}])
    queue(store, hook_int, "etl")
    queue(store, hook_int, "etl", AlertState.RESOLVED, at=T0 + 1)
    queue(store, hook_int, "other", at=T0 + 1)  # another group is not held back
    hook.fail(503)
    clock = Clock()
    worker = OutboxWorker(store, [hook_int], clock)

    assert worker.deliver_due() == 0  # the firing item failed; nothing else is due yet
    clock.t = T0 + 1  # the resolved item is due, its firing one waits for its backoff
    assert worker.deliver_due() == 1
    assert hook.groups() == [(group_key("other"), "firing")]
    # Not after a restart either: the order lives in the store, not in the worker.
    assert OutboxWorker(store, [hook_int], clock).deliver_due() == 0
    assert len(hook.bodies) == 1

    clock.t = T0 + backoff(1)
    assert worker.deliver_due() == 2
    assert hook.groups() == [
        (group_key("other"), "firing"),
        (group_key("etl"), "firing"),
        (group_key("etl"), "resolved"),
    ]
    assert outcomes(worker) == {"failed": 1, "delivered": 3}


def test_slack_pacing_spreads_groups_to_one_channel_under_its_rate_limit(store: OpsStore) -> None:
    groups = 3
    with SlackServer(rate_limit=True) as slack:  # answers 429 to a second message within 1 s
        [alerts_int] = integrations(slack_configs=[bot(slack)])
        [other_int] = integrations(name="team", slack_configs=[bot(slack, "#team")])
        now = time.time()
        for g in range(groups):
            queue(store, alerts_int, f"etl_{g}", at=now)
        queue(store, other_int, "team_dag", at=now)
        worker = OutboxWorker(store, [alerts_int, other_int])  # the real clock: pacing is real time

        # One per channel at once: pacing is per destination, not global.
        assert worker.deliver_due() == 2
        deadline = time.monotonic() + 30
        while store.outbox_pending_count():
            assert time.monotonic() < deadline, f"{store.outbox_pending_count()} item(s) left"
            worker.deliver_due()
            time.sleep(0.05)

        assert slack.rate_limited == 0
        msgs = slack.messages(CHANNEL)
        assert len(msgs) == groups
        assert all(sum(f"dag_id=etl_{g}" in m.text for m in msgs) == 1 for g in range(groups))
        assert slack.max_per_second(CHANNEL) == 1
        gaps = [b.received_at - a.received_at for a, b in itertools.pairwise(msgs)]
        assert min(gaps) >= 1.0 - SlackServer.RATE_JITTER, gaps
        assert len(slack.messages("#team")) == 1
        assert outcomes(worker) == {"delivered": groups}


def test_an_integration_removed_from_the_config_keeps_its_items(store: OpsStore, hook: WebhookSink) -> None:
    [gone] = integrations(name="gone", webhook_configs=[{"url": hook.url}])
    [kept] = integrations(webhook_configs=[{"url": hook.url}])
    orphan = queue(store, gone, "etl")
    queue(store, kept, "etl")
    clock = Clock()
    worker = OutboxWorker(store, [kept], clock)  # "gone" was removed from the config

    assert worker.deliver_due() == 1
    clock.t += ORPHAN_RETRY
    assert worker.deliver_due() == 0
    assert len(hook.bodies) == 1  # the kept integration's item only
    [left] = pending(store)
    assert left.id == orphan and left.attempts == 2
    assert "gone/webhook[0]" in (left.last_error or "") and "not configured" in (left.last_error or "")

    # The config comes back: the item is still there and goes out.
    clock.t = left.next_attempt_at
    assert OutboxWorker(store, [kept, gone], clock).deliver_due() == 1
    assert hook.groups() == [(group_key("etl"), "firing")] * 2 and pending(store) == []


def test_send_resolved_false_marks_all_resolved_items_delivered_without_sending(
    store: OpsStore, hook: WebhookSink
) -> None:
    [quiet] = integrations(webhook_configs=[{"url": hook.url, "send_resolved": False}])
    queue(store, quiet, "etl")
    queue(store, quiet, "etl", AlertState.RESOLVED, at=T0 + 1)
    worker = OutboxWorker(store, [quiet], Clock(T0 + 1))

    assert worker.deliver_due() == 2
    assert hook.groups() == [(group_key("etl"), "firing")] and hook.requests == 1
    assert pending(store) == []
    assert outcomes(worker) == {"delivered": 1, "skipped": 1}


def test_the_bot_memo_turns_firing_into_resolved_then_is_forgotten(
    store: OpsStore, slack: SlackServer
) -> None:
    [bot_int] = integrations(slack_configs=[bot(slack)])
    clock = Clock()
    worker = OutboxWorker(store, [bot_int], clock)
    key = group_key("etl")

    queue(store, bot_int, "etl")
    assert worker.deliver_due() == 1
    [first] = slack.messages(CHANNEL)
    assert store.memo_get(bot_int.key, key) == {"channel": first.channel, "ts": first.ts}

    clock.t += 10
    queue(store, bot_int, "etl", AlertState.RESOLVED, at=clock.t)
    assert worker.deliver_due() == 1
    [first] = slack.messages(CHANNEL)  # edited in place, no new message
    assert len(first.edits) == 1 and "RESOLVED" in first.all_text() and "FIRING" not in first.text
    assert not store.memo_get(bot_int.key, key)  # the story is told: nothing left to edit

    # The next incident of the same group posts anew, and its recovery edits that new message.
    clock.t += 10
    queue(store, bot_int, "etl", at=clock.t)
    assert worker.deliver_due() == 1
    clock.t += 10
    queue(store, bot_int, "etl", AlertState.RESOLVED, at=clock.t)
    assert worker.deliver_due() == 1
    first, second = slack.messages(CHANNEL)
    assert len(first.edits) == 1 and len(second.edits) == 1 and second.ts != first.ts
    assert "RESOLVED" in second.all_text()
    assert outcomes(worker) == {"delivered": 4}


def test_stats_count_every_outcome(store: OpsStore, hook: WebhookSink) -> None:
    [loud] = integrations(webhook_configs=[{"url": hook.url}])
    [quiet] = integrations(name="quiet", webhook_configs=[{"url": hook.url, "send_resolved": False}])
    queue(store, loud, "etl")
    queue(store, quiet, "etl", AlertState.RESOLVED)
    hook.fail(500)
    hook.fail(429, retry_after="7")
    clock = Clock()
    worker = OutboxWorker(store, [loud, quiet], clock)

    assert worker.deliver_due() == 1  # the 500; the skipped resolved item for "quiet"
    clock.t += backoff(1)
    assert worker.deliver_due() == 0  # the 429
    clock.t += 7
    assert worker.deliver_due() == 1
    assert outcomes(worker) == {"failed": 1, "rate_limited": 1, "delivered": 1}
    assert outcomes(worker, "quiet") == {"skipped": 1}
    assert hook.requests == 3 and len(hook.bodies) == 1 and pending(store) == []
