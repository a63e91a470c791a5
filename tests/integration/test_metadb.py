"""MetadataDbSource against real PostgreSQL databases migrated by the real Airflow 2 and 3.

Each test clones a fresh database from the template ``airflow db migrate`` built, writes rows with
SQL the way Airflow's scheduler and workers write them (``AirflowDb``), and polls the source as
the service would. Every test runs once per Airflow major version.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import psycopg2
import psycopg2.errors
import pytest
from psycopg2 import sql

from airflow_ops.airflow.metadb import MetadataDbSource
from airflow_ops.airflow.metadb_queries import Queries
from airflow_ops.airflow.schema import SchemaProfile, detect_profile, profile_for_columns, read_columns
from airflow_ops.airflow.source import SourceError
from airflow_ops.config import DatabaseConfig, MetricsConfig, Secret
from airflow_ops.devstack import install
from airflow_ops.devstack.database import ADMIN_DSN, create_database, drop_database, migrated_template
from airflow_ops.snapshot import DbState

T0 = time.time() - 86400.0  # history starts a day ago; "now" is real time for heartbeats


def _dt(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, tz=timezone.utc)


class AirflowDb:
    """Writes metadata rows with SQL, column for column as Airflow 2.11 / 3.3 write them."""

    def __init__(self, dsn: str, major: int) -> None:
        self.dsn = dsn
        self.major = major
        self.conn = psycopg2.connect(dsn)
        self.conn.autocommit = True
        self._runs = 0
        if major == 3:
            self.execute("INSERT INTO dag_bundle (name, active) VALUES ('dags-folder', true)")

    def close(self) -> None:
        self.conn.close()

    def execute(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description else []

    # ---- dag

    def add_dag(
        self, dag_id: str, *, owner: str = "ops", scheduled: bool = True, paused: bool = False
    ) -> None:
        create_after = _dt(time.time() + 3600) if scheduled else None
        if self.major == 2:
            self.execute(
                "INSERT INTO dag (dag_id, is_paused, is_active, owners, schedule_interval, fileloc,"
                " max_active_tasks, max_active_runs, max_consecutive_failed_dag_runs,"
                " has_task_concurrency_limits, next_dagrun_create_after)"
                " VALUES (%s, %s, true, %s, %s, '/dags/x.py', 16, 16, 0, false, %s)",
                (dag_id, paused, owner, '"0 * * * *"' if scheduled else "null", create_after),
            )
        else:
            self.execute(
                "INSERT INTO dag (dag_id, is_paused, is_stale, bundle_name, owners, fileloc,"
                " timetable_type, timetable_summary, timetable_periodic, partition_mapper_info,"
                " max_active_tasks, max_active_runs, max_consecutive_failed_dag_runs,"
                " has_task_concurrency_limits, next_dagrun_create_after)"
                " VALUES (%s, %s, false, 'dags-folder', %s, '/dags/x.py', %s, %s, %s, '{}',"
                " 16, 16, 0, false, %s)",
                (
                    dag_id,
                    paused,
                    owner,
                    "CronTriggerTimetable" if scheduled else "NullTimetable",
                    "0 * * * *" if scheduled else "None",
                    scheduled,
                    create_after,
                ),
            )

    def mark_stale(self, dag_id: str) -> None:
        column = "is_active = false" if self.major == 2 else "is_stale = true"
        self.execute(f"UPDATE dag SET {column} WHERE dag_id = %s", (dag_id,))

    # ---- dag_run

    def add_run(
        self,
        dag_id: str,
        state: str,
        *,
        start: float | None = None,
        end: float | None = None,
        run_type: str = "scheduled",
        due: float | None = None,
        dated: bool = True,
    ) -> tuple[int, str]:
        """A dag_run row; ``due`` is when a scheduled run was due (2: data_interval_end,
        3: run_after). ``dated=False`` is an Airflow 3 manual run without a logical date."""
        self._runs += 1
        due = due if due is not None else (start if start is not None else time.time())
        logical = T0 + self._runs  # unique per (dag_id, logical date)
        run_id = f"{run_type}__{self._runs}_{uuid.uuid4().hex[:6]}"
        if self.major == 2:
            rows = self.execute(
                "INSERT INTO dag_run (dag_id, run_id, execution_date, run_type, state, queued_at,"
                " start_date, end_date, data_interval_start, data_interval_end, external_trigger,"
                " clear_number, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 0, now())"
                " RETURNING id",
                (
                    dag_id,
                    run_id,
                    _dt(logical),
                    run_type,
                    state,
                    _dt(due),
                    _dt(start),
                    _dt(end),
                    _dt(due - 3600),
                    _dt(due),
                    run_type == "manual",
                ),
            )
        else:
            rows = self.execute(
                "INSERT INTO dag_run (dag_id, run_id, logical_date, run_after, run_type, triggered_by,"
                " state, queued_at, start_date, end_date, data_interval_start, data_interval_end,"
                " clear_number, created_at, updated_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 0, now(), now()) RETURNING id",
                (
                    dag_id,
                    run_id,
                    _dt(logical) if dated else None,
                    _dt(due),
                    run_type,
                    "timetable" if run_type == "scheduled" else "rest_api",
                    state,
                    _dt(due),
                    _dt(start),
                    _dt(end),
                    _dt(due - 3600) if dated else None,
                    _dt(due) if dated else None,
                ),
            )
        return rows[0][0], run_id

    def set_run(self, pk: int, state: str, *, start: float | None = None, end: float | None = None) -> None:
        self.execute(
            "UPDATE dag_run SET state = %s, start_date = COALESCE(%s, start_date), end_date = %s,"
            " updated_at = now() WHERE id = %s",
            (state, _dt(start), _dt(end), pk),
        )

    def clear_run(self, pk: int) -> None:
        """What `airflow tasks clear` does to a finished run: TIs back to no state (3.x gives each a
        new id), the run back to queued with no start date and clear_number + 1."""
        ((dag_id, run_id),) = self.execute("SELECT dag_id, run_id FROM dag_run WHERE id = %s", (pk,))
        new_id = ", id = gen_random_uuid()" if self.major == 3 else ""
        self.execute(
            f"UPDATE task_instance SET state = NULL, max_tries = try_number{new_id}"
            " WHERE dag_id = %s AND run_id = %s",
            (dag_id, run_id),
        )
        queued_at = ", queued_at = now()" if self.major == 3 else ""
        self.execute(
            "UPDATE dag_run SET state = 'queued', start_date = NULL, end_date = NULL,"
            f" clear_number = clear_number + 1, last_scheduling_decision = NULL{queued_at} WHERE id = %s",
            (pk,),
        )

    def db_clean(self) -> int:
        """Like `airflow db clean` on everything: finished runs go, their TIs with them (FK cascade)."""
        rows = self.execute("DELETE FROM dag_run WHERE state IN ('success', 'failed') RETURNING id")
        return len(rows)

    # ---- task_instance

    def add_ti(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        state: str | None,
        *,
        try_number: int = 1,
        start: float | None = None,
        end: float | None = None,
        queued: float | None = None,
        scheduled: float | None = None,
        heartbeat: float | None = None,
        pool: str = "default_pool",
        queue: str = "default",
        map_index: int = -1,
    ) -> None:
        duration = end - start if start is not None and end is not None else None
        cols = {
            "task_id": task_id,
            "dag_id": dag_id,
            "run_id": run_id,
            "map_index": map_index,
            "state": state,
            "try_number": try_number,
            "max_tries": 1,
            "pool": pool,
            "pool_slots": 1,
            "queue": queue,
            "priority_weight": 1,
            "operator": "BashOperator",
            "hostname": "worker-1" if start is not None else "",
            "start_date": _dt(start),
            "end_date": _dt(end),
            "duration": duration,
            "queued_dttm": _dt(queued),
        }
        if self.major == 3:
            cols.update(
                id=str(uuid.uuid4()),
                scheduled_dttm=_dt(scheduled),
                last_heartbeat_at=_dt(heartbeat),
                updated_at=_dt(time.time()),
            )
        else:
            # 2.x has no scheduled_dttm: updated_at (an onupdate column) is the last state change.
            cols.update(updated_at=_dt(scheduled if state == "scheduled" and scheduled else time.time()))
            if heartbeat is not None:
                cols["job_id"] = self.add_job("LocalTaskJob", "worker-1", "running", heartbeat)
        self._insert("task_instance", cols)

    def set_ti(self, dag_id: str, run_id: str, task_id: str, **changes: Any) -> None:
        """Update a TI; keys are snapshot-level names (start/end/queued/...) mapped to columns."""
        columns = {"state": "state", "try_number": "try_number", "start": "start_date", "end": "end_date"}
        columns["queued"] = "queued_dttm"
        cols: dict[str, Any] = {}
        for key, value in changes.items():
            if key in ("start", "end", "queued"):
                value = _dt(value)
            cols[columns[key]] = value
        if self.major == 3 and "try_number" in changes:
            cols["id"] = str(uuid.uuid4())  # 3.x: a new try is a new task_instance.id
        assignments = sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier(c), sql.Placeholder(c)) for c in cols
        )
        query = sql.SQL(
            "UPDATE task_instance SET {}, updated_at = now()"
            " WHERE dag_id = %(dag_id)s AND run_id = %(run_id)s AND task_id = %(task_id)s"
        ).format(assignments)
        self.execute(query, {**cols, "dag_id": dag_id, "run_id": run_id, "task_id": task_id})

    # ---- job

    def add_job(self, job_type: str, hostname: str, state: str, heartbeat: float) -> int:
        rows = self.execute(
            "INSERT INTO job (job_type, hostname, state, start_date, latest_heartbeat, unixname)"
            " VALUES (%s, %s, %s, %s, %s, 'airflow') RETURNING id",
            (job_type, hostname, state, _dt(heartbeat - 60), _dt(heartbeat)),
        )
        return rows[0][0]

    def fill_history(self, *, dags: int, runs: int, tasks: int, live: int) -> None:
        """Bulk history with generate_series: ``runs`` runs round-robin over ``dags`` DAGs, one a
        minute, ``tasks`` TIs each; the newest ``live`` runs are running/queued with live TIs."""
        params = {"dags": dags, "runs": runs, "tasks": tasks, "live": live}
        if self.major == 2:
            dag_cols = "is_active, schedule_interval"
            dag_vals = "true, '\"0 * * * *\"'"
            run_cols, run_vals, ti_id = "execution_date, external_trigger", "ts, false", ""
        else:
            dag_cols = "is_stale, bundle_name, timetable_type, timetable_periodic, partition_mapper_info"
            dag_vals = "false, 'dags-folder', 'CronTriggerTimetable', true, '{}'"
            run_cols, run_vals, ti_id = "logical_date, run_after", "ts, ts", "gen_random_uuid() AS id, "
        self.execute(
            f"INSERT INTO dag (dag_id, is_paused, owners, {dag_cols}, max_active_tasks,"
            " max_consecutive_failed_dag_runs, has_task_concurrency_limits)"
            f" SELECT 'bulk_' || d, false, 'ops', {dag_vals}, 16, 0, false"
            " FROM generate_series(1, %(dags)s) d",
            params,
        )
        self.execute(
            f"INSERT INTO dag_run (dag_id, run_id, run_type, state, queued_at, start_date, end_date,"
            f" data_interval_start, data_interval_end, clear_number, {run_cols})"
            " SELECT 'bulk_' || (i %% %(dags)s + 1), 'scheduled__' || i, 'scheduled',"
            "  CASE WHEN i > %(runs)s - %(live)s THEN (CASE WHEN i %% 2 = 0 THEN 'running' ELSE 'queued' END)"
            "       WHEN i %% 37 = 0 THEN 'failed' ELSE 'success' END,"
            "  ts, ts + interval '5 seconds',"
            "  CASE WHEN i > %(runs)s - %(live)s THEN NULL ELSE ts + interval '2 minutes' END,"
            f"  ts - interval '1 hour', ts, 0, {run_vals}"
            " FROM generate_series(1, %(runs)s) i,"
            "  LATERAL (SELECT now() - (%(runs)s - i) * interval '1 minute' AS ts) t",
            params,
        )
        self.execute(
            f"INSERT INTO task_instance (task_id, dag_id, run_id, state, try_number, max_tries, pool,"
            " pool_slots, queue, priority_weight, start_date, end_date, duration, queued_dttm,"
            f" updated_at{', id' if ti_id else ''})"
            " SELECT 'task_' || t, r.dag_id, r.run_id,"
            "  CASE WHEN r.state = 'running' THEN (CASE t WHEN 1 THEN 'running' WHEN 2 THEN 'queued'"
            "         WHEN 3 THEN 'scheduled' END)"
            "       WHEN r.state = 'queued' THEN NULL"
            "       WHEN r.state = 'failed' AND t = %(tasks)s THEN 'failed' ELSE 'success' END,"
            "  1, 0, 'default_pool', 1, 'default', 1, r.start_date + t * interval '1 second', r.end_date,"
            f"  1.0, r.start_date, COALESCE(r.end_date, now()){', gen_random_uuid()' if ti_id else ''}"
            " FROM dag_run r, generate_series(1, %(tasks)s) t WHERE r.dag_id LIKE 'bulk\\_%%'",
            params,
        )
        # 2.x writes a LocalTaskJob row per task run; both keep a row per component restart.
        job_type = "LocalTaskJob" if self.major == 2 else "SchedulerJob"
        self.execute(
            "INSERT INTO job (job_type, state, hostname, latest_heartbeat)"
            " SELECT %(job_type)s, 'success', 'host-' || (i %% 50), now() - i * interval '1 minute'"
            " FROM generate_series(1, %(n)s) i",
            {"job_type": job_type, "n": runs * tasks // 2 if self.major == 2 else 20_000},
        )
        self.execute("VACUUM ANALYZE dag, dag_run, task_instance, job")

    def _insert(self, table: str, cols: dict[str, Any]) -> None:
        query = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            sql.Identifier(table),
            sql.SQL(", ").join(map(sql.Identifier, cols)),
            sql.SQL(", ").join(map(sql.Placeholder, cols)),
        )
        self.execute(query, cols)


# ------------------------------------------------------------------ fixtures

VERSIONS = {"af2": install.AIRFLOW2, "af3": install.AIRFLOW3}


@pytest.fixture(params=sorted(VERSIONS))
def airflow_db(request: pytest.FixtureRequest) -> Iterator[AirflowDb]:
    version = VERSIONS[request.param]
    name = f"aops_metadb_{request.param}_{uuid.uuid4().hex[:8]}"
    dsn = create_database(name, template=migrated_template(version))
    db = AirflowDb(dsn, major=int(version.split(".")[0]))
    try:
        yield db
    finally:
        db.close()
        drop_database(name)


@pytest.fixture
def make_source(airflow_db: AirflowDb) -> Iterator[Callable[..., MetadataDbSource]]:
    sources: list[MetadataDbSource] = []

    def make(dsn: str | None = None, *, db: dict[str, Any] | None = None, **metrics: Any) -> MetadataDbSource:
        config = DatabaseConfig(dsn=Secret(dsn or airflow_db.dsn), **(db or {}))
        source = MetadataDbSource("test", config, MetricsConfig(**metrics))
        sources.append(source)
        return source

    yield make
    for source in sources:
        source.close()


def poll(source: MetadataDbSource) -> DbState:
    return source.poll(time.time())


def runs_finished(state: DbState, dag_id: str, run_state: str) -> int:
    return state.history.dag_runs_finished.get((dag_id, run_state), 0)


def tis_finished(state: DbState, dag_id: str, ti_state: str, task_id: str | None = None) -> int:
    return state.history.task_instances_finished.get((dag_id, task_id, ti_state), 0)


def health_of(state: DbState, dag_id: str) -> Any:
    return next(h for h in state.dag_health if h.dag_id == dag_id)


# ------------------------------------------------------------------ schema


def test_profile_matches_the_migrated_schema(airflow_db: AirflowDb) -> None:
    with psycopg2.connect(airflow_db.dsn) as conn:
        profile = detect_profile(conn)
    assert profile.major == airflow_db.major
    assert profile.run_date_nullable is (airflow_db.major == 3)


def _plan_all(dsn: str, profile: SchemaProfile) -> None:
    """EXPLAIN every statement built from ``profile``: a wrong column or expression fails here."""
    queries = Queries.for_profile(profile)
    params = {
        "ids": [1],
        "after_id": 0,
        "limit": 1,
        "dag_ids": ["d"],
        "run_ids": ["r"],
        "states": ["queued"],
        "cutoff": _dt(time.time()),
        "job_types": ["SchedulerJob"],
        "since": _dt(time.time()),
        "n": 1,
        "dag_id": "d",
        "after_date": _dt(0),
        "after_end": _dt(0),
    }
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        for name, statement in vars(queries).items():
            if statement is not None:
                cur.execute("EXPLAIN " + statement, params)
                assert cur.fetchall(), name


def test_every_statement_is_valid_on_the_real_schema(airflow_db: AirflowDb) -> None:
    with psycopg2.connect(airflow_db.dsn) as conn:
        columns = read_columns(conn)
    _plan_all(airflow_db.dsn, profile_for_columns(columns))
    if airflow_db.major == 3:
        # 3.0-3.2 have no dag.timetable_periodic: the fallback expression must hold on 3.x too.
        older = {**columns, "dag": {c: n for c, n in columns["dag"].items() if c != "timetable_periodic"}}
        fallback = profile_for_columns(older)
        assert "timetable_periodic" not in fallback.dag_scheduled_expr
        _plan_all(airflow_db.dsn, fallback)


def test_not_an_airflow_database_is_a_query_error(make_source: Callable[..., MetadataDbSource]) -> None:
    name = f"aops_metadb_empty_{uuid.uuid4().hex[:8]}"
    dsn = create_database(name)
    try:
        with pytest.raises(SourceError) as err:
            poll(make_source(dsn))
        assert err.value.reason == "query"
        assert "dag_run" in str(err.value)
    finally:
        drop_database(name)


# ------------------------------------------------------------------ dags, gauges


def test_dags_owner_paused_stale_schedule(
    airflow_db: AirflowDb, make_source: Callable[..., MetadataDbSource]
) -> None:
    airflow_db.add_dag("etl", owner="alice, bob")
    airflow_db.add_dag("manual_only", scheduled=False, paused=True)
    airflow_db.add_dag("gone")
    airflow_db.mark_stale("gone")
    dags = {d.dag_id: d for d in poll(make_source()).dags}
    assert dags["etl"].owner == "alice, bob"
    assert (dags["etl"].paused, dags["etl"].stale, dags["etl"].scheduled) == (False, False, True)
    assert dags["etl"].next_run_create_after is not None
    assert (dags["manual_only"].paused, dags["manual_only"].scheduled) == (True, False)
    assert dags["manual_only"].next_run_create_after is None
    assert dags["gone"].stale is True


def test_heartbeats_per_component_including_a_killed_scheduler(
    airflow_db: AirflowDb, make_source: Callable[..., MetadataDbSource]
) -> None:
    now = time.time()
    airflow_db.add_job("SchedulerJob", "sched-a", "success", now - 7200)  # an older process on sched-a
    airflow_db.add_job("SchedulerJob", "sched-a", "running", now - 5)
    # Killed with SIGKILL: the row still says running, its heartbeat just stops.
    airflow_db.add_job("SchedulerJob", "sched-b", "running", now - 900)
    airflow_db.add_job("SchedulerJob", "sched-old", "failed", now - 3 * 86400)  # beyond the lookback
    airflow_db.add_job("SchedulerJob", "sched-gone", "success", now - 600)  # shut down cleanly (pod replaced)
    airflow_db.add_job("TriggererJob", "trig-1", "running", now - 2)
    airflow_db.add_job("DagProcessorJob", "proc-1", "running", now - 3)
    if airflow_db.major == 2:
        airflow_db.add_job("LocalTaskJob", "worker-1", "running", now - 1)  # not a component
    source = make_source(heartbeat_lookback="1d")
    beats = {(b.component, b.hostname): b.last_heartbeat for b in poll(source).heartbeats}
    assert set(beats) == {
        ("scheduler", "sched-a"),
        ("scheduler", "sched-b"),
        ("triggerer", "trig-1"),
        ("dag_processor", "proc-1"),
    }
    assert beats[("scheduler", "sched-a")] == pytest.approx(now - 5, abs=0.01)
    assert beats[("scheduler", "sched-b")] == pytest.approx(now - 900, abs=0.01)
    # The killed scheduler's age keeps growing: its last heartbeat does not move.
    assert {(b.component, b.hostname): b.last_heartbeat for b in poll(source).heartbeats} == beats


def test_newest_heartbeat_per_component_outlives_the_lookback(
    airflow_db: AirflowDb, make_source: Callable[..., MetadataDbSource]
) -> None:
    """A component that stopped before the lookback has no per-host series any more, but its
    newest heartbeat still reads old: the "vanished heartbeat" alert needs exactly that."""
    now = time.time()
    source = make_source(heartbeat_lookback="1h")
    # A fresh deployment: no component ever ran, and none is reported as if it had.
    assert poll(source).newest_heartbeats == {"scheduler": None, "triggerer": None, "dag_processor": None}
    airflow_db.add_job("SchedulerJob", "sched-a", "running", now - 7200)
    airflow_db.add_job("SchedulerJob", "sched-b", "running", now - 30)
    airflow_db.add_job("TriggererJob", "trig-1", "running", now - 3 * 86400)
    state = poll(source)
    assert {b.component for b in state.heartbeats} == {"scheduler"}  # the triggerer aged out
    newest = state.newest_heartbeats
    assert newest["dag_processor"] is None
    assert newest["scheduler"] == pytest.approx(now - 30, abs=0.01)
    assert newest["triggerer"] == pytest.approx(now - 3 * 86400, abs=0.01)


def test_a_task_failing_across_consecutive_runs_has_a_streak(
    airflow_db: AirflowDb, make_source: Callable[..., MetadataDbSource]
) -> None:
    db = airflow_db
    db.add_dag("etl")
    db.add_dag("fine")
    t = T0

    def run(dag_id: str, state: str, failed: tuple[str, ...], ok: tuple[str, ...] = ("load",)) -> int:
        nonlocal t
        t += 100
        pk, run_id = db.add_run(dag_id, state, start=t - 10, end=t)
        for task_id in failed:
            db.add_ti(dag_id, run_id, task_id, "failed", start=t - 9, end=t - 1)
        for task_id in ok:
            db.add_ti(dag_id, run_id, task_id, "success", start=t - 9, end=t - 1)
        return pk

    run("etl", "failed", ("extract", "transform"))
    run("etl", "success", ())
    run("etl", "failed", ("extract", "transform"))
    run("etl", "failed", ("extract",))
    run("etl", "failed", ("extract", "transform"))
    run("fine", "success", ())
    source = make_source(success_ratio_runs=10)
    # Bootstrapped from history at startup: extract failed in the 3 runs since the success,
    # transform only in the newest one (the run before it did not fail transform).
    assert poll(source).task_failing_streaks == {("etl", "extract"): 3, ("etl", "transform"): 1}
    # A new failed run lengthens the streaks it failed in and ends the others.
    pk, run_id = db.add_run("etl", "running", start=t + 50)
    poll(source)
    db.add_ti("etl", run_id, "extract", "failed", start=t + 51, end=t + 60)
    db.add_ti("etl", run_id, "load", "upstream_failed")
    db.set_run(pk, "failed", end=t + 70)
    assert poll(source).task_failing_streaks == {("etl", "extract"): 4}
    # A successful run ends every streak of the DAG.
    pk, run_id = db.add_run("etl", "running", start=t + 100)
    poll(source)
    db.add_ti("etl", run_id, "extract", "success", start=t + 101, end=t + 110)
    db.set_run(pk, "success", end=t + 120)
    assert poll(source).task_failing_streaks == {}


def test_waiting_task_instances_and_oldest_waiting_since(
    airflow_db: AirflowDb, make_source: Callable[..., MetadataDbSource]
) -> None:
    now = time.time()
    airflow_db.add_dag("etl")
    _, run_id = airflow_db.add_run("etl", "running", start=now - 600)
    airflow_db.add_ti("etl", run_id, "s1", "scheduled", scheduled=now - 300)
    airflow_db.add_ti("etl", run_id, "s2", "scheduled", scheduled=now - 100)
    airflow_db.add_ti("etl", run_id, "q1", "queued", queued=now - 200, scheduled=now - 250)
    airflow_db.add_ti("etl", run_id, "q2", "queued", queued=now - 50, queue="gpu", pool="gpu_pool")
    airflow_db.add_ti("etl", run_id, "r1", "running", start=now - 30, queued=now - 40, heartbeat=now)
    airflow_db.add_ti("etl", run_id, "d1", "deferred", start=now - 30, queued=now - 40)
    airflow_db.add_ti("etl", run_id, "done", "success", start=now - 500, end=now - 400)
    airflow_db.add_ti("etl", run_id, "none", None)
    groups = {(g.state, g.pool, g.queue): g for g in poll(make_source()).task_groups}
    assert set(groups) == {
        ("scheduled", "default_pool", "default"),
        ("queued", "default_pool", "default"),
        ("queued", "gpu_pool", "gpu"),
        ("running", "default_pool", "default"),
        ("deferred", "default_pool", "default"),
    }
    scheduled = groups[("scheduled", "default_pool", "default")]
    assert scheduled.count == 2
    assert scheduled.oldest_waiting_since == pytest.approx(now - 300, abs=0.01)
    assert groups[("queued", "default_pool", "default")].oldest_waiting_since == pytest.approx(
        now - 200, abs=0.01
    )
    assert groups[("queued", "gpu_pool", "gpu")].count == 1
    assert groups[("running", "default_pool", "default")].oldest_waiting_since is None


def test_running_task_instances_with_a_stale_heartbeat(
    airflow_db: AirflowDb, make_source: Callable[..., MetadataDbSource]
) -> None:
    now = time.time()
    airflow_db.add_dag("etl")
    _, run_id = airflow_db.add_run("etl", "running", start=now - 3600)
    airflow_db.add_ti("etl", run_id, "fresh", "running", start=now - 900, heartbeat=now - 10)
    airflow_db.add_ti("etl", run_id, "zombie1", "running", start=now - 900, heartbeat=now - 600)
    airflow_db.add_ti("etl", run_id, "zombie2", "running", start=now - 900, heartbeat=now - 301)
    airflow_db.add_ti("etl", run_id, "old_but_done", "success", start=now - 900, end=now - 800)
    assert poll(make_source(stale_heartbeat_threshold="5m")).stale_heartbeat_task_instances == 2
    assert poll(make_source(stale_heartbeat_threshold="15m")).stale_heartbeat_task_instances == 0


def test_active_runs_and_oldest_running(
    airflow_db: AirflowDb, make_source: Callable[..., MetadataDbSource]
) -> None:
    now = time.time()
    for dag_id in ("a", "b"):
        airflow_db.add_dag(dag_id)
    airflow_db.add_run("a", "running", start=now - 500)
    airflow_db.add_run("a", "running", start=now - 100)
    airflow_db.add_run("a", "queued")
    airflow_db.add_run("b", "success", start=now - 900, end=now - 800)
    state = poll(make_source())
    assert state.runs_active == {"queued": 1, "running": 2}
    assert health_of(state, "a").oldest_running_started_at == pytest.approx(now - 500, abs=0.01)
    assert health_of(state, "b").oldest_running_started_at is None


def test_table_stats_are_refreshed_only_every_interval(
    airflow_db: AirflowDb, make_source: Callable[..., MetadataDbSource]
) -> None:
    source = make_source(db={"table_stats_interval": "1h"})
    tables = {t.table: t for t in source.poll(1000.0).tables}
    assert {"dag_run", "task_instance", "job", "dag"} <= set(tables)
    assert tables["task_instance"].bytes > 0
    airflow_db.add_dag("etl")
    airflow_db.execute("ANALYZE dag")
    assert {t.table: t for t in source.poll(1010.0).tables}["dag"] == tables["dag"]
    assert "tables" not in source.last_query_seconds
    assert {t.table: t for t in source.poll(1000.0 + 3600).tables}["dag"].rows_estimate == 1


# ------------------------------------------------------------------ counters


def test_each_run_and_try_is_counted_exactly_once_across_polls(
    airflow_db: AirflowDb, make_source: Callable[..., MetadataDbSource]
) -> None:
    db = airflow_db
    db.add_dag("etl")
    source = make_source(task_labels=True)
    poll(source)  # service start: nothing counted yet
    now = time.time()
    pk, run_id = db.add_run("etl", "queued", due=now - 30)
    db.add_ti("etl", run_id, "extract", None, try_number=0)
    db.add_ti("etl", run_id, "load", None, try_number=0)
    poll(source)
    db.set_run(pk, "running", start=now - 20)
    db.set_ti("etl", run_id, "extract", state="queued", try_number=1, queued=now - 19)
    db.set_ti("etl", run_id, "extract", state="running", start=now - 17)
    poll(source)
    db.set_ti("etl", run_id, "extract", state="success", end=now - 10)
    # load fails its first try, is retried (a new try), and succeeds on the second.
    db.set_ti("etl", run_id, "load", state="running", try_number=1, queued=now - 10, start=now - 9)
    state = poll(source)
    assert tis_finished(state, "etl", "success", "extract") == 1
    db.set_ti("etl", run_id, "load", state="up_for_retry", end=now - 8)
    poll(source)
    db.set_ti("etl", run_id, "load", state="queued", try_number=2, queued=now - 6, start=None, end=None)
    poll(source)
    db.set_ti("etl", run_id, "load", state="running", start=now - 4)
    poll(source)
    db.set_ti("etl", run_id, "load", state="success", end=now - 2)
    db.set_run(pk, "success", end=now - 1)
    for _ in range(5):
        state = poll(source)
    assert runs_finished(state, "etl", "success") == 1
    assert tis_finished(state, "etl", "success", "extract") == 1
    # Each try ends once: the first in up_for_retry, the second in success.
    assert tis_finished(state, "etl", "up_for_retry", "load") == 1
    assert tis_finished(state, "etl", "success", "load") == 1
    duration = state.history.dag_run_duration[("etl", "success")]
    assert (duration.count, duration.total) == (1, pytest.approx(19, abs=0.01))
    delay = state.history.dag_run_schedule_delay["etl"]
    assert (delay.count, delay.total) == (1, pytest.approx(10, abs=0.01))
    assert state.history.task_duration[("etl", "extract")].total == pytest.approx(7, abs=0.01)
    load = state.history.task_duration[("etl", "load")]  # 9->8 and 4->2
    assert (load.count, load.total) == (2, pytest.approx(3, abs=0.01))
    # Queue waits of the three tries: 19->17, 10->9, 6->4.
    wait = state.history.task_queue_wait[("default_pool", "default")]
    assert (wait.count, wait.total) == (3, pytest.approx(5, abs=0.01))
    assert source.last_query_seconds.keys() >= {"live_or_tracked_runs", "new_runs"}
    # Once finished, the run is forgotten: polls read no task instances at all.
    assert "run_tis" not in source.last_query_seconds


def test_interleaved_runs_and_polls_count_every_finish_once(
    airflow_db: AirflowDb, make_source: Callable[..., MetadataDbSource]
) -> None:
    """A small scheduler simulation: runs and task tries move one step at a time in a random
    order (fixed seed), with polls at random points in between."""
    rng = random.Random(7)
    db = airflow_db
    db.add_dag("sim")
    source = make_source()
    poll(source)
    tasks = ("a", "b", "c")
    runs: dict[str, dict[str, Any]] = {}
    for _ in range(12):
        pk, run_id = db.add_run("sim", "queued")
        for task in tasks:
            db.add_ti("sim", run_id, task, None, try_number=0)
        runs[run_id] = {"pk": pk, "state": "queued", "tis": {t: (None, 0) for t in tasks}}
    expected_tis: dict[str, int] = {}

    def step(run_id: str) -> None:
        run = runs[run_id]
        now = time.time()
        if run["state"] == "queued":
            db.set_run(run["pk"], "running", start=now)
            run["state"] = "running"
            return
        pending = [t for t, (state, _) in run["tis"].items() if state not in ("success", "failed")]
        if not pending:
            final = "failed" if any(s == "failed" for s, _ in run["tis"].values()) else "success"
            db.set_run(run["pk"], final, end=now)
            run["state"] = final
            return
        task = rng.choice(pending)
        state, tries = run["tis"][task]
        if state in (None, "up_for_retry"):
            new = ("queued", tries + 1)
            db.set_ti("sim", run_id, task, state="queued", try_number=tries + 1, queued=now, end=None)
        elif state == "queued":
            new = ("running", tries)
            db.set_ti("sim", run_id, task, state="running", start=now)
        else:  # running: first tries may fail and retry, the third try always ends
            outcome = rng.choice(["success", "up_for_retry"] if tries < 3 else ["success", "failed"])
            new = (outcome, tries)
            db.set_ti("sim", run_id, task, state=outcome, end=now)
            expected_tis[outcome] = expected_tis.get(outcome, 0) + 1
        run["tis"][task] = new

    while any(r["state"] in ("queued", "running") for r in runs.values()):
        step(rng.choice([k for k, r in runs.items() if r["state"] in ("queued", "running")]))
        if rng.random() < 0.3:
            poll(source)
    for _ in range(3):
        state = poll(source)
    expected_runs = {}
    for run in runs.values():
        expected_runs[("sim", run["state"])] = expected_runs.get(("sim", run["state"]), 0) + 1
    assert state.history.dag_runs_finished == expected_runs
    counted = {s: n for (_, _, s), n in state.history.task_instances_finished.items()}
    assert {s: counted.get(s, 0) for s in ("success", "failed")} == {
        s: expected_tis.get(s, 0) for s in ("success", "failed")
    }
    # A failed try is counted unless its retry was already queued when we polled.
    assert 0 < counted.get("up_for_retry", 0) <= expected_tis["up_for_retry"]
    assert source._tracker.runs == {}


def test_a_run_created_and_finished_between_two_polls_is_counted(
    airflow_db: AirflowDb, make_source: Callable[..., MetadataDbSource]
) -> None:
    db = airflow_db
    db.add_dag("fast")
    source = make_source()
    poll(source)
    now = time.time()
    _, run_id = db.add_run("fast", "failed", start=now - 5, end=now - 1, run_type="manual")
    db.add_ti("fast", run_id, "t1", "failed", start=now - 4, end=now - 2, queued=now - 5)
    db.add_ti("fast", run_id, "t2", "upstream_failed", try_number=0, end=now - 2)
    state = poll(source)
    assert runs_finished(state, "fast", "failed") == 1
    assert tis_finished(state, "fast", "failed") == 1
    assert tis_finished(state, "fast", "upstream_failed") == 1
    assert "fast" not in state.history.dag_run_schedule_delay  # manual runs have no schedule delay
    assert runs_finished(poll(source), "fast", "failed") == 1


def test_history_before_startup_is_not_counted_but_a_live_run_is_when_it_finishes(
    airflow_db: AirflowDb, make_source: Callable[..., MetadataDbSource]
) -> None:
    db = airflow_db
    db.add_dag("etl")
    now = time.time()
    db.add_run("etl", "success", start=now - 7200, end=now - 7000)
    pk, run_id = db.add_run("etl", "running", start=now - 600)
    db.add_ti("etl", run_id, "before", "success", start=now - 590, end=now - 500, queued=now - 595)
    db.add_ti("etl", run_id, "during", "running", start=now - 100, queued=now - 110, heartbeat=now)
    source = make_source()
    state = poll(source)
    assert state.history.dag_runs_finished == {}
    assert state.history.task_instances_finished == {}
    assert state.history.task_queue_wait == {}
    db.set_ti("etl", run_id, "during", state="success", end=now - 1)
    db.set_run(pk, "success", end=now)
    state = poll(source)
    assert runs_finished(state, "etl", "success") == 1
    assert state.history.task_instances_finished == {("etl", None, "success"): 1}
    assert runs_finished(poll(source), "etl", "success") == 1


def test_a_run_queued_at_startup_counts_all_its_tries(
    airflow_db: AirflowDb, make_source: Callable[..., MetadataDbSource]
) -> None:
    db = airflow_db
    db.add_dag("etl")
    pk, run_id = db.add_run("etl", "queued")
    db.add_ti("etl", run_id, "t", None, try_number=0)
    source = make_source()
    poll(source)
    # It starts, runs and finishes its task between two polls: all after startup, all counted.
    now = time.time()
    db.set_run(pk, "running", start=now)
    db.set_ti("etl", run_id, "t", state="success", try_number=1, queued=now, start=now + 1, end=now + 2)
    state = poll(source)
    assert tis_finished(state, "etl", "success") == 1
    assert state.history.task_queue_wait[("default_pool", "default")].count == 1
    db.set_run(pk, "success", end=now + 3)
    assert runs_finished(poll(source), "etl", "success") == 1


def test_mapped_task_instances_are_counted_per_map_index(
    airflow_db: AirflowDb, make_source: Callable[..., MetadataDbSource]
) -> None:
    db = airflow_db
    db.add_dag("fanout")
    source = make_source(task_labels=True)
    poll(source)
    now = time.time()
    pk, run_id = db.add_run("fanout", "running", start=now - 10)
    for i in range(3):
        db.add_ti("fanout", run_id, "map", "running", map_index=i, start=now - 5, heartbeat=now)
    poll(source)
    db.execute("UPDATE task_instance SET state = 'success', end_date = now() WHERE run_id = %s", (run_id,))
    db.set_run(pk, "success", end=now)
    for _ in range(2):
        state = poll(source)
    assert tis_finished(state, "fanout", "success", "map") == 3


def test_marking_a_failed_run_successful_updates_health_not_counters(
    airflow_db: AirflowDb, make_source: Callable[..., MetadataDbSource]
) -> None:
    db = airflow_db
    db.add_dag("etl")
    source = make_source()
    poll(source)
    now = time.time()
    pk, run_id = db.add_run("etl", "running", start=now - 10)
    db.add_ti("etl", run_id, "t", "up_for_retry", start=now - 9, end=now - 8)
    poll(source)
    db.set_run(pk, "failed", end=now - 5)
    state = poll(source)
    assert health_of(state, "etl").failing_since == pytest.approx(now - 5, abs=0.01)
    # The operator marks it successful (the up_for_retry TI keeps the run tracked meanwhile).
    db.set_ti("etl", run_id, "t", state="success")
    db.set_run(pk, "success", end=now - 1)
    state = poll(source)
    health = health_of(state, "etl")
    assert (health.last_run_state, health.failing_since, health.success_ratio) == ("success", None, 1.0)
    assert state.history.dag_runs_finished == {("etl", "failed"): 1}
    # The failed try (up_for_retry) and the success it was marked with are two ends of one try:
    # only the first counts.
    assert state.history.task_instances_finished == {("etl", None, "up_for_retry"): 1}


def test_marking_a_forgotten_failed_run_successful_recovers_the_dag(
    airflow_db: AirflowDb, make_source: Callable[..., MetadataDbSource]
) -> None:
    db = airflow_db
    db.add_dag("etl")
    pk, _ = db.add_run("etl", "failed", start=T0, end=T0 + 10)
    source = make_source()
    assert health_of(poll(source), "etl").failing_since == pytest.approx(T0 + 10, abs=0.01)
    db.set_run(pk, "success", end=T0 + 20)
    health = health_of(poll(source), "etl")
    assert (health.last_run_state, health.failing_since) == ("success", None)
    assert health.last_success_at == pytest.approx(T0 + 20, abs=0.01)
    assert poll(source).history.dag_runs_finished == {}


def test_a_cleared_run_counts_again(
    airflow_db: AirflowDb, make_source: Callable[..., MetadataDbSource]
) -> None:
    db = airflow_db
    db.add_dag("etl")
    now = time.time()
    source = make_source()
    poll(source)
    pk, run_id = db.add_run("etl", "failed", start=now - 900, end=now - 800)
    db.add_ti("etl", run_id, "ok", "success", start=now - 890, end=now - 880)
    db.add_ti("etl", run_id, "bad", "failed", start=now - 870, end=now - 860)
    state = poll(source)
    assert (runs_finished(state, "etl", "failed"), tis_finished(state, "etl", "failed")) == (1, 1)
    for _ in range(3):  # the run is forgotten once finished
        poll(source)
    # Clear only the failed task (and the run), as `airflow tasks clear -t bad` does.
    db.execute(
        "UPDATE task_instance SET state = NULL WHERE dag_id = 'etl' AND run_id = %s AND task_id = 'bad'",
        (run_id,),
    )
    db.execute(
        "UPDATE dag_run SET state = 'queued', start_date = NULL, end_date = NULL,"
        " clear_number = clear_number + 1 WHERE id = %s",
        (pk,),
    )
    poll(source)
    db.set_run(pk, "running", start=now - 50)
    db.set_ti("etl", run_id, "bad", state="running", try_number=2, start=now - 40, queued=now - 45)
    poll(source)
    db.set_ti("etl", run_id, "bad", state="success", end=now - 20)
    db.set_run(pk, "success", end=now - 10)
    state = poll(source)
    assert runs_finished(state, "etl", "failed") == 1
    assert runs_finished(state, "etl", "success") == 1
    # The untouched "ok" task is not counted a second time.
    assert tis_finished(state, "etl", "success") == 2
    assert health_of(state, "etl").last_run_state == "success"
    # A full clear (every task) that re-runs between two polls counts everything once more.
    db.clear_run(pk)
    poll(source)
    db.set_run(pk, "running", start=time.time())
    for task in ("ok", "bad"):
        db.set_ti("etl", run_id, task, state="success", try_number=3, start=time.time(), end=time.time())
    db.set_run(pk, "success", end=time.time())
    state = poll(source)
    assert runs_finished(state, "etl", "success") == 2
    assert tis_finished(state, "etl", "success") == 4


def test_db_clean_never_lowers_a_counter(
    airflow_db: AirflowDb, make_source: Callable[..., MetadataDbSource]
) -> None:
    db = airflow_db
    db.add_dag("etl")
    source = make_source()
    poll(source)
    now = time.time()
    live_pk, live_run = db.add_run("etl", "running", start=now - 60)
    db.add_ti("etl", live_run, "t", "running", start=now - 50, heartbeat=now)
    for i in range(5):
        _, run_id = db.add_run("etl", "success", start=now - 900 + i, end=now - 800 + i)
        db.add_ti("etl", run_id, "t", "success", start=now - 890, end=now - 880)
    before = poll(source).history
    assert before.dag_runs_finished == {("etl", "success"): 5}
    assert db.db_clean() == 5
    after = poll(source).history
    assert after == before
    # Counting goes on past the cleanup, from the same totals.
    db.set_ti("etl", live_run, "t", state="success", end=now)
    db.set_run(live_pk, "success", end=now)
    assert poll(source).history.dag_runs_finished == {("etl", "success"): 6}
    db.db_clean()
    assert poll(source).history.dag_runs_finished == {("etl", "success"): 6}


def test_counting_survives_a_lost_connection(
    airflow_db: AirflowDb, make_source: Callable[..., MetadataDbSource]
) -> None:
    db = airflow_db
    db.add_dag("etl")
    source = make_source()
    poll(source)
    now = time.time()
    pk, run_id = db.add_run("etl", "running", start=now - 60)
    db.add_ti("etl", run_id, "t", "running", start=now - 50, heartbeat=now)
    poll(source)
    db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE application_name = 'airflow-ops' AND datname = current_database()"
    )
    db.set_ti("etl", run_id, "t", state="success", end=now)
    db.set_run(pk, "success", end=now)
    with pytest.raises(SourceError) as err:
        poll(source)
    assert err.value.reason == "connect"
    state = poll(source)
    assert runs_finished(state, "etl", "success") == 1
    assert tis_finished(state, "etl", "success") == 1


# ------------------------------------------------------------------ dag health


def test_dag_health_is_bootstrapped_from_history(
    airflow_db: AirflowDb, make_source: Callable[..., MetadataDbSource]
) -> None:
    db = airflow_db
    for dag_id in ("healthy", "failing", "never_ok", "no_runs", "long_streak"):
        db.add_dag(dag_id)
    t = T0
    for state in ("failed", "success", "success"):
        t += 100
        db.add_run("healthy", state, start=t - 10, end=t)
    for state in ("success", "failed", "failed"):
        t += 100
        db.add_run("failing", state, start=t - 10, end=t)
    for _ in range(2):
        t += 100
        db.add_run("never_ok", "failed", start=t - 10, end=t)
    # Longer than the window of 3: last success and the start of the streak are looked up.
    t += 100
    db.add_run("long_streak", "success", start=t - 10, end=t)
    streak_start = t + 100
    for _ in range(5):
        t += 100
        db.add_run("long_streak", "failed", start=t - 10, end=t)
    db.add_run("long_streak", "running", start=t + 50)
    state = poll(make_source(success_ratio_runs=3))
    healthy = health_of(state, "healthy")
    assert (healthy.last_run_state, healthy.failing_since) == ("success", None)
    assert healthy.success_ratio == pytest.approx(2 / 3)
    failing = health_of(state, "failing")
    assert failing.last_run_state == "failed"
    assert failing.last_success_at == pytest.approx(T0 + 400, abs=0.01)
    assert failing.failing_since == pytest.approx(T0 + 500, abs=0.01)
    never = health_of(state, "never_ok")
    assert (never.last_success_at, never.success_ratio) == (None, 0.0)
    assert never.failing_since == pytest.approx(T0 + 700, abs=0.01)
    none = health_of(state, "no_runs")
    assert (none.last_run_state, none.success_ratio, none.failing_since) == (None, None, None)
    streak = health_of(state, "long_streak")
    assert streak.last_success_at == pytest.approx(streak_start - 100, abs=0.01)
    assert streak.failing_since == pytest.approx(streak_start, abs=0.01)
    assert streak.success_ratio == 0.0


def test_failing_since_stays_at_the_first_failure_until_a_success(
    airflow_db: AirflowDb, make_source: Callable[..., MetadataDbSource]
) -> None:
    db = airflow_db
    db.add_dag("etl")
    db.add_run("etl", "success", start=T0, end=T0 + 10)
    source = make_source(success_ratio_runs=4)
    state = poll(source)
    assert health_of(state, "etl").failing_since is None
    assert health_of(state, "etl").last_success_at == pytest.approx(T0 + 10, abs=0.01)
    now = time.time()
    first_fail = now - 300
    for end in (first_fail, now - 200, now - 100):
        pk, _ = db.add_run("etl", "running", start=end - 10)
        poll(source)
        db.set_run(pk, "failed", end=end)
        health = health_of(poll(source), "etl")
        assert (health.last_run_state, health.failing_since) == (
            "failed",
            pytest.approx(first_fail, abs=0.01),
        )
    assert health.success_ratio == pytest.approx(1 / 4)
    db.add_run("etl", "success", start=now - 20, end=now - 10)
    health = health_of(poll(source), "etl")
    assert (health.last_run_state, health.failing_since) == ("success", None)
    assert health.last_success_at == pytest.approx(now - 10, abs=0.01)
    assert health.success_ratio == pytest.approx(1 / 4)  # the window moved past the old success


def test_manual_runs_without_logical_date_count_for_health(
    airflow_db: AirflowDb, make_source: Callable[..., MetadataDbSource]
) -> None:
    """Airflow 3 manual runs have no logical date; they are still the latest runs (#136 upstream)."""
    db = airflow_db
    db.add_dag("etl")
    db.add_run("etl", "success", start=T0, end=T0 + 10)
    dated = db.major == 2
    db.add_run("etl", "failed", start=T0 + 100, end=T0 + 110, run_type="manual", dated=dated)
    db.add_run("etl", "failed", start=T0 + 200, end=T0 + 210, run_type="manual", dated=dated)
    health = health_of(poll(make_source(success_ratio_runs=2)), "etl")
    assert health.last_run_state == "failed"
    assert health.last_success_at == pytest.approx(T0 + 10, abs=0.01)
    assert health.failing_since == pytest.approx(T0 + 110, abs=0.01)


# ------------------------------------------------------------------ dag filter


def test_dag_filter_applies_to_every_dag_labelled_value(
    airflow_db: AirflowDb, make_source: Callable[..., MetadataDbSource]
) -> None:
    db = airflow_db
    for dag_id in ("keep_me", "tmp_scratch"):
        db.add_dag(dag_id)
    source = make_source(dag_deny="tmp_.*")
    poll(source)
    now = time.time()
    for dag_id in ("keep_me", "tmp_scratch"):
        pk, run_id = db.add_run(dag_id, "running", start=now - 10)
        db.add_ti(dag_id, run_id, "t", "running", start=now - 9, queued=now - 10, heartbeat=now)
        poll(source)
        db.set_ti(dag_id, run_id, "t", state="success", end=now)
        db.set_run(pk, "success", end=now)
    state = poll(source)
    assert [d.dag_id for d in state.dags] == ["keep_me"]
    assert [h.dag_id for h in state.dag_health] == ["keep_me"]
    assert set(state.history.dag_runs_finished) == {("keep_me", "success")}
    assert set(state.history.task_instances_finished) == {("keep_me", None, "success")}
    assert set(state.history.dag_run_duration) == {("keep_me", "success")}
    # Pool/queue series carry no dag_id: they describe the whole deployment.
    assert state.history.task_queue_wait[("default_pool", "default")].count == 2


# ------------------------------------------------------------------ failures


def test_statement_timeout_is_a_timeout_and_the_next_poll_recovers(
    airflow_db: AirflowDb, make_source: Callable[..., MetadataDbSource]
) -> None:
    airflow_db.add_dag("etl")
    source = make_source(db={"statement_timeout": "300ms"})
    poll(source)
    # A migration or VACUUM FULL holding an exclusive lock: our read must give up, not hang.
    locker = psycopg2.connect(airflow_db.dsn)
    try:
        with locker.cursor() as cur:
            cur.execute("LOCK TABLE dag IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        with pytest.raises(SourceError) as err:
            poll(source)
        assert time.monotonic() - started < 3
        assert err.value.reason == "timeout"
    finally:
        locker.rollback()
        locker.close()
    assert [d.dag_id for d in poll(source).dags] == ["etl"]


@pytest.fixture
def login_role(airflow_db: AirflowDb) -> Iterator[str]:
    role = f"aops_ro_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(ADMIN_DSN)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE ROLE {} NOLOGIN PASSWORD 'hunter2-s3cret'").format(sql.Identifier(role)))
        cur.execute(sql.SQL("GRANT pg_read_all_data TO {}").format(sql.Identifier(role)))
    try:
        yield role
    finally:
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
            cur.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
        admin.close()


