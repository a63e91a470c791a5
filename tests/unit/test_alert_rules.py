"""Loading Prometheus rule files: what a rule becomes, and located errors for everything else."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_ops.alerts.expr import SampleIndex
from airflow_ops.alerts.model import Sample
from airflow_ops.alerts.rules import RuleError, load_rule_files, parse_prometheus_duration, parse_rules
from airflow_ops.config.base import ConfigError

GOOD = """\
groups:
  - name: dags
    interval: 30s
    rules:
      - alert: DagFailing
        expr: airflow_dag_failing_seconds{dag_id!~"tmp_.*"} > 3600
        for: 1h30m
        keep_firing_for: 10m
        labels:
          severity: critical
          team: "{{ $labels.owner }}"
        annotations:
          summary: "DAG {{ $labels.dag_id }} failing for {{ $value | humanizeDuration }}"
          runbook_url: https://example.invalid/runbooks/DagFailing.md
  - name: self
    rules:
      - alert: SourceDown
        expr: airflow_ops_up == 0
"""


def test_a_valid_file_becomes_rules(tmp_path: Path) -> None:
    path = tmp_path / "airflow.yaml"
    path.write_text(GOOD)
    failing, down = load_rule_files([str(path)])
    assert (failing.name, failing.group, failing.group_interval) == ("DagFailing", "dags", 30.0)
    assert (failing.for_seconds, failing.keep_firing_for_seconds) == (5400.0, 600.0)
    assert (failing.file, failing.line) == (str(path), 5)
    assert failing.static_labels == {"severity": "critical"}
    assert failing.labels["team"].render({"owner": "data"}, 0.0) == "data"
    rendered = failing.annotations["summary"].render({"dag_id": "etl"}, 5400.0)
    assert rendered == "DAG etl failing for 1h 30m 0s"
    samples = [Sample("airflow_dag_failing_seconds", {"dag_id": d}, 4000.0) for d in ("etl", "tmp_x")]
    assert [s.labels["dag_id"] for s in failing.expr.evaluate(SampleIndex(samples))] == ["etl"]
    assert (down.name, down.group, down.group_interval, down.for_seconds) == ("SourceDown", "self", None, 0.0)
    assert down.annotations == {} and down.labels == {}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0), ("0s", 0), ("90s", 90), ("5m", 300), ("1h30m", 5400), ("1d", 86400), ("2w", 1209600),
     ("1y", 31536000), ("1h0m30s", 3630), ("250ms", 0.25), ("1m500ms", 60.5)],
)  # fmt: skip
def test_prometheus_durations(text: str, seconds: float) -> None:
    assert parse_prometheus_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "1.5h", "5M", "30m1h", "1h 30m", "-5m", "5 m", "1s1s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="Prometheus duration"):
        parse_prometheus_duration(text)


RULE_A = "groups:\n  - name: a\n    rules:\n      - alert: A\n        expr: up > 0\n"
BAD = """\
groups:
  - name: dags
    limit: 10
    rules:
      - alert: Rate
        expr: rate(airflow_x_total[5m]) > 1
      - record: job:airflow_x:sum
        expr: sum(airflow_x)
      - alert: BadFor
        expr: airflow_x > 1
        for: 5
        colour: red
      - alert: BadTemplate
        expr: airflow_x > 1
        labels:
          alertname: Other
          when: "{{ $value }}"
          "bad-name": x
        annotations:
          summary: "{{ printf \\"%.1f\\" $value }}"
      - expr: airflow_x > 1
  - name: dags
    rules: []
  - rules:
      - alert: NoGroupName
        expr: airflow_x > 1
