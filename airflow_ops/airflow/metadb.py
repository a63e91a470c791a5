"""The metadata-database source: Airflow's state read with SQL, at a cost that grows with live work.

Nothing here scans or groups ``dag_run``/``task_instance`` history. Gauges come from the
indexes Airflow keeps for its own scheduler (``ti_state``, the partial queued/running dag_run
indexes, ``job_type_heart``). Counters and histograms come from terminal transitions that this
source watches happen, in memory:

* ``dag_run.id`` is a serial key: runs created since the last poll are ``id > watermark``;
* live runs (state index) and the runs already tracked (by id) are re-read every poll; a run we
  do not know that is live again was cleared (or was live at startup);
* the task instances of tracked runs are read through ``ti_dag_run`` (dag_id, run_id), each try
  is keyed by (task_id, map_index, try_number) and counted once when it ends (a terminal state,
  or up_for_retry for a failed try that will be retried);
* a run is forgotten once it and its task instances are terminal.

So each transition is counted exactly once however often we poll, deleting history (``airflow db
clean``) can only stop rows from being seen, never un-count them, and a DB outage only delays
counting. Counting starts when the source starts, like any Prometheus counter.

Per-DAG health (last state, last success, failing since, success ratio) is bootstrapped once per
DAG with LIMIT-N queries on the (dag_id, logical date) index and then kept up to date from the
same terminal transitions.

Blind spots, by design (each would need a history scan to close): a run we had already forgotten
that is cleared *and* finishes again between two polls is not seen again; a run whose id commits
below the watermark (concurrent inserts committing out of order) is only seen if it is still
live at the next poll; a try that fails and is already retried when we poll is not seen
(its retry is).

Unlabelled aggregates (live run counts, task groups, stale heartbeats, queue waits by pool/queue)
cover every DAG; the DAG filter applies to everything labelled with a dag_id.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from airflow_ops.airflow.schema import SchemaProfile, UnsupportedSchema, detect_profile
from airflow_ops.airflow.source import SourceError
from airflow_ops.config import DatabaseConfig, MetricsConfig
from airflow_ops.snapshot import (
    LIVE_RUN_STATES,
    LIVE_TI_STATES,
    TERMINAL_RUN_STATES,
    TERMINAL_TI_STATES,
    WAITING_TI_STATES,
    ComponentHeartbeat,
    DagInfo,
    DagRunHealth,
    DbState,
    HistogramAccumulator,
    RunHistory,
    TableStats,
    TaskInstanceGroup,
)

log = logging.getLogger(__name__)

APPLICATION_NAME = "airflow-ops"
# New runs taken per poll; a backlog (e.g. after an outage) is worked off over several polls so
# that no statement grows with it.
NEW_RUNS_PER_POLL = 2000
# Runs whose task instances are read in one statement.
TI_RUNS_PER_QUERY = 500
# DAGs bootstrapped per statement.
DAGS_PER_BOOTSTRAP_QUERY = 200
# A terminal run whose task instances never all finish (e.g. a TI stuck in up_for_retry after
# the run was marked failed) stops being tracked after this long.
TERMINAL_RUN_GRACE = 3600.0

_UTC = timezone.utc
# "No lower bound" for timestamptz comparisons (PostgreSQL accepts year 1).
_NO_BOUND = datetime(1, 1, 1, tzinfo=_UTC)
# TI states in which the current try has not started yet, so start_date is not its start.
_NOT_STARTED_TI_STATES = frozenset({None, *WAITING_TI_STATES})
# States that end a try: the terminal ones, and up_for_retry (the try failed, a new one follows).
_TRY_END_STATES = frozenset({*TERMINAL_TI_STATES, "up_for_retry"})
# Ends of a try that ran: only these feed the task duration histogram.
_RAN_TI_STATES = frozenset({"success", "failed", "up_for_retry"})

# ------------------------------------------------------------------ SQL
# Identifiers in {braces} come from the SchemaProfile only; values are always bind parameters.

_SESSION_SQL = "SET statement_timeout = %(statement_ms)s; SET lock_timeout = %(lock_ms)s"

_DAGS_SQL = """
SELECT d.dag_id, COALESCE(d.owners, ''), COALESCE(d.is_paused, FALSE), {stale}, {scheduled},
       d.next_dagrun_create_after
FROM dag d
"""

_MAX_RUN_ID_SQL = "SELECT COALESCE(max(id), 0) FROM dag_run"

_RUN_COLUMNS = "r.id, r.dag_id, r.run_id, r.state, r.run_type, r.start_date, r.end_date, r.{expected_start}"

# Two OR'ed equalities (not IN) so each can use its partial index idx_dag_run_{queued,running}_dags.
_LIVE_OR_TRACKED_RUNS_SQL = (
    "SELECT " + _RUN_COLUMNS + " FROM dag_run r"
    " WHERE r.state = 'queued' OR r.state = 'running' OR r.id = ANY(%(ids)s)"
)

_NEW_RUNS_SQL = (
    "SELECT " + _RUN_COLUMNS + " FROM dag_run r WHERE r.id > %(after_id)s ORDER BY r.id LIMIT %(limit)s"
)

_RUN_TIS_SQL = """
SELECT ti.dag_id, ti.run_id, ti.task_id, ti.map_index, ti.try_number, ti.state,
       ti.start_date, ti.end_date, ti.duration, ti.queued_dttm, ti.pool, COALESCE(ti.queue, '')
