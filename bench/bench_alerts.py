"""Benchmark alerting against issue 3 §7.

(a) Evaluation and routing of 10,000 active series per cycle, steady state: the shipped rules
    (``alert_rules/*.yaml``) over the series they read, rendered by the real ``SnapshotRenderer``
    from a snapshot of ~2,000 DAGs (failing / overdue / oldest-running per DAG, two task failing
    streaks per DAG, heartbeats, pools, tables, import errors, sources). Each cycle is one poll
    interval later, so ages grow and every ``{{ $value }}`` annotation changes, as in production.
    Measured per cycle, with a real SQLite ops store: ``Evaluator.evaluate``, persisting
    ``changed()``, reading the silences, ``Dispatcher.update`` and ``Dispatcher.flush`` (groups
    come due every ``group_interval``, so some cycles flush and dedup every group). Two mixes:
    a realistic share over threshold (~4 % of series alerting) and every series alerting. Also
    the service's whole path, ``AlertEngine.evaluate(families, snapshots)`` + ``AlertEngine.tick``
    (flush + outbox round), fed the same families.
(b) A burst of N failing DAGs (default 500) grouped by ``dag_id``: evaluated, grouped, queued and
    delivered through the real ``slack_sdk`` (bot token, one channel) to the loopback Slack of
    ``tests/integration/slack_server.py`` with its per-channel rate limit on, by the real
    ``OutboxWorker`` ticking as the engine does. Counted: 429s (target zero), total delivery time,
    the most messages the channel saw within one second. At Slack's ~1 message/s per channel, 500
    groups take 8+ minutes; the variant ``group_by: [alertname, deployment]`` sends one message.

    python -m bench.bench_alerts                    # (a), then a burst of 500 (8+ minutes)
    python -m bench.bench_alerts --burst 60         # a quicker burst
    python -m bench.bench_alerts --burst 0          # (a) only
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from airflow_ops.alerts.dispatcher import Dispatcher, IntegrationInfo
from airflow_ops.alerts.engine import TICK_SECONDS, AlertEngine
from airflow_ops.alerts.evaluator import Evaluator
from airflow_ops.alerts.model import Alert, AlertState, Sample, SampleReader, samples_of
from airflow_ops.alerts.outbox import OutboxWorker
from airflow_ops.alerts.receivers import build_integrations
from airflow_ops.alerts.rules import Rule, load_rule_files
from airflow_ops.config import Config, MetricsConfig, ServiceConfig
from airflow_ops.config.alerting import DEFAULT_ROUTE, AlertingConfig
from airflow_ops.exposition import Family
from airflow_ops.metrics import SnapshotRenderer
from airflow_ops.service import freeze_heap
from airflow_ops.snapshot import (
    ApiState,
    ComponentHeartbeat,
    DagInfo,
    DagRunHealth,
    DbState,
    ImportErrorInfo,
    PoolSlots,
    Snapshot,
    SourceStatus,
    TableStats,
    TaskInstanceGroup,
)
from airflow_ops.store import OpsStore, open_store

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
from slack_server import SlackServer  # noqa: E402 - a test helper, found through the path above

RULE_FILES = [str(REPO / "alert_rules" / "*.yaml")]
TARGET_CYCLE_MS = 50.0
TARGET_429 = 0
SERIES = 10_000
DAGS = 2_000
DEPLOYMENT = "prod"
POLL_INTERVAL = ServiceConfig.model_fields["poll_interval"].default  # one cycle per poll
CHANNEL = "#alerts"
HOUR = 3600.0


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation: with 20 samples p95 is the 19th)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _fmt(ms: float) -> str:
    return f"{ms:,.1f}" if ms < 100 else f"{ms:,.0f}"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# ---------------------------------------------------------------------------------------------
# (a) the fleet: what the rules read, for ~2,000 DAGs


@dataclass(frozen=True)
class Fleet:
    """Fixed facts about every DAG and component; ``snapshot(t)`` turns them into ages at ``t``.

    Over threshold in the realistic mix: 5 % of DAGs failing for over an hour (another 5 % for
    less), 2 % overdue, 1 % running too long, the failing DAGs' tasks on a streak of 3+, one
    starving pool, one queue waiting too long, one table too large, five broken DAG files."""

    all_alerting: bool
    dags: int
    streak_pairs: int
    start: float
    rng_seed: int = 7
    dag_ids: list[str] = field(default_factory=list)

    @classmethod
    def make(cls, all_alerting: bool, start: float, series: int = SERIES, dags: int = DAGS) -> Fleet:
        # Task failing streaks fill the rest (two per DAG), so the rules read exactly `series`.
        probe = cls(all_alerting, dags, 0, start)
        return cls(all_alerting, dags, max(0, series - probe.series_count(probe.snapshot(start))), start)

    def __post_init__(self) -> None:
        self.dag_ids.extend(f"team{i % 40:02d}_dag_{i:05d}" for i in range(self.dags))

    def snapshot(self, t: float) -> Snapshot:
        rng = random.Random(self.rng_seed)
        every = self.all_alerting
        dags, health = [], []
        failing_share = len(self.dag_ids) // 20  # 5 %
        for i, dag_id in enumerate(self.dag_ids):
            r = rng.random()
            # Failing for over an hour (alert), failing for less (no alert), or healthy.
            if every or i < failing_share:
                failing_since: float | None = self.start - 2 * HOUR - r * HOUR
            elif i < 2 * failing_share:
                failing_since = t - r * 1800
            else:
                failing_since = None
            overdue = every or i % 50 == 1  # 2 %
            long_running = every or i % 100 == 2  # 1 %
            dags.append(
                DagInfo(
                    dag_id,
                    f"team{i % 40:02d}",
                    paused=False,
                    stale=False,
                    scheduled=True,
                    next_run_create_after=(self.start - HOUR) if overdue else t + 300 + r * 600,
                    tags=(f"team-{i % 40:02d}",),
                )
            )
            health.append(
                DagRunHealth(
                    dag_id,
                    "failed" if failing_since is not None else "success",
                    self.start - 3 * HOUR,
                    failing_since,
                    0.5 if failing_since is not None else 1.0,
                    oldest_running_started_at=(self.start - 8 * HOUR) if long_running else t - 60 - r * 600,
                )
            )
        failing = {h.dag_id for h in health if h.failing_since is not None and h.failing_since < self.start}
        streaks: dict[tuple[str, str], int] = {}
        for n in range(self.streak_pairs):
            dag_id = self.dag_ids[(n // 2) % len(self.dag_ids)]
            task_id = f"task_{n // (2 * len(self.dag_ids))}_{'ab'[n % 2]}"
            on_streak = every or (dag_id in failing and n % 2 == 0)  # one task of each failing DAG
            streaks[(dag_id, task_id)] = 3 + n % 3 if on_streak else n % 2
        stale = t - 400 if every else t - 5
        hosts = ("host-a", "host-b")
        heartbeats = [
            ComponentHeartbeat(c, h, stale)
            for c in ("scheduler", "triggerer", "dag_processor")
            for h in hosts
        ]
        pools = [PoolSlots(f"pool_{p}", 16, 0 if (every or p == 0) else 8, 8, 0, 12, 0) for p in range(8)]
        task_groups = [
            TaskInstanceGroup(
                "queued", f"pool_{p}", "default", 4, t - (2 * HOUR if (every or p == 0) else 60)
            )
            for p in range(8)
        ]
        tables = [
            TableStats(name, 10**6, 20 * 2**30 if (every or name == "task_instance") else 2**28)
            for name in ("dag_run", "task_instance", "log", "xcom", "job", "rendered_task_instance_fields")
        ]
        return Snapshot(
            deployment=DEPLOYMENT,
            taken_at=t,
            sources={n: SourceStatus(n, not every, 0.05) for n in ("metadb", "api")},
            db=DbState(
                schema_major=3,
                dags=dags,
                dag_health=health,
                task_groups=task_groups,
                stale_heartbeat_task_instances=3 if every else 0,
                heartbeats=heartbeats,
                newest_heartbeats={c: stale for c in ("scheduler", "triggerer", "dag_processor")},
                task_failing_streaks=streaks,
                tables=tables,
            ),
            api=ApiState(
                version="3.3.2",
                import_errors=[ImportErrorInfo(f"/dags/broken_{k}.py") for k in range(5)],
                pools=pools,
            ),
        )

    @staticmethod
    def series_count(snap: Snapshot) -> int:
        return len(samples_of(SnapshotRenderer(MetricsConfig()).families([snap]), _wanted(_rules())))


_RULES: list[Rule] = []


def _rules() -> list[Rule]:
    if not _RULES:
        _RULES.extend(load_rule_files(RULE_FILES))
    return _RULES


def _wanted(rules: Sequence[Rule]) -> set[str]:
    return {r.expr.metric for r in rules if r.expr.metric is not None}


def alerting_config(**route: Any) -> dict[str, Any]:
    return {
        "rule_files": RULE_FILES,
        "route": {"receiver": "oncall", **route},
        "receivers": [{"name": "oncall", "slack_configs": [{"webhook_url": "https://hooks.example/x"}]}],
    }


# ---------------------------------------------------------------------------------------------
# (a) component path: evaluator + dispatcher + store, stage by stage

STAGES = ("evaluate", "persist", "silences", "update", "flush")


@dataclass
class CycleResult:
    label: str
    series: int
    alerts: dict[str, int]
    groups: int
    cycles: list[dict[str, float]]  # ms per stage, plus "total"
    first_flush_ms: float  # the cycle that notifies every group for the first time
    first_flush_items: int

    def totals(self) -> list[float]:
        return [c["total"] for c in self.cycles]


@contextmanager
def _store(tmp: Path, name: str) -> Iterator[OpsStore]:
    with open_store(f"sqlite:///{tmp / name}") as store:
        yield store


def _times(start: float, cycles: int) -> tuple[list[float], list[float]]:
    """Poll times: warm-up, then steady state. The first poll makes every alert pending; two hours
    later every `for` has elapsed and the alerts fire; a group_wait later the first flush notifies
    every group. Steady polls follow, one poll interval apart (groups flush every group_interval
    and dedup finds nothing new)."""
    fired = start + 2 * HOUR
    warm = [start, fired, fired + DEFAULT_ROUTE.group_wait]  # type: ignore[operator]
    return warm, [warm[-1] + POLL_INTERVAL * (k + 1) for k in range(cycles)]


def _commit_ms(tmp: Path, repeats: int = 20) -> float:
    """Median time of the smallest write (one alert): the store's per-commit floor (fsync)."""
    with _store(tmp, "commit.db") as store:
        a = Alert({"alertname": "X"}, {}, AlertState.FIRING, 1.0, active_at=0.0)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            store.save_alerts([a], [])
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def _cycle_samples(fleet: Fleet, times: Sequence[float]) -> list[list[Sample]]:
    # Read as the service does: a SampleReader keeps a series' label dict while the series lives.
    renderer = SnapshotRenderer(MetricsConfig())
    reader = SampleReader(_wanted(_rules()))
    return [reader.read(renderer.families([fleet.snapshot(t)])) for t in times]


