"""Our encoders must say exactly what prometheus_client's own encoders say for the same data."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.openmetrics import exposition as om_exposition
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.utils import floatToGoString
from test_metrics import full_snapshot

from airflow_ops.config import MetricsConfig
from airflow_ops.exposition import Family, encode_openmetrics, encode_text
from airflow_ops.metrics import SnapshotRenderer
from airflow_ops.snapshot import HistogramAccumulator

HOSTILE = 'a"b\\c\nd}{,=é'


def _reference(families: list[Family]) -> list[Metric]:
    """The same data as prometheus_client family objects."""
    out: list[Metric] = []
    for f in families:
        labels = ["deployment", *f.labels]
        if f.type == "gauge":
            m: Metric = GaugeMetricFamily(f.name, f.help, labels=labels)
        elif f.type == "counter":
            m = CounterMetricFamily(f.name, f.help, labels=labels)
        else:
            m = HistogramMetricFamily(f.name, f.help, labels=labels)
        for values, v in (((dep, *values), v) for dep, rows in f.groups for values, v in rows):
            if f.type == "histogram":
                buckets, running = [], 0
                for bound, n in zip((*v.bounds, float("inf")), v.counts, strict=True):  # type: ignore[union-attr]
                    running += n
                    buckets.append((floatToGoString(bound), running))
                m.add_metric(list(values), buckets, v.total)  # type: ignore[union-attr, call-arg]
            else:
                m.add_metric(list(values), v)  # type: ignore[arg-type]
        out.append(m)
    return out


def _encode_reference(families: list[Family], openmetrics: bool) -> str:
    registry = CollectorRegistry(auto_describe=False)

    class Collector:
        def collect(self) -> list[Metric]:
            return _reference(families)

    registry.register(Collector())  # type: ignore[arg-type]
    gen = om_exposition.generate_latest if openmetrics else generate_latest
    return gen(registry).decode()


def _parsed(text: str, openmetrics: bool) -> list[tuple[str, str, str, list[tuple[str, tuple, float]]]]:
    parse = parse_openmetrics if openmetrics else parse_text
    return [
        (
            f.name,
            f.type,
            f.documentation,
            sorted((s.name, tuple(sorted(s.labels.items())), s.value) for s in f.samples),
        )
        for f in parse(text)
    ]


def _families() -> list[Family]:
    families = SnapshotRenderer(MetricsConfig(task_labels=True)).families([full_snapshot(dags=5)])
    acc = HistogramAccumulator((0.5, 1e7))
    acc.observe(3e7)
    families.append(
        Family(
            "odd_gauge",
            "gauge",
            'help with \\ and\nnewline and "quotes"',
            ("x",),
            [(HOSTILE, [((HOSTILE,), 1e21)])],
        )
    )
    families.append(
        Family("odd_hist_seconds", "histogram", "h", ("x", "a"), [("p", [((HOSTILE, ""), acc.freeze())])])
    )
    families.append(Family("odd_total", "counter", "c", (), [("p", [((), 3.0)]), ("q", [((), 4.0)])]))
    return families


@pytest.mark.parametrize("openmetrics", [False, True], ids=["text", "openmetrics"])
def test_encoding_matches_prometheus_client(openmetrics: bool) -> None:
    families = _families()
    ours = (encode_openmetrics if openmetrics else encode_text)(families).decode()
    reference = _encode_reference(families, openmetrics)
    got, want = _parsed(ours, openmetrics), _parsed(reference, openmetrics)
    assert got == want
    assert len(got) == len(families)
    if openmetrics:
        assert ours.endswith("# EOF\n")


def test_text_encoding_is_byte_identical_for_plain_values() -> None:
    families = [Family("g", "gauge", "a gauge", ("b", "a"), [("p", [(("2", "1"), 0.5), (("x", "y"), 7.0)])])]
    assert encode_text(families).decode() == _encode_reference(families, False)
