"""Alert templates render exactly what Prometheus 2.42 renders.

The expected strings below are promtool 2.42's own output for the same template and value
(recorded from `promtool test rules`; tests/fixtures/rules/templates_test.yaml re-checks a wider
set against the real binary in the integration tests)."""

from __future__ import annotations

import math

import pytest

from airflow_ops.alerts.templating import TemplateError, go_float, parse_template

INF = math.inf

# value -> ($value, humanize, humanize1024, humanizeDuration, humanizePercentage, humanizeTimestamp)
PROMTOOL_OUTPUT = {
    3600: ("3600", "3.6k", "3.516ki", "1h 0m 0s", "3.6e+05%", "1970-01-01 01:00:00 +0000 UTC"),
    1e6: ("1e+06", "1M", "976.6ki", "11d 13h 46m 40s", "1e+08%", "1970-01-12 13:46:40 +0000 UTC"),
    0.5: ("0.5", "500m", "0.5", "500ms", "50%", "1970-01-01 00:00:00.5 +0000 UTC"),
    INF: ("+Inf", "+Inf", "+Inf", "+Inf", "+Inf%", "+Inf"),
    123456.5: (
        "123456.5", "123.5k", "120.6ki", "1d 10h 17m 36s", "1.235e+07%", "1970-01-02 10:17:36.5 +0000 UTC",
    ),
    0.00001234: ("1.234e-05", "12.34u", "1.234e-05", "12.34us", "0.001234%", "1970-01-01 00:00:00 +0000 UTC"),
    -1234567: (
        "-1.234567e+06", "-1.235M", "-1.177Mi", "-14d 6h 56m 7s", "-1.235e+08%",
        "1969-12-17 17:03:53 +0000 UTC",
    ),
    1.5e-7: ("1.5e-07", "150n", "1.5e-07", "150ns", "1.5e-05%", "1970-01-01 00:00:00 +0000 UTC"),
    0: ("0", "0", "0", "0s", "0%", "1970-01-01 00:00:00 +0000 UTC"),
    1699999999.123456: (
        "1.699999999123456e+09", "1.7G", "1.583Gi", "19675d 22h 13m 19s", "1.7e+11%",
        "2023-11-14 22:13:19.123 +0000 UTC",
    ),
    -0.5: ("-0.5", "-500m", "-0.5", "-500ms", "-50%", "1969-12-31 23:59:59.5 +0000 UTC"),
    # int64(1e21) overflows to MinInt64 in Go on amd64, and humanizeDuration shows it.
    1e21: ("1e+21", "1Z", "867.4Ei", "-106751991167300d -15h -30m -8s", "1e+23%", None),
}  # fmt: skip
FUNCTIONS = ("humanize", "humanize1024", "humanizeDuration", "humanizePercentage", "humanizeTimestamp")


def render(text: str, labels: dict[str, str] | None = None, value: float = 0.0, alert: str = "A") -> str:
    return parse_template(text, alert).render(labels or {}, value)


@pytest.mark.parametrize("value", list(PROMTOOL_OUTPUT), ids=str)
def test_value_and_humanize_functions_match_promtool(value: float) -> None:
    printed, *humanized = PROMTOOL_OUTPUT[value]
    assert render("{{ $value }}", value=value) == printed
    assert go_float(value) == printed
    for function, expected in zip(FUNCTIONS, humanized, strict=True):
        if expected is not None:
            assert render(f"{{{{ $value | {function} }}}}", value=value) == expected, function
            assert render(f"{{{{ {function} $value }}}}", value=value) == expected, function


def test_timestamp_that_overflows_renders_prometheus_error() -> None:
    assert render("{{ $value | humanizeTimestamp }}", value=1e21) == (
        "<error expanding template: error executing template __alert_A: template: __alert_A:1:124: "
        'executing "__alert_A" at <humanizeTimestamp>: error calling humanizeTimestamp: '
        "1e+21 cannot be represented as a nanoseconds timestamp since it overflows int64>"
    )


def test_go_float_edge_cases() -> None:
    assert [go_float(v) for v in (-0.0, math.nan, -INF, 100000.0, 999999.0, 1e-4, 1.5e-5, 2.5, 1e100)] == [
        "-0", "NaN", "-Inf", "100000", "999999", "0.0001", "1.5e-05", "2.5", "1e+100",
    ]  # fmt: skip


def test_labels_and_missing_labels() -> None:
    labels = {"dag_id": "etl", "owner": "Data Eng", "__name__": "airflow_dag_failing_seconds"}
    assert render("DAG {{ $labels.dag_id }} ({{ .Labels.owner }})", labels) == "DAG etl (Data Eng)"
    assert render("{{ $labels.__name__ }}", labels) == "airflow_dag_failing_seconds"
    # Prometheus executes with missingkey=zero: a missing label is "", never "<no value>".
    assert render("[{{ $labels.nope }}][{{ $labels.nope | toUpper }}]", labels) == "[][]"


