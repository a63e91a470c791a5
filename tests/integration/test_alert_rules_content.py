"""The shipped alert rules, their promtool tests and their runbooks, checked as one product.

Runs the real promtool (Debian package `prometheus`), then checks what promtool cannot: every
rule is portable to the built-in evaluator (`selector <op> number`, simple templates), watches
a metric the exporter really exports, has its metadata and a runbook with the four sections, and
every alert is covered by promtool cases that show it firing and not firing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_ops.metrics import CATALOGUE, TASK_LABELLED

REPO = Path(__file__).resolve().parents[2]
RULES_DIR = REPO / "alert_rules"
PROMTOOL_TESTS_DIR = RULES_DIR / "tests"
RUNBOOKS_DIR = REPO / "runbooks"
RUNBOOK_URL_BASE = "https://github.com/airflow-ops/airflow-ops/blob/main/runbooks/"

# Metrics the rules already use while the exporter is gaining them (issue 3), with their labels
# besides `deployment`. Remove an entry once the metric is in CATALOGUE:
# test_pending_metrics_are_not_in_the_catalogue_yet fails as a reminder.
PENDING_METRICS: dict[str, tuple[str, ...]] = {}

SEVERITIES = {"critical", "warning", "info"}
RULE_KEYS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
RUNBOOK_SECTIONS = ["## Meaning", "## Impact", "## Diagnosis", "## Mitigation"]

# What the built-in evaluator accepts: `name{matchers} <op> number`.
_NAME_RE = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_EXPR_RE = re.compile(
    rf"^\s*(?P<name>{_NAME_RE})\s*(?:\{{(?P<matchers>.*)\}})?\s*"
    r"(?P<op>>=|<=|==|!=|>|<)\s*(?P<number>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*$"
)
_MATCHER_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')
_HUMANIZE = "humanize|humanize1024|humanizeDuration|humanizePercentage|humanizeTimestamp"
_TEMPLATE_ACTION_RE = re.compile(
    rf"^(?:\$labels\.(?P<label>[a-zA-Z_][a-zA-Z0-9_]*)"
    rf"|\$value(?:\s*\|\s*(?:{_HUMANIZE}))?"
    rf"|(?:{_HUMANIZE})\s+\$value)$"
)
_DURATION_RE = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


# ---------------------------------------------------------------- loading


def _rule_files() -> list[Path]:
    return sorted(RULES_DIR.glob("*.yaml"))


def _promtool_test_files() -> list[Path]:
    return sorted(PROMTOOL_TESTS_DIR.glob("*.yaml"))


def _rules_of(path: Path) -> list[dict[str, Any]]:
    doc = yaml.safe_load(path.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def _all_rules() -> list[dict[str, Any]]:
    return [rule for path in _rule_files() for rule in _rules_of(path)]


def _rule_params() -> list[Any]:
    return [pytest.param(rule, id=rule["alert"]) for rule in _all_rules()]


def _seconds(duration: str) -> float:
    parts = _DURATION_RE.findall(duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"bad duration {duration!r}"
    return sum(int(n) * _DURATION_UNITS[u] for n, u in parts)


def _exported_series() -> dict[str, set[str]]:
    """Series name -> its labels, as the exporter exposes the catalogue (plus pending metrics)."""
    series: dict[str, set[str]] = {}
    for spec in CATALOGUE:
        labels = {"deployment", *spec.labels} | ({"task_id"} if spec.name in TASK_LABELLED else set())
        if spec.type == "counter":
            series[spec.name + "_total"] = labels
        elif spec.type == "histogram":
            series[spec.name + "_bucket"] = labels | {"le"}
            series[spec.name + "_count"] = labels
            series[spec.name + "_sum"] = labels
        else:
            series[spec.name] = labels
    for name, labels in PENDING_METRICS.items():
        series.setdefault(name, {"deployment", *labels})
    return series


def _parse_expr(expr: str) -> tuple[str, list[tuple[str, str, str]]]:
    """(metric name, matchers) of a `selector <op> number` expression; AssertionError otherwise."""
    m = _EXPR_RE.match(expr)
    assert m, f"expr is not `selector <op> number`: {expr!r}"
    body = (m["matchers"] or "").strip()
    matchers, pos = [], 0
    while pos < len(body):
        mm = _MATCHER_RE.match(body, pos)
        assert mm and mm.end() > pos, f"bad label matchers in {expr!r} at {body[pos:]!r}"
        matchers.append((mm[1], mm[2], mm[3]))
        pos = mm.end()
    return m["name"], matchers


def _template_actions(text: str) -> list[str]:
    actions = re.findall(r"\{\{(.*?)\}\}", text, flags=re.DOTALL)
    leftover = re.sub(r"\{\{.*?\}\}", "", text, flags=re.DOTALL)
    assert "{{" not in leftover and "}}" not in leftover, f"unbalanced template in {text!r}"
    return [a.strip() for a in actions]


# ---------------------------------------------------------------- promtool


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool") or shutil.which("/usr/bin/promtool")
    if path is None:
        pytest.fail(
            "promtool is not installed; it checks and unit-tests alert_rules/. "
            "Install it with: apt-get install prometheus"
        )
    return path


def test_the_shipped_rule_files_exist() -> None:
    # The parametrized tests below glob these directories: an empty glob would test nothing.
    assert {"airflow.yaml", "airflow_ops.yaml"} <= {p.name for p in _rule_files()}
    assert {"airflow_test.yaml", "airflow_ops_test.yaml"} <= {p.name for p in _promtool_test_files()}


def test_promtool_check_rules_passes(promtool: str) -> None:
    files = [str(p) for p in _rule_files()]
    proc = subprocess.run([promtool, "check", "rules", *files], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = sum(int(n) for n in re.findall(r"SUCCESS: (\d+) rules found", proc.stdout))
    assert found == len(_all_rules())


@pytest.mark.parametrize("test_file", _promtool_test_files(), ids=lambda p: p.name)
def test_promtool_test_rules_passes(promtool: str, test_file: Path) -> None:
    proc = subprocess.run(
        [promtool, "test", "rules", str(test_file)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


# ---------------------------------------------------------------- the rules


def test_alert_names_are_unique_and_camel_case() -> None:
    names = [rule["alert"] for rule in _all_rules()]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    for name in names:
        assert re.fullmatch(r"(?:[A-Z][a-z0-9]+)+", name), f"{name} is not CamelCase"


@pytest.mark.parametrize("rule", _rule_params())
def test_rule_has_severity_summary_description_and_runbook(rule: dict[str, Any]) -> None:
    name = rule["alert"]
    assert set(rule) <= RULE_KEYS, f"{name}: unsupported keys {set(rule) - RULE_KEYS}"
    assert rule.get("labels", {}).get("severity") in SEVERITIES, f"{name}: severity"
    annotations = rule.get("annotations", {})
    for key in ("summary", "description", "runbook_url"):
        assert str(annotations.get(key, "")).strip(), f"{name}: missing annotation {key}"
    assert annotations["runbook_url"] == f"{RUNBOOK_URL_BASE}{name}.md"
    assert annotations["runbook_url"].endswith(f"runbooks/{name}.md")
    for key in ("for", "keep_firing_for"):
        if key in rule:
            assert _seconds(rule[key]) > 0, f"{name}: {key}"


@pytest.mark.parametrize("rule", _rule_params())
def test_rule_expr_is_a_threshold_on_an_exported_metric(rule: dict[str, Any]) -> None:
    name, matchers = _parse_expr(rule["expr"])
    exported = _exported_series()
    assert name in exported, f"{rule['alert']}: {name} is not exported (see `airflow-ops catalogue`)"
    for label, op, value in matchers:
        assert label in exported[name], f"{rule['alert']}: {name} has no label {label!r}"
        if op in ("=~", "!~"):
            re.compile(value)


@pytest.mark.parametrize("rule", _rule_params())
def test_rule_templates_are_portable_and_name_real_labels(rule: dict[str, Any]) -> None:
    # $labels in a template are the series' labels: a misspelt one renders as an empty string.
    series_labels = _exported_series()[_parse_expr(rule["expr"])[0]]
    texts = [*rule.get("annotations", {}).values(), *rule.get("labels", {}).values()]
    for text in texts:
        for action in _template_actions(str(text)):
            m = _TEMPLATE_ACTION_RE.match(action)
            assert m, f"{rule['alert']}: template action {{{{ {action} }}}} is not portable"
            if m["label"]:
                assert m["label"] in series_labels, f"{rule['alert']}: no label {m['label']!r}"


def test_pending_metrics_are_not_in_the_catalogue_yet() -> None:
    landed = sorted(set(PENDING_METRICS) & {spec.name for spec in CATALOGUE})
    assert not landed, f"now in the catalogue, remove from PENDING_METRICS: {landed}"


# ---------------------------------------------------------------- promtool test coverage


def _load_promtool_test(test_file: Path) -> tuple[dict[str, Any], list[Path]]:
    doc = yaml.safe_load(test_file.read_text())
    return doc, [(test_file.parent / f).resolve() for f in doc["rule_files"]]


def test_every_rule_file_has_its_promtool_test_file() -> None:
    for rule_file in _rule_files():
        test_file = PROMTOOL_TESTS_DIR / f"{rule_file.stem}_test.yaml"
        assert test_file.exists(), f"{rule_file.name} has no {test_file.relative_to(REPO)}"
        _, rule_files = _load_promtool_test(test_file)
        assert rule_files == [rule_file.resolve()]


@pytest.mark.parametrize("test_file", _promtool_test_files(), ids=lambda p: p.name)
def test_promtool_cases_cover_every_alert(test_file: Path) -> None:
    """Each alert has a case where it fires and one where it does not, and its onset: no alert
    at one evaluation and the alert one evaluation later (the `for` boundary, or the threshold
    crossing for a rule without `for`)."""
    doc, rule_files = _load_promtool_test(test_file)
    step = _seconds(doc.get("evaluation_interval", "1m"))
    alerts = {rule["alert"] for path in rule_files for rule in _rules_of(path)}
    firing, quiet, onset = set(), set(), set()
    for group in doc["tests"]:
        cases: dict[str, dict[float, bool]] = {}
        for case in group.get("alert_rule_test", []):
            fires = bool(case.get("exp_alerts"))
            (firing if fires else quiet).add(case["alertname"])
            cases.setdefault(case["alertname"], {})[_seconds(case["eval_time"])] = fires
        for name, by_time in cases.items():
            if any(fires and by_time.get(t - step) is False for t, fires in by_time.items()):
                onset.add(name)
    assert alerts, f"{test_file.name} tests no alerts"
    assert not alerts - firing, f"never shown firing: {sorted(alerts - firing)}"
    assert not alerts - quiet, f"never shown not firing: {sorted(alerts - quiet)}"
    assert not alerts - onset, f"no onset/`for` boundary case: {sorted(alerts - onset)}"


# ---------------------------------------------------------------- runbooks


def _headings(markdown: str) -> list[str]:
    """Level 1 and 2 headings outside fenced code blocks (shell comments start with # too)."""
    headings, fenced = [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"##? ", line):
            headings.append(line.strip())
    return headings


def _sections(markdown: str) -> dict[str, str]:
    parts = re.split(r"^(## .+)$", markdown, flags=re.MULTILINE)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


@pytest.mark.parametrize("rule", _rule_params())
def test_every_rule_has_a_runbook_with_the_four_sections(rule: dict[str, Any]) -> None:
    name = rule["alert"]
    path = RUNBOOKS_DIR / f"{name}.md"
    assert path.exists(), f"{name} has no runbook {path.relative_to(REPO)}"
    text = path.read_text()
    assert _headings(text) == [f"# {name}", *RUNBOOK_SECTIONS]
    sections = _sections(text)
    for heading in RUNBOOK_SECTIONS:
        assert len(sections[heading].strip()) > 80, f"{name}: {heading} is nearly empty"
    # Concrete commands, not prose: both sections an on-call engineer acts from carry code.
    for heading in ("## Diagnosis", "## Mitigation"):
        assert "```" in sections[heading], f"{name}: {heading} has no commands"
    assert f"airflow-ops silence add 'alertname=\"{name}\"'" in sections["## Mitigation"]


def test_no_orphan_runbooks() -> None:
    names = {rule["alert"] for rule in _all_rules()}
    pages = {p.stem for p in RUNBOOKS_DIR.glob("*.md")} - {"README"}
    assert not pages - names, f"runbooks without a rule: {sorted(pages - names)}"
    assert not names - pages, f"rules without a runbook: {sorted(names - pages)}"


def test_runbook_index_lists_every_alert_with_its_severity() -> None:
    index = (RUNBOOKS_DIR / "README.md").read_text()
    rows = re.findall(r"^\|\s*\[(\w+)\]\((\w+)\.md\)\s*\|\s*(\w+)\s*\|\s*(.+?)\s*\|\s*$", index, re.MULTILINE)
    listed = {name: severity for name, _, severity, _ in rows}
    assert all(name == target for name, target, _, _ in rows)
    assert listed == {rule["alert"]: rule["labels"]["severity"] for rule in _all_rules()}
