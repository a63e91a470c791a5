"""Encodes rendered families as Prometheus text (0.0.4) and OpenMetrics 1.0.

Written here rather than through ``prometheus_client.generate_latest`` because its generic path
(a Sample object, label validation and a sort per series) costs ~6.5 µs a series: 158 ms for
2,000 DAGs, against a 50 ms budget (docs/performance.md). Here label names are escaped and sorted
once per family, values are formatted by prometheus_client's own ``floatToGoString``, and a test
checks that both formats parse to exactly what prometheus_client produces for the same data.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from prometheus_client.utils import floatToGoString

from .snapshot import Histogram

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"

Row = tuple[tuple[str, ...], "float | Histogram"]


DEPLOYMENT = "deployment"


@dataclass(frozen=True)
class Family:
    """One metric's samples, grouped by deployment (a label every series carries): label values
    in the order of ``labels``, which does not list deployment."""

    name: str
    type: str  # gauge | counter | histogram
    help: str
    labels: tuple[str, ...]
    groups: Sequence[tuple[str, Sequence[Row]]]  # (deployment, rows)


def _escape_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _label_slots(labels: tuple[str, ...]) -> list[tuple[str, int]]:
    """('name="', index of its value) in prometheus_client's (sorted) label order; -1 = deployment."""
    names = {DEPLOYMENT: -1, **{name: i for i, name in enumerate(labels)}}
    return [(f'{name}="', names[name]) for name in sorted(names)]


def _samples(fam: Family, sample_name: str) -> Iterable[str]:
    slots = _label_slots(fam.labels)
    fmt = _Formatter()
    for deployment, rows in fam.groups:
        yield from _group_samples(fam, sample_name, slots, _escape_value(deployment), rows, fmt)


def _group_samples(
    fam: Family,
    sample_name: str,
    slots: list[tuple[str, int]],
    deployment: str,
    rows: Sequence[Row],
    fmt: _Formatter,
) -> Iterable[str]:
    for values, value in rows:
        # Each row's label string is built once, however many lines (buckets) it has.
        inner = ",".join([p + (deployment if i < 0 else _escape_value(values[i])) + '"' for p, i in slots])
        if not isinstance(value, Histogram):
            yield f"{sample_name}{{{inner}}} {fmt(value)}\n"
            continue
        bucket = f"{fam.name}_bucket{{{inner},le="
        running = 0
        for le, n in zip(fmt.bounds(value.bounds), value.counts, strict=True):
            running += n
            yield f'{bucket}"{le}"}} {fmt(running)}\n'
        yield f"{fam.name}_count{{{inner}}} {fmt(running)}\n"
        yield f"{fam.name}_sum{{{inner}}} {fmt(value.total)}\n"


class _Formatter:
    """floatToGoString with a cache: counts and bucket bounds repeat across thousands of lines."""

    def __init__(self) -> None:
        self._cache: dict[float, str] = {}
        self._bounds: dict[tuple[float, ...], list[str]] = {}

    def __call__(self, value: float) -> str:
        text = self._cache.get(value)
        if text is None:
            text = self._cache[value] = floatToGoString(value)
        return text

    def bounds(self, bounds: tuple[float, ...]) -> list[str]:
        les = self._bounds.get(bounds)
        if les is None:
            les = self._bounds[bounds] = [floatToGoString(b) for b in (*bounds, float("inf"))]
        return les


def encode_text(families: Iterable[Family]) -> bytes:
    out: list[str] = []
    for fam in families:
        # Text format 0.0.4 names a counter family after its samples (with _total).
        name = fam.name if fam.type != "counter" else fam.name.removesuffix("_total") + "_total"
        help_ = fam.help.replace("\\", "\\\\").replace("\n", "\\n")
        out.append(f"# HELP {name} {help_}\n# TYPE {name} {fam.type}\n")
        out.extend(_samples(fam, name))
    return "".join(out).encode()


def encode_openmetrics(families: Iterable[Family]) -> bytes:
    out: list[str] = []
    for fam in families:
        # OpenMetrics names a counter family without _total; its samples carry it.
        name = fam.name.removesuffix("_total") if fam.type == "counter" else fam.name
        out.append(f"# HELP {name} {_escape_value(fam.help)}\n# TYPE {name} {fam.type}\n")
        out.extend(_samples(fam, name + "_total" if fam.type == "counter" else name))
    out.append("# EOF\n")
    return "".join(out).encode()


def wants_openmetrics(accept: str) -> bool:
    return "application/openmetrics-text" in accept
