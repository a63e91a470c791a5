"""How the dashboard previews colour and format values: Grafana's named colours and palette, its
common units, and what a panel's fieldConfig (defaults, overrides, thresholds, value mappings) says
about one field."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

_GRAFANA_COLOURS = {
    "green": "#73BF69",
    "dark-green": "#37872D",
    "semi-dark-green": "#56A64B",
    "light-green": "#96D98D",
    "red": "#F2495C",
    "dark-red": "#C4162A",
    "semi-dark-red": "#E02F44",
    "light-red": "#FF7383",
    "orange": "#FF9830",
    "dark-orange": "#FA6400",
    "semi-dark-orange": "#FF780A",
    "light-orange": "#FFB357",
    "yellow": "#FADE2A",
    "dark-yellow": "#E0B400",
    "semi-dark-yellow": "#F2CC0C",
    "light-yellow": "#FFEE52",
    "blue": "#5794F2",
    "dark-blue": "#1F60C4",
    "semi-dark-blue": "#3274D9",
    "light-blue": "#8AB8FF",
    "purple": "#B877D9",
    "dark-purple": "#8F3BB8",
    "semi-dark-purple": "#A352CC",
    "light-purple": "#CA95E5",
    "text": "#CCCCDC",
    "transparent": "#00000000",
}
PALETTE = (
    "#73BF69",
    "#F2CC0C",
    "#8AB8FF",
    "#FF780A",
    "#F2495C",
    "#5794F2",
    "#B877D9",
    "#705DA0",
    "#37872D",
    "#FADE2A",
    "#447EBC",
    "#C15C17",
    "#890F02",
    "#0A437C",
    "#6D1F62",
    "#584477",
)
BACKGROUND, PANEL, BORDER, TEXT, MUTED, GRID = (
    "#111217",
    "#181B1F",
    "#2A2D33",
    "#CCCCDC",
    "#8E8E9E",
    "#26292F",
)


def colour(name: str | None, default: str = TEXT) -> str:
    if not name:
        return default
    return _GRAFANA_COLOURS.get(name, name if name.startswith("#") or name.startswith("rgb") else default)


_SI = ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K"))
_IEC = ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB"))
_DEC = ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB"))
_DURATIONS = ((86400 * 365, "year"), (86400 * 7, "week"), (86400, "day"), (3600, "hour"), (60, "min"))
_RATES = {"Bps": (_DEC, "B"), "binBps": (_IEC, "B"), "bps": (tuple((n, u.lower()) for n, u in _DEC), "b")}
_SUFFIXES = {
    "reqps": " req/s",
    "ops": " ops/s",
    "rps": " reads/s",
    "wps": " writes/s",
    "opm": " ops/min",
    "reqpm": " req/min",
    "cps": " c/s",
    "hertz": " Hz",
    "pps": " p/s",
}


def _num(v: float, decimals: int | None) -> str:
    if decimals is not None:
        return f"{v:.{decimals}f}"
    a = abs(v)
    if a == 0 or a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}".rstrip("0").rstrip(".")
    if a >= 0.01:
        return f"{v:.2f}".rstrip("0").rstrip(".")
    return f"{v:.2g}"


def _scaled(
    v: float, table: Sequence[tuple[float, str]], base: str, decimals: int | None, sep: str = " "
) -> str:
    for size, suffix in table:
        if abs(v) >= size:
            return f"{_num(v / size, decimals)}{sep}{suffix}"
    return f"{_num(v, decimals)}{sep}{base}".rstrip()


def format_value(
    v: float, unit: str | None = None, decimals: int | None = None, now: float | None = None
) -> str:
    """A value as Grafana writes it with this unit (the common units; others as plain numbers)."""
    unit = unit or "short"
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    if unit in ("percentunit",):
        return f"{_num(v * 100, decimals)}%"
    if unit == "percent":
        return f"{_num(v, decimals)}%"
    if unit in ("s", "ms", "µs", "ns", "dtdurations", "dtdhms", "m", "h", "d"):
        seconds = v * {"ms": 1e-3, "µs": 1e-6, "ns": 1e-9, "m": 60, "h": 3600, "d": 86400}.get(unit, 1)
        if abs(seconds) < 1 and seconds != 0:
            return f"{_num(seconds * 1000, decimals)} ms"
        for size, name in _DURATIONS:
            if abs(seconds) >= size:
                return f"{_num(seconds / size, decimals)} {name}"
        return f"{_num(seconds, decimals)} s"
    if unit in ("bytes", "decbytes", "bits"):
        table = _IEC if unit == "bytes" else _DEC
        return _scaled(v, table, "b" if unit == "bits" else "B", decimals)
    if unit in _RATES:  # bytes or bits per second: "KiB/s", "MB/s", "kb/s"
        table, base = _RATES[unit]
        return _scaled(v, table, base, decimals) + "/s"
    if unit.startswith("dateTime"):
        ts = v / 1000 if v > 1e11 else v  # Grafana's dateTime units take ms; accept seconds too
        if unit == "dateTimeFromNow":
            return _ago((now or time.time()) - ts)
        return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    if unit in ("bool", "bool_yes_no", "bool_on_off"):
        yes, no = {"bool": ("True", "False"), "bool_yes_no": ("Yes", "No"), "bool_on_off": ("On", "Off")}[
            unit
        ]
        return yes if v else no
    if unit.startswith("suffix:"):
        return f"{_num(v, decimals)}{unit[len('suffix:') :]}"
    if unit in _SUFFIXES:
        return _scaled(v, _SI, "", decimals, sep="") + _SUFFIXES[unit]
    return _scaled(v, _SI, "", decimals, sep="")


def _ago(seconds: float) -> str:
    if seconds < 0:
        return "in the future"
    for size, name in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {name}{'s' if n > 1 else ''} ago"
    return "a few seconds ago"


# ---------------------------------------------------------------- field config


@dataclass
class FieldStyle:
    """What a panel's fieldConfig says about one value: unit, decimals, colour, display text."""

    defaults: Mapping[str, Any]
    overrides: Sequence[Mapping[str, Any]]

    @classmethod
    def of(cls, panel: Mapping[str, Any]) -> FieldStyle:
        cfg = panel.get("fieldConfig") or {}
        return cls(cfg.get("defaults") or {}, cfg.get("overrides") or [])

    def prop(self, key: str, name: str = "", default: Any = None) -> Any:
        """``key`` (dotted: ``custom.fillOpacity``) for the field named ``name``, overrides first."""
        for override in reversed(self.overrides):
            matcher = override.get("matcher") or {}
            opt = str(matcher.get("options", ""))
            hit = (matcher.get("id") == "byName" and opt == name) or (
                matcher.get("id") in ("byRegexp", "byRegex") and _fullmatch(opt, name)
            )
            if hit:
                for p in override.get("properties") or []:
                    if p.get("id") == key:
                        return p.get("value")
        node: Any = self.defaults
        for part in key.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        return default if node is None else node

    def unit(self, name: str = "") -> str | None:
        return self.prop("unit", name)

    def fixed_colour(self, name: str) -> str | None:
        c = self.prop("color", name) or {}
        return colour(c.get("fixedColor")) if isinstance(c, Mapping) and c.get("mode") == "fixed" else None

    def value_colour(self, v: float, name: str, mapped: str | None) -> str:
        """A value's colour as Grafana picks it: value mapping, then fixed colour, then threshold."""
        return mapped or self.fixed_colour(name) or self.threshold_colour(v, name)

    def threshold_colour(self, v: float, name: str = "") -> str:
        steps = (self.prop("thresholds", name) or {}).get("steps") or []
        chosen = "green" if not steps else steps[0].get("color")
        for step in steps:
            if step.get("value") is not None and not math.isnan(v) and v >= float(step["value"]):
                chosen = step.get("color")
        return colour(chosen, _GRAFANA_COLOURS["green"])

    def display(self, v: float, name: str = "", now: float | None = None) -> tuple[str, str | None]:
        """(text, mapped colour or None) after value mappings."""
        for mapping in self.prop("mappings", name) or []:
            result = _mapped(mapping, v)
            if result is not None:
                text = result.get("text")
                return (text if text is not None else self._fmt(v, name, now)), colour(
                    result.get("color"), ""
                ) or None
        return self._fmt(v, name, now), None

    def _fmt(self, v: float, name: str, now: float | None) -> str:
        return format_value(v, self.unit(name), self.prop("decimals", name), now)


