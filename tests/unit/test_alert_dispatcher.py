"""The dispatcher: aggregation groups and their timers, Alertmanager's dedup decisions, muting
(silences, inhibition, paused DAGs) and restarts — over the real SQLite ops store."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import replace
from typing import Any

import pytest

from airflow_ops.alerts.dispatcher import (
    Dispatcher,
    IntegrationInfo,
    NotifyReason,
    needs_update,
)
from airflow_ops.alerts.matchers import parse_matchers
from airflow_ops.alerts.model import Alert, AlertState, NflogEntry, Notification, OutboxItem, Silence
from airflow_ops.config.alerting import AlertingConfig
from airflow_ops.store import OpsStore, open_store

WAIT, INTERVAL, REPEAT = 30.0, 300.0, 3600.0
HOOK = IntegrationInfo("default/webhook[0]", "default", send_resolved=True)
MAIL = IntegrationInfo("default/email[0]", "default", send_resolved=False)


class CountingStore:
    """The real store, counting the dispatcher's calls (one read and one write per flush)."""

    def __init__(self, store: OpsStore) -> None:
        self.store = store
        self.reads = self.writes = 0

    def nflog_get_many(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], NflogEntry]:
        self.reads += 1
        return self.store.nflog_get_many(keys)

    def record_notifications(self, entries: Sequence[NflogEntry], items: Sequence[OutboxItem]) -> list[int]:
        self.writes += 1
        return self.store.record_notifications(entries, items)


@pytest.fixture
def store() -> Iterator[CountingStore]:
    s = open_store("sqlite:///:memory:")
    yield CountingStore(s)
    s.close()


def config(route: dict[str, Any] | None = None, **extra: Any) -> AlertingConfig:
    route = route or {}
    route.setdefault("receiver", "default")
    timings = {"group_wait": WAIT, "group_interval": INTERVAL, "repeat_interval": REPEAT}
    names = {"default", "pager", "team"}
    return AlertingConfig.model_validate(
        {
            "rule_files": [],
            "route": {**timings, **route},
            "receivers": [{"name": n} for n in names],
            **extra,
        }
    )


def dispatcher(store: CountingStore, cfg: AlertingConfig | None = None, **integrations: Any) -> Dispatcher:
    return Dispatcher(cfg or config(), integrations or {"default": [HOOK]}, store, "http://ops")


def alert(state: str = "firing", at: float = 0.0, **labels: str) -> Alert:
    labels = {"alertname": "DagFailing", "deployment": "prod", **labels}
    resolved = at if state == "resolved" else None
    return Alert(labels, {"summary": "s"}, AlertState(state), 1.0, at, fired_at=at, resolved_at=resolved)


def resolve(a: Alert, at: float) -> Alert:
    return replace(a, state=AlertState.RESOLVED, resolved_at=at)


def dags(n: Notification) -> list[tuple[str, str]]:
    return [(a.labels["dag_id"], a.state.value) for a in n.alerts]


def queued(store: CountingStore) -> list[OutboxItem]:
    return store.store.outbox_due(float("inf"), limit=10_000)


# -- the dedup decision table (Alertmanager's DedupStage.needsUpdate) --------------------------------


def entry(firing: set[str], resolved: Collection[str] = (), sent_at: float = 0.0) -> NflogEntry:
    return NflogEntry("r", "g", frozenset(firing), frozenset(resolved), sent_at)


