"""Drawing of the dashboard previews with matplotlib (Agg): one figure per dashboard, each panel in
its grid box and drawn as Grafana shows it — time series as lines (stacked, bars) with legends from
``legendFormat`` and unit-formatted axes, stat panels as big numbers coloured by thresholds and value
mappings, gauges and bar gauges, tables as text tables (merge and organize transformations)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display, no GUI toolkit

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle, Wedge
from matplotlib.ticker import FuncFormatter, MaxNLocator, MultipleLocator
from PIL import Image

from .preview_style import (
    BACKGROUND,
    BORDER,
    GRID,
    MUTED,
    PALETTE,
    PANEL,
    TEXT,
    FieldStyle,
    axis_step,
    format_value,
)


@dataclass(frozen=True)
class Series:
    """One series of a query result: its labels and (time, value) points (one for an instant query)."""

    labels: dict[str, str]
    times: tuple[float, ...]
    values: tuple[float, ...]

    @property
    def last(self) -> float:
        """The newest value that is a number (NaN if none)."""
        return next((v for v in reversed(self.values) if not math.isnan(v)), math.nan)


@dataclass
class Target:
    """One query of a panel, variables substituted, and what Prometheus returned for it."""

    ref_id: str
    expr: str  # variables substituted
    legend: str
    instant: bool
    series: list[Series] = field(default_factory=list)


@dataclass
class Placed:
    """A panel at its place on the grid (grid units), with its queries' results."""

    panel: Mapping[str, Any]
    x: int
    y: int
    w: int
    h: int
    targets: list[Target] = field(default_factory=list)


def legend_name(legend: str, series: Series, expr: str) -> str:
    """Grafana's display name: legendFormat with {{label}} filled, else the series' labels."""
    if legend and legend != "__auto":
        return re.sub(r"\{\{\s*([\w.]+)\s*\}\}", lambda m: series.labels.get(m.group(1), ""), legend)
    labels = {k: v for k, v in series.labels.items() if k != "__name__"}
    name = series.labels.get("__name__", "")
    if not labels:
        return name or expr
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


_UNIT_PX = 30  # Grafana's grid row height
_WIDTH_PX = 1600
_DPI = 100
_HEADER_PX = 64


@dataclass
class Canvas:
    fig: Figure
    height_px: float

    def rect(self, x_px: float, y_px: float, w_px: float, h_px: float) -> list[float]:
        """Figure fractions of a box given in pixels from the top left."""
        return [x_px / _WIDTH_PX, 1 - (y_px + h_px) / self.height_px, w_px / _WIDTH_PX, h_px / self.height_px]


def draw(
    title: str,
    placed: Sequence[Placed],
    variables: Mapping[str, str],
    start: float,
    end: float,
    path: Path,
) -> None:
    """Draw the placed panels (their targets' series filled in) under a header naming the dashboard,
    the ``variables`` and the time range, and write the PNG to ``path``."""
    rows = max((p.y + p.h for p in placed), default=1)
    height = _HEADER_PX + rows * _UNIT_PX + 8
    fig = plt.figure(figsize=(_WIDTH_PX / _DPI, height / _DPI), dpi=_DPI, facecolor=BACKGROUND)
    try:
        canvas = Canvas(fig, height)
        _header(canvas, title, variables, start, end)
        for p in placed:
            box = (
                p.x * _WIDTH_PX / 24 + 4,
                _HEADER_PX + p.y * _UNIT_PX + 4,
                p.w * _WIDTH_PX / 24 - 8,
                p.h * _UNIT_PX - 8,
            )
            _draw_panel(canvas, p, box, start, end)
        fig.canvas.draw()
        image = Image.frombuffer("RGBA", fig.canvas.get_width_height(), fig.canvas.buffer_rgba())
        # A palette of 256 colours holds flat panels and antialiased lines; the file is a third.
        image.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE).save(path, optimize=True)
    finally:
        plt.close(fig)


