"""Encodes rendered families as Prometheus text (0.0.4) and OpenMetrics 1.0.

Written here rather than through ``prometheus_client.generate_latest`` because its generic path
(a Sample object, label validation and a sort per series) costs ~6.5 µs a series: 158 ms for
2,000 DAGs, against a 50 ms budget (docs/performance.md). Here a row's label string is filled
into a per-family template (label names sorted as prometheus_client sorts them) once, and shared
by the families with the same labels; a histogram's bucket lines are assembled by slice
assignment; values are formatted by prometheus_client's own ``floatToGoString``; and a test
checks that both formats parse to exactly what prometheus_client produces for the same data.

A row's lines are the same in both formats (counter samples are ``name_total`` in both; only the
HELP/TYPE headers differ), so they are encoded once for both. ``Encoder`` also keeps each
group's lines between calls and re-encodes only the rows that changed: between two polls most
counters and histograms do not move, and a render at the series budget's maximum would
otherwise rewrite ~100k lines per poll.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate, compress, count
from operator import ne
from typing import NamedTuple

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


class _GoFloats(dict[float, str]):
    """floatToGoString with a cache: counts, bucket bounds and ages repeat across many lines."""

    def __missing__(self, value: float) -> str:
        text = self[value] = floatToGoString(value)
        return text


class _Escaped(dict[str, str]):
    def __missing__(self, value: str) -> str:
        text = self[value] = _escape_value(value)
        return text


class _Formatted:
    """What one encode call formats more than once: numbers, label values (a dag_id is in a
    dozen families), and label strings per label layout (``dag_id="…",deployment="…"`` is the
    same in every per-DAG family with that one label)."""

    def __init__(self) -> None:
        self.floats = _GoFloats()
        self.escaped = _Escaped()
        self.label_strings: dict[str, dict[tuple[str, ...], str]] = {}


def _sample_name(fam: Family) -> str:
    # A counter's samples are name_total in both formats, whatever the family is called.
    return fam.name.removesuffix("_total") + "_total" if fam.type == "counter" else fam.name


def _headers(fam: Family) -> tuple[bytes, bytes]:
    """HELP and TYPE in text format 0.0.4 (a counter named after its samples) and in OpenMetrics
    (a counter named without _total, help escaped like a label value)."""
    text_name = _sample_name(fam)
    om_name = fam.name.removesuffix("_total") if fam.type == "counter" else fam.name
    text_help = fam.help.replace("\\", "\\\\").replace("\n", "\\n")
    return (
        f"# HELP {text_name} {text_help}\n# TYPE {text_name} {fam.type}\n".encode(),
        f"# HELP {om_name} {_escape_value(fam.help)}\n# TYPE {om_name} {fam.type}\n".encode(),
    )


class _RowFormat:
    """How the rows of one family in one deployment become lines."""

    def __init__(self, fam: Family, deployment: str, formatted: _Formatted) -> None:
        self._name = fam.name
        self._sample = _sample_name(fam)
        self._floats = formatted.floats
        self._escaped = formatted.escaped
        # The label string as a str.format template, in prometheus_client's (sorted) label order,
        # with the deployment's value baked in.
        fields = {name: f"{{{i}}}" for i, name in enumerate(fam.labels)}
        fields[DEPLOYMENT] = self._escaped[deployment].replace("{", "{{").replace("}", "}}")
        self._template = ",".join(f'{name}="{fields[name]}"' for name in sorted(fields))
        self._label_strings = formatted.label_strings.setdefault(self._template, {})
        self._buckets: dict[tuple[float, ...], list[str]] = {}

    def line(self, row: Row) -> str:
        values, value = row
        inner = self._label_strings.get(values) or self._label_string(values)
        if not isinstance(value, Histogram):
            return f"{self._sample}{{{inner}}} {self._floats[value]}\n"
        parts = (self._buckets.get(value.bounds) or self._bucket_lines(value.bounds)).copy()
        if len(parts) != 4 * len(value.counts):
            raise ValueError(f"{self._name}: {len(value.counts)} bucket counts for {len(parts) // 4} buckets")
        # Fill in each bucket line's prefix and cumulative count by slice (in C: a row has a line
        # per bucket, and the saturated render ~85k of them).
        parts[0::4] = [f'{self._name}_bucket{{{inner},le="'] * len(value.counts)
        parts[2::4] = map(self._floats.__getitem__, accumulate(value.counts))
        parts.append(
            f"{self._name}_count{{{inner}}} {parts[-2]}\n"
            f"{self._name}_sum{{{inner}}} {self._floats[value.total]}\n"
        )
        return "".join(parts)

    def _label_string(self, values: tuple[str, ...]) -> str:
        text = self._label_strings[values] = self._template.format(*map(self._escaped.__getitem__, values))
        return text

    def _bucket_lines(self, bounds: tuple[float, ...]) -> list[str]:
        """A histogram row's bucket lines as parts to join, four per bucket: the row's prefix (left
        empty here), ``le"} ``, the row's count (left empty), a newline."""
        parts = []
        for le in (*bounds, math.inf):
            parts += ("", f'{floatToGoString(le)}"}} ', "", "\n")
        self._buckets[bounds] = parts
        return parts


