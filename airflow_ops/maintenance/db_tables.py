"""Which metadata tables ``db clean`` may clean, per Airflow major version, as data.

Every SQL fragment is written over a placeholder alias ``{t}`` (the row being judged) and is
formatted with the alias of the statement it ends up in. Column names were checked against
databases migrated by the real Airflow 2.11.2 and 3.3.2; foreign keys and their ON DELETE actions
are not listed here: they are read from the live catalog (``db_catalog``).

Compared with ``airflow db clean`` (``airflow/utils/db_cleanup.py``):

- a row's age falls back on its other dates, so runs that never started (NULL start_date,
  apache/airflow#69872) age like the others;
- rows that are still live are never candidates: unfinished runs and runs holding a live task
  instance, task instances of unfinished or kept runs, running jobs, triggers still referenced by
  a task instance, an asset watcher or a callback (deleting one would cascade into task
  instances), DAG versions still referenced by a run or task instance that stays;
- the newest run of every DAG is kept whatever its type, on top of the N newest non-manual runs;
  the task instances of kept runs are kept with them (Airflow deletes them by their own date);
- tables whose rows Airflow itself rewrites on every parse (``dag``, ``serialized_dag`` of the
  current version, ``dag_code``) are never cleaned on their own: a stale DAG is deleted with
  ``airflow dags delete``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from airflow_ops.snapshot import LIVE_TI_STATES, TERMINAL_RUN_STATES, TERMINAL_TI_STATES


def _sql_list(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


# 'restarting' is transient (a cleared running task) but still live.
_LIVE_TI = _sql_list((*LIVE_TI_STATES, "restarting"))
_TERMINAL_TI = _sql_list(TERMINAL_TI_STATES)
_TERMINAL_RUNS = _sql_list(TERMINAL_RUN_STATES)

DAY = 86400.0


@dataclass(frozen=True)
class TableRule:
    """How one table is cleaned. SQL fragments use ``{t}`` for the row's alias."""

    table: str
    # When the row last mattered; rows older than the retention are candidates. NULL never is.
    recency: str
    # Default retention in days; None: the table is only cleaned with its parent rows (cascade),
    # or when a retention is configured for it.
    default_days: float | None
    # The row's dag_id (per-DAG retention, DAG filters); None: the table is not per DAG.
    dag_id: str | None = None
    # What a candidate must also satisfy (live rows are not candidates).
    eligible: str = "TRUE"
    # For rows that belong to a run: the condition joining ``{t}`` to its dag_run ``{r}``. Such rows
    # are only candidates when their run is finished and not kept, and they count as the run's
    # (cascade) when the run itself is deleted by the same plan.
    run_of: str | None = None
    # Tables whose referencing rows are deleted with a row (ON DELETE CASCADE) or unlinked (SET
    # NULL); None: all of them. A row referenced from any other table is not a candidate.
    cascade_into: tuple[str, ...] | None = None
    # (group, order): the newest row of each group is never a candidate.
    keep_newest: tuple[str, str] | None = None
    # dag_run only: keep-last-N per DAG (manual runs not counted) and the newest run of every DAG.
    keep_last_runs: bool = False

    def sql(self, fragment: str, alias: str, run_alias: str = "r") -> str:
        return fragment.format(t=alias, r=run_alias)


@dataclass(frozen=True)
class RunTable:
    """dag_run facts of one version that the keep-last logic needs."""

    order: str  # "newest" among a DAG's runs (the date the scheduler orders them by)
    manual_types: tuple[str, ...]


@dataclass(frozen=True)
class CleanCatalogue:
    major: int
    runs: RunTable
    rules: tuple[TableRule, ...]  # in execution order: parents before tables they free rows of

    def rule(self, table: str) -> TableRule | None:
        return next((r for r in self.rules if r.table == table), None)


_TI_OF_RUN = "{r}.dag_id = {t}.dag_id AND {r}.run_id = {t}.run_id"
# A run holding a live task instance is live whatever its own state says.
_RUN_FINISHED = (
    f"{{t}}.state IN {_TERMINAL_RUNS} AND NOT EXISTS (SELECT 1 FROM task_instance lti"
    f" WHERE lti.dag_id = {{t}}.dag_id AND lti.run_id = {{t}}.run_id AND lti.state IN {_LIVE_TI})"
)
_TI_FINISHED = f"({{t}}.state IS NULL OR {{t}}.state IN {_TERMINAL_TI})"

# Rules both versions share, by their (identical) column names.
_LOG = TableRule("log", "{t}.dttm", 90, dag_id="{t}.dag_id")
_JOB = TableRule(
    "job",
    "COALESCE({t}.latest_heartbeat, {t}.end_date, {t}.start_date)",
    30,
    dag_id="{t}.dag_id",
    eligible="{t}.state IS DISTINCT FROM 'running'",
)
_IMPORT_ERROR = TableRule("import_error", "{t}.timestamp", 30)
# Triggers are cleaned by the triggerer itself once unused; what is left is unreferenced garbage.
_TRIGGER = TableRule("trigger", "{t}.created_date", 30, cascade_into=())
_CELERY = (
    TableRule("celery_taskmeta", "{t}.date_done", 30),
    TableRule("celery_tasksetmeta", "{t}.date_done", 30),
)
# Web sessions (FAB's session table): expired ones only.
_SESSION = TableRule("session", "{t}.expiry", 7)
_XCOM = TableRule("xcom", "{t}.timestamp", None, dag_id="{t}.dag_id", run_of="{r}.id = {t}.dag_run_id")

