"""The `selector <op> number` subset: what it selects, and what it refuses (with the reason)."""

from __future__ import annotations

import math

import pytest

from airflow_ops.alerts.expr import ExprError, SampleIndex, parse_expr, parse_metric
from airflow_ops.alerts.model import Sample

SAMPLES = [
    Sample("airflow_dag_failing_seconds", {"deployment": "prod", "dag_id": "etl", "team": "data"}, 7200.0),
    Sample("airflow_dag_failing_seconds", {"deployment": "prod", "dag_id": "etl_daily"}, 3600.0),
    Sample("airflow_dag_failing_seconds", {"deployment": "dev", "dag_id": "xetl"}, 10.0),
    Sample("airflow_dag_failing_seconds", {"deployment": "prod", "dag_id": "report", "team": ""}, math.nan),
    Sample("airflow_ops_up", {"deployment": "prod"}, 0.0),
    Sample("airflow_ops_up", {"deployment": "dev"}, 1.0),
]


def select(expr: str, samples: list[Sample] = SAMPLES) -> list[tuple[str, str, float]]:
    """(name, dag_id or deployment, value) of every sample the expression keeps."""
    out = parse_expr(expr).evaluate(SampleIndex(samples))
    return [(s.name, s.labels.get("dag_id", s.labels.get("deployment", "")), s.value) for s in out]


def test_a_comparison_filters_and_keeps_each_series_value() -> None:
    assert select("airflow_dag_failing_seconds > 3600") == [("airflow_dag_failing_seconds", "etl", 7200.0)]
    assert select("airflow_dag_failing_seconds >= 3600") == [
        ("airflow_dag_failing_seconds", "etl", 7200.0),
        ("airflow_dag_failing_seconds", "etl_daily", 3600.0),
    ]
    assert select("airflow_ops_up == 0") == [("airflow_ops_up", "prod", 0.0)]
    assert [v for *_, v in select("airflow_ops_up != 0")] == [1.0]
    assert [d for _, d, _ in select("airflow_dag_failing_seconds < 3600.5")] == ["etl_daily", "xetl"]
    assert [d for _, d, _ in select("airflow_dag_failing_seconds <= 10")] == ["xetl"]


def test_numbers_in_every_spelling() -> None:
    assert len(select("airflow_dag_failing_seconds > 1e3")) == 2
    assert len(select("airflow_dag_failing_seconds > 0x9")) == 3
    assert len(select("airflow_dag_failing_seconds > -1")) == 3
    assert len(select("airflow_dag_failing_seconds < +Inf")) == 3
    assert select("airflow_dag_failing_seconds > Inf") == []
    # NaN is unequal to everything, itself included (as in Prometheus).
    assert select("airflow_dag_failing_seconds == NaN") == []
    assert len(select("airflow_dag_failing_seconds != nan")) == 4


def test_whitespace_parentheses_and_comments() -> None:
    expected = select("airflow_ops_up == 0")
    for spelled in ("airflow_ops_up==0", "  ( airflow_ops_up == 0 )  ", "((airflow_ops_up) == (0))",
                    "airflow_ops_up{} == 0", "airflow_ops_up == 0 # source down\n"):  # fmt: skip
        assert select(spelled) == expected, spelled


def test_label_matchers() -> None:
    assert [d for _, d, _ in select('airflow_dag_failing_seconds{deployment="prod"} > 0')] == [
        "etl",
        "etl_daily",
    ]
    assert [d for _, d, _ in select('airflow_dag_failing_seconds{deployment!="prod"} > 0')] == ["xetl"]
    # Regexes are anchored at both ends: "etl" does not match "xetl" nor "etl_daily".
    assert [d for _, d, _ in select('airflow_dag_failing_seconds{dag_id=~"etl"} > 0')] == ["etl"]
    assert [d for _, d, _ in select('airflow_dag_failing_seconds{dag_id=~"etl.*|x.*"} > 0')] == [
        "etl",
        "etl_daily",
        "xetl",
    ]
    assert [d for _, d, _ in select('airflow_dag_failing_seconds{dag_id!~"etl.*",} > 0')] == ["xetl"]
    # A missing label (or an empty one) is the empty string.
    assert [d for _, d, _ in select('airflow_dag_failing_seconds{team=""} > 0')] == ["etl_daily", "xetl"]
    assert [d for _, d, _ in select('airflow_dag_failing_seconds{team!=""} > 0')] == ["etl"]


def test_selectors_by_name_matcher() -> None:
    assert select('{__name__="airflow_ops_up", deployment="dev"} > 0') == [("airflow_ops_up", "dev", 1.0)]
    assert select('{__name__=~"airflow_ops_.*"} >= 0') == [
        ("airflow_ops_up", "prod", 0.0),
        ("airflow_ops_up", "dev", 1.0),
    ]


