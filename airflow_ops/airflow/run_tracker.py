"""Incremental run/task-instance counting and per-DAG health, kept in memory across polls.

Counters and histograms come from terminal transitions that the metadata-database source watches
happen, in memory:

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

Nothing here touches the database: ``MetadataDbSource`` reads the rows and feeds them in.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from airflow_ops.config import MetricsConfig
from airflow_ops.snapshot import (
    LIVE_RUN_STATES,
    LIVE_TI_STATES,
    TERMINAL_RUN_STATES,
    TERMINAL_TI_STATES,
    WAITING_TI_STATES,
    DagRunHealth,
    HistogramAccumulator,
    RunHistory,
)

# A terminal run whose task instances never all finish (e.g. a TI stuck in up_for_retry after
# the run was marked failed) stops being tracked after this long.
TERMINAL_RUN_GRACE = 3600.0

_UTC = timezone.utc
# TI states in which the current try has not started yet, so start_date is not its start.
_NOT_STARTED_TI_STATES = frozenset({None, *WAITING_TI_STATES})
# States that end a try: the terminal ones, and up_for_retry (the try failed, a new one follows).
_TRY_END_STATES = frozenset({*TERMINAL_TI_STATES, "up_for_retry"})
# Ends of a try that ran: only these feed the task duration histogram.
_RAN_TI_STATES = frozenset({"success", "failed", "up_for_retry"})

# ------------------------------------------------------------------ small helpers


def to_epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def from_epoch(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=_UTC)


def _span(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, end - start)


# ------------------------------------------------------------------ history (counters)


class RunHistoryBook:
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
class DagHealth:
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

    def key(self) -> tuple[tuple[int, str], ...]:
        """The window's runs and outcomes: what facts derived from the window depend on."""
        return tuple((pk, state) for pk, state, _ in self.window)

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


def health_from_recent(recent: Iterable[tuple[int, str, float | None]], size: int) -> tuple[DagHealth, bool]:
    """Build health from a DAG's newest finished runs (any order). The flag says whether the
    window holds no success, so the last success and streak start must be looked up."""
    newest_first = sorted(recent, key=lambda e: (e[2] is not None, e[2] or 0.0, e[0]), reverse=True)
    window = newest_first[:size]
    health = DagHealth(window=deque(reversed(window), maxlen=size))
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


def failing_streaks(
    window: Iterable[tuple[int, str, float | None]], failed_tasks: Mapping[int, Iterable[str]]
) -> dict[str, int]:
    """Per task, the number of consecutive newest runs of the window (oldest first, as
    DagHealth keeps it) in which the task failed. A run the task did not fail in ends its streak."""
    streaks: dict[str, int] = {}
    active: set[str] | None = None  # tasks failing in every run walked so far (newest first)
    for run_pk, _state, _end in reversed(list(window)):
        failed = set(failed_tasks.get(run_pk, ()))
        active = failed if active is None else active & failed
        if not active:
            break
        for task_id in active:
            streaks[task_id] = streaks.get(task_id, 0) + 1
    return streaks


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
class RunRow:
    pk: int
    dag_id: str
    run_id: str
    state: str | None
    run_type: str
    start: float | None
    end: float | None
    expected_start: float | None

    @classmethod
    def from_db(cls, row: tuple[Any, ...]) -> RunRow:
        pk, dag_id, run_id, state, run_type, start, end, expected = row
        return cls(pk, dag_id, run_id, state, run_type, to_epoch(start), to_epoch(end), to_epoch(expected))


@dataclass(frozen=True)
class TiRow:
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
    def from_db(cls, row: tuple[Any, ...]) -> TiRow:
        dag_id, run_id, task_id, map_index, try_number, state, start, end, duration, queued, pool, queue = row
        return cls(
            dag_id,
            run_id,
            task_id,
            map_index,
            try_number or 0,
            state,
            to_epoch(start),
            to_epoch(end),
            duration,
            to_epoch(queued),
            pool,
            queue,
        )


class RunTracker:
    """Watches runs and their task tries turn terminal and feeds RunHistoryBook and the health book."""

    def __init__(self, metrics: MetricsConfig, history: RunHistoryBook, health: HealthBook) -> None:
        self._wanted = metrics.dag_filter()
        self._task_labels = metrics.task_labels
        self._history = history
        self._health = health
        self.runs: dict[int, _Run] = {}
        self.watermark: int | None = None  # highest dag_run.id taken as "new"
        # False until the live runs at startup were taken in (they count, their past does not).
        self.primed = False

    # ---- runs

    def observe_known_or_live(self, rows: Iterable[RunRow], now: float, startup: bool) -> None:
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

    def observe_new(self, rows: Iterable[RunRow], now: float) -> None:
        assert self.watermark is not None
        for row in rows:
            self.watermark = max(self.watermark, row.pk)
            if row.pk in self.runs or row.state not in (*LIVE_RUN_STATES, *TERMINAL_RUN_STATES):
                continue
            run = self.runs[row.pk] = _Run(row.pk, row.dag_id, row.run_id, row.state)
            self._apply_run_state(run, row, now)

    def _apply_run_state(self, run: _Run, row: RunRow, now: float) -> None:
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

    def observe_tis(self, rows: Iterable[TiRow]) -> None:
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

    def _observe_try(self, run: _Run, row: TiRow) -> None:
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
    def _baseline(attempt: _Try, row: TiRow, before: float) -> None:
        """Mark what this try did before we started watching its run as already accounted."""
        if row.state in _TRY_END_STATES and (row.end is None or row.end < before):
            attempt.finished = True
        if row.state not in _NOT_STARTED_TI_STATES and (row.start is None or row.start < before):
            attempt.waited = True

    def _count_try(self, row: TiRow) -> None:
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


class HealthBook:
    """DagHealth per DAG, bootstrapped from the DB the first time a DAG is seen."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.dags: dict[str, DagHealth] = {}

    def record(self, dag_id: str, run_pk: int, state: str, end: float) -> None:
        health = self.dags.get(dag_id)
        if health is None:
            # Not bootstrapped yet (its dag row is not visible yet): start from this run.
            health = self.dags[dag_id] = DagHealth(window=deque(maxlen=self.window))
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