AIRFLOW3_CATALOGUE = CleanCatalogue(
    major=3,
    runs=RunTable(order="{t}.run_after", manual_types=("manual",)),
    rules=(
        TableRule(
            "dag_run",
            "COALESCE({t}.start_date, {t}.end_date, {t}.queued_at, {t}.run_after)",
            90,
            dag_id="{t}.dag_id",
            eligible=_RUN_FINISHED,
            keep_last_runs=True,
        ),
        TableRule(
            "task_instance",
            "COALESCE({t}.start_date, {t}.end_date, {t}.queued_dttm, {t}.scheduled_dttm, {t}.updated_at)",
            None,
            dag_id="{t}.dag_id",
            eligible=_TI_FINISHED,
            run_of=_TI_OF_RUN,
        ),
        TableRule(
            "task_instance_history",
            "COALESCE({t}.start_date, {t}.end_date, {t}.queued_dttm, {t}.updated_at)",
            None,
            dag_id="{t}.dag_id",
            run_of=_TI_OF_RUN,
        ),
        _XCOM,
        TableRule(
            "task_reschedule",
            "{t}.start_date",
            None,
            dag_id="(SELECT rti.dag_id FROM task_instance rti WHERE rti.id = {t}.ti_id)",
            run_of="({r}.dag_id, {r}.run_id) = (SELECT rti.dag_id, rti.run_id FROM task_instance rti"
            " WHERE rti.id = {t}.ti_id)",
        ),
        _LOG,
        _JOB,
        _IMPORT_ERROR,
        # Finished callbacks (and scheduled ones no deadline waits for), like Airflow 3.3's own rule;
        # their deadline rows go with them.
        TableRule(
            "callback",
            "{t}.created_at",
            30,
            eligible="({t}.state IS NULL OR {t}.state IN ('success', 'failed') OR ({t}.state = 'scheduled'"
            " AND NOT EXISTS (SELECT 1 FROM deadline cd WHERE cd.callback_id = {t}.id)))",
            cascade_into=("deadline",),
        ),
        _TRIGGER,
        # A version's serialized DAG and code go with it; the newest version of a DAG stays.
        TableRule(
            "dag_version",
            "{t}.last_updated",
            90,
            dag_id="{t}.dag_id",
            cascade_into=("serialized_dag", "dag_code"),
            keep_newest=("{t}.dag_id", "{t}.version_number"),
        ),
        TableRule("asset_event", "{t}.timestamp", 90, dag_id="{t}.source_dag_id"),
        TableRule("deadline", "{t}.deadline_time", 90),
        TableRule("task_state_store", "{t}.expires_at", 7, dag_id="{t}.dag_id"),
        TableRule("revoked_token", "{t}.exp", 7),
        TableRule(
            "connection_test_request",
            "{t}.updated_at",
            7,
            eligible="{t}.state IN ('success', 'failed')",
        ),
        # No foreign key: rows of partition runs already gone are left behind by the cascade.
        TableRule(
            "partitioned_asset_key_log",
            "{t}.created_at",
            90,
            dag_id="{t}.target_dag_id",
            eligible="NOT EXISTS (SELECT 1 FROM asset_partition_dag_run pr"
            " WHERE pr.id = {t}.asset_partition_dag_run_id)",
        ),
        *_CELERY,
        _SESSION,
    ),
)

AIRFLOW2_CATALOGUE = CleanCatalogue(
    major=2,
    runs=RunTable(order="{t}.execution_date", manual_types=("manual",)),
    rules=(
        TableRule(
            "dag_run",
            "COALESCE({t}.start_date, {t}.end_date, {t}.queued_at, {t}.execution_date)",
            90,
            dag_id="{t}.dag_id",
            eligible=_RUN_FINISHED,
            keep_last_runs=True,
        ),
        TableRule(
            "task_instance",
            "COALESCE({t}.start_date, {t}.end_date, {t}.queued_dttm, {t}.updated_at)",
            None,
            dag_id="{t}.dag_id",
            eligible=_TI_FINISHED,
            run_of=_TI_OF_RUN,
        ),
        TableRule(
            "task_instance_history",
            "COALESCE({t}.start_date, {t}.end_date, {t}.queued_dttm, {t}.updated_at)",
            None,
            dag_id="{t}.dag_id",
            run_of=_TI_OF_RUN,
        ),
        _XCOM,
        TableRule("task_reschedule", "{t}.start_date", None, dag_id="{t}.dag_id", run_of=_TI_OF_RUN),
        TableRule(
            "task_fail",
            "COALESCE({t}.start_date, {t}.end_date)",
            None,
            dag_id="{t}.dag_id",
            run_of=_TI_OF_RUN,
        ),
        _LOG,
        _JOB,
        _IMPORT_ERROR,
        TableRule("callback_request", "{t}.created_at", 30),
        _TRIGGER,
        TableRule("dataset_event", "{t}.timestamp", 90, dag_id="{t}.source_dag_id"),
        TableRule("sla_miss", "{t}.timestamp", 90, dag_id="{t}.dag_id"),
        *_CELERY,
        _SESSION,
    ),
)

CATALOGUES: Mapping[int, CleanCatalogue] = {c.major: c for c in (AIRFLOW2_CATALOGUE, AIRFLOW3_CATALOGUE)}


# Every table name a policy may mention, with whether it is per DAG (in any version). A policy is
# version independent: a table of the other version is reported as absent, not rejected.
def _known_tables() -> dict[str, bool]:
    known: dict[str, bool] = {}
    for catalogue in CATALOGUES.values():
        for rule in catalogue.rules:
            known[rule.table] = known.get(rule.table, False) or rule.dag_id is not None
    return known


KNOWN_TABLES: Mapping[str, bool] = _known_tables()


def catalogue_for(major: int) -> CleanCatalogue:
    return CATALOGUES[major]