FROM unnest(%(dag_ids)s::text[], %(run_ids)s::text[]) AS k(dag_id, run_id)
JOIN task_instance ti ON ti.dag_id = k.dag_id AND ti.run_id = k.run_id
"""

_TASK_GROUPS_SQL = """
SELECT ti.state, ti.pool, COALESCE(ti.queue, ''), count(*), min({waiting_since})
FROM task_instance ti
WHERE ti.state = ANY(%(states)s)
GROUP BY 1, 2, 3
"""

_STALE_HEARTBEAT_SQL = """
SELECT count(*) FROM task_instance ti {heartbeat_join}
WHERE ti.state = 'running' AND {heartbeat} < %(cutoff)s
"""

# job_type_heart (job_type, latest_heartbeat): one short range per component type.
_HEARTBEATS_SQL = """
SELECT DISTINCT ON (j.job_type, j.hostname) j.job_type, COALESCE(j.hostname, ''), j.latest_heartbeat
FROM job j
WHERE j.job_type = ANY(%(job_types)s) AND j.latest_heartbeat > %(since)s
ORDER BY j.job_type, j.hostname, j.latest_heartbeat DESC
"""

# Catalog only: planner estimates and sizes of the tables in Airflow's schema.
_TABLES_SQL = """
SELECT c.relname,
       CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint ELSE COALESCE(s.n_live_tup, 0) END,
       COALESCE(pg_total_relation_size(c.oid), 0)
FROM pg_class c
LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid
WHERE c.relkind IN ('r', 'p')
  AND c.relnamespace = (SELECT t.relnamespace FROM pg_class t WHERE t.oid = to_regclass('dag_run'))
ORDER BY c.relname
"""

# Health bootstrap: per DAG, the newest N finished runs walking the (dag_id, <date>) unique index
# backwards. Runs without a logical date (Airflow 3 manual/asset runs) sit under NULL in that
# index and are taken newest-id-first.
_RECENT_FINISHED_SQL = """
SELECT k.dag_id, r.id, r.state, r.end_date
FROM unnest(%(dag_ids)s::text[]) AS k(dag_id)
CROSS JOIN LATERAL (
    SELECT r.id, r.state, r.end_date FROM dag_run r
    WHERE r.dag_id = k.dag_id AND r.{date} IS NOT NULL AND r.state IN ('success', 'failed')
    ORDER BY r.{date} DESC LIMIT %(n)s
) r
"""
_RECENT_FINISHED_UNDATED_SQL = """
SELECT k.dag_id, r.id, r.state, r.end_date
FROM unnest(%(dag_ids)s::text[]) AS k(dag_id)
CROSS JOIN LATERAL (
    SELECT r.id, r.state, r.end_date FROM dag_run r
    WHERE r.dag_id = k.dag_id AND r.{date} IS NULL AND r.state IN ('success', 'failed')
    ORDER BY r.id DESC LIMIT %(n)s
) r
"""
# Only for a DAG whose last N finished runs all failed: find its last success and the first
# failure after it. Both walk the same index and stop at the end of the failing streak.
_LAST_SUCCESS_SQL = """
SELECT r.{date}, r.end_date FROM dag_run r
WHERE r.dag_id = %(dag_id)s AND r.{date} IS NOT NULL AND r.state = 'success'
ORDER BY r.{date} DESC LIMIT 1
"""
_LAST_SUCCESS_UNDATED_SQL = """
SELECT NULL, max(r.end_date) FROM dag_run r
WHERE r.dag_id = %(dag_id)s AND r.{date} IS NULL AND r.state = 'success'
"""
_FIRST_FAILURE_AFTER_SQL = """
SELECT min(r.end_date) FROM dag_run r
WHERE r.dag_id = %(dag_id)s AND r.{date} > %(after_date)s AND r.state = 'failed'
  AND r.end_date > %(after_end)s