@pytest.mark.parametrize(
    ("last", "firing", "resolved", "send_resolved", "now", "reason"),
    [
        (None, {"a"}, set(), True, 10, NotifyReason.FIRST_NOTIFICATION),
        (None, set(), {"a"}, True, 10, NotifyReason.DO_NOT_NOTIFY),  # fired and resolved unseen
        (entry({"a"}), {"a"}, set(), True, 10, NotifyReason.DO_NOT_NOTIFY),
        (entry({"a"}), {"a", "b"}, set(), True, 10, NotifyReason.NEW_ALERTS_IN_GROUP),
        (entry(set(), {"a"}), {"a"}, set(), True, 10, NotifyReason.FIRST_NOTIFICATION),  # after recovery
        (entry({"a"}), set(), {"a"}, True, 10, NotifyReason.ALL_ALERTS_RESOLVED),
        (entry({"a"}), set(), {"a"}, False, 10, NotifyReason.ALL_ALERTS_RESOLVED),  # clears the log
        (entry(set(), {"a"}), set(), {"a"}, True, 10, NotifyReason.DO_NOT_NOTIFY),
        (entry({"a", "b"}), {"a"}, {"b"}, True, 10, NotifyReason.NEW_RESOLVED_ALERTS),
        (entry({"a", "b"}), {"a"}, {"b"}, False, 10, NotifyReason.DO_NOT_NOTIFY),
        (entry({"a", "b"}, {"b"}), {"a"}, {"b"}, True, 10, NotifyReason.DO_NOT_NOTIFY),
        (entry({"a"}), {"a"}, set(), True, REPEAT, NotifyReason.DO_NOT_NOTIFY),  # strictly after
        (entry({"a"}), {"a"}, set(), True, REPEAT + 1, NotifyReason.REPEAT_INTERVAL_ELAPSED),
        (entry({"a", "b"}), {"a"}, {"b"}, False, REPEAT + 1, NotifyReason.REPEAT_INTERVAL_ELAPSED),
    ],
)
def test_needs_update(
    last: NflogEntry | None,
    firing: set[str],
    resolved: set[str],
    send_resolved: bool,
    now: float,
    reason: NotifyReason,
) -> None:
    got = needs_update(
        last,
        frozenset(firing),
        frozenset(resolved),
        send_resolved=send_resolved,
        repeat_interval=REPEAT,
        now=now,
    )
    assert got is reason


# -- groups and timers --------------------------------------------------------------------------------


def test_alerts_are_grouped_by_route_group_by(store: CountingStore) -> None:
    d = dispatcher(store)
    alerts = [alert(dag_id="etl", task="a"), alert(dag_id="etl", task="b"), alert(dag_id="report")]
    d.update(alerts, now=0)
    sent = sorted(d.flush(now=WAIT), key=lambda n: n.group_key)
    assert [n.group_labels for n in sent] == [
        {"alertname": "DagFailing", "deployment": "prod", "dag_id": "etl"},
        {"alertname": "DagFailing", "deployment": "prod", "dag_id": "report"},
    ]
    assert [len(n.alerts) for n in sent] == [2, 1]
    assert sent[0].group_key == '{}:{alertname="DagFailing", dag_id="etl", deployment="prod"}'
    assert all(n.status == "firing" and not n.reminder and n.external_url == "http://ops" for n in sent)
    items = queued(store)
    assert [(i.receiver, i.integration, i.next_attempt_at) for i in items] == [
        ("default", HOOK.key, WAIT)
    ] * 2
    assert sorted(Notification.from_json(i.payload).group_key for i in items) == [n.group_key for n in sent]


def test_group_wait_then_group_interval(store: CountingStore) -> None:
    d = dispatcher(store)
    assert d.next_flush_at() is None
    d.update([alert(dag_id="etl")], now=100)
    assert d.next_flush_at() == 100 + WAIT
    assert d.flush(now=100 + WAIT - 1) == []
    assert store.reads == 0  # nothing due: no store access
    assert len(d.flush(now=100 + WAIT)) == 1
    assert d.next_flush_at() == 100 + WAIT + INTERVAL
    # A new alert joining the group waits for the group's next tick, not group_wait.
    d.update([alert(dag_id="etl"), alert(dag_id="etl", task="t2")], now=200)
    assert d.next_flush_at() == 100 + WAIT + INTERVAL
    assert d.flush(now=100 + WAIT + INTERVAL - 1) == []
    (n,) = d.flush(now=100 + WAIT + INTERVAL)
    assert len(n.alerts) == 2
    # A late flush catches up without firing twice in a row.
    d.update([alert(dag_id="etl"), alert(dag_id="etl", task="t2")], now=2000)
    d.flush(now=2000)
    assert d.next_flush_at() == 2000 + INTERVAL


