"""The built-in evaluator and real Prometheus (promtool 2.42) agree on the same rule tests.

Every promtool test file here runs twice: through ``promtool test rules`` and through
:func:`run_test_file`. Passing files must pass in both; the deliberately failing file must fail
in both, on exactly the same checks — so a divergence in either direction shows.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from airflow_ops.alerts.promtool_tests import expand_values, run_test_file

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "rules"
PASSING = [FIXTURES / "semantics_test.yaml", FIXTURES / "templates_test.yaml"]
SHIPPED = sorted((REPO / "alert_rules" / "tests").glob("*.yaml"))


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if path is None:
        pytest.fail(
            "promtool is missing (these tests compare with real Prometheus): apt-get install prometheus"
        )
    return path


def _promtool(promtool: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def _failed_checks(text: str) -> list[tuple[str, str]]:
    """(alertname, eval time) of each failed check, from promtool's or run_test_file's output."""
    return sorted(re.findall(r"alertname:? (\S+), time:? (\S+?)[,:]", text))


@pytest.mark.parametrize("test_file", PASSING + SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_both_evaluators_pass(promtool: str, test_file: Path) -> None:
    real = _promtool(promtool, "test", "rules", test_file)
    assert real.returncode == 0, f"promtool says:\n{real.stdout}{real.stderr}"
    assert run_test_file(test_file) == []


def test_both_evaluators_fail_the_same_checks(promtool: str) -> None:
    failing = FIXTURES / "failing_test.yaml"
    real = _promtool(promtool, "test", "rules", failing)
    ours = run_test_file(failing)
    assert real.returncode != 0
    expected = sorted([("ForBoundary", "4m"), ("KeepFiring", "4m"), ("Formats", "0s")])
    assert _failed_checks(real.stdout + real.stderr) == expected
    assert _failed_checks("\n".join(ours)) == expected


def test_fixture_rule_files_load_into_prometheus(promtool: str) -> None:
    real = _promtool(promtool, "check", "rules", FIXTURES / "semantics.yaml", FIXTURES / "templates.yaml")
    assert real.returncode == 0, real.stdout + real.stderr


def test_series_notation_expands_like_the_promtool_docs() -> None:
    stale = expand_values("stale")[0]

    def expand(text: str) -> list[object]:
        return [v if isinstance(v, float) else "stale" if v is stale else "_" for v in expand_values(text)]

    assert expand("-2+4x3") == [-2.0, 2.0, 6.0, 10.0]
    assert expand(" 1-2x4") == [1.0, -1.0, -3.0, -5.0, -7.0]
    assert expand(" 1x4") == [1.0] * 5
    assert expand(" 1 _x3 stale") == [1.0, "_", "_", "_", "stale"]
    assert expand("0.1+0.1x2")[2] == 0.30000000000000004  # added step by step, as Prometheus does


def test_unusable_test_files_are_reported_not_raised(tmp_path: Path) -> None:
    bad = tmp_path / "bad_test.yaml"
    rules = FIXTURES / "semantics.yaml"
    cases = {
        "rule_files: [missing.yaml]": f"rule_files: {tmp_path}/missing.yaml: no rule file matches",
        f"rule_files: [{rules}]\nevaluation_interval: 1x": "evaluation_interval: '1x' is not a Prometheus",
        f"rule_files: [{rules}]\ntests: [{{input_series: [{{series: up, values: '1 x'}}]}}]": (
            "test #1: bad item 'x' in values '1 x' (use e.g. 1 2 _ stale 1+2x3 0x5 _x2)"
        ),
        f"rule_files: [{rules}]\ntests: [{{promql_expr_test: [{{expr: up, eval_time: 0m}}]}}]": (
            "test #1: promql_expr_test is not supported by the built-in evaluator"
        ),
        f"rule_files: [{rules}]\ntests: [{{alert_rule_test: [{{eval_time: 1m}}]}}]": (
            "test #1: an alert_rule_test item misses alertname (eval_time 1m)"
        ),
        f"rule_files: [{rules}]\ntest: []": "unknown key(s) 'test' in the test file",
    }
    for text, message in cases.items():
        bad.write_text(text + "\n")
        (failure,) = run_test_file(bad)
        assert failure.startswith(f"{bad}: {message}"), failure