"""
_FIRST_FAILURE_AFTER_UNDATED_SQL = """
SELECT min(r.end_date) FROM dag_run r
WHERE r.dag_id = %(dag_id)s AND r.{date} IS NULL AND r.state = 'failed' AND r.end_date > %(after_end)s
"""


@dataclass(frozen=True)
class Queries:
    """Every statement the source runs, built once per detected schema profile."""

    dags: str
    live_or_tracked_runs: str
    new_runs: str
    run_tis: str
    task_groups: str
    stale_heartbeat: str
    heartbeats: str
    tables: str
    recent_finished: str
    recent_finished_undated: str | None
    last_success: str
    last_success_undated: str | None
    first_failure_after: str
    first_failure_after_undated: str | None

    @classmethod
    def for_profile(cls, p: SchemaProfile) -> Queries:
        run_cols = {"expected_start": p.run_expected_start_column}
        date = {"date": p.run_date_column}
        undated = p.run_date_nullable
        return cls(
            dags=_DAGS_SQL.format(stale=p.dag_stale_expr, scheduled=p.dag_scheduled_expr),
            live_or_tracked_runs=_LIVE_OR_TRACKED_RUNS_SQL.format(**run_cols),
            new_runs=_NEW_RUNS_SQL.format(**run_cols),
            run_tis=_RUN_TIS_SQL,
            task_groups=_TASK_GROUPS_SQL.format(waiting_since=p.waiting_since_expr()),
            stale_heartbeat=_STALE_HEARTBEAT_SQL.format(
                heartbeat_join=p.ti_heartbeat_join, heartbeat=p.ti_heartbeat_expr
            ),
            heartbeats=_HEARTBEATS_SQL,
            tables=_TABLES_SQL,
            recent_finished=_RECENT_FINISHED_SQL.format(**date),
            recent_finished_undated=_RECENT_FINISHED_UNDATED_SQL.format(**date) if undated else None,
            last_success=_LAST_SUCCESS_SQL.format(**date),
            last_success_undated=_LAST_SUCCESS_UNDATED_SQL.format(**date) if undated else None,
            first_failure_after=_FIRST_FAILURE_AFTER_SQL.format(**date),
            first_failure_after_undated=(
                _FIRST_FAILURE_AFTER_UNDATED_SQL.format(**date) if undated else None
            ),
        )


# ------------------------------------------------------------------ small helpers


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=_UTC)


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _span(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, end - start)


# ------------------------------------------------------------------ history (counters)


class _History:
    """The counters and histograms of RunHistory, mutable, owned by the source for its lifetime."""

    def __init__(self, metrics: MetricsConfig) -> None:
        self._duration_buckets = tuple(metrics.duration_buckets)
        self._wait_buckets = tuple(metrics.wait_buckets)
        self.runs_finished: dict[tuple[str, str], int] = {}
        self.run_duration: dict[tuple[str, str], HistogramAccumulator] = {}
        self.schedule_delay: dict[str, HistogramAccumulator] = {}
        self.tis_finished: dict[tuple[str, str | None, str], int] = {}
        self.task_duration: dict[tuple[str, str | None], HistogramAccumulator] = {}
        self.queue_wait: dict[tuple[str, str], HistogramAccumulator] = {}

    def _observe(self, hists: dict[Any, HistogramAccumulator], key: Any, value: float, wait: bool) -> None:
        acc = hists.get(key)
        if acc is None:
            acc = hists[key] = HistogramAccumulator(self._wait_buckets if wait else self._duration_buckets)
        acc.observe(value)

    def run_finished(self, dag_id: str, state: str, duration: float | None, delay: float | None) -> None:
        key = (dag_id, state)
        self.runs_finished[key] = self.runs_finished.get(key, 0) + 1
        if duration is not None:
            self._observe(self.run_duration, key, duration, wait=False)
        if delay is not None:
            self._observe(self.schedule_delay, dag_id, delay, wait=True)

    def ti_finished(self, dag_id: str, task_id: str | None, state: str, duration: float | None) -> None:
        key = (dag_id, task_id, state)
        self.tis_finished[key] = self.tis_finished.get(key, 0) + 1
        if duration is not None:
            self._observe(self.task_duration, (dag_id, task_id), duration, wait=False)

    def ti_waited(self, pool: str, queue: str, seconds: float) -> None:
        self._observe(self.queue_wait, (pool, queue), seconds, wait=True)

    def freeze(self) -> RunHistory:
        return RunHistory(
            dag_runs_finished=dict(self.runs_finished),
            dag_run_duration={k: v.freeze() for k, v in self.run_duration.items()},
            dag_run_schedule_delay={k: v.freeze() for k, v in self.schedule_delay.items()},
            task_instances_finished=dict(self.tis_finished),
            task_duration={k: v.freeze() for k, v in self.task_duration.items()},
            task_queue_wait={k: v.freeze() for k, v in self.queue_wait.items()},
        )


# ------------------------------------------------------------------ per-DAG health


@dataclass
class _DagHealth:
    """Health of one DAG: the window of its last N finished runs plus the streak markers."""

    window: deque[tuple[int, str, float | None]]  # (dag_run.id, state, end) oldest first
    last_state: str | None = None
    last_success_at: float | None = None
    failing_since: float | None = None

    def record(self, run_pk: int, state: str, end: float | None) -> None:
        """A run finished (or changed its terminal state): newest event wins."""
        entry = (run_pk, state, end)
        if entry in self.window:  # already known, e.g. from the bootstrap
            return
        for old in [e for e in self.window if e[0] == run_pk]:
            self.window.remove(old)  # a re-run replaces the run's earlier outcome
        self.window.append(entry)
        self.last_state = state
        if state == "success":
            self.last_success_at = end
            self.failing_since = None
        elif self.failing_since is None:
            self.failing_since = end

    def freeze(self, dag_id: str, oldest_running: float | None) -> DagRunHealth:
        ratio = None
        if self.window:
            ratio = sum(1 for _, state, _ in self.window if state == "success") / len(self.window)
        return DagRunHealth(
            dag_id=dag_id,
            last_run_state=self.last_state,
            last_success_at=self.last_success_at,
            failing_since=self.failing_since,
            success_ratio=ratio,
            oldest_running_started_at=oldest_running,
        )


def _health_from_recent(
    recent: Iterable[tuple[int, str, float | None]], size: int
) -> tuple[_DagHealth, bool]:
    """Build health from a DAG's newest finished runs (any order). The flag says whether the
    window holds no success, so the last success and streak start must be looked up."""
    newest_first = sorted(recent, key=lambda e: (e[2] is not None, e[2] or 0.0, e[0]), reverse=True)
    window = newest_first[:size]
    health = _DagHealth(window=deque(reversed(window), maxlen=size))
    if not window:
        return health, False
    health.last_state = window[0][1]
    success_ends = [end for _, state, end in window if state == "success" and end is not None]
    if not success_ends:
        return health, True
    health.last_success_at = max(success_ends)
    failures_after = [
        end
        for _, state, end in window
        if state == "failed" and end is not None and end > health.last_success_at
    ]
    health.failing_since = min(failures_after) if failures_after else None
    return health, False


# ------------------------------------------------------------------ run / TI tracking


@dataclass
class _Try:
    """One try of one task instance: whether its finish and its queue wait were accounted for."""

    try_number: int
    finished: bool = False
    waited: bool = False


@dataclass
class _Run:
    pk: int
    dag_id: str
    run_id: str
    state: str | None
    start: float | None = None
    # State of the terminal transition already counted in this life of the run (None: not yet).
    counted_state: str | None = None
    terminal_since: float | None = None
    # How we came to watch it, which decides what its TIs did before we did (see baseline_before).
    live_at_startup: float | None = None  # time of the first poll, for runs live then
    found_cleared: bool = False  # live again after we had forgotten it
    tis_read: bool = False
    has_live_tis: bool = True
    tries: dict[tuple[str, int], _Try] = field(default_factory=dict)

    def baseline_before(self) -> float | None:
        """At the first read of the run's TIs, tries that ended (or started) before this time
        happened before we watched and are not counted; None counts every try (a run created
        while we watch). After a clear, the tries that ran since the run restarted count."""
        if self.found_cleared:
            return self.start if self.start is not None else math.inf
        return self.live_at_startup


@dataclass(frozen=True)
class _RunRow:
    pk: int
    dag_id: str
    run_id: str
    state: str | None
    run_type: str
    start: float | None
    end: float | None
    expected_start: float | None

    @classmethod
    def from_db(cls, row: tuple[Any, ...]) -> _RunRow:
        pk, dag_id, run_id, state, run_type, start, end, expected = row
        return cls(pk, dag_id, run_id, state, run_type, _ts(start), _ts(end), _ts(expected))


@dataclass(frozen=True)
class _TiRow:
    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    try_number: int
    state: str | None
    start: float | None
    end: float | None
    duration: float | None
    queued: float | None
    pool: str
    queue: str

    @classmethod
    def from_db(cls, row: tuple[Any, ...]) -> _TiRow:
        dag_id, run_id, task_id, map_index, try_number, state, start, end, duration, queued, pool, queue = row
        return cls(
            dag_id,
            run_id,
            task_id,
            map_index,
            try_number or 0,
            state,
            _ts(start),
            _ts(end),
            duration,
            _ts(queued),
            pool,
            queue,
        )


class _Tracker:
    """Watches runs and their task tries turn terminal and feeds _History and the health book."""

    def __init__(self, metrics: MetricsConfig, history: _History, health: _HealthBook) -> None:
        self._wanted = metrics.dag_filter()
        self._task_labels = metrics.task_labels
        self._history = history
        self._health = health
        self.runs: dict[int, _Run] = {}
        self.watermark: int | None = None  # highest dag_run.id taken as "new"
        # False until the live runs at startup were taken in (they count, their past does not).
        self.primed = False

    # ---- runs

    def observe_known_or_live(self, rows: Iterable[_RunRow], now: float, startup: bool) -> None:
        """Rows of live runs and of the runs we track. A live run we do not track was live at
        startup or has been cleared since we forgot it; runs above the watermark are new and
        are taken by observe_new."""
        assert self.watermark is not None
        seen: set[int] = set()
        for row in rows:
            seen.add(row.pk)
            run = self.runs.get(row.pk)
            if run is None:
                if row.state in TERMINAL_RUN_STATES:
                    self._health.revise(
                        row.dag_id, row.pk, row.state, row.end if row.end is not None else now
                    )
                if row.pk > self.watermark or row.state not in LIVE_RUN_STATES:
                    continue
                run = self.runs[row.pk] = _Run(row.pk, row.dag_id, row.run_id, row.state)
                if startup:
                    run.live_at_startup = now
                else:
                    run.found_cleared = True
            self._apply_run_state(run, row, now)
        for pk in [pk for pk in self.runs if pk not in seen]:
            del self.runs[pk]  # deleted from the DB (db clean, DAG deleted): nothing more to see
        self.primed = True

    def observe_new(self, rows: Iterable[_RunRow], now: float) -> None:
        assert self.watermark is not None
        for row in rows:
            self.watermark = max(self.watermark, row.pk)
            if row.pk in self.runs or row.state not in (*LIVE_RUN_STATES, *TERMINAL_RUN_STATES):
                continue
            run = self.runs[row.pk] = _Run(row.pk, row.dag_id, row.run_id, row.state)
            self._apply_run_state(run, row, now)

    def _apply_run_state(self, run: _Run, row: _RunRow, now: float) -> None:
        run.state, run.start = row.state, row.start
        if row.state in LIVE_RUN_STATES:
            run.counted_state = None  # a new life (e.g. cleared): its end counts again
            run.terminal_since = None
            return
        if row.state not in TERMINAL_RUN_STATES or run.counted_state == row.state:
            return
        end = row.end if row.end is not None else now
        if run.counted_state is None:
            run.terminal_since = now
            if self._wanted(row.dag_id):
                delay = None
                if row.run_type == "scheduled":
                    delay = _span(row.expected_start, row.start)
                self._history.run_finished(row.dag_id, row.state, _span(row.start, row.end), delay)
        # A terminal -> other terminal change (e.g. marked success) is news for health only.
        run.counted_state = row.state
        if self._wanted(row.dag_id):
            self._health.record(row.dag_id, row.pk, row.state, end)

    # ---- task instances

    def observe_tis(self, rows: Iterable[_TiRow]) -> None:
        """TI rows of (some of) the tracked runs; each run's rows must all be in one call."""
        by_key = {(r.dag_id, r.run_id): r for r in self.runs.values()}
        live_runs: set[int] = set()
        touched: set[int] = set()
        for row in rows:
            run = by_key.get((row.dag_id, row.run_id))
            if run is None:
                continue
            touched.add(run.pk)
            if row.state in LIVE_TI_STATES:
                live_runs.add(run.pk)
            self._observe_try(run, row)
        for pk in touched:
            self.runs[pk].tis_read = True
            self.runs[pk].has_live_tis = pk in live_runs

    def mark_tis_read(self, pks: Iterable[int]) -> None:
        """Runs whose TIs were read and none came back (none created yet, or all deleted)."""
        for pk in pks:
            run = self.runs.get(pk)
            if run is not None:
                run.tis_read = True
                run.has_live_tis = False

    def _observe_try(self, run: _Run, row: _TiRow) -> None:
        key = (row.task_id, row.map_index)
        attempt = run.tries.get(key)
        if attempt is None or attempt.try_number != row.try_number:
            attempt = run.tries[key] = _Try(row.try_number)
            before = None if run.tis_read else run.baseline_before()
            if before is not None:
                self._baseline(attempt, row, before)
        if row.state in _TRY_END_STATES:
            if not attempt.finished:
                attempt.finished = True
                self._count_try(row)
        else:
            attempt.finished = False  # cleared without a new try: its next end counts
        if (
            not attempt.waited
            and row.state not in _NOT_STARTED_TI_STATES
            and row.start is not None
            and row.queued is not None
            and row.start >= row.queued
        ):
            attempt.waited = True
            self._history.ti_waited(row.pool, row.queue, row.start - row.queued)

    @staticmethod
    def _baseline(attempt: _Try, row: _TiRow, before: float) -> None:
        """Mark what this try did before we started watching its run as already accounted."""
        if row.state in _TRY_END_STATES and (row.end is None or row.end < before):
            attempt.finished = True
        if row.state not in _NOT_STARTED_TI_STATES and (row.start is None or row.start < before):
            attempt.waited = True

    def _count_try(self, row: _TiRow) -> None:
        if not self._wanted(row.dag_id):
            return
        task_id = row.task_id if self._task_labels else None
        duration = None
        if row.state in _RAN_TI_STATES:
            duration = row.duration if row.duration is not None else _span(row.start, row.end)
        self._history.ti_finished(row.dag_id, task_id, row.state or "", duration)

    # ---- forgetting

    def forget_finished(self, now: float) -> None:
        for pk in [pk for pk, run in self.runs.items() if self._done(run, now)]:
            del self.runs[pk]

    @staticmethod
    def _done(run: _Run, now: float) -> bool:
        if run.counted_state is None or run.state not in TERMINAL_RUN_STATES:
            return False
        if run.tis_read and not run.has_live_tis:
            return True
        return run.terminal_since is not None and now - run.terminal_since > TERMINAL_RUN_GRACE


