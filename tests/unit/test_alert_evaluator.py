"""The built-in evaluator's alert lifecycle (Prometheus 2.42 semantics), its persisted state and
what it reports as changed. The same semantics are checked against real promtool in
tests/integration/test_rules_agree_with_promtool.py."""

from __future__ import annotations

import math

from airflow_ops.alerts.evaluator import Evaluator
from airflow_ops.alerts.model import Alert, AlertState, Sample, fingerprint
from airflow_ops.alerts.rules import Rule, parse_rules

T0 = 1_700_000_000.123  # epoch floats: `for` must still fire exactly on time
RULES = parse_rules(
    """
groups:
  - name: dags
    rules:
      - alert: DagFailing
        expr: airflow_dag_failing_seconds > 3600
        for: 5m
        keep_firing_for: 2m
        labels: {severity: critical, team: "{{ $labels.owner }}"}
        annotations:
          summary: "{{ $labels.dag_id }} failing for {{ $value | humanizeDuration }}"
          runbook_url: https://example.invalid/DagFailing.md
      - alert: SourceDown
        expr: airflow_ops_up == 0
""",
    "rules.yaml",
)


def one_rule(rule: str) -> list[Rule]:
    return parse_rules(f"groups: [{{name: g, rules: [{rule}]}}]", "r.yaml")


def failing(value: float, dag: str = "etl", **labels: str) -> Sample:
    return Sample("airflow_dag_failing_seconds", {"deployment": "prod", "dag_id": dag, **labels}, value)


def down(deployment: str = "prod") -> Sample:
    return Sample("airflow_ops_up", {"deployment": deployment}, 0.0)


def by_name(alerts: list[Alert], name: str) -> list[Alert]:
    return [a for a in alerts if a.name == name]


def test_labels_and_annotations_of_an_alert() -> None:
    ev = Evaluator(RULES)
    (alert,) = ev.evaluate([failing(7200.0, owner="data"), failing(10.0, dag="ok")], T0)
    assert alert.labels == {
        "alertname": "DagFailing",
        "dag_id": "etl",
        "deployment": "prod",
        "owner": "data",
        "severity": "critical",
        "team": "data",
    }
    assert alert.annotations == {
        "summary": "etl failing for 2h 0m 0s",
        "runbook_url": "https://example.invalid/DagFailing.md",
    }
    assert alert.fingerprint == fingerprint(alert.labels)
    # A rule label rendered empty is dropped; so is a series label with an empty value.
    (other,) = Evaluator(RULES).evaluate([failing(7200.0, owner="", pool="")], T0)
    assert "team" not in other.labels and "owner" not in other.labels and "pool" not in other.labels


def test_pending_until_for_then_firing_exactly_on_time() -> None:
    ev = Evaluator(RULES)
    (a,) = ev.evaluate([failing(4000.0)], T0)
    assert (a.state, a.active_at, a.fired_at) == (AlertState.PENDING, T0, None)
    (a,) = ev.evaluate([failing(4060.0)], T0 + 299.999)
    assert a.state is AlertState.PENDING
    (a,) = ev.evaluate([failing(4300.0)], T0 + 300)
    assert (a.state, a.active_at, a.fired_at, a.value) == (AlertState.FIRING, T0, T0 + 300, 4300.0)


def test_for_zero_fires_at_once_and_recovers_with_retention() -> None:
    ev = Evaluator(RULES)
    (a,) = ev.evaluate([down()], T0)
    assert (a.state, a.fired_at) == (AlertState.FIRING, T0)
    (a,) = ev.evaluate([], T0 + 60)
    assert (a.state, a.resolved_at, a.fired_at) == (AlertState.RESOLVED, T0 + 60, T0)
    # Kept for 15 minutes after resolution (so the recovery can be sent), then dropped.
    assert [x.state for x in ev.evaluate([], T0 + 60 + 900)] == [AlertState.RESOLVED]
    assert ev.evaluate([], T0 + 60 + 900.001) == []
    assert ev.changed() == ([], [a.fingerprint])


def test_a_pending_alert_that_stops_is_dropped() -> None:
    ev = Evaluator(RULES)
    (a,) = ev.evaluate([failing(4000.0)], T0)
    assert ev.evaluate([failing(100.0)], T0 + 60) == []
    assert ev.changed() == ([], [a.fingerprint])