def test_refused_login_is_auth_without_the_password_and_recovers(
    airflow_db: AirflowDb, make_source: Callable[..., MetadataDbSource], login_role: str
) -> None:
    dbname = airflow_db.dsn.rsplit("/", 1)[1]
    dsn = f"postgresql://{login_role}:hunter2-s3cret@127.0.0.1:5432/{dbname}"
    source = make_source(dsn)
    with pytest.raises(SourceError) as err:
        poll(source)
    assert err.value.reason == "auth"
    assert "hunter2-s3cret" not in str(err.value)
    assert dsn not in str(err.value)
    airflow_db.execute(sql.SQL("ALTER ROLE {} LOGIN").format(sql.Identifier(login_role)))
    assert poll(source).schema_major == airflow_db.major


def test_unknown_role_is_auth_and_unreachable_server_is_connect(
    make_source: Callable[..., MetadataDbSource],
) -> None:
    with pytest.raises(SourceError) as err:
        poll(make_source("postgresql://nobody_here:hunter2-s3cret@127.0.0.1:5432/postgres"))
    assert err.value.reason == "auth"
    assert "hunter2-s3cret" not in str(err.value)
    with pytest.raises(SourceError) as err:
        poll(make_source("postgresql://u:hunter2-s3cret@127.0.0.1:1/postgres", db={"connect_timeout": 2}))
    assert err.value.reason == "connect"
    assert "hunter2-s3cret" not in str(err.value)


