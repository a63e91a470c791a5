"""What differs between the Airflow 2 and Airflow 3 metadata schemas, as data.

This is the only module that knows those differences. Each major version gets one frozen
:class:`SchemaProfile` holding column names and small SQL expressions; queries elsewhere are
built from a profile, never from ``if version``. :func:`detect_profile` picks the profile from
``information_schema`` (not from a version string) and refines it where a column only exists in
some minor releases.

Every column named here was checked against databases migrated by the real Airflow 2.11.2 and
3.3.2 (``airflow db migrate``); ``tests/unit/test_schema.py`` and the integration tests keep it so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

# Components whose liveness is a row in ``job`` (one per process), keyed by exported name.
# The job_type values are Airflow's job runner class constants, identical in 2.x and 3.x.
_JOB_TYPES: tuple[tuple[str, str], ...] = (
    ("scheduler", "SchedulerJob"),
    ("triggerer", "TriggererJob"),
    ("dag_processor", "DagProcessorJob"),
)

# Airflow 2 stores DagModel.schedule_interval JSON-encoded: a cron string or preset becomes
# '"0 * * * *"', a timedelta a JSON object, schedule=None the text 'null'. These values are the
# schedules without a clock behind them (the timetables Airflow 3 marks periodic=False).
_AF2_SCHEDULED = (
    "COALESCE(d.schedule_interval, 'null') NOT IN ("
    "'null', '\"None\"', '\"@once\"', '\"@continuous\"', '\"Dataset\"', '\"Unresolved DatasetAlias\"')"
)
# Airflow 3.3 records the timetable's own answer; 3.0-3.2 only have its summary text.
_AF3_SCHEDULED = "d.timetable_periodic"
_AF3_SCHEDULED_FROM_SUMMARY = (
    "COALESCE(d.timetable_summary, 'None') NOT IN ("
    "'None', '@once', '@continuous', 'Asset', 'Partitioned Asset', 'PartitionedAtRuntime')"
)


class UnsupportedSchema(Exception):
    """The database is not an Airflow 2.x/3.x metadata database this code can read."""


@dataclass(frozen=True)
class SchemaProfile:
    """Names and expressions for one major version's metadata schema.

    Expressions use fixed table aliases: ``d`` for dag, ``r`` for dag_run, ``ti`` for
    task_instance, ``j`` for job (``hb`` for the heartbeat join below).
    """

    major: int
    # dag: stale (no longer in any DAG file) and "has a time-based schedule".
    dag_stale_expr: str
    dag_scheduled_expr: str
    # dag_run: the logical date column (indexed with dag_id) and whether it can be NULL
    # (Airflow 3 manual and asset-triggered runs have none).
    run_date_column: str
    run_date_nullable: bool
    # When a scheduled run was due; start_date minus this is the schedule delay.
    run_expected_start_column: str
    # task_instance: a running TI's last heartbeat. Airflow 2 keeps it on its LocalTaskJob row.
    ti_heartbeat_join: str
    ti_heartbeat_expr: str
    # When a TI in each waiting state started waiting.
    ti_waiting_since: tuple[tuple[str, str], ...]
    # component -> job.job_type
    job_types: tuple[tuple[str, str], ...] = _JOB_TYPES
    # Columns the queries need, per table; detect_profile refuses a schema that lacks one.
    required_columns: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def job_type_by_component(self) -> Mapping[str, str]:
        return dict(self.job_types)

    @property
    def component_by_job_type(self) -> Mapping[str, str]:
        return {job_type: component for component, job_type in self.job_types}

    def waiting_since_expr(self) -> str:
        """SQL CASE giving, per TI row, when it started waiting (NULL when it is not waiting)."""
        whens = " ".join(f"WHEN '{state}' THEN {expr}" for state, expr in self.ti_waiting_since)
        return f"CASE ti.state {whens} END"


_COMMON_COLUMNS: dict[str, tuple[str, ...]] = {
    "dag": ("dag_id", "is_paused", "owners", "next_dagrun_create_after"),
    "dag_run": (
        "id",
        "dag_id",
        "run_id",
        "state",
        "run_type",
        "start_date",
        "end_date",
        "data_interval_end",
    ),
    "task_instance": (
        "dag_id",
        "task_id",
        "run_id",
        "map_index",
        "try_number",
        "state",
        "start_date",
        "end_date",
        "duration",
        "pool",
        "queue",
        "queued_dttm",
        "updated_at",
    ),
    "job": ("id", "job_type", "hostname", "state", "latest_heartbeat"),
}


def _required(extra: Mapping[str, tuple[str, ...]]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple(
        (table, tuple(dict.fromkeys(columns + extra.get(table, ()))))
        for table, columns in _COMMON_COLUMNS.items()
    )


AIRFLOW2 = SchemaProfile(
    major=2,
    dag_stale_expr="NOT COALESCE(d.is_active, FALSE)",
    dag_scheduled_expr=_AF2_SCHEDULED,
    run_date_column="execution_date",
    run_date_nullable=False,
    run_expected_start_column="data_interval_end",
    ti_heartbeat_join="JOIN job hb ON hb.id = ti.job_id",
    ti_heartbeat_expr="hb.latest_heartbeat",
    # No scheduled_dttm in 2.x: updated_at is the last state change, i.e. when it was scheduled.
    ti_waiting_since=(
        ("scheduled", "ti.updated_at"),
        ("queued", "COALESCE(ti.queued_dttm, ti.updated_at)"),
    ),
    required_columns=_required(
        {
            "dag": ("is_active", "schedule_interval"),
            "dag_run": ("execution_date",),
            "task_instance": ("job_id",),
        }
    ),
)

AIRFLOW3 = SchemaProfile(
    major=3,
    dag_stale_expr="d.is_stale",
    dag_scheduled_expr=_AF3_SCHEDULED,
    run_date_column="logical_date",
    run_date_nullable=True,
    run_expected_start_column="run_after",
    ti_heartbeat_join="",
    ti_heartbeat_expr="ti.last_heartbeat_at",
    ti_waiting_since=(
        ("scheduled", "COALESCE(ti.scheduled_dttm, ti.updated_at)"),
        ("queued", "COALESCE(ti.queued_dttm, ti.updated_at)"),
    ),
    required_columns=_required(
        {
            "dag": ("is_stale",),
            "dag_run": ("logical_date", "run_after"),
            "task_instance": ("last_heartbeat_at", "scheduled_dttm"),
        }
    ),
)

PROFILES: tuple[SchemaProfile, ...] = (AIRFLOW2, AIRFLOW3)


class _Connection(Protocol):
    def cursor(self) -> Any: ...


# Columns of Airflow's core tables in the schema where ``dag_run`` resolves (search_path aware).
_COLUMNS_SQL = """
SELECT c.table_name, c.column_name, c.is_nullable = 'YES'
FROM information_schema.columns c
WHERE c.table_name IN ('dag', 'dag_run', 'task_instance', 'job')
  AND c.table_schema = (
      SELECT n.nspname FROM pg_class t JOIN pg_namespace n ON n.oid = t.relnamespace
      WHERE t.oid = to_regclass('dag_run'))