def measure_components(label: str, fleet: Fleet, cycles: int, tmp: Path) -> CycleResult:
    config = AlertingConfig.model_validate(alerting_config())
    infos = {"oncall": [IntegrationInfo("oncall/slack[0]", "oncall", True)]}
    start = fleet.start
    warm, steady = _times(start, cycles)
    _log(f"  {label}: building samples for {len(warm) + len(steady)} polls")
    all_samples = _cycle_samples(fleet, warm + steady)
    with _store(tmp, f"components-{label}.db") as store:
        evaluator = Evaluator(_rules())
        dispatcher = Dispatcher(config, infos, store, "http://airflow-ops.example:9112")

        def cycle(samples: list[Sample], now: float) -> dict[str, float]:
            ms: dict[str, float] = {}
            t0 = time.perf_counter()
            alerts = evaluator.evaluate(samples, now)
            t1 = time.perf_counter()
            upserts, removed = evaluator.changed()
            if upserts or removed:
                store.save_alerts(upserts, removed)
            t2 = time.perf_counter()
            silences = store.silence_list(now)
            t3 = time.perf_counter()
            dispatcher.update(alerts, now, silences=silences)
            t4 = time.perf_counter()
            due = (dispatcher.next_flush_at() or math.inf) <= now
            dispatcher.flush(now)
            t5 = time.perf_counter()
            for name, a, b in zip(STAGES, (t0, t1, t2, t3, t4), (t1, t2, t3, t4, t5), strict=True):
                ms[name] = (b - a) * 1000
            ms["total"] = (t5 - t0) * 1000
            ms["upserts"] = len(upserts)
            ms["flushed"] = float(due)
            return ms

        warm_ms = [cycle(samples, t) for samples, t in zip(all_samples, warm, strict=False)]
        first_items = store.outbox_pending_count()
        results = [cycle(s, t) for s, t in zip(all_samples[len(warm) :], steady, strict=True)]
        alerts = evaluator.state()
        counts = {s.value: sum(a.state is s for a in alerts) for s in AlertState}
        # The default route groups by alertname, deployment, dag_id.
        groups = len(
            {
                (a.labels["alertname"], a.labels.get("deployment"), a.labels.get("dag_id"))
                for a in alerts
                if a.state is AlertState.FIRING
            }
        )
    return CycleResult(
        label, len(all_samples[-1]), counts, groups, results, warm_ms[-1]["total"], first_items
    )


