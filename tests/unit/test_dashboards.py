"""The Grafana dashboards in grafana_dashboards/: generated, importable, and reading real metrics."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.models.dashboard import Dashboard as DashboardModel

import grafana_dashboards
from airflow_ops.metrics import CATALOGUE
from grafana_dashboards import DASHBOARDS, output_path, render
from grafana_dashboards.__main__ import main
from grafana_dashboards.panels import (
    RUNBOOK_BASE_URL,
    RUNBOOKS_FOLDER_URL,
    add_row,
    new_dashboard,
    query,
    stat_panel,
    timeseries_panel,
    to_json_model,
)
from grafana_dashboards.queries import metrics_read, panel_queries, selectors, substitute
from grafana_dashboards.rules import AlertRule, alert_rules, runbook_base_url

REPO_ROOT = Path(__file__).resolve().parents[2]

MODELS = {name: build() for name, build in DASHBOARDS.items()}
BUILT_INS = {"__rate_interval": "1m", "__interval": "15s", "__range": "6h"}
DEPLOYMENT_SENTINEL = "deployment-under-test"
# Prometheus' own series a dashboard or rule may read besides the catalogue.
PROMETHEUS_SERIES = {"ALERTS", "up"}
# Catalogue metrics no dashboard has to chart, with the reason (none today: everything is charted).
NOT_CHARTED: dict[str, str] = {}


def all_panels(model: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in model["panels"]:
        yield panel
        yield from panel.get("panels") or []


def chart_panels(model: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in all_panels(model) if p["type"] != "row"]


def variables(model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in model["templating"]["list"]}


def runnable(expr: str, model: dict[str, Any]) -> str:
    """The expr with every variable the dashboard defines (and the built-ins) given a value."""
    values = {name: "x" for name in variables(model)} | BUILT_INS | {"deployment": DEPLOYMENT_SENTINEL}
    return substitute(expr, values)


def catalogued_series() -> set[str]:
    """The series names Prometheus holds for the catalogue (a histogram: _bucket, _sum, _count)."""
    names = set()
    for spec in CATALOGUE:
        if spec.type == "histogram":
            names |= {f"{spec.name}_bucket", f"{spec.name}_sum", f"{spec.name}_count"}
        else:
            names.add(spec.name)
    return names


def family(series: str) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        base = series.removesuffix(suffix)
        if base != series and any(s.name == base and s.type == "histogram" for s in CATALOGUE):
            return base
    return series


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


# ---------------------------------------------------------------- generated and importable


@pytest.mark.parametrize("name", DASHBOARDS)
def test_committed_json_is_the_generated_output(name: str) -> None:
    path = output_path(name)
    assert path.exists(), f"{path} is missing: run `python -m grafana_dashboards`"
    assert path.read_text() == render(MODELS[name]), (
        f"{path.name} differs from the code that generates it: run `python -m grafana_dashboards`"
    )


def test_generation_is_deterministic() -> None:
    for name, build in DASHBOARDS.items():
        assert render(build()) == render(MODELS[name]), name


def test_check_mode_lists_stale_files_and_writing_fixes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("grafana_dashboards.__main__.output_path", lambda name: tmp_path / f"{name}.json")
    (tmp_path / "overview.json").write_text("{}\n")

    assert main(["--check"]) == 1
    err = capsys.readouterr().err
    assert "python -m grafana_dashboards" in err
    assert all(f"{name}.json" in err for name in DASHBOARDS)
    assert (tmp_path / "overview.json").read_text() == "{}\n", "--check must not write"

    assert main([]) == 0
    assert main(["--check"]) == 0
    assert json.loads((tmp_path / "overview.json").read_text())["uid"] == "airflow-ops-overview"


def test_no_stray_json_files_beside_the_dashboards() -> None:
    committed = {p.name for p in grafana_dashboards.DASHBOARDS_DIR.glob("*.json")}
    assert committed == {output_path(name).name for name in DASHBOARDS}


@pytest.mark.parametrize("name", DASHBOARDS)
def test_json_model_has_what_grafana_needs(name: str) -> None:
    model = json.loads(output_path(name).read_text())
    for key in ("title", "uid", "panels", "templating", "schemaVersion"):
        assert key in model, key
    assert isinstance(model["templating"]["list"], list)
    for panel in all_panels(model):
        assert panel["type"], panel
        pos = panel["gridPos"]
        assert pos["w"] > 0 and pos["h"] > 0 and pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"], panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert all(ref_ids) and len(set(ref_ids)) == len(ref_ids), panel["title"]


@pytest.mark.parametrize("name", DASHBOARDS)
def test_panels_do_not_overlap(name: str) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in MODELS[name]["panels"]:  # nested panels of collapsed rows are laid out on expand
        pos = panel["gridPos"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


def test_uids_are_unique_and_panel_ids_unique_per_dashboard() -> None:
    uids = [model["uid"] for model in MODELS.values()]
    assert len(set(uids)) == len(uids), uids
    for name, model in MODELS.items():
        ids = [p["id"] for p in all_panels(model)]
        assert len(set(ids)) == len(ids), f"{name}: duplicate panel ids"


def test_schema_version_is_the_builders_current_one() -> None:
    current = DashboardModel().schema_version
    assert current >= 41
    assert {model["schemaVersion"] for model in MODELS.values()} == {current}


@pytest.mark.parametrize("name", DASHBOARDS)
def test_every_chart_panel_sets_a_unit(name: str) -> None:
    for panel in chart_panels(MODELS[name]):
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{panel['title']} has no unit"


# ---------------------------------------------------------------- variables


@pytest.mark.parametrize("name", DASHBOARDS)
def test_datasource_variable_is_used_by_every_panel_and_target(name: str) -> None:
    model = MODELS[name]
    ds = variables(model)["datasource"]
    assert (ds["type"], ds["query"]) == ("datasource", "prometheus")
    expected = {"type": "prometheus", "uid": "${datasource}"}
    for panel in chart_panels(model):
        assert panel["datasource"] == expected, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == expected, f"{panel['title']} {target['refId']}"
    for var in variables(model).values():
        if var["type"] == "query":
            assert var["datasource"] == expected, var["name"]


@pytest.mark.parametrize("name", DASHBOARDS)
def test_deployment_variable_lists_the_exporters_deployments(name: str) -> None:
    var = variables(MODELS[name])["deployment"]
    assert var["type"] == "query"
    assert var["query"] == "label_values(airflow_ops_up, deployment)"
    if name != "dag-detail":  # one DAG lives in one deployment
        assert var["multi"] and var["includeAll"] and var["allValue"] == ".*"


def test_dag_detail_selects_one_dag_of_the_selected_deployment() -> None:
    model = MODELS["dag-detail"]
    dag_id = variables(model)["dag_id"]
    assert dag_id["query"] == 'label_values(airflow_dag_success_ratio{deployment=~"$deployment"}, dag_id)'
    assert not dag_id["multi"]
    for q in panel_queries(model):
        for selector in selectors(runnable(q.expr, model)):
            matchers = {(m.name, m.value) for m in selector.matchers.matchers}
            assert ("dag_id", "x") in matchers, f"{q.panel}: {selector} is not scoped to $dag_id"


@pytest.mark.parametrize("name", DASHBOARDS)
def test_every_selector_filters_on_deployment(name: str) -> None:
    model = MODELS[name]
    for q in panel_queries(model):
        for selector in selectors(runnable(q.expr, model)):
            matchers = [(m.name, str(m.op), m.value) for m in selector.matchers.matchers]
            assert ("deployment", "MatchOp.Re", DEPLOYMENT_SENTINEL) in matchers, (
                f'{q.dashboard} / {q.panel}: {selector} does not filter deployment=~"$deployment"'
            )


@pytest.mark.parametrize("name", DASHBOARDS)
def test_every_variable_used_is_defined(name: str) -> None:
    model = MODELS[name]
    defined = set(variables(model)) | set(BUILT_INS)
    for q in panel_queries(model):
        substitute(q.expr, dict.fromkeys(defined, "x"))  # KeyError names an undefined variable
    for text in strings(model):
        for ref in re.findall(r"\$\{(\w+)", text):
            assert ref.startswith("__") or ref in defined, f"{name}: ${{{ref}}} is not a variable here"


@pytest.mark.parametrize("name", DASHBOARDS)
def test_rate_windows_follow_the_scrape_interval(name: str) -> None:
    for q in panel_queries(MODELS[name]):
        for window in re.findall(r"\b(?:rate|increase)\([^\[]*\[([^\]]+)\]", q.expr):
            assert window in ("$__rate_interval", "$__range"), f"{q.panel}: {q.expr}"


# ---------------------------------------------------------------- metrics


@pytest.mark.parametrize("name", DASHBOARDS)
def test_every_query_parses_and_reads_catalogued_metrics(name: str) -> None:
    model = MODELS[name]
    known = catalogued_series() | PROMETHEUS_SERIES
    queries = panel_queries(model)
    assert queries
    for q in queries:
        read = metrics_read(runnable(q.expr, model))
        assert read, f"{q.panel}: reads no metric"
        assert read <= known, f"{q.dashboard} / {q.panel}: {sorted(read - known)} not in the catalogue"


def test_every_alert_rule_reads_catalogued_metrics() -> None:
    rules = alert_rules()
    assert len(rules) >= 20
    known = catalogued_series() | PROMETHEUS_SERIES
    for rule in rules:
        read = metrics_read(rule.expr)
        assert read and read <= known, f"{rule.alert}: {sorted(read - known)} not in the catalogue"


def test_every_catalogued_metric_is_on_a_dashboard() -> None:
    charted = {
        family(series)
        for model in MODELS.values()
        for q in panel_queries(model)
        for series in metrics_read(runnable(q.expr, model))
    }
    missing = {s.name for s in CATALOGUE} - charted - set(NOT_CHARTED)
    assert not missing, (
        f"metrics no dashboard charts (add a panel, or to NOT_CHARTED with a reason): {missing}"
    )
    assert set(NOT_CHARTED) <= {s.name for s in CATALOGUE}


# ---------------------------------------------------------------- links


def test_runbook_base_is_the_one_the_alert_rules_use() -> None:
    for rule in alert_rules():
        assert rule.runbook_url == f"{RUNBOOK_BASE_URL}/runbooks/{rule.alert}.md"


def test_runbook_links_point_at_runbooks_that_exist() -> None:
    linked = set()
    for model in MODELS.values():
        for text in strings(model):
            if text.startswith(RUNBOOKS_FOLDER_URL + "/"):
                linked.add(text.removeprefix(RUNBOOKS_FOLDER_URL + "/"))
    templated = {page for page in linked if "$" in page}
    assert templated == {"${__value.raw}.md"}
    static = linked - templated
    assert static, "no panel links a runbook"
    for page in static:
        assert (REPO_ROOT / "runbooks" / page).is_file(), f"link to missing runbook {page}"
    # The templated link is on the alertname of the shipped rules' alerts: each has its runbook.
    for rule in alert_rules():
        assert (REPO_ROOT / "runbooks" / f"{rule.alert}.md").is_file(), rule.alert
        assert re.fullmatch("Airflow.+", rule.alert), f"{rule.alert} escapes the firing-alerts table filter"


def test_firing_alerts_table_links_alertnames_to_runbooks() -> None:
    model = MODELS["overview"]
    (panel,) = [p for p in chart_panels(model) if p["title"] == "Firing alerts (Prometheus)"]
    assert 'alertstate="firing"' in panel["targets"][0]["expr"]
    (override,) = [o for o in panel["fieldConfig"]["overrides"] if o["matcher"]["options"] == "alertname"]
    (links,) = [p["value"] for p in override["properties"] if p["id"] == "links"]
    assert links[0]["url"] == f"{RUNBOOK_BASE_URL}/runbooks/${{__value.raw}}.md"
    engine = [q for q in panel_queries(model) if "airflow_ops_alerts" in q.expr]
    assert engine and 'state="firing"' in engine[0].expr


@pytest.mark.parametrize("name", DASHBOARDS)
def test_dag_ids_link_to_the_airflow_ui(name: str) -> None:
    model = MODELS[name]
    dag_links = [t for t in strings(model) if "/dags/" in t and not t.startswith("/d/")]
    for url in dag_links:
        assert url.startswith("${airflow_url}/dags/"), url
    if dag_links:
        var = variables(model)["airflow_url"]
        assert var["type"] in ("constant", "textbox") and var["query"] == "http://localhost:8080"
    for panel in chart_panels(model):
        if any("{{dag_id}}" in t.get("legendFormat", "") for t in panel["targets"]):
            urls = [link["url"] for link in panel["fieldConfig"]["defaults"].get("links", [])]
            assert "${airflow_url}/dags/${__field.labels.dag_id}" in urls, panel["title"]
        if panel["type"] != "table":
            continue
        dag_overrides = [o for o in panel["fieldConfig"]["overrides"] if o["matcher"]["options"] == "dag_id"]
        for override in dag_overrides:
            urls = [link["url"] for p in override["properties"] if p["id"] == "links" for link in p["value"]]
            assert "${airflow_url}/dags/${__data.fields.dag_id}" in urls, panel["title"]


def test_tables_listing_dags_link_them() -> None:
    per_dag = {s.name for s in CATALOGUE if s.per_dag}
    checked = 0
    for name, model in MODELS.items():
        for panel in chart_panels(model):
            expr = panel["targets"][0]["expr"]
            by = re.search(r"\bby \(([^)]*)\)", expr)
            has_dag_column = {family(m) for m in metrics_read(runnable(expr, model))} & per_dag and (
                by is None or "dag_id" in by.group(1)
            )
            if panel["type"] == "table" and has_dag_column:
                checked += 1
                matched = {o["matcher"]["options"] for o in panel["fieldConfig"]["overrides"]}
                assert "dag_id" in matched, f"{name} / {panel['title']}: dag_id cells have no link"
    assert checked >= 4


# ---------------------------------------------------------------- queries.py


def test_substitute_replaces_every_variable_syntax() -> None:
    values = {"deployment": "prod", "dag_id": "etl", "__rate_interval": "2m", "__range": "1d"}
    expr = (
        'rate(x{deployment=~"$deployment", dag_id="${dag_id}", a="${deployment:regex}", b="[[dag_id]]"}'
        "[$__rate_interval])"
    )
    assert substitute(expr, values) == 'rate(x{deployment=~"prod", dag_id="etl", a="prod", b="etl"}[2m])'
    assert substitute("increase(y[$__range])", values) == "increase(y[1d])"
    with pytest.raises(KeyError, match=r"\$__interval"):
        substitute("rate(y[$__interval])", values)


def test_panel_queries_walks_collapsed_rows() -> None:
    board = new_dashboard("t", "T", "test", [dashboard_builders.DatasourceVariable("datasource")])
    add_row(board, "open", [stat_panel("S", [query("a", instant=True)], unit="s")])
    add_row(
        board, "closed", [timeseries_panel("T", [query("b", "{{x}}"), query("c")], unit="s")], collapsed=True
    )
    model = to_json_model(board)
    assert model["panels"][-1]["collapsed"] and model["panels"][-1]["panels"]
    got = [(q.panel, q.ref_id, q.expr, q.legend_format, q.kind) for q in panel_queries(model)]
    assert got == [
        ("S", "A", "a", "", "instant"),
        ("T", "A", "b", "{{x}}", "range"),
        ("T", "B", "c", "", "range"),
    ]
    assert {q.dashboard for q in panel_queries(model)} == {"T"}
    ids = [q.panel_id for q in panel_queries(model)]
    assert len(set(ids)) == 2 and 0 not in ids


def test_metrics_read_finds_every_selector() -> None:
    expr = (
        'histogram_quantile(0.9, sum by (le) (rate(a_bucket{x="1"}[5m]))) / on() group_left b'
        ' or {__name__="c"} or max_over_time(d[1h:5m]) or label_replace(e offset 1h, "l", "v", "", "")'
    )
    assert metrics_read(expr) == {"a_bucket", "b", "c", "d", "e"}
    with pytest.raises(ValueError, match="no fixed metric name"):
        metrics_read('{__name__=~"airflow_.*"}')
    with pytest.raises(ValueError):
        metrics_read("rate(x[$__rate_interval])")


def test_runbook_base_url_must_be_one_base(tmp_path: Path) -> None:
    def rule(alert: str, url: str) -> AlertRule:
        return AlertRule(tmp_path / "r.yaml", alert, "x > 1", url)

    assert runbook_base_url([rule("A", "https://h/x/runbooks/A.md")]) == "https://h/x"
    with pytest.raises(ValueError, match="share one runbook base"):
        runbook_base_url([rule("A", "https://h/x/runbooks/A.md"), rule("B", "https://h/y/runbooks/B.md")])
    with pytest.raises(ValueError, match="is not"):
        runbook_base_url([rule("A", "https://h/x/runbooks/Other.md")])