def test_keep_firing_for_counts_from_the_first_miss() -> None:
    ev = Evaluator(RULES)
    for minute in range(6):
        ev.evaluate([failing(7200.0)], T0 + 60 * minute)
    ev.evaluate([], T0 + 360)  # first miss: keeps firing for 2 minutes from here
    assert [a.state for a in ev.evaluate([], T0 + 420)] == [AlertState.FIRING]
    assert [a.state for a in ev.evaluate([failing(7300.0)], T0 + 480)] == [AlertState.FIRING]  # back: reset
    assert [a.state for a in ev.evaluate([], T0 + 540)] == [AlertState.FIRING]
    assert [a.state for a in ev.evaluate([], T0 + 600)] == [AlertState.FIRING]
    (a,) = ev.evaluate([], T0 + 660)
    assert (a.state, a.resolved_at, a.value) == (AlertState.RESOLVED, T0 + 660, 7300.0)


def test_a_restart_during_keep_firing_for_does_not_extend_it() -> None:
    first = Evaluator(RULES)
    for minute in range(6):
        first.evaluate([failing(7200.0)], T0 + 60 * minute)
    first.evaluate([], T0 + 360)  # first miss
    upserted, _ = first.changed()
    assert [a.keep_firing_since for a in upserted] == [T0 + 360]  # persisted with the alert
    second = Evaluator(RULES)
    second.restore(Alert.from_json(a.to_json()) for a in first.state())
    assert [a.state for a in second.evaluate([], T0 + 420)] == [AlertState.FIRING]
    (a,) = second.evaluate([], T0 + 480)  # 2 minutes after the first miss, restart or not
    assert (a.state, a.resolved_at) == (AlertState.RESOLVED, T0 + 480)


def test_a_series_back_after_resolution_is_a_new_alert() -> None:
    ev = Evaluator(RULES)
    ev.evaluate([down()], T0)
    ev.evaluate([], T0 + 60)
    (a,) = ev.evaluate([down()], T0 + 120)
    assert (a.state, a.active_at, a.fired_at, a.resolved_at) == (AlertState.FIRING, T0 + 120, T0 + 120, None)


def test_changed_reports_transitions_not_value_or_annotation_moves() -> None:
    ev = Evaluator(RULES)
    up = Sample("airflow_ops_up", {"deployment": "b"}, 1.0)
    (new,) = ev.evaluate([failing(4000.0), down(), up], T0)[:1]
    upserted, removed = ev.changed()
    assert {a.name for a in upserted} == {"DagFailing", "SourceDown"} and removed == []
    ev.evaluate([failing(4000.0), down()], T0 + 30)  # nothing moved
    assert ev.changed() == ([], [])
    ev.evaluate([failing(4000.4), down()], T0 + 60)  # value moved, the rendered text ("1h 6m 40s") did not
    assert ev.changed() == ([], [])
    (moved,) = by_name(ev.evaluate([failing(4100.0), down()], T0 + 90), "DagFailing")
    assert ev.changed() == ([], [])  # the text moved: rendered again after a restore, not persisted
    # A value that only moved is rendered on demand, for what is shown or sent.
    assert moved.annotations["summary"] == "etl failing for 1h 6m 40s"
    fresh = ev.fresh(moved.fingerprint)
    assert fresh is not None and fresh.annotations["summary"] == "etl failing for 1h 8m 20s"
    # Until its state changes, an alert is the same object: value and text of its last transition.
    assert moved is new and (moved.value, moved.last_seen_at) == (4000.0, T0)
    assert (fresh.value, fresh.last_seen_at, fresh.state) == (4100.0, T0 + 90, moved.state)
    assert ev.fresh(moved.fingerprint) is fresh  # rendered once per value
    assert new.annotations["summary"] == "etl failing for 1h 6m 40s"  # returned objects never change
    (fired,) = by_name(ev.evaluate([failing(4100.0), down()], T0 + 300), "DagFailing")
    assert ev.changed() == ([fired], []) and fired.state is AlertState.FIRING