class _Lines(NamedTuple):
    """The encoded lines of one family in one deployment, row by row, kept for the next call."""

    rows: tuple[Row, ...]
    lines: tuple[bytes, ...]  # each row's lines


_NO_LINES = _Lines((), ())


def _update(prev: _Lines, rows: tuple[Row, ...], line: Callable[[Row], str]) -> _Lines:
    """The lines of ``rows``, encoding only the rows that differ from ``prev.rows``.

    Positional: rows come in a stable order from one poll to the next. With as many rows as
    before, each differing row is encoded again; with series added or removed, the common head
    and tail are kept and what lies between is encoded again."""
    old = prev.rows
    if len(rows) == len(old):
        changed = list(compress(count(), map(ne, rows, old)))  # compared in C: rows run to 100k
        if not changed:
            return _Lines(rows, prev.lines)
        lines = list(prev.lines)
        for i in changed:
            lines[i] = line(rows[i]).encode()
        return _Lines(rows, tuple(lines))
    common = min(len(rows), len(old))
    head = next(compress(count(), map(ne, rows, old)), common)
    # Clamped: with a row repeated, the common head and tail could overlap.
    tail = min(next(compress(count(), map(ne, reversed(rows), reversed(old))), common), common - head)
    between = [line(row).encode() for row in rows[head : len(rows) - tail]]
    return _Lines(rows, (*prev.lines[:head], *between, *prev.lines[len(old) - tail :]))


@dataclass(frozen=True)
class Encoded:
    """Families encoded for both formats: per family its text header, its OpenMetrics header
    and the lines of each of its rows (the same in both). Immutable, so request threads can join
    it while the poll loop encodes the next render."""

    families: tuple[tuple[bytes, bytes, tuple[tuple[bytes, ...], ...]], ...]  # (headers, lines per group)

    def text(self) -> bytes:
        return self._joined(openmetrics=False)

    def openmetrics(self) -> bytes:
        return self._joined(openmetrics=True)

    def _joined(self, openmetrics: bool) -> bytes:
        parts: list[bytes] = []
        for text_header, om_header, groups in self.families:
            parts.append(om_header if openmetrics else text_header)
            for lines in groups:
                parts += lines
        if openmetrics:
            parts.append(b"# EOF\n")
        return b"".join(parts)


class Encoder:
    """Encodes families, keeping each (family, deployment)'s lines for the next call so that only
    the rows that changed are encoded again. The output is byte for byte what a fresh Encoder
    produces for the same families (tests/unit/test_exposition.py)."""

    def __init__(self) -> None:
        self._lines: dict[tuple[str, str, tuple[str, ...], str], _Lines] = {}
        self._lock = threading.Lock()  # the kept lines belong to one call at a time

    def encode(self, families: Iterable[Family]) -> Encoded:
        with self._lock:
            formatted = _Formatted()
            kept: dict[tuple[str, str, tuple[str, ...], str], _Lines] = {}
            out = []
            for fam in families:
                groups = []
                for deployment, rows in fam.groups:
                    # Everything a row's lines depend on besides the row itself.
                    key = (fam.name, fam.type, fam.labels, deployment)
                    fmt = _RowFormat(fam, deployment, formatted)
                    # A copy: the next call compares with these rows, whatever the caller does to its list.
                    lines = kept[key] = _update(self._lines.get(key, _NO_LINES), tuple(rows), fmt.line)
                    groups.append(lines.lines)
                out.append((*_headers(fam), tuple(groups)))
            self._lines = kept  # series of families or deployments gone are forgotten
            return Encoded(tuple(out))


def encode_text(families: Iterable[Family]) -> bytes:
    return Encoder().encode(families).text()


def encode_openmetrics(families: Iterable[Family]) -> bytes:
    return Encoder().encode(families).openmetrics()


def wants_openmetrics(accept: str) -> bool:
    return "application/openmetrics-text" in accept
