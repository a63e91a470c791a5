"""Run a ``promtool test rules`` file through the built-in evaluator.

The same test files that ``promtool test rules`` runs against Prometheus' engine run here
against :class:`~airflow_ops.alerts.evaluator.Evaluator`, which is how the two are shown to
agree. This follows promtool 2.42 (cmd/promtool/unittest.go): the input series notation
(``a+bxN``, ``a-bxN``, ``axN``, ``_``, ``_xN``, ``stale``), an evaluation at every
``evaluation_interval`` from 0 up to the last ``eval_time``, Prometheus' instant lookup (the
latest sample at or before t, at most 5 minutes old, hidden by a stale marker), and the check of
an ``eval_time`` against the evaluation at or just before it, comparing the labels and
annotations of the firing alerts of that name, in any order.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .evaluator import Evaluator
from .expr import ExprError, parse_metric
from .model import ALERTNAME, AlertState, Sample
from .rules import Rule, RuleError, load_rule_files, parse_prometheus_duration
from .templating import go_quote

LOOKBACK_MS = 5 * 60 * 1000  # Prometheus' default query lookback delta
DEFAULT_EVALUATION_INTERVAL_MS = 60 * 1000
_STALE = object()  # a staleness marker: the series is gone from then on
_OMITTED = object()
_UNSIGNED = r"(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[iI][nN][fF]|[nN][aA][nN])"
_ITEM = re.compile(
    r"(?P<blank>_)(?:x(?P<blanks>\d+))?|(?P<stale>stale)"
    rf"|(?P<start>[+-]?{_UNSIGNED})(?:(?P<step>[+-]{_UNSIGNED})?x(?P<times>\d+))?"
)
_FILE_KEYS = ("rule_files", "evaluation_interval", "group_eval_order", "tests")
_GROUP_KEYS = (
    "interval", "input_series", "alert_rule_test", "promql_expr_test",
    "external_labels", "external_url", "name",
)  # fmt: skip


class _TestFileError(Exception):
    """The test file itself is malformed; the message says where and why."""


def expand_values(text: str) -> list[object]:
    """promtool's expanding notation -> one entry per step: a float, ``_OMITTED`` or ``_STALE``.

    ``a+bxN`` is a, a+b, …, a+N·b (N+1 values, summed step by step as Prometheus does), ``axN``
    is N+1 copies of a, ``_xN`` is N missing samples."""
    out: list[object] = []
    for item in text.split():
        m = _ITEM.fullmatch(item)
        if m is None:
            raise _TestFileError(f"bad item {item!r} in values {text!r} (use e.g. 1 2 _ stale 1+2x3 0x5 _x2)")
        if m["blank"]:
            out.extend([_OMITTED] * (int(m["blanks"]) if m["blanks"] else 1))
        elif m["stale"]:
            out.append(_STALE)
        else:
            value = float(m["start"])
            if m["times"] is None:
                out.append(value)
                continue
            step = float(m["step"]) if m["step"] else 0.0
            for _ in range(int(m["times"]) + 1):
                out.append(value)
                value += step
    return out


@dataclass
class _Series:
    name: str
    labels: dict[str, str]
    times: list[int] = field(default_factory=list)  # milliseconds, ascending
    values: list[object] = field(default_factory=list)

    def at(self, t: int) -> float | None:
        """Prometheus' instant-vector lookup at t."""
        i = bisect_right(self.times, t) - 1
        if i < 0 or self.times[i] < t - LOOKBACK_MS or self.values[i] is _STALE:
            return None
        value = self.values[i]
        assert isinstance(value, float)
        return value


@dataclass(frozen=True)
class _AlertTest:
    eval_ms: int
    alertname: str
    expected: list[tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]]


def run_test_file(path: Path) -> list[str]:
    """Run one promtool test file through the built-in evaluator; returns one message per
    failure (an empty list means every test passed)."""
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.BaseLoader)  # strings, like Go's fields
        top = _mapping(doc, "the test file", _FILE_KEYS)
        rule_files = _list(top.get("rule_files"), "rule_files")
        interval = _duration_ms(top.get("evaluation_interval"), "evaluation_interval")
        tests = _list(top.get("tests"), "tests")
        interval = interval or DEFAULT_EVALUATION_INTERVAL_MS
    except (OSError, yaml.YAMLError, _TestFileError) as e:
        return [f"{path}: {e}"]
    try:
        rules = load_rule_files([str(f) for f in rule_files], base_dir=path.parent)
    except RuleError as e:
        return [f"{path}: rule_files: {line}" for line in e.problems]
    failures: list[str] = []
    for n, group in enumerate(tests, start=1):
        label = f"{path}: test #{n}"
        try:
            group_map = _mapping(group, f"test #{n}", _GROUP_KEYS)
            if group_map.get("name"):
                label = f"{path}: test {group_map['name']!r}"
            failures.extend(f"{label}: {m}" for m in _run_group(group_map, rules, interval))
        except _TestFileError as e:
            failures.append(f"{label}: {e}")
    return failures