def test_dedup_lifecycle(store: CountingStore) -> None:
    d = dispatcher(store)
    a, b = alert(dag_id="etl", task="a"), alert(dag_id="etl", task="b")
    d.update([a], now=0)
    (first,) = d.flush(now=WAIT)
    t = WAIT + INTERVAL
    d.update([a], now=t)
    assert d.flush(now=t) == []  # unchanged: nothing before repeat_interval
    d.update([a, b], now=t + 10)
    t += INTERVAL
    (second,) = d.flush(now=t)  # a new alert in the group
    assert len(second.alerts) == 2 and not second.reminder
    sent_at = t
    reminders = []
    while t < sent_at + REPEAT + 2 * INTERVAL:
        t += INTERVAL
        d.update([a, b], now=t)
        reminders += d.flush(now=t)
    # Exactly one reminder, at the first tick strictly after repeat_interval.
    assert [(n.created_at, n.reminder) for n in reminders] == [(sent_at + REPEAT + INTERVAL, True)]
    d.update([resolve(a, t), b], now=t)
    t += INTERVAL
    (partial,) = d.flush(now=t)  # newly resolved, and the webhook sends resolved
    assert partial.status == "firing" and sorted(x.state.value for x in partial.alerts) == [
        "firing",
        "resolved",
    ]
    d.update([b], now=t)  # the resolved one was told; it may now vanish from the group
    d.update([resolve(b, t + 1)], now=t + 1)
    t += INTERVAL
    (recovery,) = d.flush(now=t)
    assert recovery.status == "resolved" and [x.labels["task"] for x in recovery.alerts] == ["b"]
    assert d.next_flush_at() is None  # all resolved and told: the group is gone
    d.update([resolve(b, t - INTERVAL + 1)], now=t + 100)  # still reported as resolved: no new group
    assert d.next_flush_at() is None
    assert first.alerts[0].labels == a.labels and len(queued(store)) == 5


def test_send_resolved_false_clears_the_log_without_a_message(store: CountingStore) -> None:
    d = dispatcher(store, default=[HOOK, MAIL])
    a = alert(dag_id="etl")
    d.update([a], now=0)
    assert sorted(n.receiver for n in d.flush(now=WAIT)) == ["default", "default"]
    d.update([resolve(a, 100)], now=100)
    (recovery,) = d.flush(now=WAIT + INTERVAL)
    assert recovery.status == "resolved"
    assert [i.integration for i in queued(store)].count(MAIL.key) == 1  # only the firing message
    group = recovery.group_key
    mail_log = store.store.nflog_get(MAIL.key, group)
    assert mail_log is not None and mail_log.firing == frozenset() and mail_log.resolved == {a.fingerprint}
    # So when it fires again, the mail integration is told again at once (first notification).
    d.update([alert(dag_id="etl", at=1000)], now=1000)
    again = d.flush(now=1000 + WAIT)
    assert sorted(n.status for n in again) == ["firing", "firing"]


def test_mail_without_send_resolved_shows_only_firing_alerts(store: CountingStore) -> None:
    d = dispatcher(store, default=[MAIL])
    a, b = alert(dag_id="etl", task="a"), alert(dag_id="etl", task="b")
    d.update([a, b], now=0)
    d.flush(now=WAIT)
    d.update([resolve(a, 40), b, alert(dag_id="etl", task="c")], now=40)
    (n,) = d.flush(now=WAIT + INTERVAL)
    assert sorted(x.labels["task"] for x in n.alerts) == ["b", "c"]


def test_fired_and_resolved_within_group_wait_sends_nothing(store: CountingStore) -> None:
    d = dispatcher(store)
    a = alert(dag_id="etl")
    d.update([a], now=0)
    d.update([resolve(a, 10)], now=10)
    assert d.flush(now=WAIT) == []
    assert d.next_flush_at() is None and store.writes == 0


def test_an_alert_that_vanishes_is_resolved(store: CountingStore) -> None:
    d = dispatcher(store)
    d.update([alert(dag_id="etl")], now=0)
    d.flush(now=WAIT)
    d.update([], now=100)  # e.g. its rule was removed
    (n,) = d.flush(now=WAIT + INTERVAL)
    assert n.status == "resolved" and n.alerts[0].resolved_at == 100
    assert d.next_flush_at() is None


def test_pending_alerts_are_ignored(store: CountingStore) -> None:
    d = dispatcher(store)
    d.update([alert("pending", dag_id="etl")], now=0)
    assert d.next_flush_at() is None


def test_continue_sends_to_each_matching_route(store: CountingStore) -> None:
    cfg = config(
        {
            "routes": [
                {"matchers": ['severity="critical"'], "receiver": "pager", "continue": True},
                {"matchers": ['team="a"'], "receiver": "team", "group_by": ["team"]},
            ]
        }
    )
    pager = IntegrationInfo("pager/slack[0]", "pager", True)
    team = IntegrationInfo("team/slack[0]", "team", True)
    d = dispatcher(store, cfg, default=[HOOK], pager=[pager], team=[team])
    d.update([alert(dag_id="etl", severity="critical", team="a"), alert(dag_id="x", team="a")], now=0)
    sent = sorted((n.receiver, n.group_key, len(n.alerts)) for n in d.flush(now=WAIT))
    assert sent == [
        ("pager", '{}/{severity="critical"}:{alertname="DagFailing", dag_id="etl", deployment="prod"}', 1),
        ("team", '{}/{team="a"}:{team="a"}', 2),
    ]