def _header(canvas: Canvas, title: str, variables: Mapping[str, str], start: float, end: float) -> None:
    fig = canvas.fig
    top = 1 - 14 / canvas.height_px
    fig.text(12 / _WIDTH_PX, top, title, color=TEXT, fontsize=15, weight="bold", va="top")
    shown = [f"{k}={v}" for k, v in variables.items()]
    span = f"{_utc(start):%Y-%m-%d %H:%M} to {_utc(end):%H:%M} UTC"
    fig.text(
        12 / _WIDTH_PX,
        top - 26 / canvas.height_px,
        "   ".join([*shown, span]),
        color=MUTED,
        fontsize=9,
        va="top",
    )
    fig.text(
        1 - 12 / _WIDTH_PX,
        top - 26 / canvas.height_px,
        "preview from live Prometheus query results",
        color=MUTED,
        fontsize=8,
        va="top",
        ha="right",
    )


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def _draw_panel(
    canvas: Canvas, placed: Placed, box: tuple[float, float, float, float], start: float, end: float
) -> None:
    panel, targets = placed.panel, placed.targets
    x, y, w, h = box
    kind = panel.get("type", "timeseries")
    if kind == "row":
        canvas.fig.text(
            x / _WIDTH_PX,
            1 - (y + h / 2 + 2) / canvas.height_px,
            str(panel.get("title", "")),
            color=TEXT,
            fontsize=11,
            weight="bold",
            va="center",
        )
        return
    frame = canvas.fig.add_axes(canvas.rect(x, y, w, h))
    frame.set_xticks([])
    frame.set_yticks([])
    frame.set_facecolor(PANEL)
    for spine in frame.spines.values():
        spine.set_color(BORDER)
    frame.text(
        8 / w,
        1 - 9 / h,
        _fit(str(panel.get("title", "")), w, 7.0),
        transform=frame.transAxes,
        color=TEXT,
        fontsize=9.5,
        weight="bold",
        va="top",
    )
    inner = (x + 8, y + 26, w - 16, h - 32)
    has_data = any(s.values for t in targets for s in t.series)
    if kind == "text":
        _text_panel(frame, panel, w, h)
    elif not targets:
        _note(frame, "no Prometheus query")
    elif not has_data:
        _note(frame, "No data")
    elif kind == "stat":
        _stat(canvas, frame, panel, targets, inner, end)
    elif kind == "gauge":
        _gauge(canvas, panel, targets, inner, end)
    elif kind == "bargauge":
        _bargauge(canvas, panel, targets, inner, end)
    elif kind == "table":
        _table(canvas, panel, targets, inner, end)
    elif kind == "piechart":
        _pie(canvas, panel, targets, inner)
    else:  # timeseries, graph, and what draws best as lines (state-timeline, barchart, heatmap…)
        _timeseries(canvas, panel, targets, inner, start, end)


def _fit(text: str, width_px: float, char_px: float) -> str:
    limit = max(4, int(width_px / char_px))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _note(frame: Axes, text: str) -> None:
    frame.text(0.5, 0.45, text, transform=frame.transAxes, color=MUTED, fontsize=11, ha="center", va="center")


