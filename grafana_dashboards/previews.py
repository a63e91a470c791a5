"""PNG previews of the Grafana dashboards, drawn with matplotlib from real Prometheus query results.

One PNG per dashboard, its panels laid out on Grafana's 24-column grid (gridPos, rows expanded)
and drawn the way Grafana shows them (grafana_dashboards/preview_panels.py). Every number comes
from Prometheus' HTTP API, through the queries :func:`~grafana_dashboards.queries.panel_queries`
lists — the ones the proof (grafana_dashboards/proof.py) checks.

    python -m grafana_dashboards.previews --prometheus http://127.0.0.1:9090 --out docs/dashboards \\
        --var deployment=local --var dag_id=daily_etl
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .preview_panels import Placed, Series, Target, draw
from .queries import panel_queries, substitute

__all__ = ["PrometheusQueryError", "Series", "dashboard_variables", "label_values", "query", "render"]


class PrometheusQueryError(RuntimeError):
    """Prometheus refused a query (bad PromQL, timeout) or could not be reached."""


def query(
    prometheus_url: str, expr: str, *, instant: bool, start: float, end: float, step: float
) -> list[Series]:
    """Run ``expr`` through ``/api/v1/query`` (at ``end``) or ``/api/v1/query_range``."""
    if instant:
        path, params = "query", {"query": expr, "time": f"{end:.3f}"}
    else:
        path = "query_range"
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
    url = f"{prometheus_url.rstrip('/')}/api/v1/{path}"
    data = urllib.parse.urlencode(params).encode()
    try:
        with urllib.request.urlopen(url, data=data, timeout=30) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:  # 400/422: the error document says why
        body = json.loads(exc.read() or b"{}")
        raise PrometheusQueryError(f"{expr!r}: {body.get('error', exc)}") from None
    except OSError as exc:
        raise PrometheusQueryError(f"{expr!r}: cannot reach Prometheus at {prometheus_url}: {exc}") from None
    result = body["data"]
    kind, items = result["resultType"], result["result"]
    if kind == "scalar":
        return [Series({}, (float(items[0]),), (float(items[1]),))]
    if kind == "vector":
        return [Series(r["metric"], (float(r["value"][0]),), (float(r["value"][1]),)) for r in items]
    if kind == "matrix":
        return [
            Series(
                r["metric"], tuple(float(t) for t, _ in r["values"]), tuple(float(v) for _, v in r["values"])
            )
            for r in items
        ]
    return []


def render(
    dashboard: Mapping[str, Any],
    prometheus_url: str,
    variables: Mapping[str, str],
    out: Path,
    start: float,
    end: float,
    step: float,
    name: str | None = None,
) -> list[Path]:
    """Run every panel query of ``dashboard`` over [start, end] (instant ones at ``end``) and draw
    the dashboard into the directory ``out`` as ``<name>.png`` (default: its uid). Returns the
    files written (one)."""
    placed = layout(dashboard)
    queries = targets(dashboard, variables)
    for p in placed:
        p.targets = queries.get((int(p.panel.get("id") or 0), str(p.panel.get("title", ""))), [])
        for t in p.targets:
            t.series = query(prometheus_url, t.expr, instant=t.instant, start=start, end=end, step=step)
    # The header names the dashboard's variables the queries use (not the datasource or links).
    used = {var for q in panel_queries(dict(dashboard)) for var in re.findall(r"\$\{?(\w+)", q.expr)}
    names = [v.get("name") for v in (dashboard.get("templating") or {}).get("list") or []]
    shown = {k: variables[k] for k in names if k in used and k in variables}
    out.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name or str(dashboard.get("uid") or dashboard.get("title")))
    path = out / f"{slug.strip('-') or 'dashboard'}.png"
    draw(str(dashboard.get("title", "")), placed, shown, start, end, path)
    return [path]


def layout(dashboard: Mapping[str, Any]) -> list[Placed]:
    """Every panel, collapsed rows opened, at (x, y, w, h) grid units."""
    sections: list[tuple[dict[str, Any] | None, list[dict[str, Any]]]] = [(None, [])]
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            sections.append((panel, list(panel.get("panels") or [])))
        else:
            sections[-1][1].append(panel)
    bottoms = [0] * 24
    placed: list[Placed] = []
    for row, children in sections:
        if row is not None:
            y = max(bottoms)
            placed.append(Placed(row, 0, y, 24, 1))
            bottoms = [y + 1] * 24
        for panel in sorted(children, key=lambda p: (_pos(p)[1], _pos(p)[0])):
            x, _, w, h = _pos(panel)
            x = min(max(x, 0), 23)
            w = max(1, min(w, 24 - x))
            y = max(bottoms[x : x + w])  # gravity: float up to the panels above
            placed.append(Placed(panel, x, y, w, h))
            bottoms[x : x + w] = [y + h] * w
    return placed


def _pos(panel: Mapping[str, Any]) -> tuple[int, int, int, int]:
    pos = panel.get("gridPos") or {}
    return int(pos.get("x", 0)), int(pos.get("y", 0)), int(pos.get("w", 12)), int(pos.get("h", 8))


def targets(
    dashboard: Mapping[str, Any], variables: Mapping[str, str]
) -> dict[tuple[int, str], list[Target]]:
    """Each panel's queries (by panel id and title), variables substituted: the queries of
    :func:`grafana_dashboards.queries.panel_queries`, so the previews run exactly what the proof runs."""
    out: dict[tuple[int, str], list[Target]] = {}
    for q in panel_queries(dict(dashboard)):
        target = Target(q.ref_id, substitute(q.expr, variables), q.legend_format, q.kind == "instant")
        out.setdefault((q.panel_id, q.panel), []).append(target)
    return out


# ---------------------------------------------------------------- command line


def time_variables(start: float, end: float, step: float) -> dict[str, str]:
    """Grafana's built-in time variables for a query over [start, end] at ``step``."""
    return {
        "__rate_interval": f"{max(4 * step, 60):.0f}s",
        "__interval": f"{step:.0f}s",
        "__range": f"{max(1.0, end - start):.0f}s",
    }


