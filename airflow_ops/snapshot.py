"""The typed model of one Airflow deployment's state at one instant.

Each source fills its own part (``db``, ``api``, ``broker``); a part is ``None`` when its source
failed in that poll, so nothing stale is ever exported as if it were current. Times are epoch
seconds (UTC); ages are derived from ``Snapshot.taken_at`` when rendering, so a snapshot is a
plain value that renders the same way every time.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# Live task-instance states exported by airflow_task_instances; terminal states are counted instead.
LIVE_TI_STATES: tuple[str, ...] = (
    "scheduled",
    "queued",
    "running",
    "deferred",
    "up_for_retry",
    "up_for_reschedule",
)
# States in which a task instance waits for a slot (pool or executor).
WAITING_TI_STATES: tuple[str, ...] = ("scheduled", "queued")
LIVE_RUN_STATES: tuple[str, ...] = ("queued", "running")
TERMINAL_RUN_STATES: tuple[str, ...] = ("success", "failed")
TERMINAL_TI_STATES: tuple[str, ...] = ("success", "failed", "upstream_failed", "skipped", "removed")


@dataclass(frozen=True)
class Histogram:
    """An immutable histogram: per-bucket counts (not cumulative) plus the +Inf bucket, and the sum."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    total: float = 0.0

    @property
    def count(self) -> int:
        return sum(self.counts)


@dataclass
class HistogramAccumulator:
    """The mutable twin of Histogram, for trackers that observe many values between snapshots."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def freeze(self) -> Histogram:
        return Histogram(self.bounds, tuple(self.counts), self.total)


@dataclass(frozen=True)
class SourceStatus:
    name: str
    up: bool
    duration_seconds: float
    # A short, label-safe category ("timeout", "auth", "connect", "query", ...); never a secret.
    error_reason: str | None = None
    error_message: str | None = None


@dataclass(frozen=True)
class ComponentHeartbeat:
    component: str  # scheduler | triggerer | dag_processor
    hostname: str
    last_heartbeat: float


@dataclass(frozen=True)
class DagInfo:
    dag_id: str
    owner: str
    paused: bool
    stale: bool  # Airflow 2: not is_active; Airflow 3: is_stale
    scheduled: bool  # has a time-based schedule (next_dagrun_create_after is meaningful)
    next_run_create_after: float | None = None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class DagRunHealth:
    """Per-DAG state derived from its finished runs."""

    dag_id: str
    last_run_state: str | None
    last_success_at: float | None
    # End of the first failed run after the last success; None when the DAG is healthy.
    failing_since: float | None
    # Success ratio over the last N finished runs; None when the DAG has no finished run.
    success_ratio: float | None
    oldest_running_started_at: float | None = None


@dataclass(frozen=True)
class TaskInstanceGroup:
    state: str
    pool: str
    queue: str
    count: int
    # For waiting states: when the oldest task instance in the group started waiting.
    oldest_waiting_since: float | None = None


@dataclass(frozen=True)
class TableStats:
    table: str
    rows_estimate: int
    bytes: int


# Key of task-level series: (dag_id, task_id) with task_id None unless task labels are enabled.
TaskKey = tuple[str, "str | None"]


@dataclass(frozen=True)
class RunHistory:
    """Counters and histograms accumulated from terminal transitions, each run counted once."""

    dag_runs_finished: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (dag_id, state)
    dag_run_duration: Mapping[tuple[str, str], Histogram] = field(default_factory=dict)  # (dag_id, state)
    dag_run_schedule_delay: Mapping[str, Histogram] = field(default_factory=dict)  # dag_id
    task_instances_finished: Mapping[tuple[str, str | None, str], int] = field(
        default_factory=dict
    )  # (dag_id, task_id, state)
    task_duration: Mapping[TaskKey, Histogram] = field(default_factory=dict)
    task_queue_wait: Mapping[tuple[str, str], Histogram] = field(default_factory=dict)  # (pool, queue)


@dataclass(frozen=True)
class DbState:
    """What the metadata-DB source saw."""

    schema_major: int
    dags: Sequence[DagInfo] = ()
    dag_health: Sequence[DagRunHealth] = ()
    runs_active: Mapping[str, int] = field(default_factory=dict)  # state -> count
    task_groups: Sequence[TaskInstanceGroup] = ()
    stale_heartbeat_task_instances: int = 0
    heartbeats: Sequence[ComponentHeartbeat] = ()
    # component -> newest heartbeat of any host ever (None: the deployment never ran one)
    newest_heartbeats: Mapping[str, float | None] = field(default_factory=dict)
    # (dag_id, task_id) -> consecutive recent runs in which the task failed (failing tasks only)
    task_failing_streaks: Mapping[tuple[str, str], int] = field(default_factory=dict)
    tables: Sequence[TableStats] = ()
    history: RunHistory = field(default_factory=RunHistory)


@dataclass(frozen=True)
class ImportErrorInfo:
    filename: str
    bundle: str | None = None
    timestamp: float | None = None


@dataclass(frozen=True)
class PoolSlots:
    pool: str
    total: int  # -1 for an unlimited pool
    open: int
    running: int
    queued: int
    scheduled: int
    deferred: int


@dataclass(frozen=True)
class ApiState:
    """What the REST API source saw."""

    version: str
    # component -> healthy, as Airflow's own health endpoint reports it
    health: Mapping[str, bool] = field(default_factory=dict)
    # From the health document: used for heartbeat ages when no metadata DB is configured.
    heartbeats: Sequence[ComponentHeartbeat] = ()
    import_errors: Sequence[ImportErrorInfo] = ()
    pools: Sequence[PoolSlots] = ()


@dataclass(frozen=True)
class BrokerState:
    queues: Mapping[str, int] = field(default_factory=dict)  # queue -> messages waiting


@dataclass(frozen=True)
class AlertingState:
    """The alert engine's view of one deployment, exported as airflow_ops_* self-metrics."""

    leader: bool
    alerts: Mapping[str, int] = field(default_factory=dict)  # state -> count
    notifications: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (receiver, outcome) -> n
    latency: Mapping[str, Histogram] = field(default_factory=dict)  # receiver -> histogram