def test_text_functions_follow_go() -> None:
    labels = {"name": "élan-vital_x straße ǆx 3d", "n": "1536"}
    assert render("{{ $labels.name | title }}", labels) == "Élan-Vital_x Straße ǅx 3d"
    assert (
        render("{{ toUpper $labels.name }}", labels) == "ÉLAN-VITAL_X STRAßE ǄX 3D"
    )  # Go maps rune by rune: ß has no one-rune upper case and stays
    assert render("{{ $labels.name | toLower }}", labels) == "élan-vital_x straße ǆx 3d"
    assert render("{{ $labels.n | humanize1024 }}B", labels) == "1.5kiB"
    assert render("{{ $value | humanizePercentage | toUpper }}", value=0.25) == "25%"


def test_whitespace_trimming_and_comments() -> None:
    labels = {"x": "X"}
    assert render("a  {{- $labels.x -}}  b", labels) == "aXb"
    assert render("a {{ $labels.x }} b", labels) == "a X b"
    assert render("a\n\t {{- $labels.x }}", labels) == "aX"
    assert render("a {{/* note */}}b {{- /* note */ -}} c", labels) == "a bc"
    assert render("no actions at all } {") == "no actions at all } {"


def test_runtime_errors_render_like_prometheus_with_position() -> None:
    labels = {"job": "a-b c_d"}
    prefix = "<error expanding template: error executing template __alert_K: template: __alert_K:"
    assert render("{{ $labels.job | humanize }}", labels, alert="K") == (
        prefix + '1:129: executing "__alert_K" at <humanize>: error calling humanize: '
        'strconv.ParseFloat: parsing "a-b c_d": invalid syntax>'
    )
    assert render("{{ humanize $labels.job }}", labels, alert="K") == (
        prefix + '1:115: executing "__alert_K" at <humanize $labels.job>: error calling humanize: '
        'strconv.ParseFloat: parsing "a-b c_d": invalid syntax>'
    )
    assert render("a\nb{{ humanize $labels.job }}", labels, alert="K").startswith(prefix + "2:4: ")
    assert render("{{ $labels.n | humanize }}", {"n": "1e999"}, alert="K").endswith(
        'parsing "1e999": value out of range>'
    )
    assert render("{{ $labels.n | humanize }}", {"n": " 1"}, alert="K").endswith(
        'parsing " 1": invalid syntax>'
    )


def test_numeric_label_values_parse_like_go() -> None:
    for text, expected in (("1234", "1.234k"), ("-2.5e3", "-2.5k"), ("+Inf", "+Inf"), ("nan", "NaN"),
                           ("0x1p10", "1.024k"), (".5", "500m"), ("1.", "1"), ("1_000", "1k"),
                           ("0x_1p4", "16"), ("1e-400", "0")):  # fmt: skip
        assert render("{{ $labels.n | humanize }}", {"n": text}) == expected, text
    for text in ("", "+nan", "0x10", "1e", "_1", "1__0", "1_", "1_e5", "1e_5"):
        assert "invalid syntax" in render("{{ $labels.n | humanize }}", {"n": text}), text


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{{ if $value }}x{{ end }}", "{{ if }} is not supported"),
        ("{{ range $labels }}{{ end }}", "{{ range }} is not supported"),
        ('{{ printf "%.2f" $value }}', "function 'printf' is not supported"),
        ('{{ query "up" | first | value }}', "function 'query' is not supported"),
        ("{{ $value | foo }}", "function 'foo' is not defined"),
        ('{{ "text" }}', "literals inside {{ }} are not supported"),
        ("{{ $externalLabels.cluster }}", "$externalLabels is not supported"),
        ("{{ $externalURL }}", "$externalURL is not supported"),
        ("{{ $labels }}", "printing the whole $labels map is not supported"),
        ("{{ $labels.a.b }}", "use $labels.NAME"),
        ("{{ $value.x }}", "$value is a number and has no fields"),
        ("{{ $x }}", "undefined variable '$x'"),
        ("{{ . }}", "is not supported; use $labels.NAME or $value"),
        ("{{ $value | toUpper }}", "toUpper needs text, but $value is a number"),
        ("{{ title $value }}", "title needs text"),
        ("{{ humanize }}", "humanize takes one argument"),
        ("{{ humanize $value $value }}", "humanize takes one argument"),
        ("{{ $value | humanize $value }}", "humanize after '|' takes no other argument"),
        ("{{ $value | $labels.x }}", "cannot follow '|'"),
        ("{{ $labels.x $value }}", "is not a function and takes no arguments"),
        ("{{ $v := $value }}", "variable declarations not supported"),
        ("{{ ($value) }}", "parentheses not supported"),
        ("{{ }}", "empty action"),
        ("{{ $value |}}", "missing command after '|'"),
        ("{{ $value ", "unclosed action"),
        ("{{/* unclosed }}", "unclosed comment"),
        ("{{-$value}}", "not supported inside {{ }}"),
    ],
)
def test_unsupported_templates_are_rejected_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(TemplateError) as info:
        parse_template(text, "A")
    assert reason in str(info.value)


def test_templates_know_whether_they_use_the_value() -> None:
    assert parse_template("{{ $value | humanize }}", "A").uses_value
    assert parse_template("{{ .Value }}", "A").uses_value
    assert not parse_template("{{ $labels.dag_id }}", "A").uses_value
    assert parse_template("plain", "A").constant == "plain"
    assert parse_template("{{ $labels.x }}", "A").constant is None