"""

Columns = Mapping[str, Mapping[str, bool]]  # table -> column -> nullable


def read_columns(conn: _Connection) -> Columns:
    """table -> column -> nullable, for Airflow's core tables."""
    with conn.cursor() as cur:
        cur.execute(_COLUMNS_SQL)
        rows = cur.fetchall()
    columns: dict[str, dict[str, bool]] = {}
    for table, column, nullable in rows:
        columns.setdefault(table, {})[column] = bool(nullable)
    return columns


def profile_for_columns(columns: Columns) -> SchemaProfile:
    """Choose and refine the profile that matches these columns; UnsupportedSchema otherwise."""
    dag_run = columns.get("dag_run", {})
    if not dag_run:
        raise UnsupportedSchema("no dag_run table: not an Airflow metadata database")
    if "logical_date" in dag_run:
        profile = AIRFLOW3
        if "timetable_periodic" not in columns.get("dag", {}):
            profile = dataclasses.replace(
                profile,
                dag_scheduled_expr=_AF3_SCHEDULED_FROM_SUMMARY,
                required_columns=(*profile.required_columns, ("dag", ("timetable_summary",))),
            )
    elif "execution_date" in dag_run:
        profile = AIRFLOW2
    else:
        raise UnsupportedSchema("dag_run has neither logical_date nor execution_date")
    missing = [
        f"{table}.{column}"
        for table, needed in profile.required_columns
        for column in needed
        if column not in columns.get(table, {})
    ]
    if missing:
        raise UnsupportedSchema(
            f"Airflow {profile.major}.x schema without {', '.join(missing)} (too old an Airflow?)"
        )
    nullable = dag_run[profile.run_date_column]
    return dataclasses.replace(profile, run_date_nullable=nullable)


def detect_profile(conn: _Connection) -> SchemaProfile:
    """The profile of the metadata database behind ``conn`` (a DB-API connection)."""
    return profile_for_columns(read_columns(conn))