@dataclass(frozen=True)
class MaintenanceTaskState:
    """One maintenance task of a deployment, from the audit records (dry runs left out)."""

    last_status: str | None = None  # success | failed | running (None: never run)
    last_success_at: float | None = None  # when the newest successful run finished
    overdue_seconds: float | None = None  # scheduled tasks only: see maintenance.monitor
    rows_deleted: int = 0
    files_deleted: int = 0
    bytes_freed: int = 0
    bytes_written: int = 0


@dataclass(frozen=True)
class MaintenanceState:
    """What the service exports about a deployment's maintenance."""

    tasks: Mapping[str, MaintenanceTaskState] = field(default_factory=dict)
    backup_age_seconds: float | None = None  # newest complete backup; +Inf when there is none
    backup_size_bytes: float | None = None
    backup_verified_age_seconds: float | None = None  # newest verified backup; +Inf when none
    log_volume_free_bytes: float | None = None
    log_volume_free_ratio: float | None = None


@dataclass(frozen=True)
class Snapshot:
    deployment: str
    taken_at: float
    sources: Mapping[str, SourceStatus] = field(default_factory=dict)
    # The poller's own accumulated figures: poll duration per source, errors per (source, reason).
    poll_durations: Mapping[str, Histogram] = field(default_factory=dict)
    poll_errors: Mapping[tuple[str, str], int] = field(default_factory=dict)
    db: DbState | None = None
    api: ApiState | None = None
    broker: BrokerState | None = None
    # Set by the service after the alert engine ran (None: alerting not configured).
    alerting: AlertingState | None = None
    # Set by the service from the audit records, backups and log volume (None: not configured).
    maintenance: MaintenanceState | None = None


def to_jsonable(value: object) -> object:
    """A snapshot as plain JSON data: tuple keys become 'a/b' strings, histograms stay whole."""
    if hasattr(value, "__dataclass_fields__"):
        return {f: to_jsonable(getattr(value, f)) for f in value.__dataclass_fields__}  # type: ignore[attr-defined]
    if isinstance(value, Mapping):
        return {
            "/".join("" if p is None else str(p) for p in k) if isinstance(k, tuple) else str(k): to_jsonable(
                v
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value