def test_state_survives_a_restart_through_json() -> None:
    first = Evaluator(RULES)
    first.evaluate([failing(4000.0), down()], T0)
    stored = [Alert.from_json(a.to_json()) for a in first.state()]  # what the ops store keeps

    second = Evaluator(RULES)
    second.restore(stored)
    assert second.changed() == ([], [])
    alerts = second.evaluate([failing(4300.0), down()], T0 + 300)
    (dag,) = by_name(alerts, "DagFailing")
    (src,) = by_name(alerts, "SourceDown")
    assert (dag.state, dag.active_at, dag.fired_at) == (AlertState.FIRING, T0, T0 + 300)  # `for` kept
    assert (src.state, src.fired_at) == (AlertState.FIRING, T0)  # not fired again
    assert [a.name for a in second.changed()[0]] == ["DagFailing"]
    # The recovery still comes after another restart.
    third = Evaluator(RULES)
    third.restore(Alert.from_json(a.to_json()) for a in second.state())
    assert {a.name: a.state for a in third.evaluate([failing(4300.0)], T0 + 360)} == {
        "DagFailing": AlertState.FIRING,
        "SourceDown": AlertState.RESOLVED,
    }


def test_restore_drops_alerts_of_rules_that_no_longer_exist() -> None:
    old = Evaluator(RULES)
    old.evaluate([failing(7200.0), down()], T0)
    only_down = [r for r in RULES if r.name == "SourceDown"]
    new = Evaluator(only_down)
    new.restore(old.state())
    assert [a.name for a in new.state()] == ["SourceDown"]
    # A changed fixed label means another rule too.
    renamed = Evaluator(one_rule("{alert: SourceDown, expr: airflow_ops_up == 0, labels: {severity: info}}"))
    renamed.restore(old.state())
    assert renamed.state() == []


def test_a_rule_whose_series_collide_fails_for_the_cycle_and_keeps_its_alerts() -> None:
    ev = Evaluator(one_rule("{alert: Up, expr: 'up{job=~\".+\"} == 0', labels: {job: all}}"))
    (a,) = ev.evaluate([Sample("up", {"job": "a"}, 0.0)], T0)
    alerts = ev.evaluate([Sample("up", {"job": "a"}, 0.0), Sample("up", {"job": "b"}, 0.0)], T0 + 60)
    assert alerts == [a]
    assert ev.last_errors == [
        "rule Up (r.yaml:1): several result series have the same labels once the rule's labels apply"
    ]
    assert ev.evaluate([Sample("up", {"job": "b"}, 0.0)], T0 + 120)[0].active_at == T0  # same alert again
    assert ev.last_errors == []


def test_nan_values_do_not_churn() -> None:
    ev = Evaluator(one_rule("{alert: N, expr: x != 0, annotations: {v: '{{ $value }}'}}"))
    (a,) = ev.evaluate([Sample("x", {}, math.nan)], T0)
    assert a.annotations == {"v": "NaN"}
    ev.evaluate([Sample("x", {}, math.nan)], T0 + 60)
    assert ev.changed() == ([], [])


def test_ten_thousand_series_per_cycle_alert_exactly_the_ones_over_threshold() -> None:
    """10,000 input series over 20 rules: exactly the series over each rule's threshold alert
    (the speed of this cycle is measured by bench/bench_alerts.py, not asserted here)."""
    names = [f"airflow_metric_{i}_seconds" for i in range(10)]
    text = "groups:\n  - name: g\n    rules:\n" + "".join(
        f"      - alert: R{i}\n"
        f'        expr: {names[i % 10]}{{deployment="prod", dag_id=~"dag_.*"}} > {9890 + i}\n'
        f"        for: 5m\n"
        "        annotations: {summary: '{{ $labels.dag_id }} for {{ $value | humanizeDuration }}'}\n"
        for i in range(20)
    )
    ev = Evaluator(parse_rules(text, "bench.yaml"))
    samples = [
        Sample(names[k % 10], {"deployment": "prod", "dag_id": f"dag_{k}"}, float(k)) for k in range(10_000)
    ]
    alerts = ev.evaluate(samples, T0)
    expected = {
        (f"R{i}", f"dag_{k}") for i in range(20) for k in range(10_000) if k % 10 == i % 10 and k > 9890 + i
    }
    assert {(a.name, a.labels["dag_id"]) for a in alerts} == expected
    assert all(a.state is AlertState.PENDING for a in alerts)