def _run_group(group: Mapping[str, Any], rules: Sequence[Rule], interval_ms: int) -> list[str]:
    failures: list[str] = []
    if _list(group.get("promql_expr_test"), "promql_expr_test"):
        failures.append("promql_expr_test is not supported by the built-in evaluator (only alert_rule_test)")
    series = _input_series(group, _duration_ms(group.get("interval"), "interval"))
    tests = sorted(_alert_tests(group), key=lambda t: t.eval_ms)
    last = max((t.eval_ms for t in tests), default=0)
    evaluator = Evaluator(rules)
    pending = 0
    ts = 0
    while ts <= last:
        samples = [Sample(s.name, s.labels, v) for s in series if (v := s.at(ts)) is not None]
        alerts = evaluator.evaluate(samples, ts / 1000)
        if evaluator.last_errors:
            return [*failures, *(f"time {_fmt_ms(ts)}: {e}" for e in evaluator.last_errors)]
        # An eval_time is checked against the evaluation at or just before it (ts <= t < ts + interval).
        while pending < len(tests) and ts <= tests[pending].eval_ms < ts + interval_ms:
            test = tests[pending]
            firing = [a for a in alerts if a.state is AlertState.FIRING and a.name == test.alertname]
            got = sorted(
                (tuple(sorted(a.labels.items())), tuple(sorted(fresh.annotations.items())))
                for a in firing
                if (fresh := evaluator.fresh(a.fingerprint)) is not None
            )
            if got != sorted(test.expected):
                failures.append(
                    f"alertname {test.alertname}, time {_fmt_ms(test.eval_ms)}:\n"
                    f"    exp: {_fmt_alerts(sorted(test.expected))}\n    got: {_fmt_alerts(got)}"
                )
            pending += 1
        ts += interval_ms
    return failures


def _input_series(group: Mapping[str, Any], interval_ms: int) -> list[_Series]:
    by_identity: dict[tuple[str, tuple[tuple[str, str], ...]], dict[int, object]] = {}
    for item in _list(group.get("input_series"), "input_series"):
        entry = _mapping(item, "an input_series item", ("series", "values"))
        try:
            name, labels = parse_metric(entry.get("series", ""))
        except ExprError as e:
            raise _TestFileError(f"input_series: {e}") from None
        labels = {k: v for k, v in labels.items() if v}
        points = by_identity.setdefault((name, tuple(sorted(labels.items()))), {})
        for step, value in enumerate(expand_values(entry.get("values", ""))):
            # With interval 0 every sample lands at t=0 and, as in promtool, the first one stays.
            if value is not _OMITTED:
                points.setdefault(step * interval_ms, value)
    out = []
    for (name, labels), points in by_identity.items():
        times = sorted(points)
        out.append(_Series(name, dict(labels), times, [points[t] for t in times]))
    return out


def _alert_tests(group: Mapping[str, Any]) -> list[_AlertTest]:
    tests = []
    for item in _list(group.get("alert_rule_test"), "alert_rule_test"):
        case = _mapping(item, "an alert_rule_test item", ("eval_time", "alertname", "exp_alerts"))
        eval_ms = _duration_ms(case.get("eval_time"), "eval_time")
        alertname = case.get("alertname") or ""
        if not alertname:
            raise _TestFileError(f"an alert_rule_test item misses alertname (eval_time {_fmt_ms(eval_ms)})")
        expected = []
        for exp in _list(case.get("exp_alerts"), "exp_alerts"):
            alert = _mapping(exp, "an exp_alerts item", ("exp_labels", "exp_annotations"))
            labels = {**_mapping(alert.get("exp_labels") or {}, "exp_labels", ()), ALERTNAME: alertname}
            annotations = _mapping(alert.get("exp_annotations") or {}, "exp_annotations", ())
            expected.append((tuple(sorted(labels.items())), tuple(sorted(annotations.items()))))
        tests.append(_AlertTest(eval_ms, alertname, expected))
    return tests


def _mapping(value: Any, what: str, allowed: Sequence[str]) -> dict[str, Any]:
    if value in (None, ""):
        return {}
    if not isinstance(value, dict):
        raise _TestFileError(f"{what} must be a mapping")
    unknown = [k for k in value if allowed and k not in allowed]
    if unknown:
        keys = ", ".join(map(repr, unknown))
        raise _TestFileError(f"unknown key(s) {keys} in {what} (allowed: {', '.join(allowed)})")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if value in (None, ""):
        return []
    if not isinstance(value, list):
        raise _TestFileError(f"{what} must be a list")
    return value


def _duration_ms(value: Any, what: str) -> int:
    if value in (None, ""):
        return 0
    try:
        return round(parse_prometheus_duration(str(value)) * 1000)
    except ValueError as e:
        raise _TestFileError(f"{what}: {e}") from None


def _fmt_ms(ms: int) -> str:
    """A duration the way Prometheus prints one (``1h5m``, ``0s``)."""
    if ms == 0:
        return "0s"
    out = ""
    for unit, size in (("y", 31_536_000_000), ("w", 604_800_000), ("d", 86_400_000), ("h", 3_600_000),
                       ("m", 60_000), ("s", 1000), ("ms", 1)):  # fmt: skip
        if ms >= size:
            out += f"{ms // size}{unit}"
            ms %= size
    return out


def _fmt_alerts(alerts: Sequence[tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]]) -> str:
    if not alerts:
        return "[]"
    return "".join(
        f"\n      {i}: labels {_fmt_labels(labels)} annotations {_fmt_labels(annotations)}"
        for i, (labels, annotations) in enumerate(alerts)
    )


def _fmt_labels(pairs: Sequence[tuple[str, str]]) -> str:
    return "{" + ", ".join(f"{k}={go_quote(v)}" for k, v in pairs) + "}"