def test_enrich_sees_only_what_is_sent_and_its_result_is_queued(store: CountingStore) -> None:
    d = dispatcher(store)
    a = alert(dag_id="etl")
    seen: list[str] = []

    def enrich(n: Notification) -> Notification:
        seen.append(n.group_key)
        return replace(n, context={a.fingerprint: {"failed_tasks": ["extract"]}})

    d.update([a, alert(dag_id="quiet")], now=0)
    d.update([a, resolve(alert(dag_id="quiet"), 5)], now=5)  # its group will have nothing to say
    (n,) = d.flush(now=WAIT, enrich=enrich)
    assert seen == [n.group_key] and n.context == {a.fingerprint: {"failed_tasks": ["extract"]}}
    (item,) = queued(store)
    assert Notification.from_json(item.payload).context == n.context


def test_integration_keys_must_be_unique(store: CountingStore) -> None:
    with pytest.raises(ValueError, match="unique"):
        dispatcher(store, default=[HOOK], pager=[IntegrationInfo(HOOK.key, "pager", True)])


# -- muting --------------------------------------------------------------------------------------------


def silence(*matchers: str, starts: float = 0.0, ends: float = 1e9, expired: float | None = None) -> Silence:
    return Silence("s-" + "-".join(matchers), parse_matchers(matchers), starts, ends, "me", "", expired)


def test_silences_mute_while_active(store: CountingStore) -> None:
    d = dispatcher(store)
    etl, other = alert(dag_id="etl_daily"), alert(dag_id="report")
    s = silence('dag_id=~"etl_.*"', ends=WAIT + INTERVAL)
    d.update([etl, other], now=0, silences=[s])
    assert [dags(n) for n in d.flush(now=WAIT)] == [[("report", "firing")]]
    assert d.status(etl, WAIT)["silenced_by"] == [s.id]
    assert d.status(other, WAIT)["silenced_by"] == []
    etl_group = '{}:{alertname="DagFailing", dag_id="etl_daily", deployment="prod"}'
    assert store.store.nflog_get(HOOK.key, etl_group) is None
    # The silence ends: the alert is notified at the group's next tick, as a first notification.
    d.update([etl, other], now=WAIT + INTERVAL, silences=[s])
    assert d.status(etl, WAIT + INTERVAL)["silenced_by"] == []
    assert [dags(n) for n in d.flush(now=WAIT + INTERVAL)] == [[("etl_daily", "firing")]]


def test_expired_silence_stops_muting(store: CountingStore) -> None:
    d = dispatcher(store)
    a = alert(dag_id="etl")
    d.update([a], now=0, silences=[silence('dag_id="etl"', expired=10)])
    assert d.status(a, 5)["silenced_by"] and not d.status(a, 10)["silenced_by"]
    assert len(d.flush(now=WAIT)) == 1


def test_a_fully_muted_group_leaves_the_log_alone(store: CountingStore) -> None:
    d = dispatcher(store)
    a = alert(dag_id="etl")
    d.update([a], now=0)
    (n,) = d.flush(now=WAIT)
    d.update([resolve(a, 100)], now=100, silences=[silence('dag_id="etl"')])
    assert d.flush(now=WAIT + INTERVAL) == []  # muted recovery: nothing said, like Alertmanager
    assert store.store.nflog_get(HOOK.key, n.group_key).firing == {a.fingerprint}  # type: ignore[union-attr]


INHIBIT = [
    {
        "source_matchers": ['alertname="SchedulerDown"'],
        "target_matchers": ['alertname="DagFailing"'],
        "equal": ["deployment"],
    }
]


def test_scheduler_outage_inhibits_dag_alerts_of_its_deployment_only(store: CountingStore) -> None:
    d = dispatcher(store, config(inhibit_rules=INHIBIT))
    down = alert(alertname="SchedulerDown", deployment="prod")
    prod, staging = alert(dag_id="etl", deployment="prod"), alert(dag_id="etl", deployment="staging")
    d.update([down, prod, staging], now=0)
    sent = {(n.group_labels["alertname"], n.group_labels["deployment"]) for n in d.flush(now=WAIT)}
    assert sent == {("SchedulerDown", "prod"), ("DagFailing", "staging")}
    assert d.status(prod, WAIT)["inhibited_by"] == [down.fingerprint]
    assert d.status(staging, WAIT)["inhibited_by"] == []
    assert d.status(down, WAIT)["inhibited_by"] == []
    # Once the scheduler is back, the DAG alert still firing is notified.
    d.update([resolve(down, 100), prod, staging], now=100)
    sent = {
        (n.group_labels["alertname"], n.group_labels["deployment"], n.status)
        for n in d.flush(WAIT + INTERVAL)
    }
    assert sent == {("SchedulerDown", "prod", "resolved"), ("DagFailing", "prod", "firing")}