def test_string_escapes_in_label_values() -> None:
    samples = [
        Sample("m", {"path": 'a"b\\c\n'}, 1.0),
        Sample("m", {"path": "é"}, 1.0),
        Sample("m", {"path": "C:\\new"}, 1.0),
    ]
    assert len(select(r'm{path="a\"b\\c\n"} > 0', samples)) == 1
    assert len(select("m{path='a\"b\\\\c\\n'} > 0", samples)) == 1
    assert len(select(r'm{path="\u00e9"} > 0', samples)) == 1
    assert len(select(r'm{path="\xc3\xa9"} > 0', samples)) == 1
    assert select(r"m{path=`C:\new`} > 0", samples) == [("m", "", 1.0)]  # raw: no escapes
    assert len(select(r'm{path=~"a\"b\\\\c\n"} > 0', samples)) == 1


@pytest.mark.parametrize(
    ("expr", "reason"),
    [
        ("rate(airflow_x_total[5m]) > 1", "function calls (rate) are not supported"),
        ("sum(airflow_x) > 1", "aggregations (sum) are not supported"),
        ("sum by (dag_id) (airflow_x) > 1", "aggregations (sum) are not supported"),
        ("airflow_x > bool 1", "the bool modifier is not supported"),
        ("airflow_x > 1 and airflow_y > 1", "the set operator 'and' is not supported"),
        ("airflow_x > 1 unless airflow_y", "the set operator 'unless' is not supported"),
        ("airflow_x + 1 > 2", "arithmetic (+) is not supported"),
        ("airflow_x > 1 * 60", "arithmetic (*) is not supported"),
        ("airflow_x[5m] > 1", "range selectors"),
        ("airflow_x offset 5m > 1", "offset modifiers are not supported"),
        ("airflow_x @ 1700000000 > 1", "the @ modifier is not supported"),
        ("airflow_x > on(dag_id) airflow_y", "the 'on' modifier is not supported"),
        ("3600 < airflow_x", "put the selector on the left: `selector > 3600`"),
        ("airflow_x > airflow_y", "comparing two selectors is not supported"),
        ("airflow_x", "the expression is just a selector"),
        ("1 > 0", "the left-hand side must be a selector"),
        ("(1)", "the expression is just a number"),
        ("airflow_x{a='\\\"'} > 1", 'unknown escape sequence \\"'),  # only the quote used escapes
        ("airflow_x > 1 > 0", "only one comparison"),
        ("-airflow_x > 1", "unary - is only supported on a number"),
        ("airflow_x > 5m", "durations (5m)"),
        ('airflow_x > "1"', "string literals are not supported"),
        ('{dag_id=""} > 1', "a selector without a metric name needs a matcher"),
        ('airflow_x{__name__="y"} > 1', "must not be set twice"),
        ('airflow_x{dag_id=~"(?=a)b"} > 1', "lookaround assertions are not supported"),
        ('airflow_x{dag_id=~"(a)\\\\1"} > 1', "backreferences are not supported"),
        ('airflow_x{dag_id=~"[[:alpha:]]"} > 1', "POSIX character classes are not supported"),
        ('airflow_x{dag_id=~"a("} > 1', "invalid regex"),
        ('airflow_x{dag_id="a\\q"} > 1', "unknown escape sequence \\q"),
        ('airflow_x{dag_id="a} > 1', "unterminated string"),
        ('airflow_x{dag_id="a" team="b"} > 1', "expected ',' or '}'"),
        ("airflow_x{dag_id=a} > 1", "expected a quoted string"),
        ('airflow_x{dag-id="a"} > 1', "expected one of = != =~ !~"),
        ("airflow_x > 1)", "unexpected ')'"),
        ("", "the expression is empty"),
    ],
)
def test_unsupported_expressions_are_rejected_with_the_reason(expr: str, reason: str) -> None:
    with pytest.raises(ExprError) as info:
        parse_expr(expr)
    assert reason in str(info.value)


def test_parse_metric_reads_promtool_series() -> None:
    assert parse_metric('airflow_x{dag_id="a\\"b", deployment=\'prod\'}') == (
        "airflow_x",
        {"dag_id": 'a"b', "deployment": "prod"},
    )
    assert parse_metric('{__name__="airflow_x", a="1"}') == ("airflow_x", {"a": "1"})
    assert parse_metric("up") == ("up", {})
    for bad in ('up{a=~"x"}', "up > 1", 'up{a="1", a="2"}'):
        with pytest.raises(ExprError):
            parse_metric(bad)


def test_ten_thousand_samples_by_twenty_rules_select_exactly_the_matches() -> None:
    names = [f"airflow_metric_{i}" for i in range(10)]
    samples = [
        Sample(names[k % 10], {"deployment": "prod", "dag_id": f"dag_{k}", "pool": "default"}, float(k))
        for k in range(10_000)
    ]
    rules = [
        parse_expr(f'{names[i % 10]}{{deployment="prod", dag_id=~"dag_.*", pool!="x"}} > {9000 + i}')
        for i in range(20)
    ]
    index = SampleIndex(samples)
    hits = sum(len(r.evaluate(index)) for r in rules)
    assert hits == sum(sum(1 for k in range(10_000) if k % 10 == i % 10 and k > 9000 + i) for i in range(20))