# ---------------------------------------------------------------------------------------------
# (a) the service's path: AlertEngine.evaluate + AlertEngine.tick


class _Sink:
    """A loopback webhook answering 200 to everything: the engine's outbox drains into it."""

    def __init__(self) -> None:
        self.count = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.count += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@dataclass
class EngineResult:
    label: str
    evaluate_ms: list[float]
    tick_ms: list[float]
    render_ms: list[float]  # SnapshotRenderer.families, for reference: the poll's own work

    def totals(self) -> list[float]:
        return [a + b for a, b in zip(self.evaluate_ms, self.tick_ms, strict=True)]


def measure_engine(label: str, fleet: Fleet, cycles: int, tmp: Path) -> EngineResult:
    sink = _Sink()
    now = [fleet.start]
    cfg = alerting_config()
    cfg["receivers"] = [{"name": "oncall", "webhook_configs": [{"url": sink.url}]}]
    # No API configured: notifications about failing DAGs are not enriched with log tails (that
    # is a REST call per failure episode, not per cycle).
    config = Config.model_validate(
        {
            "deployments": {DEPLOYMENT: {"database": {"dsn": "postgresql://bench@127.0.0.1:1/x"}}},
            "alerting": cfg,
        }
    )
    renderer = SnapshotRenderer(config.metrics)
    try:
        with _store(tmp, f"engine-{label}.db") as store:
            engine = AlertEngine(config, store, clock=lambda: now[0])

            def families_at(t: float) -> tuple[list[Family], list[Snapshot], float]:
                snap = fleet.snapshot(t)
                r0 = time.perf_counter()
                fams = renderer.families([snap])
                return fams, [snap], (time.perf_counter() - r0) * 1000

            warm, steady = _times(fleet.start, cycles)
            for t in warm:
                now[0] = t
                fams, snaps, _ = families_at(t)
                engine.evaluate(fams, snaps)
                engine.tick()
            # Drain the first flush's notifications into the sink, so steady ticks find none due.
            _log(f"  {label}: draining {store.outbox_pending_count():,} first notifications")
            while store.outbox_pending_count():
                engine.outbox.deliver_due()
            freeze_heap()  # as the service does after its first poll (see airflow_ops.service)
            evaluate_ms, tick_ms, render_ms = [], [], []
            for t in steady:
                now[0] = t
                fams, snaps, rms = families_at(now[0])
                t0 = time.perf_counter()
                engine.evaluate(fams, snaps)
                t1 = time.perf_counter()
                engine.tick()
                t2 = time.perf_counter()
                evaluate_ms.append((t1 - t0) * 1000)
                tick_ms.append((t2 - t1) * 1000)
                render_ms.append(rms)
            engine.stop()
    finally:
        sink.close()
    return EngineResult(label, evaluate_ms, tick_ms, render_ms)