def _fullmatch(pattern: str, text: str) -> bool:
    try:
        return re.fullmatch(pattern.strip("/"), text) is not None
    except re.error:
        return False


def _mapped(mapping: Mapping[str, Any], v: float) -> Mapping[str, Any] | None:
    kind, options = mapping.get("type"), mapping.get("options") or {}
    if kind == "value":
        key = f"{v:g}" if not math.isnan(v) else "NaN"
        return options.get(key) or options.get(str(int(v)) if not math.isnan(v) and v == int(v) else key)
    if kind == "range" and not math.isnan(v):
        lo, hi = options.get("from"), options.get("to")
        if (lo is None or v >= float(lo)) and (hi is None or v <= float(hi)):
            return options.get("result")
    if kind == "special" and math.isnan(v) and options.get("match") in ("nan", "null", "null+nan"):
        return options.get("result")
    return None


_DURATION_UNITS = {"s": 1.0, "ms": 1e-3, "µs": 1e-6, "ns": 1e-9, "dtdurations": 1.0, "dtdhms": 1.0}
# Round durations (seconds) for axis steps: 1 ms … 1 week.
_DURATION_STEPS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120,
                   300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800)  # fmt: skip


def axis_step(unit: str | None, top: float, ticks: int) -> float | None:
    """A round step for an axis from 0 to ``top`` with at most ``ticks`` ticks, in the unit's own
    terms: whole minutes or hours for durations, powers-of-1024 multiples for bytes. None: let the
    plotting library choose (other units)."""
    if top <= 0 or not math.isfinite(top):
        return None
    if unit in _DURATION_UNITS:
        scale = _DURATION_UNITS[unit]
        step = next((s for s in _DURATION_STEPS if top * scale / s <= ticks), _DURATION_STEPS[-1])
        return step / scale
    if unit in ("bytes", "binBps"):
        base = 1024.0 ** max(0, math.floor(math.log(top, 1024)))
        return base * _round_step(top / base, ticks)
    return None


def _round_step(top: float, ticks: int) -> float:
    """The smallest of 1, 2, 2.5 or 5 times 10^k that spans ``top`` in at most ``ticks`` steps."""
    exp = math.floor(math.log10(top / ticks)) if top / ticks > 0 else 0
    for k in (exp, exp + 1):
        for m in (1, 2, 2.5, 5):
            if top / (m * 10.0**k) <= ticks:
                return m * 10.0**k
    return 10.0 ** (exp + 2)