"""


def test_every_problem_is_reported_at_once_with_file_line_group_and_rule() -> None:
    with pytest.raises(RuleError) as info:
        parse_rules(BAD, "bad.yaml")
    expected = [
        (3, "group dags: limit is not supported by the built-in evaluator"),
        (6, "group dags: rule Rate: expr 'rate(airflow_x_total[5m]) > 1': function calls (rate) are not"),
        (7, "group dags: rule job:airflow_x:sum: recording rules are not supported"),
        (12, "group dags: rule BadFor: unknown key 'colour' in a rule (allowed: alert, record, expr, for,"),
        (11, "group dags: rule BadFor: for: '5' is not a Prometheus duration (e.g. 90s, 5m, 1h30m, 1d, 2w)"),
        (16, "group dags: rule BadTemplate: label 'alertname' is set from the rule's name"),
        (17, "group dags: rule BadTemplate: label 'when' uses $value: the alert's identity would change"),
        (18, "group dags: rule BadTemplate: invalid label name 'bad-name'"),
        (20, "group dags: rule BadTemplate: annotation 'summary': function 'printf' is not supported"),
        (21, "group dags: rule #5: a rule needs 'alert' (its name)"),
        (22, "group name 'dags' is repeated in the same file"),
        (24, "a group needs a non-empty name"),
    ]
    problems = info.value.problems
    assert len(problems) == len(expected), problems
    for problem, (line, start) in zip(problems, expected, strict=True):
        assert problem.startswith(f"bad.yaml:{line}: {start}"), problem
    assert isinstance(info.value, ConfigError)  # the CLI reports it like any config problem
    assert str(info.value) == "\n".join(problems)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("groups: [\n  {name: a, rules: [}\n", "bad.yaml:2: invalid YAML"),
        ("groups:\n  - name: a\n    rules: [{alert: A, expr: up > 0, expr: up}]\n", "key 'expr' given twice"),
        ("rules: []\n", "bad.yaml:1: unknown key 'rules' in the rule file (allowed: groups)"),
        ("groups: {name: a}\n", "bad.yaml:1: groups must be a list"),
        ("groups:\n  - name: a\n    rules: [{alert: A}]\n", "bad.yaml:3: group a: rule A: field 'expr' must"),
        ("groups:\n  - name: a\n    interval: 1.5m\n", "bad.yaml:3: group a: interval: '1.5m' is not a"),
        (RULE_A + "        labels: [x]\n", "bad.yaml:6: group a: rule A: labels must be a mapping"),
        (RULE_A + "        annotations: {s: [1]}\n", "bad.yaml:6: group a: rule A: annotation 's' must be"),
    ],
)  # fmt: skip
def test_located_structural_errors(text: str, problem: str) -> None:
    with pytest.raises(RuleError) as info:
        parse_rules(text, "bad.yaml")
    assert any(line.startswith(problem) or problem in line for line in info.value.problems), (
        info.value.problems
    )


def test_yaml_scalars_are_read_as_go_reads_them() -> None:
    rules = parse_rules(
        "groups:\n  - name: a\n    rules:\n      - alert: A\n        expr: up == 0\n        for: 0\n"
        "        labels: {priority: 1, page: true, empty: }\n        annotations: {summary: }\n",
        "a.yaml",
    )
    assert {k: t.constant for k, t in rules[0].labels.items()} == {
        "priority": "1",
        "page": "true",
        "empty": "",
    }
    assert rules[0].annotations["summary"].constant == ""
    assert parse_rules("", "empty.yaml") == []
    assert parse_rules("groups:\n", "empty.yaml") == []


def test_globs_are_sorted_relative_to_base_dir_and_must_match(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    for name in ("b.yaml", "a.yaml"):
        (tmp_path / "rules" / name).write_text(GOOD.replace("DagFailing", f"Dag_{name[0]}"))
    rules = load_rule_files(["rules/*.yaml", "rules/a.yaml"], base_dir=tmp_path)
    assert [r.name for r in rules] == ["Dag_a", "SourceDown", "Dag_b", "SourceDown"]  # a.yaml once
    with pytest.raises(RuleError) as info:
        load_rule_files(["rules/*.yaml", "missing/*.yml"], base_dir=tmp_path)
    assert info.value.problems == [f"{tmp_path}/missing/*.yml: no rule file matches this pattern"]


def test_problems_of_several_files_are_reported_together(tmp_path: Path) -> None:
    (tmp_path / "one.yaml").write_text(RULE_A.replace("up > 0", "up"))
    (tmp_path / "two.yaml").write_text(RULE_A.replace("up > 0", "up > x"))
    with pytest.raises(RuleError) as info:
        load_rule_files([str(tmp_path / "*.yaml")])
    assert [line.split(": rule ")[0] for line in info.value.problems] == [
        f"{tmp_path}/one.yaml:5: group a",
        f"{tmp_path}/two.yaml:5: group a",
    ]
