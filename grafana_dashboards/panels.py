"""Shared building blocks of the dashboards: datasource, variables, PromQL snippets, links, panels.

Every dashboard is built from these helpers only, so the conventions the tests check (every
target on ``${datasource}``, every selector filtered by ``$deployment``, units on panels, runbook
and Airflow UI links) hold by construction rather than by care in each dashboard module.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from .rules import runbook_base_url

# ---------------------------------------------------------------- constants

TAG = "airflow-ops"
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
DEPLOYMENT = 'deployment=~"$deployment"'
RATE = "$__rate_interval"

# Read from alert_rules/*.yaml: the dashboards link where the rules' runbook_url annotations point.
RUNBOOK_BASE_URL = runbook_base_url()
RUNBOOKS_FOLDER_URL = f"{RUNBOOK_BASE_URL}/runbooks"
DEFAULT_AIRFLOW_URL = "http://localhost:8080"
# Airflow 3's UI path of a DAG; Airflow 2 (2.3+) serves /dags/<id> too, redirecting to its grid view.
AIRFLOW_DAG_URL_SERIES = "${airflow_url}/dags/${__field.labels.dag_id}"
AIRFLOW_DAG_URL_CELL = "${airflow_url}/dags/${__data.fields.dag_id}"
DAG_DETAIL_UID = "airflow-ops-dag-detail"
_KEEP_CONTEXT = "${datasource:queryparam}&${__url_time_range}"
DAG_DETAIL_URL_SERIES = (
    f"/d/{DAG_DETAIL_UID}?var-deployment=${{__field.labels.deployment}}"
    f"&var-dag_id=${{__field.labels.dag_id}}&{_KEEP_CONTEXT}"
)
DAG_DETAIL_URL_CELL = (
    f"/d/{DAG_DETAIL_UID}?var-deployment=${{__data.fields.deployment}}"
    f"&var-dag_id=${{__data.fields.dag_id}}&{_KEEP_CONTEXT}"
)


# ---------------------------------------------------------------- PromQL snippets


def sel(metric: str, *matchers: str) -> str:
    """``metric{deployment=~"$deployment", <matchers>}``: every selector is scoped to the deployments."""
    return f"{metric}{{{', '.join((DEPLOYMENT, *matchers))}}}"


def sum_by(labels: str, expr: str) -> str:
    """``sum by (labels) (expr)``."""
    return f"sum by ({labels}) ({expr})"


def increase(metric: str, *matchers: str, by: str = "", window: str = RATE) -> str:
    """Increase of a counter per window, summed by ``by`` labels (or in total)."""
    return f"sum{_by(by)}(increase({sel(metric, *matchers)}[{window}]))"


def quantile(q: float, histogram: str, *matchers: str, by: str = "", window: str = RATE) -> str:
    """The q-quantile of a histogram's observations over the window, per ``by`` labels."""
    bucket = sel(f"{histogram}_bucket", *matchers)
    return f"histogram_quantile({q}, sum by (le{', ' + by if by else ''}) (rate({bucket}[{window}])))"


def _by(labels: str) -> str:
    return f" by ({labels}) " if labels else ""


# ---------------------------------------------------------------- links


class Link(cogbuilder.Builder[model.DashboardLink]):
    """A data link or panel link (``{title, url, targetBlank}``), the shape Grafana stores for both.

    The SDK types these as dashboard links, which carry dashboard-link-only fields; this emits just
    the data-link fields."""

    def __init__(self, title: str, url: str, *, new_tab: bool = True) -> None:
        self._link = {"title": title, "url": url, "targetBlank": new_tab}

    def build(self) -> Any:
        return dict(self._link)


def runbook_link(alert: str) -> Link:
    return Link(f"Runbook: {alert}", f"{RUNBOOKS_FOLDER_URL}/{alert}.md")


def dag_series_links() -> list[Link]:
    """For series carrying ``dag_id``: the DAG in Airflow's UI and in the DAG detail dashboard."""
    return [
        Link("Open ${__field.labels.dag_id} in Airflow", AIRFLOW_DAG_URL_SERIES),
        Link("DAG detail: ${__field.labels.dag_id}", DAG_DETAIL_URL_SERIES, new_tab=False),
    ]


def dag_cell_links() -> list[Link]:
    """For table rows with ``deployment`` and ``dag_id`` columns (the same two targets as above)."""
    return [
        Link("Open ${__data.fields.dag_id} in Airflow", AIRFLOW_DAG_URL_CELL),
        Link("DAG detail: ${__data.fields.dag_id}", DAG_DETAIL_URL_CELL, new_tab=False),
    ]


