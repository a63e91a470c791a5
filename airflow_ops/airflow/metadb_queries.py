"""The SQL of the metadata-database source, built once per detected schema profile.

Every statement follows an index Airflow keeps for its own scheduler (see ``metadb``); none scans
or groups ``dag_run``/``task_instance`` history.
"""

from __future__ import annotations

from dataclasses import dataclass

from airflow_ops.airflow.schema import SchemaProfile

# Identifiers in {braces} come from the SchemaProfile only; values are always bind parameters.

SESSION_SQL = "SET statement_timeout = %(statement_ms)s; SET lock_timeout = %(lock_ms)s"

# Tags in one pass over dag_tag (small: tags x DAGs), not a subquery per DAG.
_DAGS_SQL = """
SELECT d.dag_id, COALESCE(d.owners, ''), COALESCE(d.is_paused, FALSE), {stale}, {scheduled},
       d.next_dagrun_create_after, COALESCE(t.tags, '{{}}')
FROM dag d
LEFT JOIN (SELECT dag_id, array_agg(name ORDER BY name) AS tags FROM dag_tag GROUP BY dag_id) t
  ON t.dag_id = d.dag_id
"""

MAX_RUN_ID_SQL = "SELECT COALESCE(max(id), 0) FROM dag_run"

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

# job_type_heart (job_type, latest_heartbeat): one short range per component type. Only jobs still
# marked running: a clean shutdown (a replaced pod) sets success and must not read as a stale
# host for a day; a crashed or killed one stays running and ages, which is the point.
_HEARTBEATS_SQL = """
SELECT DISTINCT ON (j.job_type, j.hostname) j.job_type, COALESCE(j.hostname, ''), j.latest_heartbeat
FROM job j
WHERE j.job_type = ANY(%(job_types)s) AND j.latest_heartbeat > %(since)s AND j.state = 'running'
ORDER BY j.job_type, j.hostname, j.latest_heartbeat DESC
"""

# The newest heartbeat of each component type over ALL its rows (not just the lookback), so a
# component that stopped long ago still reads as old instead of vanishing: one backward step of
# job_type_heart per type.
_NEWEST_HEARTBEATS_SQL = """
SELECT t.job_type, (SELECT max(j.latest_heartbeat) FROM job j WHERE j.job_type = t.job_type)
FROM unnest(%(job_types)s::text[]) AS t(job_type)
"""

# Failed task instances of given runs (the recent windows of failing DAGs only): primary key /
# (dag_id, run_id) index per run.
_FAILED_TIS_SQL = """
SELECT r.id, ti.task_id
FROM dag_run r
JOIN task_instance ti ON ti.dag_id = r.dag_id AND ti.run_id = r.run_id
WHERE r.id = ANY(%(ids)s) AND ti.state = 'failed'
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
    newest_heartbeats: str
    failed_tis: str
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
            newest_heartbeats=_NEWEST_HEARTBEATS_SQL,
            failed_tis=_FAILED_TIS_SQL,
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
