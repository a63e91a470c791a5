"""The PromQL inside the dashboards: list it, make it runnable, and see which metrics it reads.

Used by the unit tests (every query parses and reads catalogued metrics) and to run every panel's
query against a real Prometheus, e.g. for the PNG previews::

    from grafana_dashboards import DASHBOARDS
    from grafana_dashboards.queries import panel_queries, substitute

    for q in panel_queries(DASHBOARDS["overview"]()):
        expr = substitute(q.expr, {"deployment": ".*", "__rate_interval": "1m", "__range": "6h",
                                   "__interval": "15s", "dag_id": "example", "datasource": "prom"})
        ...  # GET /api/v1/query (q.kind == "instant") or /api/v1/query_range (q.kind == "range")
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import promql_parser


@dataclass(frozen=True)
class PanelQuery:
    """One Prometheus target of one panel."""

    dashboard: str  # the dashboard's title
    panel: str  # the panel's title
    panel_id: int
    ref_id: str
    expr: str  # as stored, with Grafana variables ($deployment, $__rate_interval, ...)
    legend_format: str  # "" when the target has none
    kind: Literal["instant", "range"]


def panel_queries(dashboard: dict[str, Any]) -> list[PanelQuery]:
    """Every Prometheus target of a dashboard's JSON model, in panel order.

    Walks the top-level panels and the panels nested in (collapsed) rows; hidden targets and
    targets without an ``expr`` are skipped. ``kind`` is "instant" for instant-only targets (stat,
    table) and "range" otherwise."""
    queries = []
    for panel in _panels(dashboard.get("panels") or []):
        for target in panel.get("targets") or []:
            if target.get("hide") or not target.get("expr"):
                continue
            instant = bool(target.get("instant")) and not target.get("range")
            queries.append(
                PanelQuery(
                    dashboard=dashboard.get("title", ""),
                    panel=panel.get("title", ""),
                    panel_id=panel.get("id", 0),
                    ref_id=target.get("refId", ""),
                    expr=target["expr"],
                    legend_format=target.get("legendFormat", ""),
                    kind="instant" if instant else "range",
                )
            )
    return queries


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels") or [])


# $name, ${name}, ${name:format}, ${name.field} and the deprecated [[name]] / [[name:format]].
_VARIABLE = re.compile(
    r"\$\{(?P<braced>\w+)(?:[.:][^}]*)?\}|\$(?P<plain>\w+)|\[\[(?P<bracketed>\w+)(?::[^\]]*)?\]\]"
)


def substitute(expr: str, variables: Mapping[str, str]) -> str:
    """``expr`` with every Grafana variable replaced by ``variables[name]``.

    Keys are variable names without the ``$``: dashboard variables (``deployment``, ``dag_id``) and
    the built-ins (``__rate_interval``, ``__interval``, ``__range``, ...). Every syntax form is
    handled: ``$name``, ``${name}``, ``${name:format}`` and ``[[name]]``; a format (``:regex``,
    ``:pipe``, ...) is ignored, the value is inserted as given — pass what Grafana would insert
    (e.g. ``".*"`` for "All" in a ``=~`` matcher). Raises KeyError naming the first variable
    ``variables`` has no value for."""

    def value(m: re.Match[str]) -> str:
        name = m.group("braced") or m.group("plain") or m.group("bracketed")
        if name not in variables:
            raise KeyError(f"no value for Grafana variable ${name} in {expr!r}")
        return variables[name]

    return _VARIABLE.sub(value, expr)


def selectors(expr: str) -> list[promql_parser.VectorSelector]:
    """Every vector selector of a PromQL expression (inside ranges, subqueries, calls, ...).

    Raises ValueError if ``expr`` is not valid PromQL (substitute Grafana variables first)."""
    found: list[promql_parser.VectorSelector] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def metrics_read(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (``foo`` or ``{__name__="foo"}``).

    Raises ValueError if ``expr`` does not parse or a selector's metric name is not fixed (e.g.
    ``{__name__=~"airflow_.*"}``), since then nobody can tell which metrics it depends on."""
    names = set()
    for selector in selectors(expr):
        name = selector.name or _name_matcher(selector)
        if not name:
            raise ValueError(f"selector {selector} in {expr!r} has no fixed metric name")
        names.add(name)
    return names


def _name_matcher(selector: promql_parser.VectorSelector) -> str | None:
    for matcher in selector.matchers.matchers:
        if matcher.name == "__name__" and matcher.op == promql_parser.MatchOp.Equal:
            return matcher.value
    return None