def test_session_settings(airflow_db: AirflowDb, make_source: Callable[..., MetadataDbSource]) -> None:
    source = make_source(db={"statement_timeout": "4s", "lock_timeout": "2s"})
    poll(source)
    rows = airflow_db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'airflow-ops'"
        " AND datname = current_database()"
    )
    assert rows == [(1,)]
    assert source._conn is not None
    with source._conn.cursor() as cur:
        cur.execute(
            "SELECT current_setting('statement_timeout'), current_setting('lock_timeout'),"
            " current_setting('default_transaction_read_only')"
        )
        assert cur.fetchone() == ("4s", "2s", "on")
        # Read-only even for a superuser: the exporter can never write to Airflow's database.
        with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
            cur.execute("CREATE TABLE should_not_exist (x int)")


# ------------------------------------------------------------------ query plans


def _seq_scans(plan: dict[str, Any]) -> list[str]:
    """Relations read with a Seq Scan anywhere in an EXPLAIN (FORMAT JSON) plan."""
    found = [plan["Relation Name"]] if plan.get("Node Type") == "Seq Scan" else []
    for child in plan.get("Plans", ()):
        found += _seq_scans(child)
    return found


def test_steady_state_queries_use_indexes_on_a_filled_database(
    airflow_db: AirflowDb, make_source: Callable[..., MetadataDbSource]
) -> None:
    """No statement the poll runs (nor the health bootstrap) may Seq Scan dag_run, task_instance
    or job once they hold history: their cost must follow live work, not table size."""
    db = airflow_db
    db.fill_history(dags=100, runs=20_000, tasks=5, live=100)
    source = make_source()
    poll(source)  # bootstrap, then a steady-state poll with the live runs tracked
    poll(source)
    assert source.profile is not None
    queries = Queries.for_profile(source.profile)
    live = db.execute("SELECT id, dag_id, run_id FROM dag_run WHERE state IN ('queued', 'running')")
    (max_id,) = db.execute("SELECT max(id) FROM dag_run")[0]
    now = time.time()
    params = {
        "ids": [pk for pk, _, _ in live],
        "after_id": max_id - 3,
        "limit": 2000,
        "dag_ids": [dag_id for _, dag_id, _ in live],
        "run_ids": [run_id for _, _, run_id in live],
        "states": ["scheduled", "queued", "running", "deferred", "up_for_retry", "up_for_reschedule"],
        "cutoff": _dt(now - 300),
        "job_types": ["SchedulerJob", "TriggererJob", "DagProcessorJob"],
        "since": _dt(now - 86400),
        "n": 10,
        "dag_id": "bulk_7",
        "after_date": _dt(now - 86400),
        "after_end": _dt(now - 86400),
    }
    statements = {k: v for k, v in vars(queries).items() if v is not None and k not in ("dags", "tables")}
    bootstrap_dags = [f"bulk_{i}" for i in range(1, 101)]
    with psycopg2.connect(db.dsn) as conn, conn.cursor() as cur:
        for name, statement in statements.items():
            run_params = {**params, "dag_ids": bootstrap_dags} if name.startswith("recent") else params
            cur.execute("EXPLAIN (FORMAT JSON) " + statement, run_params)
            plan = cur.fetchone()[0][0]["Plan"]
            scanned = set(_seq_scans(plan)) & {"dag_run", "task_instance", "job"}
            assert not scanned, f"{name} seq-scans {scanned}"