class _HealthBook:
    """_DagHealth per DAG, bootstrapped from the DB the first time a DAG is seen."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.dags: dict[str, _DagHealth] = {}

    def record(self, dag_id: str, run_pk: int, state: str, end: float) -> None:
        health = self.dags.get(dag_id)
        if health is None:
            # Not bootstrapped yet (its dag row is not visible yet): start from this run.
            health = self.dags[dag_id] = _DagHealth(window=deque(maxlen=self.window))
        health.record(run_pk, state, end)

    def watched_runs(self) -> list[int]:
        """The last run of each failing DAG: if an operator marks it successful, the DAG recovers."""
        return [h.window[-1][0] for h in self.dags.values() if h.last_state == "failed" and h.window]

    def revise(self, dag_id: str, run_pk: int, state: str, end: float) -> None:
        """A watched last run seen again: take a changed terminal state."""
        health = self.dags.get(dag_id)
        if health and health.window and health.window[-1][0] == run_pk and health.window[-1][1] != state:
            health.record(run_pk, state, end)

    def retain(self, dag_ids: Iterable[str]) -> None:
        keep = set(dag_ids)
        for dag_id in [d for d in self.dags if d not in keep]:
            del self.dags[dag_id]


# ------------------------------------------------------------------ the source


class MetadataDbSource:
    """Reads Airflow's metadata database (PostgreSQL) into a DbState; see the module docstring."""

    name = "metadb"

    def __init__(self, deployment: str, db: DatabaseConfig, metrics: MetricsConfig) -> None:
        self.deployment = deployment
        self._db = db
        self._metrics = metrics
        self._wanted = metrics.dag_filter()
        self._conn: psycopg2.extensions.connection | None = None
        self._profile: SchemaProfile | None = None
        self._queries: Queries | None = None
        self._history = _History(metrics)
        self._health = _HealthBook(metrics.success_ratio_runs)
        self._tracker = _Tracker(metrics, self._history, self._health)
        self._tables: tuple[TableStats, ...] = ()
        self._tables_at: float | None = None
        self._secrets = _secrets_of(db.dsn.value)
        # DB time per statement name in the last poll (self-observability, benchmarks).
        self.last_query_seconds: dict[str, float] = {}

    # ---- Source protocol

    def poll(self, now: float) -> DbState:
        self.last_query_seconds = {}
        try:
            self._ensure_connected()
            return self._read(now)
        except SourceError:
            self._disconnect()
            raise
        except UnsupportedSchema as exc:
            self._disconnect()
            raise SourceError("query", f"unsupported metadata schema: {exc}") from None
        except psycopg2.Error as exc:
            self._disconnect()
            raise self._query_error(exc) from None

    def close(self) -> None:
        self._disconnect()

    @property
    def profile(self) -> SchemaProfile | None:
        """The schema profile detected on the current connection (None before the first connect)."""
        return self._profile

    # ---- connection

    def _ensure_connected(self) -> None:
        if self._conn is not None and not self._conn.closed:
            return
        try:
            conn = psycopg2.connect(
                self._db.dsn.value,
                connect_timeout=max(1, math.ceil(self._db.connect_timeout)),
                application_name=APPLICATION_NAME,
                keepalives=1,
                keepalives_idle=30,
                keepalives_interval=10,
                keepalives_count=3,
            )
        except psycopg2.Error as exc:
            raise self._connect_error(exc) from None
        try:
            conn.set_session(readonly=True, autocommit=True)
            with conn.cursor() as cur:
                cur.execute(
                    _SESSION_SQL,
                    {
                        "statement_ms": max(1, int(self._db.statement_timeout * 1000)),
                        "lock_ms": max(1, int(self._db.lock_timeout * 1000)),
                    },
                )
            profile = detect_profile(conn)
        except BaseException:
            conn.close()
            raise
        if self._profile is not None and profile.major != self._profile.major:
            log.warning("metadata schema changed from Airflow %d to %d", self._profile.major, profile.major)
        self._conn, self._profile = conn, profile
        self._queries = Queries.for_profile(profile)

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg2.Error):
                conn.close()

    def _fetch(self, name: str, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        assert self._conn is not None
        started = time.perf_counter()
        with self._conn.cursor() as cur:
            cur.execute(sql, params)
            rows = cur.fetchall()
        elapsed = time.perf_counter() - started
        self.last_query_seconds[name] = self.last_query_seconds.get(name, 0.0) + elapsed
        return rows

    # ---- one poll

    def _read(self, now: float) -> DbState:
        assert self._profile is not None and self._queries is not None
        dags = self._read_dags()
        self._bootstrap_health([d.dag_id for d in dags])
        oldest_running, runs_active = self._track_runs(now)
        return DbState(
            schema_major=self._profile.major,
            dags=dags,
            dag_health=self._dag_health(dags, oldest_running),
            runs_active=runs_active,
            task_groups=self._read_task_groups(),
            stale_heartbeat_task_instances=self._read_stale_heartbeats(now),
            heartbeats=self._read_heartbeats(now),
            tables=self._read_tables(now),
            history=self._history.freeze(),
        )

    def _read_dags(self) -> tuple[DagInfo, ...]:
        assert self._queries is not None
        dags = []
        for dag_id, owner, paused, stale, scheduled, create_after in self._fetch("dags", self._queries.dags):
            if self._wanted(dag_id):
                dags.append(
                    DagInfo(dag_id, owner, bool(paused), bool(stale), bool(scheduled), _ts(create_after))
                )
        return tuple(sorted(dags, key=lambda d: d.dag_id))

    def _track_runs(self, now: float) -> tuple[dict[str, float], dict[str, int]]:
        """Advance the run/TI tracker; returns (oldest running start per DAG, live run counts)."""
        assert self._queries is not None
        q, tracker = self._queries, self._tracker
        startup = not tracker.primed
        max_id = self._fetch("max_run_id", _MAX_RUN_ID_SQL)[0][0]
        if tracker.watermark is None or max_id < tracker.watermark:
            # First poll; or the newest runs were deleted or the DB restored: ids restart lower.
            tracker.watermark = max_id
        ids = sorted({*tracker.runs, *self._health.watched_runs()})
        rows = [
            _RunRow.from_db(r)
            for r in self._fetch("live_or_tracked_runs", q.live_or_tracked_runs, {"ids": ids})
        ]
        tracker.observe_known_or_live(rows, now, startup)
        if not startup:
            new = self._fetch(
                "new_runs", q.new_runs, {"after_id": tracker.watermark, "limit": NEW_RUNS_PER_POLL}
            )
            tracker.observe_new((_RunRow.from_db(r) for r in new), now)
        self._read_tis()
        tracker.forget_finished(now)
        return _live_summary(rows, self._wanted)

    def _read_tis(self) -> None:
        assert self._queries is not None
        # A queued run's TIs cannot move until it runs; its first read then still judges them.
        runs = [r for r in self._tracker.runs.values() if r.state != "queued"]
        for chunk in _chunks(runs, TI_RUNS_PER_QUERY):
            params = {"dag_ids": [r.dag_id for r in chunk], "run_ids": [r.run_id for r in chunk]}
            rows = [_TiRow.from_db(r) for r in self._fetch("run_tis", self._queries.run_tis, params)]
            self._tracker.observe_tis(rows)
            with_rows = {(r.dag_id, r.run_id) for r in rows}
            self._tracker.mark_tis_read(r.pk for r in chunk if (r.dag_id, r.run_id) not in with_rows)

    def _read_task_groups(self) -> tuple[TaskInstanceGroup, ...]:
        assert self._queries is not None
        rows = self._fetch("task_groups", self._queries.task_groups, {"states": list(LIVE_TI_STATES)})
        groups = [
            TaskInstanceGroup(state, pool, queue, count, _ts(since) if state in WAITING_TI_STATES else None)
            for state, pool, queue, count, since in rows
        ]
        return tuple(sorted(groups, key=lambda g: (g.state, g.pool, g.queue)))

    def _read_stale_heartbeats(self, now: float) -> int:
        assert self._queries is not None
        cutoff = _dt(now - self._metrics.stale_heartbeat_threshold)
        return int(self._fetch("stale_heartbeat", self._queries.stale_heartbeat, {"cutoff": cutoff})[0][0])

    def _read_heartbeats(self, now: float) -> tuple[ComponentHeartbeat, ...]:
        assert self._profile is not None and self._queries is not None
        component_of = self._profile.component_by_job_type
        params = {"job_types": list(component_of), "since": _dt(now - self._metrics.heartbeat_lookback)}
        beats = [
            ComponentHeartbeat(component_of[job_type], hostname, beat.timestamp())
            for job_type, hostname, beat in self._fetch("heartbeats", self._queries.heartbeats, params)
        ]
        return tuple(sorted(beats, key=lambda b: (b.component, b.hostname)))

    def _read_tables(self, now: float) -> tuple[TableStats, ...]:
        assert self._queries is not None
        if self._tables_at is None or now - self._tables_at >= self._db.table_stats_interval:
            rows = self._fetch("tables", self._queries.tables)
            self._tables = tuple(TableStats(name, int(rows_), int(size)) for name, rows_, size in rows)
            self._tables_at = now
        return self._tables

    def _dag_health(
        self, dags: Sequence[DagInfo], oldest_running: Mapping[str, float]
    ) -> tuple[DagRunHealth, ...]:
        self._health.retain(d.dag_id for d in dags)
        return tuple(
            self._health.dags[d.dag_id].freeze(d.dag_id, oldest_running.get(d.dag_id))
            for d in dags
            if d.dag_id in self._health.dags
        )

    # ---- health bootstrap

    def _bootstrap_health(self, dag_ids: Sequence[str]) -> None:
        assert self._queries is not None
        new = [d for d in dag_ids if d not in self._health.dags]
        n = self._health.window
        for chunk in _chunks(new, DAGS_PER_BOOTSTRAP_QUERY):
            recent: dict[str, list[tuple[int, str, float | None]]] = {d: [] for d in chunk}
            for name, sql in (
                ("health_recent", self._queries.recent_finished),
                ("health_recent", self._queries.recent_finished_undated),
            ):
                if sql is None:
                    continue
                for dag_id, pk, state, end in self._fetch(name, sql, {"dag_ids": list(chunk), "n": n}):
                    recent[dag_id].append((pk, state, _ts(end)))
            for dag_id, runs in recent.items():
                health, needs_streak = _health_from_recent(runs, n)
                if needs_streak:
                    self._lookup_streak(dag_id, health)
                self._health.dags[dag_id] = health

    def _lookup_streak(self, dag_id: str, health: _DagHealth) -> None:
        """For a DAG whose whole window failed: when it last succeeded and when it began failing."""
        assert self._queries is not None
        q, key = self._queries, {"dag_id": dag_id}
        dated = self._fetch("health_streak", q.last_success, key)  # [(logical date, end)] or []
        success_date = dated[0][0] if dated else _NO_BOUND
        ends = [end for _, end in dated if end is not None]
        if q.last_success_undated is not None:
            ends += [end for _, end in self._fetch("health_streak", q.last_success_undated, key) if end]
        success_end = max(ends) if ends else _NO_BOUND
        health.last_success_at = _ts(success_end) if ends else None
        params = {**key, "after_date": success_date, "after_end": success_end}
        firsts = self._fetch("health_streak", q.first_failure_after, params)
        if q.first_failure_after_undated is not None:
            firsts += self._fetch("health_streak", q.first_failure_after_undated, params)
        starts = [first for (first,) in firsts if first is not None]
        health.failing_since = _ts(min(starts)) if starts else None

    # ---- errors

    def _connect_error(self, exc: psycopg2.Error) -> SourceError:
        text = self._scrub(_first_line(exc))
        lowered = text.lower()
        if any(marker in lowered for marker in _AUTH_MARKERS):
            return SourceError("auth", f"metadata DB refused the login: {text}")
        return SourceError("connect", f"cannot connect to the metadata DB: {text}")

    def _query_error(self, exc: psycopg2.Error) -> SourceError:
        text = self._scrub(_first_line(exc))
        if isinstance(exc, psycopg2.errors.QueryCanceled | psycopg2.errors.LockNotAvailable):
            return SourceError("timeout", f"metadata DB statement timed out: {text}")
        if isinstance(exc, psycopg2.errors.InsufficientPrivilege):
            return SourceError("auth", f"metadata DB permission denied: {text}")
        if isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError):
            return SourceError("connect", f"lost the metadata DB connection: {text}")
        return SourceError("query", f"metadata DB query failed: {text}")

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


