"""Matcher strings and label matching with Alertmanager's semantics."""

from __future__ import annotations

import pytest

from airflow_ops.alerts.matchers import (
    format_labels,
    format_matcher,
    format_matchers,
    matches_all,
    parse_matcher,
    parse_matchers,
)
from airflow_ops.alerts.model import Matcher, Silence


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('severity="critical"', Matcher("severity", "=", "critical")),
        (' dag_id != "etl" ', Matcher("dag_id", "!=", "etl")),
        ('alertname=~"Dag.*"', Matcher("alertname", "=~", "Dag.*")),
        ('team!~"a|b"', Matcher("team", "!~", "a|b")),
        ('x=""', Matcher("x", "=", "")),
        (r'x="say \"hi\""', Matcher("x", "=", 'say "hi"')),
        (r'x="a\\b\nc"', Matcher("x", "=", "a\\b\nc")),
        (r'x=~"\d+"', Matcher("x", "=~", r"\d+")),  # an unknown escape keeps its backslash
    ],
)
def test_parse(text: str, expected: Matcher) -> None:
    assert parse_matcher(text) == expected


@pytest.mark.parametrize("text", ["severity=critical", '="x"', 'a=="x"', 'a="x', 'a="x"y', '1a="x"', 'a~"x"'])
def test_parse_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError, match="must look like"):
        parse_matcher(text)


def test_parse_rejects_bad_regex() -> None:
    with pytest.raises(ValueError, match="invalid regular expression"):
        parse_matcher('a=~"("')


@pytest.mark.parametrize("text", ['a="x"', r'a="q\"uo\\te\nnl"', 'a!~"x|y"', 'b=~".*"'])
def test_format_round_trips(text: str) -> None:
    m = parse_matcher(text)
    assert parse_matcher(format_matcher(m)) == m


@pytest.mark.parametrize(
    ("matcher", "labels", "expected"),
    [
        ('a="x"', {"a": "x"}, True),
        ('a="x"', {"a": "xx"}, False),
        ('a!="x"', {"a": "y"}, True),
        ('a!="x"', {}, True),
        ('a=""', {}, True),  # a missing label equals ""
        ('a=""', {"a": "x"}, False),
        ('a=~"x|y"', {"a": "y"}, True),
        ('a=~"x"', {"a": "xx"}, False),  # fully anchored
        ('a=~"x"', {"a": "ax"}, False),
        ('a=~"x"', {"a": "x\n"}, False),  # anchored at the very end, not before a newline
        ('a=~"a|ab"', {"a": "ab"}, True),
        ('a=~".*"', {}, True),
        ('a=~".+"', {}, False),
        ('a!~"x.*"', {"a": "xyz"}, False),
        ('a!~"x.*"', {"a": "yxz"}, True),
        ('a!~"x"', {}, True),
    ],
)
def test_matches(matcher: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_matcher(matcher).matches(labels) is expected


def test_matches_all_and_formatting() -> None:
    ms = parse_matchers(['severity="critical"', 'deployment=~"prod.*"'])
    assert matches_all(ms, {"severity": "critical", "deployment": "prod-eu"})
    assert not matches_all(ms, {"severity": "critical", "deployment": "staging"})
    assert format_matchers(ms) == '{deployment=~"prod.*",severity="critical"}'
    assert format_labels({"b": "2", "a": 'x"y'}) == '{a="x\\"y", b="2"}'


def test_silence_matches_only_while_active() -> None:
    s = Silence(
        "s1", parse_matchers(['dag_id=~"etl_.*"']), starts_at=100, ends_at=200, created_by="me", comment=""
    )
    labels = {"dag_id": "etl_daily"}
    assert not s.matches(labels, 99)
    assert s.matches(labels, 100)
    assert s.matches(labels, 199.9)
    assert not s.matches(labels, 200)
    assert not s.matches({"dag_id": "other"}, 150)
    expired = Silence("s2", s.matchers, 100, 200, "me", "", expired_at=150)
    assert expired.matches(labels, 149) and not expired.matches(labels, 150)
    assert not Silence("s3", (), 100, 200, "me", "").matches(labels, 150)  # no matchers: silences nothing