def _text_panel(frame: Axes, panel: Mapping[str, Any], w: float, h: float) -> None:
    content = str((panel.get("options") or {}).get("content") or "")
    content = re.sub(r"[#*`_>]+", "", re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", content))
    lines: list[str] = []
    for para in content.splitlines():
        lines.extend(_wrap(para.strip(), int(w / 6.5)) or [""])
    shown = lines[: max(1, int((h - 30) / 14))]
    frame.text(
        8 / w,
        1 - 30 / h,
        "\n".join(shown),
        transform=frame.transAxes,
        color=TEXT,
        fontsize=8.5,
        va="top",
        linespacing=1.4,
    )


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return [*lines, line] if line else lines


def _style_axes(ax: Axes) -> None:
    ax.set_facecolor(PANEL)
    for side, spine in ax.spines.items():
        spine.set_visible(side == "bottom")
        spine.set_color(BORDER)
    ax.tick_params(colors=MUTED, labelsize=7.5, length=0)
    ax.grid(True, color=GRID, linewidth=0.8)
    ax.set_axisbelow(True)


@dataclass
class Line:
    name: str
    times: tuple[float, ...]
    values: tuple[float, ...]


def _lines(targets: list[Target]) -> list[Line]:
    lines = []
    for t in targets:
        for s in t.series:
            lines.append(Line(legend_name(t.legend, s, t.expr), s.times, s.values))
    return lines


def _timeseries(
    canvas: Canvas,
    panel: Mapping[str, Any],
    targets: list[Target],
    box: tuple[float, float, float, float],
    start: float,
    end: float,
) -> None:
    style = FieldStyle.of(panel)
    lines = sorted(_lines(targets), key=lambda line: line.name)
    legend = (panel.get("options") or {}).get("legend") or {}
    show_legend = legend.get("showLegend", True) and legend.get("displayMode") != "hidden"
    x, y, w, h = box
    legend_w = legend_h = 0.0
    if show_legend and legend.get("placement") == "right":
        legend_w = min(
            w * 0.4, 60 + 6 * max(len(line.name) for line in lines) + 52 * len(legend.get("calcs") or [])
        )
    elif show_legend:
        entry = 24 + 5.4 * min(40, max(len(line.name) for line in lines))
        per_row = max(1, min(len(lines), int(w // entry)))
        legend_h = min(3, math.ceil(len(lines) / per_row)) * 13 + 4
    left = 60
    ax = canvas.fig.add_axes(canvas.rect(x + left, y + 2, w - left - 4 - legend_w, h - 18 - legend_h))
    _style_axes(ax)
    handles = _plot_lines(ax, style, lines)
    unit = style.unit()
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: format_value(v, unit)))
    _time_axis(ax, start, end, w - legend_w - 60)
    lo, hi = style.prop("min"), style.prop("max")
    finite = [v for line in lines for v in line.values if math.isfinite(v)]
    if lo is None and finite and min(finite) >= 0:
        lo = 0
    if hi is None and finite and max(finite) == min(finite):
        hi = max(finite) * 1.5 or 1  # a flat line mid-panel, not on the frame
    ax.set_ylim(bottom=lo, top=hi)
    ticks = max(2, int((h - legend_h) / 40))
    step = axis_step(unit, ax.get_ylim()[1], ticks)
    counts = bool(finite) and all(v == int(v) for v in finite)  # e.g. task instances: no 0.8 ticks
    locator = MaxNLocator(nbins=ticks, min_n_ticks=2, integer=counts and ax.get_ylim()[1] >= 2)
    ax.yaxis.set_major_locator(MultipleLocator(step) if step else locator)
    if legend_w:
        _legend_table(canvas, panel, lines, handles, unit, (x + w - legend_w, y, legend_w, h - 12))
    elif legend_h:
        rows = int((legend_h - 4) // 13)
        per_row = max(
            1, min(len(lines), int(w // (24 + 5.4 * min(40, max(len(line.name) for line in lines)))))
        )
        shown = per_row * rows
        names = [_fit(line.name, w / per_row - 24, 5.4) for line in lines[:shown]]
        if len(lines) > shown:
            names[-1] = f"… {len(lines) - shown + 1} more"
        canvas.fig.legend(
            handles[:shown],
            names,
            loc="upper left",
            ncol=per_row,
            frameon=False,
            fontsize=7,
            labelcolor=TEXT,
            handlelength=1.0,
            handletextpad=0.4,
            columnspacing=1.0,
            borderaxespad=0,
            bbox_to_anchor=_anchor(canvas, x + 4, y + h - legend_h),
        )


_TICK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def _time_axis(ax: Axes, start: float, end: float, width_px: float) -> None:
    """UTC time ticks at round intervals, at most one per 100 px (labels never run together)."""
    most = max(2, min(12, int(width_px // 100)))
    step = next((s for s in _TICK_STEPS if (end - start) / s <= most), 7 * 86400)
    ticks = [t * step for t in range(math.ceil(start / step), math.floor(end / step) + 1)]
    fmt = "%H:%M:%S" if step < 60 else "%H:%M" if step < 86400 else "%m-%d"
    ax.set_xlim(mdates.date2num(_utc(start)), mdates.date2num(_utc(end)))
    ax.set_xticks([mdates.date2num(_utc(t)) for t in ticks], [_utc(t).strftime(fmt) for t in ticks])


def _plot_lines(ax: Axes, style: FieldStyle, lines: list[Line]) -> list[Any]:
    """Draw the lines (stacked, bars or lines with a fill, as the panel's custom config says)."""
    fill = float(style.prop("custom.fillOpacity", default=0) or 0) / 100
    stacked = (style.prop("custom.stacking") or {}).get("mode") in ("normal", "percent")
    bars = style.prop("custom.drawStyle") == "bars"
    width = float(style.prop("custom.lineWidth", default=1) or 1)
    base: dict[float, float] = {}
    handles = []
    for i, line in enumerate(lines):
        c = style.fixed_colour(line.name) or PALETTE[i % len(PALETTE)]
        times = [mdates.date2num(_utc(t)) for t in line.times]
        values = [v if math.isfinite(v) else math.nan for v in line.values]
        lows = [0.0] * len(values)
        if stacked:
            lows = [base.get(t, 0.0) for t in line.times]
            values = [lo + (0 if math.isnan(v) else v) for lo, v in zip(lows, values, strict=True)]
            base.update(zip(line.times, values, strict=True))
        if bars:
            bar_w = min(times[1] - times[0] if len(times) > 1 else 1.0, 5 / 1440)
            heights = [v - lo for v, lo in zip(values, lows, strict=True)]
            ax.bar(times, heights, bottom=lows, width=bar_w, color=c, alpha=0.85, linewidth=0)
            handles.append(ax.plot([], [], color=c, linewidth=4)[0])
            continue
        if fill > 0 or stacked:
            ax.fill_between(times, lows, values, color=c, alpha=max(fill, 0.3 if stacked else 0), linewidth=0)
        marker = "o" if len(times) == 1 else None
        handles.append(ax.plot(times, values, color=c, linewidth=width, marker=marker, ms=3)[0])
    return handles


def _legend_table(
    canvas: Canvas,
    panel: Mapping[str, Any],
    lines: list[Line],
    handles: list[Any],
    unit: str | None,
    box: tuple[float, float, float, float],
) -> None:
    """Grafana's legend in table mode: one row per series with the panel's calcs (last, max...)."""
    calcs = [c for c in (((panel.get("options") or {}).get("legend") or {}).get("calcs") or [])][:3]
    x, y, w, h = box
    ax = canvas.fig.add_axes(canvas.rect(x, y, w, h))
    ax.axis("off")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    names = {
        "lastNotNull": "Last *",
        "last": "Last",
        "max": "Max",
        "min": "Min",
        "mean": "Mean",
        "sum": "Total",
    }
    col_w = 52.0
    for j, calc in enumerate(calcs):
        ax.text(
            w - (len(calcs) - j - 1) * col_w - 4,
            8,
            names.get(calc, calc),
            color=MUTED,
            fontsize=7,
            ha="right",
            va="center",
            weight="bold",
        )
    rows = max(1, int((h - 16) // 14))
    for i, (line, handle) in enumerate(zip(lines[:rows], handles, strict=False)):
        ty = 22 + i * 14
        ax.plot([4, 14], [ty, ty], color=handle.get_color(), linewidth=3)
        ax.text(
            18, ty, _fit(line.name, w - 24 - col_w * len(calcs), 5.4), color=TEXT, fontsize=7, va="center"
        )
        finite = [v for v in line.values if not math.isnan(v)]
        for j, calc in enumerate(calcs):
            v = _reduce_values(finite, line.values, calc)
            ax.text(
                w - (len(calcs) - j - 1) * col_w - 4,
                ty,
                format_value(v, unit),
                color=TEXT,
                fontsize=7,
                ha="right",
                va="center",
            )


def _anchor(canvas: Canvas, x_px: float, y_px: float) -> tuple[float, float]:
    return x_px / _WIDTH_PX, 1 - y_px / canvas.height_px


@dataclass
class Value:
    name: str
    value: float
    spark: Line | None = None


def _reduce_values(finite: Sequence[float], values: Sequence[float], calc: str) -> float:
    if calc == "last":
        return values[-1] if values else math.nan
    if not finite:
        return math.nan
    reducers = {
        "mean": lambda f: sum(f) / len(f),
        "max": max,
        "min": min,
        "sum": sum,
        "first": lambda f: f[0],
        "firstNotNull": lambda f: f[0],
    }
    return float(reducers.get(calc, lambda f: f[-1])(finite))


def _reduce(panel: Mapping[str, Any], targets: list[Target]) -> list[Value]:
    """One value per series, as the panel's reduceOptions say (default: last non-null)."""
    calcs = ((panel.get("options") or {}).get("reduceOptions") or {}).get("calcs") or ["lastNotNull"]
    out = []
    for t in targets:
        for s in t.series:
            value = _reduce_values([v for v in s.values if not math.isnan(v)], s.values, calcs[0])
            spark = Line("", s.times, s.values) if len(s.values) > 1 else None
            out.append(Value(legend_name(t.legend, s, t.expr), value, spark))
    return sorted(out, key=lambda item: item.name)


def _stat(
    canvas: Canvas,
    frame: Axes,
    panel: Mapping[str, Any],
    targets: list[Target],
    box: tuple[float, float, float, float],
    end: float,
) -> None:
    style = FieldStyle.of(panel)
    options = panel.get("options") or {}
    values = _reduce(panel, targets)[:12]
    x, y, w, h = box
    n = len(values)
    vertical = options.get("orientation") == "vertical" or (
        options.get("orientation") != "horizontal" and w < h
    )
    cols = 1 if vertical else min(n, max(1, int(w // 90)))
    rows = math.ceil(n / cols)
    cw, ch = w / cols, h / rows
    background = options.get("colorMode") == "background"
    mode = options.get("textMode") or "auto"
    for i, item in enumerate(values):
        cx, cy = x + (i % cols) * cw, y + (i // cols) * ch
        text, mapped = style.display(item.value, item.name, end)
        c = style.value_colour(item.value, item.name, mapped)
        if mode == "name":  # the series name is the news (e.g. a version label, a state)
            big, small = item.name, ""
        elif mode == "value" or (mode == "auto" and n == 1):
            big, small = text, ""
        else:
            big, small = text, item.name
        if background:
            bg = canvas.fig.add_axes(canvas.rect(cx + 1, cy + 1, cw - 2, ch - 2))
            bg.set_facecolor(c)
            bg.set_xticks([])
            bg.set_yticks([])
            for spine in bg.spines.values():
                spine.set_visible(False)
        fg = "#FFFFFF" if background else c
        if item.spark is not None and options.get("graphMode", "area") == "area":
            ax = canvas.fig.add_axes(canvas.rect(cx, cy + ch * 0.55, cw, ch * 0.45))
            ax.axis("off")
            finite = [v if math.isfinite(v) else math.nan for v in item.spark.values]
            ax.fill_between(item.spark.times, finite, color=fg, alpha=0.18, linewidth=0)
            ax.plot(item.spark.times, finite, color=fg, linewidth=1, alpha=0.6)
        share = 0.62 if small else 0.8  # of the cell's height the big text may take
        canvas.fig.text(
            *_anchor(canvas, cx + cw / 2, cy + ch * (0.4 if small else 0.5)),
            big,
            color=fg,
            fontsize=_fitting_size(big, cw * 0.88, ch * share, 30.0),
            weight="bold",
            ha="center",
            va="center",
        )
        if small:
            canvas.fig.text(
                *_anchor(canvas, cx + cw / 2, cy + ch * 0.82),
                _fit(small, cw, 5.2),
                color="#FFFFFF" if background else TEXT,
                fontsize=7,
                ha="center",
                va="center",
            )


def _fitting_size(text: str, width_px: float, height_px: float, largest: float) -> float:
    """The font size (points) at which bold ``text`` fits the box: DejaVu Sans Bold runs about
    0.65 em per character, and a point is dpi/72 pixels."""
    px_per_pt = _DPI / 72
    by_width = width_px / (0.65 * max(1, len(text)) * px_per_pt)
    by_height = height_px / (1.25 * px_per_pt)
    return max(6.0, min(largest, by_width, by_height))


def _gauge(
    canvas: Canvas,
    panel: Mapping[str, Any],
    targets: list[Target],
    box: tuple[float, float, float, float],
    end: float,
) -> None:
    style = FieldStyle.of(panel)
    values = _reduce(panel, targets)[:6]
    x, y, w, h = box
    cw = w / len(values)
    for i, item in enumerate(values):
        lo, hi = _min_max(style, item.name)
        share = (
            0.0 if math.isnan(item.value) or hi <= lo else min(1.0, max(0.0, (item.value - lo) / (hi - lo)))
        )
        text, mapped = style.display(item.value, item.name, end)
        c = style.value_colour(item.value, item.name, mapped)
        size = min(cw, h * 1.6)
        ax = canvas.fig.add_axes(canvas.rect(x + i * cw + (cw - size) / 2, y + 4, size, h - 10))
        ax.set_xlim(-1.1, 1.1)
        ax.set_ylim(-0.25, 1.1)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.add_patch(Wedge((0, 0), 1, 0, 180, width=0.22, color=GRID))
        ax.add_patch(Wedge((0, 0), 1, 180 - 180 * share, 180, width=0.22, color=c))
        ax.text(
            0,
            0.18,
            text,
            color=c,
            fontsize=max(9, min(22, size / 10)),
            weight="bold",
            ha="center",
            va="center",
        )
        if len(values) > 1:
            ax.text(0, -0.17, _fit(item.name, size, 5.5), color=TEXT, fontsize=7, ha="center", va="center")


def _min_max(style: FieldStyle, name: str) -> tuple[float, float]:
    unit = style.unit(name)
    lo = style.prop("min", name)
    hi = style.prop("max", name)
    default_hi = 1.0 if unit == "percentunit" else 100.0
    return float(lo if lo is not None else 0.0), float(hi if hi is not None else default_hi)


def _bargauge(
    canvas: Canvas,
    panel: Mapping[str, Any],
    targets: list[Target],
    box: tuple[float, float, float, float],
    end: float,
) -> None:
    style = FieldStyle.of(panel)
    values = _reduce(panel, targets)
    x, y, w, h = box
    shown = values[: max(1, int(h // 18))]
    finite = [v.value for v in values if math.isfinite(v.value)]
    lo, hi = _min_max(style, "")
    if style.prop("max") is None:
        hi = max(finite, default=1.0) or 1.0
    ax = canvas.fig.add_axes(canvas.rect(x, y, w, h))
    ax.axis("off")
    ax.set_xlim(0, 1)
    ax.set_ylim(len(shown), 0)
    label_w = min(0.4, max(0.15, max(len(v.name) for v in shown) * 6 / w))
    for i, item in enumerate(shown):
        text, mapped = style.display(item.value, item.name, end)
        c = style.value_colour(item.value, item.name, mapped)
        share = (
            0.0
            if not math.isfinite(item.value) or hi <= lo
            else min(1.0, max(0.0, (item.value - lo) / (hi - lo)))
        )
        ax.text(0, i + 0.5, _fit(item.name, label_w * w, 5.5), color=TEXT, fontsize=7.5, va="center")
        ax.barh(i + 0.5, 1 - label_w - 0.12, left=label_w, height=0.7, color=GRID)
        ax.barh(i + 0.5, (1 - label_w - 0.12) * share, left=label_w, height=0.7, color=c)
        ax.text(1, i + 0.5, text, color=c, fontsize=8, va="center", ha="right", weight="bold")


def _pie(
    canvas: Canvas, panel: Mapping[str, Any], targets: list[Target], box: tuple[float, float, float, float]
) -> None:
    values = [v for v in _reduce(panel, targets) if math.isfinite(v.value) and v.value > 0]
    x, y, w, h = box
    ax = canvas.fig.add_axes(canvas.rect(x, y, w, h))
    ax.set_facecolor(PANEL)
    if not values:
        ax.axis("off")
        ax.text(0.5, 0.5, "all zero", color=MUTED, ha="center", va="center", transform=ax.transAxes)
        return
    colours = [PALETTE[i % len(PALETTE)] for i in range(len(values))]
    ax.pie([v.value for v in values], colors=colours, wedgeprops={"width": 0.45, "linewidth": 0})
    ax.legend(
        [_fit(v.name, w / 2, 5.5) for v in values],
        loc="center left",
        bbox_to_anchor=(1, 0.5),
        frameon=False,
        fontsize=7,
        labelcolor=TEXT,
    )


def table_rows(
    panel: Mapping[str, Any], targets: list[Target]
) -> tuple[list[str], list[dict[str, float | str]]]:
    """(columns, rows) as Grafana's table shows instant results: one row per label set, one value
    column per query ("Value", or "Value #<refId>" with several), then the organize transformation."""
    tgts = targets
    value_col = {t.ref_id: "Value" if len(tgts) == 1 else f"Value #{t.ref_id}" for t in tgts}
    rows: dict[tuple[tuple[str, str], ...], dict[str, float | str]] = {}
    label_cols: list[str] = []
    for t in tgts:
        for s in t.series:
            labels = {k: v for k, v in s.labels.items() if k != "__name__"}
            for k in labels:
                if k not in label_cols:
                    label_cols.append(k)
            row = rows.setdefault(tuple(sorted(labels.items())), dict(labels))
            row[value_col[t.ref_id]] = s.last
    columns = [*label_cols, *value_col.values()]
    for transform in panel.get("transformations") or []:
        if transform.get("id") == "organize":
            opts = transform.get("options") or {}
            excluded = {k for k, v in (opts.get("excludeByName") or {}).items() if v}
            order = opts.get("indexByName") or {}
            columns = sorted(
                (c for c in columns if c not in excluded), key=lambda c: order.get(c, 1000 + columns.index(c))
            )
            renames = opts.get("renameByName") or {}
            for row in rows.values():
                for old, new in renames.items():
                    if old in row and new:
                        row[new] = row.pop(old)
            columns = [renames.get(c) or c for c in columns]
    ordered = list(rows.values())
    for sort in reversed((panel.get("options") or {}).get("sortBy") or []):
        key = sort.get("displayName")
        ordered.sort(key=lambda r, k=key: _sort_key(r.get(k)), reverse=bool(sort.get("desc")))
    return columns, ordered


def _sort_key(v: float | str | None) -> tuple[int, float | str]:
    if isinstance(v, float):
        return (0, v if not math.isnan(v) else -math.inf)
    return (1, v or "")


def _table(
    canvas: Canvas,
    panel: Mapping[str, Any],
    targets: list[Target],
    box: tuple[float, float, float, float],
    end: float,
) -> None:
    style = FieldStyle.of(panel)
    columns, rows = table_rows(panel, targets)
    x, y, w, h = box
    line = 17.0
    fits = max(1, int((h - line) // line))
    shown = rows[:fits]
    cells = [[_cell(style, c, r.get(c), end) for c in columns] for r in shown]
    chars = [min(40, max(len(c), *(len(row[i][0]) for row in cells))) + 2 for i, c in enumerate(columns)]
    col_w = [n / (sum(chars) or 1) * w for n in chars]
    col_x = [sum(col_w[:i]) for i in range(len(columns))]
    ax = canvas.fig.add_axes(canvas.rect(x, y, w, h))
    ax.axis("off")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    for i, c in enumerate(columns):
        ax.text(
            col_x[i] + 4,
            line / 2,
            _fit(c, col_w[i], 5.6),
            color=MUTED,
            fontsize=7.5,
            weight="bold",
            va="center",
        )
    ax.axhline(line, color=BORDER, linewidth=1)
    for r, row in enumerate(cells):
        top = line * (r + 1)
        for i, (text, c) in enumerate(row):
            cell_type = style.prop("custom.cellOptions", columns[i], {}).get("type")
            background = c is not None and cell_type == "color-background"
            if background:
                ax.add_patch(Rectangle((col_x[i] + 1, top + 1), col_w[i] - 2, line - 2, color=c, linewidth=0))
            ax.text(
                col_x[i] + 4,
                top + line / 2,
                _fit(text, col_w[i], 5.4),
                fontsize=7.5,
                va="center",
                color="#FFFFFF" if background else c or TEXT,
            )
        ax.axhline(top + line, color=GRID, linewidth=0.6)
    if len(rows) > fits:
        ax.text(
            w - 4, h - 2, f"{len(rows) - fits} more rows", color=MUTED, fontsize=7, ha="right", va="bottom"
        )


def _cell(style: FieldStyle, column: str, value: float | str | None, end: float) -> tuple[str, str | None]:
    """A cell's text and colour: a value mapping's colour, else the thresholds' when the column is
    coloured (cellOptions color-text or color-background)."""
    if value is None or isinstance(value, str):
        return value or "", None
    text, mapped = style.display(value, column, end)
    if mapped is None and style.prop("custom.cellOptions", column, {}).get("type") in (
        "color-text",
        "color-background",
    ):
        mapped = style.threshold_colour(value, column)
    return text, mapped
