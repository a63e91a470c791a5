"""The metric catalogue (a contract: names, types, help, labels) and the collector that renders
snapshots into it.

Every sample is produced by the producer registered for its catalogue entry, so a metric cannot
be exported without being documented, and the README table is generated from CATALOGUE.
Every series carries ``deployment`` (added here, never listed per metric).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import compress
from operator import itemgetter
from typing import Any, Literal

from .airflow.source import POLL_ERROR_REASONS
from .config import MetricsConfig
from .config.maintenance import Task
from .exposition import Family
from .snapshot import LIVE_TI_STATES, WAITING_TI_STATES, Histogram, MaintenanceTaskState, Snapshot

MetricType = Literal["gauge", "counter", "histogram"]


@dataclass(frozen=True)
class MetricSpec:
    name: str
    type: MetricType
    help: str
    labels: tuple[str, ...] = ()
    source: str = "metadb"  # which source feeds it: metadb | api | broker | self
    # Series of this metric are per DAG; the series budget may drop them, whole DAGs at a time.
    per_dag: bool = False


def _spec(name: str, type_: MetricType, help_: str, labels: str = "", source: str = "metadb") -> MetricSpec:
    names = tuple(label for label in labels.split(",") if label)
    return MetricSpec(name, type_, help_, names, source, per_dag="dag_id" in names)


CATALOGUE: tuple[MetricSpec, ...] = (
    # --- the companion itself
    _spec("airflow_ops_up", "gauge", "1 if the last poll of the source succeeded, else 0.", "source", "self"),
    _spec("airflow_ops_poll_duration_seconds", "histogram", "Time taken to poll a source.", "source", "self"),
    _spec(
        "airflow_ops_poll_errors_total",
        "counter",
        "Failed polls of a source, by reason (connect, auth, timeout, query, http, protocol).",
        "source,reason",
        "self",
    ),
    _spec(
        "airflow_ops_last_poll_timestamp_seconds",
        "gauge",
        "When the last poll of the deployment finished (Unix time).",
        source="self",
    ),
    _spec(
        "airflow_ops_series_dropped_total",
        "counter",
        "Per-DAG series left out of a render because the series budget was exceeded.",
        source="self",
    ),
    _spec("airflow_ops_series", "gauge", "Series in the last render of the deployment.", source="self"),
    _spec(
        "airflow_ops_alerting_leader",
        "gauge",
        "1 if this replica holds the ops store's lock and evaluates and notifies, else 0.",
        source="alerts",
    ),
    _spec(
        "airflow_ops_alerts",
        "gauge",
        "Alerts of the deployment's rules by state (pending, firing, resolved and not yet forgotten).",
        "state",
        "alerts",
    ),
    _spec(
        "airflow_ops_notifications_total",
        "counter",
        "Notification attempts by receiver and outcome (delivered, failed, rate_limited, skipped).",
        "receiver,outcome",
        "alerts",
    ),
    _spec(
        "airflow_ops_notification_latency_seconds",
        "histogram",
        "Time from a notification being queued to its delivery.",
        "receiver",
        "alerts",
    ),
    # --- maintenance (audit records in the ops store, the backup directory, the log volume)
    _spec(
        "airflow_ops_maintenance_last_success_timestamp_seconds",
        "gauge",
        "When the newest successful run of a maintenance task finished (Unix time).",
        "task",
        "maintenance",
    ),
    _spec(
        "airflow_ops_maintenance_last_run_status",
        "gauge",
        "1 if the newest run of a maintenance task succeeded (or is running), 0 if it failed.",
        "task",
        "maintenance",
    ),
    _spec(
        "airflow_ops_maintenance_overdue_seconds",
        "gauge",
        "For scheduled tasks: seconds since the first scheduled time after the last success (0 while"
        " that time is ahead); missed or failed runs keep it growing until a run succeeds.",
        "task",
        "maintenance",
    ),
    _spec(
        "airflow_ops_maintenance_rows_deleted_total",
        "counter",
        "Metadata-DB rows deleted by maintenance runs.",
        "task",
        "maintenance",
    ),
    _spec(
        "airflow_ops_maintenance_files_deleted_total",
        "counter",
        "Files deleted by maintenance runs (logs, old backups).",
        "task",
        "maintenance",
    ),
    _spec(
        "airflow_ops_maintenance_bytes_freed_total",
        "counter",
        "Bytes freed by maintenance runs (logs, old backups).",
        "task",
        "maintenance",
    ),
    _spec(
        "airflow_ops_backup_age_seconds",
        "gauge",
        "Age of the newest complete backup (+Inf if there is none).",
        source="maintenance",
    ),
    _spec(
        "airflow_ops_backup_size_bytes", "gauge", "Size of the newest complete backup.", source="maintenance"
    ),
    _spec(
        "airflow_ops_backup_verified_age_seconds",
        "gauge",
        "Age of the newest backup that passed verification (+Inf if there is none).",
        source="maintenance",
    ),
    _spec(
        "airflow_ops_log_volume_free_bytes",
        "gauge",
        "Free space on the volume of Airflow's log folder.",
        source="maintenance",
    ),
    _spec(
        "airflow_ops_log_volume_free_ratio",
        "gauge",
        "Free share (0-1) of the volume of Airflow's log folder.",
        source="maintenance",
    ),
    _spec("airflow_info", "gauge", "Airflow version reported by the REST API (always 1).", "version", "api"),
    # --- health
    _spec(
        "airflow_component_heartbeat_age_seconds",
        "gauge",
        "Seconds since a component's newest heartbeat on a host whose job is still marked running"
        " (hostname empty when read from the API).",
        "component,hostname",
    ),
    _spec(
        "airflow_component_newest_heartbeat_age_seconds",
        "gauge",
        "Seconds since any host of the component last heartbeat; always exported for the scheduler and"
        " for every component the deployment has run (+Inf if never), so a vanished component reads old.",
        "component",
    ),
    _spec(
        "airflow_component_healthy",
        "gauge",
        "1 if Airflow's health endpoint reports the component healthy, else 0.",
        "component",
        "api",
    ),
    _spec("airflow_import_errors", "gauge", "DAG files that currently fail to import.", source="api"),
    _spec(
        "airflow_import_error_info", "gauge", "1 for each DAG file that fails to import.", "filename", "api"
    ),
    # --- DAGs
    _spec("airflow_dags", "gauge", "DAGs by state (active, paused, stale).", "state"),
    _spec("airflow_dag_paused", "gauge", "1 if the DAG is paused, else 0.", "dag_id,owner"),
    # --- DAG runs
    _spec(
        "airflow_dag_runs_finished_total",
        "counter",
        "DAG runs that reached a terminal state, each counted once, since airflow-ops started.",
        "dag_id,state",
    ),
    _spec(
        "airflow_dag_run_duration_seconds",
        "histogram",
        "Duration of finished DAG runs (end_date - start_date).",
        "dag_id,state",
    ),
    _spec(
        "airflow_dag_run_schedule_delay_seconds",
        "histogram",
        "Delay between when a scheduled run was due and when it started.",
        "dag_id",
    ),
    _spec(
        "airflow_dag_success_ratio",
        "gauge",
        "Share of successful runs among the DAG's last N finished runs (N = metrics.success_ratio_runs).",
        "dag_id",
    ),
    _spec(
        "airflow_dag_last_run_state",
        "gauge",
        "1 for the state of the DAG's last finished run, 0 for the other terminal state.",
        "dag_id,state",
    ),
    _spec(
        "airflow_dag_last_success_timestamp_seconds",
        "gauge",
        "End of the DAG's last successful run (Unix time).",
        "dag_id",
    ),
    _spec(
        "airflow_dag_failing_seconds",
        "gauge",
        "Seconds since the first failed run after the DAG's last success; 0 when healthy.",
        "dag_id",
    ),
    _spec(
        "airflow_dag_run_overdue_seconds",
        "gauge",
        "Seconds a scheduled, unpaused DAG's next run is past due without having been created.",
        "dag_id",
    ),
    _spec("airflow_dag_runs_active", "gauge", "DAG runs queued or running.", "state"),
    _spec(
        "airflow_dag_run_oldest_running_age_seconds",
        "gauge",
        "Age of the DAG's oldest running run.",
        "dag_id",
    ),
    # --- tasks and queues
    _spec(
        "airflow_task_instances",
        "gauge",
        "Live task instances by state, pool and queue.",
        "state,pool,queue",
    ),
    _spec(
        "airflow_task_queued_oldest_age_seconds",
        "gauge",
        "Seconds the oldest task instance waiting for a slot (scheduled or queued) has waited.",
        "pool,queue",
    ),
    _spec(
        "airflow_task_queue_wait_seconds",
        "histogram",
        "Time task tries waited between queued and started.",
        "pool,queue",
    ),
    _spec(
        "airflow_task_instance_duration_seconds",
        "histogram",
        "Duration of finished task tries (task_id only with metrics.task_labels).",
        "dag_id",
    ),
    _spec(
        "airflow_task_instances_finished_total",
        "counter",
        "Task tries that ended, each counted once; state up_for_retry is a failed try that will be retried"
        " (task_id with metrics.task_labels).",
        "dag_id,state",
    ),
    _spec(
        "airflow_task_failing_streak",
        "gauge",
        "Consecutive recent runs (up to metrics.success_ratio_runs) in which the task failed; only tasks"
        " of failing DAGs that failed in the last run are exported.",
        "dag_id,task_id",
    ),
    _spec(
        "airflow_task_instances_stale_heartbeat",
        "gauge",
        "Running task instances whose heartbeat is older than metrics.stale_heartbeat_threshold.",
    ),
    _spec(
        "airflow_pool_slots",
        "gauge",
        "Pool slots by state (total, open, running, queued, scheduled, deferred); total -1 = unlimited.",
        "pool,state",
        "api",
    ),
    _spec(
        "airflow_pool_starving_tasks",
        "gauge",
        "Scheduled task instances that cannot run for lack of open pool slots.",
        "pool",
        "api",
    ),
    _spec(
        "airflow_executor_queue_depth",
        "gauge",
        "Messages waiting in a Celery broker queue.",
        "queue",
        "broker",
    ),
    # --- metadata database
    _spec(
        "airflow_metadb_table_rows_estimate",
        "gauge",
        "Planner estimate of rows in a metadata-DB table.",
        "table",
    ),
    _spec("airflow_metadb_table_bytes", "gauge", "Total size of a metadata-DB table.", "table"),
)

SPECS: dict[str, MetricSpec] = {s.name: s for s in CATALOGUE}

# Task-level series that gain a task_id label when metrics.task_labels is on.
TASK_LABELLED = ("airflow_task_instance_duration_seconds", "airflow_task_instances_finished_total")

Sample = tuple[tuple[str, ...], "float | Histogram"]
TERMINAL_RUN = ("success", "failed")  # the states a finished DAG run ends in
Producer = Callable[[Snapshot, "RenderContext"], Iterable[Sample]]


@dataclass
class RenderContext:
    metrics: MetricsConfig
    series: int = 0
    dropped: int = 0


def labels_of(spec: MetricSpec, config: MetricsConfig) -> tuple[str, ...]:
    """The labels a metric carries with this config, besides deployment (which every series has)."""
    if config.task_labels and spec.name in TASK_LABELLED:
        return ("dag_id", "task_id", *spec.labels[1:])
    return spec.labels


# ---------------------------------------------------------------- producers

_PRODUCERS: dict[str, Producer] = {}


def _producer(name: str) -> Callable[[Producer], Producer]:
    if name not in SPECS:
        raise KeyError(f"{name} is not in the metric catalogue")

    def register(fn: Producer) -> Producer:
        _PRODUCERS[name] = fn
        return fn

    return register


def _age(snap: Snapshot, ts: float | None) -> float:
    return max(0.0, snap.taken_at - ts) if ts is not None else 0.0


@_producer("airflow_ops_up")
def _up(snap: Snapshot, ctx: RenderContext) -> Iterator[Sample]:
    for name, status in sorted(snap.sources.items()):
        yield (name,), 1.0 if status.up else 0.0


@_producer("airflow_ops_poll_duration_seconds")
def _poll_duration(snap: Snapshot, ctx: RenderContext) -> Iterator[Sample]:
    for name, hist in sorted(snap.poll_durations.items()):
        yield (name,), hist


@_producer("airflow_ops_poll_errors_total")
def _poll_errors(snap: Snapshot, ctx: RenderContext) -> Iterator[Sample]:
    counts = {(name, reason): 0 for name in snap.sources for reason in POLL_ERROR_REASONS}
    counts.update(snap.poll_errors)
    for key, n in sorted(counts.items()):
        yield key, float(n)


@_producer("airflow_ops_last_poll_timestamp_seconds")
def _last_poll(snap: Snapshot, ctx: RenderContext) -> Iterator[Sample]:
    yield (), snap.taken_at


@_producer("airflow_ops_alerting_leader")
def _alerting_leader(snap: Snapshot, ctx: RenderContext) -> Iterator[Sample]:
    if snap.alerting:
        yield (), 1.0 if snap.alerting.leader else 0.0


@_producer("airflow_ops_alerts")
def _alerts(snap: Snapshot, ctx: RenderContext) -> Iterator[Sample]:
    if snap.alerting and snap.alerting.leader:
        for state, n in sorted(snap.alerting.alerts.items()):
            yield (state,), float(n)


@_producer("airflow_ops_notifications_total")
def _notifications(snap: Snapshot, ctx: RenderContext) -> Iterator[Sample]:
    if snap.alerting:
        for key, n in sorted(snap.alerting.notifications.items()):
            yield key, float(n)


@_producer("airflow_ops_notification_latency_seconds")
def _notification_latency(snap: Snapshot, ctx: RenderContext) -> Iterator[Sample]:
    if snap.alerting:
        for receiver, hist in sorted(snap.alerting.latency.items()):
            yield (receiver,), hist


def _maintenance_task_metric(
    name: str, value: Callable[[MaintenanceTaskState], float | None], counter: bool = False
) -> None:
    @_producer(name)
    def produce(snap: Snapshot, ctx: RenderContext) -> Iterator[Sample]:
        if snap.maintenance is not None:
            tasks = dict(snap.maintenance.tasks)
            if counter:  # at 0 before a task's first run, so increase() counts that run
                for task in Task:
                    tasks.setdefault(task.value, MaintenanceTaskState())
            for task, state in sorted(tasks.items()):
                v = value(state)
                if v is not None:
                    yield (task,), v


for _name, _value in (
    ("airflow_ops_maintenance_last_success_timestamp_seconds", lambda s: s.last_success_at),
    (
        "airflow_ops_maintenance_last_run_status",
        lambda s: None if s.last_status is None else 0.0 if s.last_status == "failed" else 1.0,
    ),
    ("airflow_ops_maintenance_overdue_seconds", lambda s: s.overdue_seconds),
):
    _maintenance_task_metric(_name, _value)
for _name, _value in (
    ("airflow_ops_maintenance_rows_deleted_total", lambda s: float(s.rows_deleted)),
    ("airflow_ops_maintenance_files_deleted_total", lambda s: float(s.files_deleted)),
    ("airflow_ops_maintenance_bytes_freed_total", lambda s: float(s.bytes_freed)),
):
    _maintenance_task_metric(_name, _value, counter=True)


def _maintenance_gauge(name: str, attr: str) -> None:
    @_producer(name)
    def produce(snap: Snapshot, ctx: RenderContext) -> Iterator[Sample]:
        value = getattr(snap.maintenance, attr) if snap.maintenance is not None else None
        if value is not None:
            yield (), float(value)


for _name, _attr in (
    ("airflow_ops_backup_age_seconds", "backup_age_seconds"),
    ("airflow_ops_backup_size_bytes", "backup_size_bytes"),
    ("airflow_ops_backup_verified_age_seconds", "backup_verified_age_seconds"),
    ("airflow_ops_log_volume_free_bytes", "log_volume_free_bytes"),
    ("airflow_ops_log_volume_free_ratio", "log_volume_free_ratio"),
):
    _maintenance_gauge(_name, _attr)


@_producer("airflow_info")
def _info(snap: Snapshot, ctx: RenderContext) -> Iterator[Sample]:
    if snap.api:
        yield (snap.api.version,), 1.0


@_producer("airflow_component_heartbeat_age_seconds")
def _heartbeats(snap: Snapshot, ctx: RenderContext) -> Iterator[Sample]:
    # The job table knows every host; the health endpoint only the newest beat, without a host.
    # It stands in only where no metadata DB is configured (e.g. managed Airflow).
    if "metadb" in snap.sources:
        beats = snap.db.heartbeats if snap.db else ()
    else:
        beats = snap.api.heartbeats if snap.api else ()
    for hb in beats:
        yield (hb.component, hb.hostname), _age(snap, hb.last_heartbeat)


@_producer("airflow_component_newest_heartbeat_age_seconds")
def _newest_heartbeats(snap: Snapshot, ctx: RenderContext) -> Iterator[Sample]:
    newest: dict[str, float | None] = {"scheduler": None}
    if "metadb" in snap.sources:
        if not snap.db:
            return  # the source failed this poll: export nothing rather than a false +Inf
        newest.update(snap.db.newest_heartbeats)
    elif snap.api:
        for hb in snap.api.heartbeats:
            newest[hb.component] = max(newest.get(hb.component) or 0.0, hb.last_heartbeat)
    else:
        return
    for component, ts in sorted(newest.items()):
        if ts is not None:
            yield (component,), _age(snap, ts)
        elif component == "scheduler":
            yield (component,), math.inf


@_producer("airflow_component_healthy")
def _healthy(snap: Snapshot, ctx: RenderContext) -> Iterator[Sample]:
    if snap.api:
        for component, ok in sorted(snap.api.health.items()):
            yield (component,), 1.0 if ok else 0.0


@_producer("airflow_import_errors")
def _import_errors(snap: Snapshot, ctx: RenderContext) -> Iterator[Sample]:
    if snap.api:
        yield (), float(len({e.filename for e in snap.api.import_errors}))


@_producer("airflow_import_error_info")
def _import_error_info(snap: Snapshot, ctx: RenderContext) -> Iterator[Sample]:
    if snap.api:
        for filename in sorted({e.filename for e in snap.api.import_errors}):
            yield (filename,), 1.0


@_producer("airflow_dags")
def _dags(snap: Snapshot, ctx: RenderContext) -> Iterator[Sample]:
    if snap.db:
        counts = {"active": 0, "paused": 0, "stale": 0}
        for dag in snap.db.dags:
            counts["stale" if dag.stale else "paused" if dag.paused else "active"] += 1
        for state, n in counts.items():
            yield (state,), float(n)


@_producer("airflow_dag_paused")
def _dag_paused(snap: Snapshot, ctx: RenderContext) -> Iterator[Sample]:
    if snap.db:
        for dag in snap.db.dags:
            if not dag.stale:
                yield (dag.dag_id, dag.owner), 1.0 if dag.paused else 0.0


@_producer("airflow_dag_runs_finished_total")
def _runs_finished(snap: Snapshot, ctx: RenderContext) -> Iterator[Sample]:
    if snap.db:
        # Every live DAG's success and failed counters exist at 0 before its first finished run, so
        # Prometheus' increase() counts that run (a series born at 1 reads as no increase).
        counts = {(dag.dag_id, state): 0 for dag in snap.db.dags if not dag.stale for state in TERMINAL_RUN}
        counts.update(snap.db.history.dag_runs_finished)
        for key, n in sorted(counts.items()):
            yield key, float(n)


@_producer("airflow_dag_run_duration_seconds")
def _run_duration(snap: Snapshot, ctx: RenderContext) -> Iterator[Sample]:
    if snap.db:
        yield from sorted(snap.db.history.dag_run_duration.items())


@_producer("airflow_dag_run_schedule_delay_seconds")
def _schedule_delay(snap: Snapshot, ctx: RenderContext) -> Iterator[Sample]:
    if snap.db:
        for dag_id, hist in sorted(snap.db.history.dag_run_schedule_delay.items()):
            yield (dag_id,), hist


@_producer("airflow_dag_success_ratio")
def _success_ratio(snap: Snapshot, ctx: RenderContext) -> Iterator[Sample]:
    if snap.db:
        for h in snap.db.dag_health:
            if h.success_ratio is not None:
                yield (h.dag_id,), h.success_ratio


@_producer("airflow_dag_last_run_state")
def _last_run_state(snap: Snapshot, ctx: RenderContext) -> Iterator[Sample]:
    if snap.db:
        for h in snap.db.dag_health:
            if h.last_run_state is not None:
                for state in ("success", "failed"):
                    yield (h.dag_id, state), 1.0 if h.last_run_state == state else 0.0


@_producer("airflow_dag_last_success_timestamp_seconds")
def _last_success(snap: Snapshot, ctx: RenderContext) -> Iterator[Sample]:
    if snap.db:
        for h in snap.db.dag_health:
            if h.last_success_at is not None:
                yield (h.dag_id,), h.last_success_at


@_producer("airflow_dag_failing_seconds")
def _failing(snap: Snapshot, ctx: RenderContext) -> Iterator[Sample]:
    if snap.db:
        for h in snap.db.dag_health:
            yield (h.dag_id,), _age(snap, h.failing_since)


@_producer("airflow_dag_run_overdue_seconds")
def _overdue(snap: Snapshot, ctx: RenderContext) -> Iterator[Sample]:
    if snap.db:
        for dag in snap.db.dags:
            if dag.scheduled and not dag.paused and not dag.stale:
                yield (dag.dag_id,), _age(snap, dag.next_run_create_after)


@_producer("airflow_dag_runs_active")
def _runs_active(snap: Snapshot, ctx: RenderContext) -> Iterator[Sample]:
    if snap.db:
        for state in ("queued", "running"):
            yield (state,), float(snap.db.runs_active.get(state, 0))


@_producer("airflow_dag_run_oldest_running_age_seconds")
def _oldest_running(snap: Snapshot, ctx: RenderContext) -> Iterator[Sample]:
    if snap.db:
        for h in snap.db.dag_health:
            if h.oldest_running_started_at is not None:
                yield (h.dag_id,), _age(snap, h.oldest_running_started_at)


@_producer("airflow_task_instances")
def _task_instances(snap: Snapshot, ctx: RenderContext) -> Iterator[Sample]:
    if snap.db:
        counts = {(g.state, g.pool, g.queue): g.count for g in snap.db.task_groups}
        # Every live state for every (pool, queue) seen, so a drop to zero is a 0, not a gap.
        for pool, queue in sorted({(g.pool, g.queue) for g in snap.db.task_groups}):
            for state in LIVE_TI_STATES:
                yield (state, pool, queue), float(counts.get((state, pool, queue), 0))


@_producer("airflow_task_queued_oldest_age_seconds")
def _oldest_queued(snap: Snapshot, ctx: RenderContext) -> Iterator[Sample]:
    if snap.db:
        oldest: dict[tuple[str, str], float] = {}
        for g in snap.db.task_groups:
            key = (g.pool, g.queue)
            age = _age(snap, g.oldest_waiting_since) if g.state in WAITING_TI_STATES else 0.0
            oldest[key] = max(oldest.get(key, 0.0), age)
        for key, age in sorted(oldest.items()):
            yield key, age


@_producer("airflow_task_queue_wait_seconds")
def _queue_wait(snap: Snapshot, ctx: RenderContext) -> Iterator[Sample]:
    if snap.db:
        yield from sorted(snap.db.history.task_queue_wait.items())


def _task_key(ctx: RenderContext, dag_id: str, task_id: str | None) -> tuple[str, ...]:
    return (dag_id, task_id or "") if ctx.metrics.task_labels else (dag_id,)


@_producer("airflow_task_instance_duration_seconds")
def _task_duration(snap: Snapshot, ctx: RenderContext) -> Iterator[Sample]:
    if snap.db:
        for (dag_id, task_id), hist in sorted(snap.db.history.task_duration.items(), key=_sort_key_for(ctx)):
            yield _task_key(ctx, dag_id, task_id), hist


@_producer("airflow_task_instances_finished_total")
def _tasks_finished(snap: Snapshot, ctx: RenderContext) -> Iterator[Sample]:
    if snap.db:
        for (dag_id, task_id, state), n in sorted(
            snap.db.history.task_instances_finished.items(), key=_sort_key_for(ctx)
        ):
            yield (*_task_key(ctx, dag_id, task_id), state), float(n)


def _sort_key_for(ctx: RenderContext) -> Callable[[tuple[tuple[str | None, ...], object]], Any] | None:
    # Without task labels every task_id is None, so the raw keys sort as they are (in C, ~10x
    # faster than a Python key for 8,000 keys); with them, a missing task_id sorts as "".
    return _sort_key if ctx.metrics.task_labels else None


def _sort_key(item: tuple[tuple[str | None, ...], object]) -> tuple[str, ...]:
    return tuple(p or "" for p in item[0])


@_producer("airflow_task_failing_streak")
def _failing_streaks(snap: Snapshot, ctx: RenderContext) -> Iterator[Sample]:
    if snap.db:
        for (dag_id, task_id), n in snap.db.task_failing_streaks.items():
            yield (dag_id, task_id), float(n)


@_producer("airflow_task_instances_stale_heartbeat")
def _stale_tis(snap: Snapshot, ctx: RenderContext) -> Iterator[Sample]:
    if snap.db:
        yield (), float(snap.db.stale_heartbeat_task_instances)


@_producer("airflow_pool_slots")
def _pool_slots(snap: Snapshot, ctx: RenderContext) -> Iterator[Sample]:
    if snap.api:
        for p in sorted(snap.api.pools, key=lambda p: p.pool):
            for state in ("total", "open", "running", "queued", "scheduled", "deferred"):
                yield (p.pool, state), float(getattr(p, state))


@_producer("airflow_pool_starving_tasks")
def _pool_starving(snap: Snapshot, ctx: RenderContext) -> Iterator[Sample]:
    if snap.api:
        for p in sorted(snap.api.pools, key=lambda p: p.pool):
            # An unlimited pool (total -1) never starves its tasks.
            starving = 0 if p.total < 0 else max(0, p.scheduled - max(p.open, 0))
            yield (p.pool,), float(starving)


@_producer("airflow_executor_queue_depth")
def _broker_queues(snap: Snapshot, ctx: RenderContext) -> Iterator[Sample]:
    if snap.broker:
        for queue, depth in sorted(snap.broker.queues.items()):
            yield (queue,), float(depth)


@_producer("airflow_metadb_table_rows_estimate")
def _table_rows(snap: Snapshot, ctx: RenderContext) -> Iterator[Sample]:
    if snap.db:
        for t in snap.db.tables:
            yield (t.table,), float(t.rows_estimate)


@_producer("airflow_metadb_table_bytes")
def _table_bytes(snap: Snapshot, ctx: RenderContext) -> Iterator[Sample]:
    if snap.db:
        for t in snap.db.tables:
            yield (t.table,), float(t.bytes)


_LATE = ("airflow_ops_series_dropped_total", "airflow_ops_series")  # known only after the budget cut
_missing = set(SPECS) - set(_PRODUCERS) - set(_LATE)
if _missing:  # pragma: no cover - guards the contract at import time
    raise RuntimeError(f"metrics without a producer: {sorted(_missing)}")


# ---------------------------------------------------------------- rendering

_LABEL_VALUES = itemgetter(0)  # of a Sample


def _series(spec: MetricSpec, rows: list[Sample]) -> int:
    """How many series these rows expose (a histogram: its buckets, +Inf, _count and _sum)."""
    if spec.type != "histogram":
        return len(rows)
    return sum(len(hist.counts) for _, hist in rows) + 2 * len(rows)  # type: ignore[union-attr]


class SnapshotRenderer:
    """Turns snapshots into metric families, enforcing the per-deployment series budget.

    The budget keeps every non-DAG series and then whole DAGs in dag_id order, so the same DAGs
    stay exported from one poll to the next instead of flapping."""

    def __init__(self, config: MetricsConfig) -> None:
        self.config = config
        self._dropped_total: dict[str, int] = {}
        # Where each per-DAG metric carries dag_id among its label values.
        self._dag_id_of = {
            s.name: itemgetter(labels_of(s, config).index("dag_id")) for s in CATALOGUE if s.per_dag
        }

    def families(self, snapshots: Sequence[Snapshot]) -> list[Family]:
        groups: dict[str, list[tuple[str, list[Sample]]]] = {s.name: [] for s in CATALOGUE}
        for snap in snapshots:
            ctx = RenderContext(self.config)
            produced = {name: list(_PRODUCERS[name](snap, ctx)) for name in _PRODUCERS}
            kept, series, dropped = self._apply_budget(produced)
            self._dropped_total[snap.deployment] = self._dropped_total.get(snap.deployment, 0) + dropped
            kept["airflow_ops_series"] = [((), float(series + 2))]
            kept["airflow_ops_series_dropped_total"] = [((), float(self._dropped_total[snap.deployment]))]
            for name, rows in kept.items():
                groups[name].append((snap.deployment, rows))
        return [
            Family(spec.name, spec.type, spec.help, labels_of(spec, self.config), groups[spec.name])
            for spec in CATALOGUE
        ]

    def _apply_budget(self, produced: dict[str, list[Sample]]) -> tuple[dict[str, list[Sample]], int, int]:
        """(rows kept, series kept, series dropped)."""
        budget = self.config.series_budget
        total = sum(_series(SPECS[name], rows) for name, rows in produced.items())
        if total <= budget:
            return produced, total, 0
        # Each per-DAG row's dag_id, extracted in C (rows run to 100k), counted in one pass per family.
        dag_ids = {
            name: list(map(self._dag_id_of[name], map(_LABEL_VALUES, rows)))
            for name, rows in produced.items()
            if SPECS[name].per_dag
        }
        base, per_dag = 0, Counter[str]()
        for name, rows in produced.items():
            spec = SPECS[name]
            if not spec.per_dag:
                base += _series(spec, rows)
            elif spec.type != "histogram":
                per_dag.update(dag_ids[name])
            else:
                for dag_id, (_, hist) in zip(dag_ids[name], rows, strict=True):
                    per_dag[dag_id] += len(hist.counts) + 2  # type: ignore[union-attr]
        allowed, used, dropped = set(), base, 0
        for dag_id in sorted(per_dag):
            if used + per_dag[dag_id] <= budget:
                allowed.add(dag_id)
                used += per_dag[dag_id]
            else:
                dropped += per_dag[dag_id]
        kept = {
            name: list(compress(rows, map(allowed.__contains__, dag_ids[name]))) if name in dag_ids else rows
            for name, rows in produced.items()
        }
        return kept, used, dropped


def catalogue_markdown() -> str:
    """The README's metric table, generated from CATALOGUE."""
    lines = ["| metric | type | labels | source | meaning |", "|---|---|---|---|---|"]
    for s in CATALOGUE:
        labels = ", ".join(("deployment", *s.labels))
        if s.name in TASK_LABELLED:
            labels += " (+ task_id, opt-in)"
        lines.append(f"| `{s.name}` | {s.type} | {labels} | {s.source} | {s.help} |")
    return "\n".join(lines)