def test_inhibition_equal_labels_missing_on_both_sides_are_equal(store: CountingStore) -> None:
    rules = [{"source_matchers": ['alertname="A"'], "target_matchers": ['alertname="B"'], "equal": ["zone"]}]
    d = dispatcher(store, config(inhibit_rules=rules))
    source, target = alert(alertname="A"), alert(alertname="B")
    d.update([source, target, alert(alertname="B", zone="eu")], now=0)
    assert d.status(target, 0)["inhibited_by"] == [source.fingerprint]
    assert d.status(alert(alertname="B", zone="eu"), 0)["inhibited_by"] == []


def test_alerts_matching_both_sides_do_not_inhibit_each_other(store: CountingStore) -> None:
    rules = [{"source_matchers": ['severity="critical"'], "target_matchers": ['severity="critical"']}]
    d = dispatcher(store, config(inhibit_rules=rules))
    x, y = alert(dag_id="x", severity="critical"), alert(dag_id="y", severity="critical")
    d.update([x, y], now=0)
    assert d.status(x, 0)["inhibited_by"] == [] and len(d.flush(WAIT)) == 2


def test_paused_dags_are_muted_per_deployment_and_route(store: CountingStore) -> None:
    cfg = config({"routes": [{"matchers": ['team="data"'], "receiver": "team", "mute_paused_dags": False}]})
    team = IntegrationInfo("team/webhook[0]", "team", True)
    d = dispatcher(store, cfg, default=[HOOK], team=[team])
    prod, staging = alert(dag_id="etl", deployment="prod"), alert(dag_id="etl", deployment="staging")
    data = alert(dag_id="etl", deployment="prod", team="data")
    d.update([prod, staging, data], now=0, paused_dags={("prod", "etl")})
    sent = sorted((n.receiver, n.group_labels["deployment"]) for n in d.flush(now=WAIT))
    assert sent == [("default", "staging"), ("team", "prod")]
    assert d.status(prod, WAIT) == {
        "silenced_by": [],
        "inhibited_by": [],
        "muted_paused": True,
        "receivers": ["default"],
    }
    assert d.status(data, WAIT)["muted_paused"] is False and d.status(data, WAIT)["receivers"] == ["team"]


# -- restarts and bursts -----------------------------------------------------------------------------


def test_restart_sends_no_duplicate_and_still_recovers(store: CountingStore) -> None:
    a, b = alert(dag_id="etl"), alert(dag_id="report")
    before = dispatcher(store)
    before.update([a, b], now=0)
    assert len(before.flush(now=WAIT)) == 2
    # "Restart": a new dispatcher over the same store, fed the persisted alerts; b resolved meanwhile.
    after = dispatcher(store)
    after.update([a, resolve(b, 500)], now=1000)
    assert after.next_flush_at() == 1000 + WAIT
    (recovery,) = after.flush(now=1000 + WAIT)
    assert dags(recovery) == [("report", "resolved")]
    t, reminders = 1000 + WAIT, []
    while t < WAIT + REPEAT + INTERVAL:
        t += INTERVAL
        after.update([a], now=t)
        reminders += after.flush(now=t)
    assert [dags(n) for n in reminders] == [[("etl", "firing")]] and reminders[0].reminder
    assert reminders[0].created_at > WAIT + REPEAT


def test_burst_of_500_failing_dags_gives_500_groups_flushed_once(store: CountingStore) -> None:
    d = dispatcher(store)
    alerts = [alert(dag_id=f"dag_{i:03}") for i in range(500)]
    d.update(alerts, now=0)
    sent = d.flush(now=WAIT)
    assert len(sent) == 500 and len({n.group_key for n in sent}) == 500
    assert (store.reads, store.writes) == (1, 1)  # one batched read and one write for the whole flush
    assert len(queued(store)) == 500
    d.update(alerts, now=WAIT + INTERVAL)
    assert d.flush(now=WAIT + INTERVAL) == []
    assert (store.reads, store.writes) == (1, 1)  # the log it wrote is known: nothing read again