def runbook_cell_links() -> list[Link]:
    """For an ``alertname`` column: the alert's runbook (every shipped alert has one)."""
    return [Link("Runbook for ${__value.raw}", f"{RUNBOOKS_FOLDER_URL}/${{__value.raw}}.md")]


# ---------------------------------------------------------------- variables


def datasource_variable() -> dashboard.DatasourceVariable:
    return dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")


def deployment_variable(*, multi: bool = True) -> dashboard.QueryVariable:
    var = label_variable("deployment", "label_values(airflow_ops_up, deployment)", "Deployment", multi=multi)
    return var.include_all(multi).all_value(".*") if multi else var


def label_variable(name: str, query: str, label: str, *, multi: bool = False) -> dashboard.QueryVariable:
    return (
        dashboard.QueryVariable(name)
        .label(label)
        .query(query)
        .datasource(DATASOURCE)
        .multi(multi)
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_CASE_INSENSITIVE_ASC)
    )


def airflow_url_variable() -> dashboard.TextBoxVariable:
    # A textbox rather than a constant: each viewer (or the URL, var-airflow_url=) can point the
    # DAG links at their Airflow without editing the dashboard.
    return (
        dashboard.TextBoxVariable("airflow_url")
        .label("Airflow UI")
        .description("Base URL of the Airflow web UI, for the links on DAG ids.")
        .default_value(DEFAULT_AIRFLOW_URL)
    )


def standard_variables(*, airflow_url: bool = True) -> list[cogbuilder.Builder[model.VariableModel]]:
    """Data source and deployments; plus the Airflow UI's URL for dashboards that link to DAGs."""
    variables: list[cogbuilder.Builder[model.VariableModel]] = [datasource_variable(), deployment_variable()]
    return [*variables, airflow_url_variable()] if airflow_url else variables


# ---------------------------------------------------------------- queries and panels


def query(expr: str, legend: str = "", *, instant: bool = False) -> prometheus.Dataquery:
    """A Prometheus target: instant for the last value (stat, table), else a range over the time picker.

    ``refId`` is set by the panel (A, B, ... in order); tables also switch the format to table."""
    target = prometheus.Dataquery().expr(expr).datasource(DATASOURCE)
    if legend:
        target = target.legend_format(legend)
    return target.instant() if instant else target.range()


# The pair every latency panel shows: the typical value and the tail.
QUANTILES = ((0.5, "p50"), (0.95, "p95"))


def quantile_queries(
    histogram: str,
    *matchers: str,
    by: str = "",
    legend: str = "",
    window: str = RATE,
    instant: bool = False,
) -> list[prometheus.Dataquery]:
    """p50 and p95 of a histogram (see ``quantile``), legends ``"p50 <legend>"`` and ``"p95 <legend>"``."""
    return [
        query(
            quantile(q, histogram, *matchers, by=by, window=window),
            f"{name} {legend}".rstrip(),
            instant=instant,
        )
        for q, name in QUANTILES
    ]


def thresholds(*steps: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    """Absolute thresholds; the first step's value is None (the base colour)."""
    return (
        dashboard.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=v, color=c) for v, c in steps])
    )


OK_ONLY = thresholds((None, "green"))


def value_map(mapping: dict[str, tuple[str, str]]) -> list[model.ValueMap]:
    """Value -> (text, colour), e.g. ``{"1": ("up", "green")}``."""
    return [
        model.ValueMap(
            options={
                value: model.ValueMappingResult(text=text, color=color, index=i)
                for i, (value, (text, color)) in enumerate(mapping.items())
            }
        )
    ]


UP_DOWN = value_map({"1": ("UP", "green"), "0": ("DOWN", "red")})
HEALTHY = value_map({"1": ("healthy", "green"), "0": ("unhealthy", "red")})


def _with_targets(panel: Any, targets: Sequence[prometheus.Dataquery]) -> Any:
    for i, target in enumerate(targets):
        panel = panel.with_target(target.ref_id(chr(ord("A") + i)))
    return panel


def _with_links_and_targets(
    panel: Any, links: Iterable[Link], targets: Sequence[prometheus.Dataquery]
) -> Any:
    links = list(links)
    if links:
        panel = panel.data_links(links)
    return _with_targets(panel, targets)


# Series named after a run or try state keep that state's colour on every panel (palette order
# would paint "failed" green). Grafana anchors a byRegexp pattern at both ends.
STATE_COLOURS = (("failed", "red"), ("up_for_retry", "orange"), ("success", "green"))


def _common(panel: Any, title: str, description: str, unit: str, width: int, height: int) -> Any:
    panel = panel.title(title).datasource(DATASOURCE).unit(unit).span(width).height(height)
    return panel.description(description) if description else panel


