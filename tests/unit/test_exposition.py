"""Our encoders must say exactly what prometheus_client's own encoders say for the same data, and
an encoder that keeps lines between calls exactly what a fresh one says."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.openmetrics import exposition as om_exposition
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.utils import floatToGoString
from test_metrics import full_snapshot

from airflow_ops.config import MetricsConfig
from airflow_ops.exposition import Encoded, Encoder, Family, Row, encode_openmetrics, encode_text
from airflow_ops.metrics import SnapshotRenderer
from airflow_ops.snapshot import Histogram, HistogramAccumulator, Snapshot

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


# ---------------------------------------------------------------- kept lines (Encoder)


def _later(snap: Snapshot) -> Snapshot:
    """``snap`` one poll later: every age moves, dag_0002's counters and histograms move,
    dag_0001 finishes its first failed run (7 series added to an early DAG: its run-duration
    histogram and a failed try; its failed-runs counter was already there at 0), dag_0004 loses its
    schedule-delay histogram (6 series removed) and dag_9999 appears (series added at the end)."""
    db = snap.db
    assert db is not None
    h, new = db.history, "dag_9999"
    hist = HistogramAccumulator((1, 10, 100), [0, 1, 0, 0], 7.0).freeze()
    runs = {**h.dag_runs_finished, ("dag_0002", "success"): 3, ("dag_0001", "failed"): 1, (new, "success"): 1}
    durations = {
        **h.dag_run_duration,
        ("dag_0002", "success"): HistogramAccumulator((1, 10, 100), [0, 2, 1, 1], 440.0).freeze(),
        ("dag_0001", "failed"): hist,
        (new, "success"): hist,
    }
    delays = {k: v for k, v in h.dag_run_schedule_delay.items() if k != "dag_0004"}
    tries = {**h.task_instances_finished, ("dag_0001", "extract", "failed"): 1}
    history = replace(
        h,
        dag_runs_finished=runs,
        dag_run_duration=durations,
        dag_run_schedule_delay=delays,
        task_instances_finished=tries,
    )
    dags = [*db.dags, replace(db.dags[0], dag_id=new)]
    health = [*db.dag_health, replace(db.dag_health[0], dag_id=new)]
    return replace(
        snap, taken_at=snap.taken_at + 30, db=replace(db, dags=dags, dag_health=health, history=history)
    )


def _dag_ids(families: list[Family]) -> set[str]:
    return {values[0] for f in families if "dag_id" in f.labels for _, rows in f.groups for values, _ in rows}


def _budget_for(snap: Snapshot, dags: int) -> int:
    """The series budget that has room for exactly the first ``dags`` DAGs of ``snap``."""
    text = encode_text(SnapshotRenderer(MetricsConfig()).families([snap])).decode()
    per_dag: dict[str, int] = {}
    every = 0
    for f in parse_text(text):
        for s in f.samples:
            every += 1
            if "dag_id" in s.labels:
                per_dag[s.labels["dag_id"]] = per_dag.get(s.labels["dag_id"], 0) + 1
    late = 2  # airflow_ops_series and airflow_ops_series_dropped_total, outside the budget
    return every - late - sum(per_dag.values()) + sum(per_dag[d] for d in sorted(per_dag)[:dags])


@pytest.mark.parametrize("openmetrics", [False, True], ids=["text", "openmetrics"])
def test_a_warm_encoding_equals_a_cold_one_after_a_poll(openmetrics: bool) -> None:
    def body(encoded: Encoded) -> bytes:
        return encoded.openmetrics() if openmetrics else encoded.text()

    before = full_snapshot(dags=12)
    after = _later(before)
    renderer = SnapshotRenderer(MetricsConfig(series_budget=_budget_for(before, 10)))
    encoder = Encoder()
    families_before = renderer.families([before])
    encoded_before = encoder.encode(families_before)
    body_before = body(encoded_before)
    families_after = renderer.families([after])
    assert _dag_ids(families_before) == {f"dag_{i:04d}" for i in range(10)}
    # One series more in all (+7, -6): the last DAG that fitted is dropped by the budget, and the
    # new one, smaller, fits in what that leaves.
    assert _dag_ids(families_after) == {f"dag_{i:04d}" for i in range(9)} | {"dag_9999"}

    warm = body(encoder.encode(families_after))

    assert warm == body(Encoder().encode(families_after))
    assert warm != body_before
    reference = _encode_reference(families_after, openmetrics)
    assert _parsed(warm.decode(), openmetrics) == _parsed(reference, openmetrics)
    # What an earlier call returned does not change: request threads may still be joining it.
    assert body(encoded_before) == body_before
    # Back and forth, and a second deployment coming and going.
    for snapshots in ([before], [before, after], [after], [after, before], [before]):
        families = SnapshotRenderer(MetricsConfig()).families(snapshots)
        assert body(encoder.encode(families)) == body(Encoder().encode(families))


def _random_rows(rnd: random.Random, n: int) -> list[Row]:
    return [_random_row(rnd, f"k{rnd.randrange(10**6):06d}") for _ in range(n)]


def _random_row(rnd: random.Random, key: str) -> Row:
    label = rnd.choice([key, key + "é", key + HOSTILE])  # non-ASCII: more bytes than characters
    if rnd.random() < 0.3:
        acc = HistogramAccumulator((0.5, 2.0, 1e9))
        for _ in range(rnd.randrange(4)):
            acc.observe(rnd.choice([0.1, 1.0, 3.0, 2e9]))
        return ((label, rnd.choice("ab")), acc.freeze())
    value = rnd.choice([0.0, 1.0, rnd.random(), 1e21, math.inf, -3.5, math.nan])
    return ((label, rnd.choice("ab")), value)


def _mutated(rnd: random.Random, rows: list[Row]) -> list[Row]:
    rows = list(rows)
    for _ in range(rnd.randrange(6)):
        op = rnd.choice(["change", "change", "insert", "delete", "append", "truncate", "repeat"])
        i = rnd.randrange(len(rows)) if rows else 0
        if op == "change" and rows:
            rows[i] = _random_row(rnd, rows[i][0][0][:7])
        elif op == "repeat" and rows:  # a head and a tail that overlap
            rows[i:i] = rows[i : i + rnd.randrange(1, 3)]
        elif op == "insert":
            rows[i:i] = _random_rows(rnd, rnd.randrange(1, 4))
        elif op == "delete":
            del rows[i : i + rnd.randrange(1, 4)]
        elif op == "append":
            rows += _random_rows(rnd, 2)
        else:
            del rows[i:]
    return rows


def test_warm_encodings_equal_cold_ones_through_random_changes() -> None:
    rnd = random.Random(2)
    groups = {d: _random_rows(rnd, 30) for d in ("prod", "stagé", HOSTILE)}
    encoder = Encoder()
    for _ in range(60):
        groups = {d: _mutated(rnd, rows) for d, rows in groups.items()}
        present = [(d, rows) for d, rows in groups.items() if rnd.random() < 0.8]  # deployments come and go
        hists = [(d, [r for r in rows if isinstance(r[1], Histogram)]) for d, rows in present]
        plain = [(d, [r for r in rows if not isinstance(r[1], Histogram)]) for d, rows in present]
        families = [
            Family("mixed_seconds", "histogram", "h", ("x", "y"), hists),
            Family("plain_total", "counter", "c", ("y", "x"), plain),
        ]
        warm = encoder.encode(families)
        cold = Encoder().encode(families)
        assert (warm.text(), warm.openmetrics()) == (cold.text(), cold.openmetrics())