# ---------------------------------------------------------------------------------------------
# (b) a burst of failing DAGs through the real slack_sdk


@dataclass
class BurstResult:
    label: str
    dags: int
    messages: int
    rate_limited: int
    seconds: float
    max_per_second: int
    first_after_s: float
    projected_s: float
    alerts_in_messages: int


def measure_burst(
    label: str, dags: int, group_by: list[str], tmp: Path, tick: float = TICK_SECONDS
) -> BurstResult:
    with SlackServer(rate_limit=True) as slack, _store(tmp, f"burst-{label}.db") as store:
        cfg = {
            "rule_files": RULE_FILES,
            "route": {"receiver": "oncall", "group_by": group_by, "group_wait": "0s"},
            "receivers": [
                {
                    "name": "oncall",
                    "slack_configs": [{"token": slack.token, "channel": CHANNEL, "api_url": slack.api_url}],
                }
            ],
        }
        config = AlertingConfig.model_validate(cfg)
        integrations = build_integrations(config.receivers[0])
        infos = {"oncall": [IntegrationInfo(i.key, i.receiver, i.send_resolved) for i in integrations]}
        min_interval = min(i.min_interval for i in integrations)
        # 500 DAGs fail at once (one bad deploy): the shipped AirflowDagFailing rule, past its `for`.
        t = time.time()
        samples = [
            Sample(
                "airflow_dag_failing_seconds", {"deployment": DEPLOYMENT, "dag_id": f"etl_{i:04d}"}, 2 * HOUR
            )
            for i in range(dags)
        ]
        evaluator = Evaluator([r for r in _rules() if r.name == "AirflowDagFailing"])
        evaluator.evaluate(samples, t - 600)
        alerts = evaluator.evaluate(samples, t)
        assert sum(a.state is AlertState.FIRING for a in alerts) == dags
        dispatcher = Dispatcher(config, infos, store)
        dispatcher.update(alerts, t)
        queued = dispatcher.flush(t)
        projected = max(0, len(queued) - 1) * min_interval
        _log(
            f"  {label}: {len(queued)} message(s) to {CHANNEL}; projected ≥ {projected:,.0f} s "
            f"({projected / 60:.1f} min) at one message per {min_interval:g} s"
        )
        worker = OutboxWorker(store, integrations)
        started = time.monotonic()
        first_at: float | None = None
        next_log = started + 30
        while store.outbox_pending_count():
            worker.deliver_due()
            if first_at is None and slack.messages():
                first_at = time.monotonic()
            if time.monotonic() >= next_log:
                _log(f"    {len(slack.messages())}/{len(queued)} delivered, {slack.rate_limited} x 429")
                next_log += 30
            time.sleep(tick)  # the engine's delivery tick
        seconds = time.monotonic() - started
        msgs = slack.messages(CHANNEL)
        shown = sum(m.all_text().count("DAG:") for m in msgs)
        return BurstResult(
            label,
            dags,
            len(msgs),
            slack.rate_limited,
            seconds,
            slack.max_per_second(CHANNEL),
            (first_at or time.monotonic()) - started,
            projected,
            shown,
        )