def _state_colours(panel: Any, targets: Sequence[prometheus.Dataquery]) -> Any:
    if not any("{{state}}" in (t.build().legend_format or "") for t in targets):
        return panel
    for state, colour in STATE_COLOURS:
        fixed = model.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": colour})
        panel = panel.override_by_regexp(f"(.* )?{state}( .*)?", [fixed])
    return panel


def timeseries_panel(
    title: str,
    targets: Sequence[prometheus.Dataquery],
    *,
    unit: str,
    description: str = "",
    width: int = 12,
    height: int = 8,
    stacked: bool = False,
    bars: bool = False,
    minimum: float | None = 0,
    max_value: float | None = None,
    steps: dashboard.ThresholdsConfig | None = None,
    links: Iterable[Link] = (),
) -> timeseries.Panel:
    """A time series panel; ``steps`` draws thresholds as dashed lines (where alerts fire)."""
    panel = _state_colours(_common(timeseries.Panel(), title, description, unit, width, height), targets)
    panel = panel.legend(
        common_builders.VizLegendOptions()
        .show_legend(True)
        .display_mode(common.LegendDisplayMode.TABLE)
        .placement(common.LegendPlacement.RIGHT if width >= 16 else common.LegendPlacement.BOTTOM)
        .calcs(["lastNotNull", "max"])
    )
    panel = panel.tooltip(common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI))
    panel = (
        panel.fill_opacity(40 if stacked or bars else 10)
        .line_width(1)
        .show_points(common.VisibilityMode.NEVER)
    )
    if bars:
        panel = panel.draw_style(common.GraphDrawStyle.BARS)
    if stacked:
        panel = panel.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
    if minimum is not None:
        panel = panel.min(minimum)
    if max_value is not None:
        panel = panel.max(max_value)
    if steps is not None:
        panel = panel.thresholds(steps).thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.DASHED)
        )
    return _with_links_and_targets(panel, links, targets)