_AUTH_MARKERS = (
    "password authentication failed",
    "no password supplied",
    "authentication failed",
    "pg_hba.conf",
    "role ",
    "permission denied",
)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def _secrets_of(dsn: str) -> tuple[str, ...]:
    """The DSN and its password (as parsed and as written): never shown in an error message."""
    found = [dsn]
    with contextlib.suppress(psycopg2.Error):
        found.append(psycopg2.extensions.parse_dsn(dsn).get("password") or "")
    with contextlib.suppress(ValueError):
        found.append(urlsplit(dsn).password or "" if "://" in dsn else "")
    return tuple(sorted({s for s in found if s}, key=len, reverse=True))


def _live_summary(
    rows: Iterable[_RunRow], wanted: Callable[[str], bool]
) -> tuple[dict[str, float], dict[str, int]]:
    """Live run counts by state (all DAGs) and the oldest running start per (exported) DAG."""
    counts = dict.fromkeys(LIVE_RUN_STATES, 0)
    oldest: dict[str, float] = {}
    for row in rows:
        if row.state not in LIVE_RUN_STATES:
            continue
        counts[row.state] += 1
        if row.state == "running" and row.start is not None and wanted(row.dag_id):
            oldest[row.dag_id] = min(oldest.get(row.dag_id, row.start), row.start)
    return oldest, counts