# ---------------------------------------------------------------------------------------------
# Report


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _header(*names: str) -> list[str]:
    return [_row(*names), "|---|" + "---:|" * (len(names) - 1)]


def _med_p95(ms: Sequence[float]) -> str:
    return f"median {_fmt(statistics.median(ms))} ms, p95 {_fmt(_pct(ms, 0.95))} ms"


def report(
    components: list[CycleResult],
    engines: list[EngineResult],
    bursts: list[BurstResult],
    burst_n: int,
    commit_ms: float,
) -> str:
    lines: list[str] = []
    add = lines.append
    add("## Machine")
    add(f"- CPUs: {os.cpu_count()}; load average before {_LOAD_BEFORE:.2f}, after {os.getloadavg()[0]:.2f}")
    add(f"- Python {sys.version.split()[0]}; SQLite ops store under {tempfile.gettempdir()}")
    add(f"- smallest store write (one alert, one commit): median {commit_ms:.2f} ms")
    add("")
    rules = f"{len(_rules())} shipped rules, a poll every {POLL_INTERVAL:g} s"
    add(f"## (a) Evaluation + routing per cycle, ms ({rules})")
    lines += _header(
        "mix", "series", "firing", "groups", "cycles", "median", "p95", "max", "first flush (items)"
    )
    for c in components:
        t = c.totals()
        add(
            _row(
                c.label,
                f"{c.series:,}",
                f"{c.alerts['firing']:,}",
                f"{c.groups:,}",
                len(t),
                _fmt(statistics.median(t)),
                _fmt(_pct(t, 0.95)),
                _fmt(max(t)),
                f"{_fmt(c.first_flush_ms)} ({c.first_flush_items:,})",
            )
        )
    add("")
    add("Stage medians (ms), alerts persisted per cycle, and the cycles in which groups were due:")
    lines += _header("mix", *STAGES, "persisted / cycle", "due cycles", "due cycles median")
    for c in components:
        due = [x["total"] for x in c.cycles if x["flushed"]]
        add(
            _row(
                c.label,
                *(_fmt(statistics.median(x[s] for x in c.cycles)) for s in STAGES),
                f"{statistics.median(x['upserts'] for x in c.cycles):,.0f}",
                len(due),
                _fmt(statistics.median(due)) if due else "-",
            )
        )
    add("")
    if engines:
        add("## (a) The service's path: AlertEngine.evaluate(families, snapshots) + AlertEngine.tick, ms")
        lines += _header("mix", "evaluate", "tick", "total", "(SnapshotRenderer.families, for reference)")
        for e in engines:
            add(
                _row(
                    e.label,
                    _med_p95(e.evaluate_ms),
                    _med_p95(e.tick_ms),
                    _med_p95(e.totals()),
                    _med_p95(e.render_ms),
                )
            )
        add("")
    if bursts:
        add(f"## (b) {burst_n} failing DAGs to one Slack channel (bot token, real slack_sdk, rate limit on)")
        lines += _header(
            "grouping",
            "messages",
            "429s",
            "delivery time",
            "projected",
            "first message",
            "max/s",
            "alerts named",
        )
        for b in bursts:
            add(
                _row(
                    b.label,
                    f"{b.messages:,}",
                    b.rate_limited,
                    f"{b.seconds:,.1f} s",
                    f"≥ {b.projected_s:,.0f} s",
                    f"{b.first_after_s:.2f} s",
                    b.max_per_second,
                    f"{b.alerts_in_messages:,}",
                )
            )
        add("")
    add("## Targets")
    add("| target | measured | verdict |")
    add("|---|---|---|")
    for c in components:
        t = c.totals()
        target = f"evaluation + routing of {c.series:,} series ≤ {TARGET_CYCLE_MS:.0f} ms, p95 ({c.label})"
        add(_row(target, _med_p95(t), _verdict(_pct(t, 0.95) <= TARGET_CYCLE_MS)))
    for e in engines:
        t = e.totals()
        target = f"the whole AlertEngine path ≤ {TARGET_CYCLE_MS:.0f} ms, p95 ({e.label})"
        add(_row(target, _med_p95(t), _verdict(_pct(t, 0.95) <= TARGET_CYCLE_MS)))
    for b in bursts:
        ok = b.rate_limited == TARGET_429 and b.max_per_second <= 1 and b.messages >= 1
        measured = f"{b.rate_limited} x 429, max {b.max_per_second}/s"
        measured += f", {b.messages:,} message(s) in {b.seconds:,.0f} s"
        add(_row(f"burst of {b.dags} ({b.label}) within Slack's per-channel rate", measured, _verdict(ok)))
    return "\n".join(lines)