_LABEL_VALUES = re.compile(r"label_values\(\s*(?:(?P<selector>.+),\s*)?(?P<label>\w+)\s*\)")


def dashboard_variables(
    dashboard: Mapping[str, Any], given: Mapping[str, str], prometheus_url: str
) -> dict[str, str]:
    """``given`` plus a value for each other variable of the dashboard, as Grafana would pick it:
    the first value of a ``label_values(...)`` query (from Prometheus), a textbox's or custom
    variable's current value or default, any name for a datasource."""
    values = dict(given)
    for var in (dashboard.get("templating") or {}).get("list") or []:
        name = var.get("name")
        if not name or name in values:
            continue
        current = (var.get("current") or {}).get("value")
        query_text = var.get("query")
        if isinstance(query_text, Mapping):
            query_text = query_text.get("query")
        m = _LABEL_VALUES.fullmatch(str(query_text or "").strip())
        if var.get("type") == "datasource":
            values[name] = "prometheus"
        elif var.get("type") == "query" and m:
            found = label_values(
                prometheus_url, m.group("label"), substitute(m.group("selector") or "", values)
            )
            values[name] = found[0] if found else ""
        elif isinstance(current, str):
            values[name] = current
        else:
            values[name] = str(query_text or "").split(",")[0]
    return values


def label_values(prometheus_url: str, label: str, selector: str = "") -> list[str]:
    """The values of ``label`` (on series matching ``selector``, if given), sorted."""
    params = urllib.parse.urlencode({"match[]": selector} if selector else {})
    url = f"{prometheus_url.rstrip('/')}/api/v1/label/{urllib.parse.quote(label)}/values?{params}"
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return sorted(json.load(response)["data"])
    except OSError as exc:
        raise PrometheusQueryError(f"label_values({selector}, {label}): {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    from airflow_ops.config import parse_duration

    from . import DASHBOARDS

    parser = argparse.ArgumentParser(
        prog="python -m grafana_dashboards.previews", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--prometheus", required=True, help="Prometheus base URL, e.g. http://127.0.0.1:9090")
    parser.add_argument("--out", type=Path, required=True, help="directory for <dashboard>.png")
    parser.add_argument(
        "--var",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a dashboard variable (repeatable), e.g. deployment=local; others as Grafana would pick them",
    )
    parser.add_argument("--range", default="1h", help="how far back from now (e.g. 30m, 1h; default 1h)")
    parser.add_argument("--dashboard", action="append", choices=sorted(DASHBOARDS), help="only this one")
    args = parser.parse_args(argv)
    given = {}
    for item in args.var:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--var {item!r}: expected NAME=VALUE")
        given[name] = value
    end = time.time()
    start = end - parse_duration(args.range)
    step = max(1.0, round((end - start) / 300))
    for name, build in DASHBOARDS.items():
        if args.dashboard and name not in args.dashboard:
            continue
        dashboard = build()
        try:
            variables = dashboard_variables(
                dashboard, {**time_variables(start, end, step), **given}, args.prometheus
            )
            [path] = render(dashboard, args.prometheus, variables, args.out, start, end, step, name=name)
        except PrometheusQueryError as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return 1
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