def stat_panel(
    title: str,
    targets: Sequence[prometheus.Dataquery],
    *,
    unit: str,
    description: str = "",
    width: int = 6,
    height: int = 4,
    steps: dashboard.ThresholdsConfig = OK_ONLY,
    mappings: list[model.ValueMap] | None = None,
    text_mode: common.BigValueTextMode = common.BigValueTextMode.AUTO,
    colour_background: bool = True,
    links: Iterable[Link] = (),
) -> stat.Panel:
    """A stat panel of the last value of each series, coloured by ``steps`` or ``mappings``."""
    panel = _state_colours(_common(stat.Panel(), title, description, unit, width, height), targets)
    panel = (
        panel.thresholds(steps)
        .color_mode(
            common.BigValueColorMode.BACKGROUND if colour_background else common.BigValueColorMode.VALUE
        )
        .graph_mode(common.BigValueGraphMode.NONE)
        .text_mode(text_mode)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    if mappings:
        panel = panel.mappings(mappings)
    return _with_links_and_targets(panel, links, targets)


@dataclass(frozen=True)
class Column:
    """How one table column (by its name as shown, i.e. after ``renames``) differs from the rest."""

    unit: str | None = None
    links: Sequence[Link] = ()
    mappings: list[model.ValueMap] | None = None
    steps: dashboard.ThresholdsConfig | None = None  # colours the cell background

    def properties(self) -> list[model.DynamicConfigValue]:
        props = []
        if self.unit:
            props.append(model.DynamicConfigValue(id_val="unit", value=self.unit))
        if self.links:
            props.append(
                model.DynamicConfigValue(id_val="links", value=[link.build() for link in self.links])
            )
        if self.mappings:
            props.append(model.DynamicConfigValue(id_val="mappings", value=self.mappings))
        if self.steps is not None:
            props.append(model.DynamicConfigValue(id_val="thresholds", value=self.steps.build()))
            background = common.TableColoredBackgroundCellOptions(
                mode=common.TableCellBackgroundDisplayMode.BASIC
            )
            props.append(model.DynamicConfigValue(id_val="custom.cellOptions", value=background))
        return props


def table_panel(
    title: str,
    targets: Sequence[prometheus.Dataquery],
    *,
    unit: str,
    description: str = "",
    width: int = 12,
    height: int = 8,
    renames: dict[str, str] | None = None,
    hidden: Sequence[str] = (),
    columns: dict[str, Column] | None = None,
    sort_by: str | None = None,
    descending: bool = True,
) -> table.Panel:
    """A table of instant values, one row per series, labels as columns.

    Several targets are merged into one row per label set (their values become "Value #A", ...).
    ``renames`` names the columns, ``hidden`` drops some; ``columns`` styles single columns by
    their shown name (field overrides apply after the transformations, so after renaming)."""
    panel = _common(table.Panel(), title, description, unit, width, height)
    panel = panel.cell_options(common.TableAutoCellOptions()).filterable(False)
    if len(targets) > 1:
        panel = panel.with_transformation(model.DataTransformerConfig(id_val="merge", options={}))
    organize = {
        # The instant value's timestamp and the metric name say nothing a column header does not.
        "excludeByName": {name: True for name in ("Time", "__name__", *hidden)},
        "renameByName": dict(renames or {}),
    }
    panel = panel.with_transformation(model.DataTransformerConfig(id_val="organize", options=organize))
    for name, column in (columns or {}).items():
        panel = panel.override_by_name(name, column.properties())
    if sort_by:
        panel = panel.sort_by(
            [common_builders.TableSortByFieldState().display_name(sort_by).desc(descending)]
        )
    return _with_targets(panel, [t.format(PromQueryFormat.TABLE).instant() for t in targets])


# ---------------------------------------------------------------- panels of several dashboards


def sources_up_stat(description: str = "") -> stat.Panel:
    """Whether airflow-ops' last poll of each source succeeded (overview and self-monitoring)."""
    return stat_panel(
        "Sources up",
        [query(sel("airflow_ops_up"), "{{deployment}} {{source}}", instant=True)],
        unit="none",
        description=description,
        width=8,
        mappings=UP_DOWN,
        steps=thresholds((None, "red"), (1, "green")),
        links=[runbook_link("AirflowOpsSourceUnreachable")],
    )


def dag_table(
    title: str,
    expr: str,
    *,
    value: str,
    unit: str,
    steps: dashboard.ThresholdsConfig,
    description: str = "",
    width: int = 12,
    height: int = 8,
    descending: bool = True,
) -> table.Panel:
    """One row per DAG: its id linking to Airflow and the DAG detail dashboard, and the instant
    value of ``expr`` in a column named ``value``, coloured by ``steps`` and sorted on."""
    return table_panel(
        title,
        [query(expr)],
        unit=unit,
        description=description,
        width=width,
        height=height,
        renames={"Value": value},
        columns={"dag_id": Column(links=dag_cell_links()), value: Column(steps=steps)},
        sort_by=value,
        descending=descending,
    )


# ---------------------------------------------------------------- dashboards


def new_dashboard(
    uid: str, title: str, description: str, variables: Sequence[cogbuilder.Builder[model.VariableModel]]
) -> dashboard.Dashboard:
    """A dashboard with the house settings: tags, time range, refresh, links to runbooks and siblings."""
    board = (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags([TAG, "airflow"])
        .time("now-6h", "now")
        .refresh("1m")
        .timezone("browser")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .editable()
        .links(
            [
                dashboard.DashboardLink("airflow-ops dashboards")
                .type(model.DashboardLinkType.DASHBOARDS)
                .tags([TAG])
                .as_dropdown(True)
                .include_vars(True)
                .keep_time(True),
                dashboard.DashboardLink("Runbooks")
                .type(model.DashboardLinkType.LINK)
                .url(RUNBOOKS_FOLDER_URL)
                .icon("doc")
                .target_blank(True)
                .tooltip("What each alert means and what to do about it"),
            ]
        )
    )
    for variable in variables:
        board = board.with_variable(variable)
    return board


def add_row(
    board: dashboard.Dashboard,
    title: str,
    panels: Sequence[cogbuilder.Builder[model.Panel]],
    *,
    collapsed: bool = False,
) -> None:
    """A row of panels, laid out left to right and wrapped at the grid's 24 columns.

    Grafana shows the panels of an open row only when they follow it at the top level; only a
    collapsed row keeps its panels inside (and loads them when expanded)."""
    if collapsed:
        row = dashboard.Row(title)
        for panel in panels:
            row = row.with_panel(panel)
        board.with_row(row.collapsed(True))
        return
    board.with_row(dashboard.Row(title).collapsed(False))
    for panel in panels:
        board.with_panel(panel)


def to_json_model(board: dashboard.Dashboard) -> dict[str, Any]:
    """The dashboard as Grafana's JSON model, with panel ids numbered in layout order."""
    built = board.build()
    next_id = 1
    for panel in built.panels or []:
        panel.id_val = next_id
        next_id += 1
        for inner in getattr(panel, "panels", None) or []:
            inner.id_val = next_id
            next_id += 1
    return json.loads(json.dumps(built, cls=JSONEncoder))