_LOAD_BEFORE = os.getloadavg()[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_alerts", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--cycles", type=int, default=30, help="steady-state cycles per mix (≥ 20)")
    parser.add_argument(
        "--burst",
        type=int,
        default=500,
        help="failing DAGs in the Slack burst (0 skips it; 500 takes 8+ min)",
    )
    parser.add_argument("--no-engine", dest="engine", action="store_false", help="skip the AlertEngine path")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args(argv)
    if args.cycles < 20:
        parser.error("--cycles must be at least 20 (p95 needs them)")

    components: list[CycleResult] = []
    engines: list[EngineResult] = []
    bursts: list[BurstResult] = []
    start = time.time() - 3 * HOUR  # steady polls end near now: times look like production
    with tempfile.TemporaryDirectory(prefix="bench-alerts-") as d:
        tmp = Path(d)
        commit_ms = _commit_ms(tmp)
        for label, every in (("realistic", False), ("every series alerting", True)):
            fleet = Fleet.make(every, start)
            _log(f"(a) {label}: {DAGS:,} DAGs, {fleet.streak_pairs:,} task streak series")
            components.append(measure_components(label, fleet, args.cycles, tmp))
            if args.engine:
                engines.append(measure_engine(label, fleet, args.cycles, tmp))
        if args.burst:
            for label, group_by in (
                ("group_by [alertname, deployment, dag_id]", ["alertname", "deployment", "dag_id"]),
                ("group_by [alertname, deployment]", ["alertname", "deployment"]),
            ):
                _log(f"(b) burst of {args.burst}, {label}")
                bursts.append(measure_burst(label, args.burst, group_by, tmp))
    print(report(components, engines, bursts, args.burst, commit_ms))
    if args.json:
        raw: dict[str, Callable[[], Any]] = {
            "components": lambda: [vars(c) for c in components],
            "engines": lambda: [vars(e) for e in engines],
            "bursts": lambda: [vars(b) for b in bursts],
        }
        args.json.write_text(json.dumps({k: f() for k, f in raw.items()}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
