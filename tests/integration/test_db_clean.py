"""``db clean`` against real PostgreSQL databases migrated by the real Airflow 2.11 and 3.3, and
against running Airflow stacks.

Databases are clones of the migrated templates, filled with rows written with SQL the way Airflow
writes them (only the columns the cleanup reads, and the NOT NULL ones); every test checks exact
sets of surviving keys, that the dry run counted what was deleted, and that no foreign key was
broken (the set-based mode deletes with the FK triggers off, so this is its proof).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from psycopg2 import sql

from airflow_ops.config.db_clean import DbCleanConfig
from airflow_ops.devstack import install
from airflow_ops.devstack.database import (
    ADMIN_DSN,
    create_database,
    drop_database,
    dsn_for,
    migrated_template,
)
from airflow_ops.devstack.stack import AirflowStack
from airflow_ops.maintenance.db_archive import read_archive_rows
from airflow_ops.maintenance.db_catalog import read_catalog
from airflow_ops.maintenance.db_clean import CleanPolicy, DagOverride, execute_clean, plan_clean
from airflow_ops.maintenance.db_connection import connect
from airflow_ops.maintenance.report import Report

VERSIONS = {"af2": install.AIRFLOW2, "af3": install.AIRFLOW3}
DAY = 86400.0
NOW = datetime.now(timezone.utc).replace(microsecond=0)
REPO = Path(__file__).resolve().parents[2]


def ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


class History:
    """Writes metadata rows with SQL, for Airflow 2.11 or 3.3."""

    def __init__(self, dsn: str, major: int) -> None:
        self.dsn = dsn
        self.major = major
        self.conn = psycopg2.connect(dsn)
        self.conn.autocommit = True
        self._n = 0
        if major == 3:
            self.execute(
                "INSERT INTO dag_bundle (name, active) VALUES ('dags-folder', true) ON CONFLICT DO NOTHING"
            )

    def close(self) -> None:
        self.conn.close()

    def execute(self, query: Any, params: Any = None) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description else []

    def insert(self, table: str, returning: str | None = None, **cols: Any) -> Any:
        query = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            sql.Identifier(table),
            sql.SQL(", ").join(map(sql.Identifier, cols)),
            sql.SQL(", ").join(sql.Placeholder() * len(cols)),
        )
        if returning:
            query = sql.SQL("{} RETURNING {}").format(query, sql.Identifier(returning))
        rows = self.execute(query, [json.dumps(v) if isinstance(v, dict) else v for v in cols.values()])
        return rows[0][0] if rows else None

    def run(
        self,
        dag_id: str,
        name: str,
        state: str,
        age_days: float,
        *,
        run_type: str = "scheduled",
        started: bool = True,
        version: str | None = None,
    ) -> tuple[int, str]:
        """A dag_run ``name`` of ``dag_id``, due/started ``age_days`` ago (ended an hour later if
        finished); ``started=False`` leaves start_date NULL, as for a run that failed in the queue."""
        self._n += 1
        when = ago(age_days)
        run_id = f"{run_type}__{name}"
        cols: dict[str, Any] = {
            "dag_id": dag_id,
            "run_id": run_id,
            "run_type": run_type,
            "state": state,
            "queued_at": when,
            "start_date": when if started else None,
            "end_date": when + timedelta(hours=1) if state in ("success", "failed") else None,
            "clear_number": 0,
        }
        if self.major == 2:
            cols.update(execution_date=when, external_trigger=run_type == "manual")
        else:
            cols.update(
                logical_date=None if run_type == "manual" else when,
                run_after=when,
                triggered_by="rest_api" if run_type == "manual" else "timetable",
                created_dag_version_id=version,
            )
        return self.insert("dag_run", returning="id", **cols), run_id

    def ti(
        self,
        dag_id: str,
        run: tuple[int, str],
        task_id: str,
        state: str | None,
        age_days: float,
        *,
        version: str | None = None,
        trigger_id: int | None = None,
    ) -> None:
        """A task instance with the rows Airflow writes beside it: an XCom, rendered fields, a
        history row of an earlier try, and (for the second task) a reschedule."""
        when = ago(age_days)
        run_pk, run_id = run
        cols: dict[str, Any] = {
            "dag_id": dag_id,
            "run_id": run_id,
            "task_id": task_id,
            "map_index": -1,
            "state": state,
            "try_number": 2,
            "max_tries": 1,
            "pool": "default_pool",
            "pool_slots": 1,
            "start_date": when,
            "end_date": when + timedelta(minutes=5) if state in ("success", "failed") else None,
            "trigger_id": trigger_id,
        }
        ti_id = str(uuid.uuid4())
        if self.major == 3:
            cols.update(id=ti_id, dag_version_id=version)
        self.insert("task_instance", **cols)
        key = {"dag_id": dag_id, "run_id": run_id, "task_id": task_id, "map_index": -1}
        value: Any = json.dumps({"v": 1}) if self.major == 3 else b"\x80\x04K\x01."
        self.insert("xcom", dag_run_id=run_pk, key="return_value", value=value, timestamp=when, **key)
        self.insert("rendered_task_instance_fields", rendered_fields={"cmd": "echo"}, **key)
        history: dict[str, Any] = {
            **key,
            "try_number": 1,
            "state": "failed",
            "pool": "default_pool",
            "pool_slots": 1,
            "start_date": when - timedelta(minutes=10),
            "end_date": when - timedelta(minutes=9),
        }
        if self.major == 3:
            history["task_instance_id"] = str(uuid.uuid4())
        self.insert("task_instance_history", **history)
        if task_id == "t2":
            times = {"start_date": when, "end_date": when, "duration": 1, "reschedule_date": when}
            if self.major == 3:
                self.insert("task_reschedule", ti_id=ti_id, **times)
            else:
                self.insert("task_reschedule", try_number=1, **key, **times)

    def log(self, dag_id: str | None, age_days: float) -> int:
        return self.insert("log", returning="id", dttm=ago(age_days), dag_id=dag_id, event="cli_task_run")

    def job(self, state: str, age_days: float, job_type: str = "SchedulerJob") -> int:
        when = ago(age_days)
        return self.insert(
            "job", returning="id", state=state, job_type=job_type, start_date=when, latest_heartbeat=when
        )

    def trigger(self, age_days: float) -> int:
        return self.insert(
            "trigger", returning="id", classpath="x.Trigger", kwargs="{}", created_date=ago(age_days)
        )

    def import_error(self, age_days: float) -> int:
        return self.insert(
            "import_error", returning="id", timestamp=ago(age_days), filename="/dags/broken.py"
        )

    def dag_version(self, dag_id: str, number: int, age_days: float) -> str:
        """Airflow 3: a DAG version with its serialized DAG and code (which go with it)."""
        when = ago(age_days)
        vid = str(uuid.uuid4())
        self.insert(
            "dag_version",
            id=vid,
            version_number=number,
            dag_id=dag_id,
            bundle_name="dags-folder",
            created_at=when,
            last_updated=when,
        )
        self.insert(
            "serialized_dag",
            id=str(uuid.uuid4()),
            dag_id=dag_id,
            data={"dag": {}},
            created_at=when,
            last_updated=when,
            dag_hash="0" * 32,
            dag_version_id=vid,
        )
        self.insert(
            "dag_code",
            id=str(uuid.uuid4()),
            dag_id=dag_id,
            fileloc="/dags/x.py",
            created_at=when,
            last_updated=when,
            source_code="pass",
            source_code_hash="0" * 32,
            dag_version_id=vid,
        )
        return vid

    def callback(self, age_days: float, state: str | None) -> None:
        if self.major == 2:
            self.insert(
                "callback_request",
                created_at=ago(age_days),
                priority_weight=1,
                callback_data={},
                callback_type="TaskCallbackRequest",
            )
        else:
            self.insert(
                "callback",
                id=str(uuid.uuid4()),
                type="dag_processor",
                fetch_method="dag_attribute",
                data={},
                state=state,
                priority_weight=1,
                created_at=ago(age_days),
            )

    def dag(self, dag_id: str) -> None:
        if self.major == 2:
            self.insert("dag", dag_id=dag_id, is_paused=False, is_active=True, max_active_tasks=16,
                        max_consecutive_failed_dag_runs=0, has_task_concurrency_limits=False)  # fmt: skip
        else:
            self.insert("dag", dag_id=dag_id, is_paused=False, is_stale=False, bundle_name="dags-folder",
                        timetable_type="CronTriggerTimetable", partition_mapper_info={}, max_active_tasks=16,
                        max_consecutive_failed_dag_runs=0, has_task_concurrency_limits=False)  # fmt: skip

    # ---- reading back

    def keys(self, table: str, columns: str) -> set[tuple[Any, ...]]:
        return {tuple(r) for r in self.execute(f"SELECT {columns} FROM {table}")}

    def run_ids(self) -> set[str]:
        return {r[0] for r in self.execute("SELECT run_id FROM dag_run")}

    def runs_of(self, table: str) -> set[str]:
        return {r[0] for r in self.execute(f"SELECT DISTINCT run_id FROM {table}")}


def broken_foreign_keys(dsn: str) -> list[str]:
    """Every FK whose child rows point at no parent row (must be none)."""
    broken = []
    with connect(dsn, autocommit=True) as s:
        catalog = read_catalog(s)
        for fk in catalog.foreign_keys:
            cols = " AND ".join(f'c."{c}" IS NOT NULL' for c in fk.child_columns)
            match = " AND ".join(
                f'p."{p}" = c."{c}"' for c, p in zip(fk.child_columns, fk.parent_columns, strict=True)
            )
            n = s.scalar(
                "orphans",
                f'SELECT count(*) FROM "{fk.child}" c WHERE {cols}'
                f' AND NOT EXISTS (SELECT 1 FROM "{fk.parent}" p WHERE {match})',
            )
            if n:
                broken.append(f"{fk.name}: {n} orphans in {fk.child}")
    return broken


def table_keys(dsn: str, tables: list[str]) -> dict[str, set[tuple[Any, ...]]]:
    """Primary keys of every row of ``tables``."""
    out = {}
    with connect(dsn, autocommit=True) as s:
        catalog = read_catalog(s)
        for table in tables:
            if table in catalog.tables:
                pk = ", ".join(f'"{c}"' for c in catalog.tables[table].primary_key)
                out[table] = {tuple(str(v) for v in r) for r in s.rows("keys", f'SELECT {pk} FROM "{table}"')}
    return out


CLEANED = [
    "dag_run", "task_instance", "task_instance_history", "xcom", "rendered_task_instance_fields",
    "task_reschedule", "log", "job", "trigger", "import_error", "callback", "callback_request",
    "dag_version", "serialized_dag", "dag_code",
]  # fmt: skip


def deleted_per_table(report: Report) -> dict[str, int]:
    """Rows deleted per table, roots and cascades together."""
    out: dict[str, int] = {}
    for table, t in report.data["tables"].items():
        out[table] = out.get(table, 0) + t["deleted"]
        for child, n in t["cascade"].items():
            out[child] = out.get(child, 0) + n
    return {t: n for t, n in out.items() if n}


def planned_per_table(report: Report) -> dict[str, int]:
    out: dict[str, int] = {}
    for table, t in report.data["tables"].items():
        if "skipped" in t:
            continue
        out[table] = out.get(table, 0) + (t["rows"] or 0)
        for child, n in t["cascade"].items():
            out[child] = out.get(child, 0) + n
    return {t: n for t, n in out.items() if n}


# ------------------------------------------------------------------ fixtures


@pytest.fixture(params=sorted(VERSIONS))
def history(request: pytest.FixtureRequest) -> Iterator[History]:
    version = VERSIONS[request.param]
    name = f"aops_dbclean_{request.param}_{uuid.uuid4().hex[:8]}"
    dsn = create_database(name, template=migrated_template(version))
    h = History(dsn, major=int(version.split(".")[0]))
    try:
        yield h
    finally:
        h.close()
        drop_database(name)


def _scenario(h: History) -> dict[str, Any]:
    """Runs and rows whose fate under ``_policy`` is known; returns what must stay."""
    for dag_id in ("alpha", "bravo", "keep3", "short"):
        h.dag(dag_id)
    v1 = v2 = v3 = None
    if h.major == 3:
        v1, v2, v3 = (h.dag_version("alpha", n, age) for n, age in ((1, 60), (2, 40), (3, 2)))
    used_trigger = h.trigger(40)
    runs = {
        # alpha: old finished runs go (one never started, one manual); live ones stay.
        "a1": h.run("alpha", "a1", "success", 60, version=v1),
        "a2": h.run("alpha", "a2", "failed", 50, started=False),
        "a3": h.run("alpha", "a3", "success", 45, run_type="manual"),
        "a4": h.run("alpha", "a4", "running", 40),  # live
        "a5": h.run("alpha", "a5", "success", 35),  # finished, but holds a running task instance
        "a6": h.run("alpha", "a6", "success", 25),  # within retention; its XComs are older than 20d
        "a7": h.run("alpha", "a7", "success", 10),
        "a8": h.run("alpha", "a8", "success", 1, run_type="manual"),
        # bravo: only old runs: the newest non-manual (b2) and the newest of any type (b3) stay.
        "b1": h.run("bravo", "b1", "success", 90),
        "b2": h.run("bravo", "b2", "success", 80),
        "b3": h.run("bravo", "b3", "success", 70, run_type="manual"),
        # keep3 keeps its 3 newest non-manual runs.
        **{f"k{i}": h.run("keep3", f"k{i}", "success", 110 - 10 * i) for i in range(1, 6)},
        # short: runs older than 5 days go.
        "s1": h.run("short", "s1", "success", 10),
        "s2": h.run("short", "s2", "failed", 8),
        "s3": h.run("short", "s3", "success", 2),
    }
    for name, run in runs.items():
        dag_id = {"a": "alpha", "b": "bravo", "k": "keep3", "s": "short"}[name[0]]
        age = NOW - h.execute("SELECT queued_at FROM dag_run WHERE id = %s", (run[0],))[0][0]
        days = age.total_seconds() / DAY
        version = {"a1": v1, "a6": v2}.get(name)
        first_state = {"a4": "running", "a5": "running"}.get(name, "success")
        h.ti(dag_id, run, "t1", first_state, days, version=version)
        h.ti(dag_id, run, "t2", "deferred" if name == "a4" else "success", days, version=version,
             trigger_id=used_trigger if name == "a4" else None)  # fmt: skip
    logs = {"old": h.log("alpha", 40), "old_global": h.log(None, 40), "new": h.log("alpha", 5)}
    jobs = {
        "old": h.job("success", 40),
        "running": h.job("running", 40),
        "new": h.job("success", 5, "LocalTaskJob"),
    }
    triggers = {"old": h.trigger(40), "used": used_trigger, "new": h.trigger(5)}
    errors = {"old": h.import_error(40), "new": h.import_error(5)}
    h.callback(40, "success")
    h.callback(40, "running")
    h.callback(5, "success")
    kept_runs = {"a4", "a5", "a6", "a7", "a8", "b2", "b3", "k3", "k4", "k5", "s3"}
    return {
        "runs": runs,
        "kept_runs": {runs[r][1] for r in kept_runs},
        "xcom_runs": {runs[r][1] for r in kept_runs - {"a6"}},
        "logs": {logs["new"]},
        "jobs": {jobs["running"], jobs["new"]},
        "triggers": {triggers["used"], triggers["new"]},
        "import_errors": {errors["new"]},
        "versions": {v2, v3} if h.major == 3 else None,
    }


# Tables _policy keeps 30 days of (the rest keep their defaults).
THIRTY_DAYS = (
    "dag_run",
    "log",
    "job",
    "trigger",
    "import_error",
    "callback",
    "callback_request",
    "dag_version",
)


def _policy(**kw: Any) -> CleanPolicy:
    retention = dict.fromkeys(THIRTY_DAYS, 30 * DAY)
    retention["xcom"] = 20 * DAY
    overrides = (
        DagOverride(dag_ids=("keep3",), keep_last_runs=3),
        DagOverride(pattern="sh.*", retention={"dag_run": 5 * DAY}),
    )
    return CleanPolicy(retention=retention, dag_overrides=overrides, batch_size=3, **kw)


# ------------------------------------------------------------------ retention, keep-last, live rows


@pytest.mark.parametrize(("cascades", "workers"), [("set_based", 1), ("triggers", 1), ("set_based", 3)])
def test_exactly_what_the_policy_keeps_remains(history: History, cascades: str, workers: int) -> None:
    h = history
    expected = _scenario(h)
    before = table_keys(h.dsn, CLEANED)

    plan = plan_clean(h.dsn, _policy(cascades=cascades, workers=workers), now=NOW)
    dry = plan.report()
    assert dry.planned and dry.ok, dry.errors
    assert table_keys(h.dsn, CLEANED) == before, "the dry run changed something"
    assert all(t.set_based == (cascades == "set_based") for t in plan.tables if t.active)

    done = execute_clean(plan)
    assert done.ok, done.errors
    # The dry run counted exactly what was deleted, per table and per cascaded table.
    assert planned_per_table(dry) == deleted_per_table(done)
    assert done.rows_deleted == dry.data["total_rows"] > 0

    assert h.run_ids() == expected["kept_runs"]
    # Task instances and what hangs under them went with their runs (and only with them).
    for table in ("task_instance", "rendered_task_instance_fields", "task_instance_history"):
        assert h.runs_of(table) == expected["kept_runs"], table
    assert h.runs_of("xcom") == expected["xcom_runs"]  # a6's XComs: older than 20 days
    assert {r[0] for r in h.execute("SELECT id FROM log")} == expected["logs"]
    assert {r[0] for r in h.execute("SELECT id FROM job")} == expected["jobs"]
    assert {r[0] for r in h.execute("SELECT id FROM trigger")} == expected["triggers"]
    assert {r[0] for r in h.execute("SELECT id FROM import_error")} == expected["import_errors"]
    if h.major == 3:
        assert {r[0] for r in h.execute("SELECT id::text FROM dag_version")} == expected["versions"]
        # The version's serialized DAG and code went with it.
        assert {r[0] for r in h.execute("SELECT dag_version_id::text FROM serialized_dag")} == expected[
            "versions"
        ]
        assert {r[0] for r in h.execute("SELECT state FROM callback")} == {"running", "success"}
        assert done.data["tables"]["dag_version"]["cascade"] == {"serialized_dag": 1, "dag_code": 1}
    else:
        assert h.execute("SELECT count(*) FROM callback_request")[0][0] == 1
        # 2.x: task_reschedule hangs under dag_run twice (directly and through task_instance).
        assert h.runs_of("task_reschedule") == expected["kept_runs"]
    assert broken_foreign_keys(h.dsn) == []

    # Running it again finds nothing left.
    again = execute_clean(plan_clean(h.dsn, _policy(cascades=cascades), now=NOW))
    assert again.ok and again.rows_deleted == 0


def test_estimated_plan_is_labelled_and_execution_walks_the_whole_table(history: History) -> None:
    """Over ``estimate_over_rows`` the dry run samples the table (and says so) and execution finds
    the candidates window by window instead of by the plan's keys: same end state."""
    h = history
    expected = _scenario(h)
    h.execute("ANALYZE")  # row estimates come from pg_class.reltuples
    plan = plan_clean(h.dsn, _policy(), now=NOW, estimate_over_rows=0)
    dry = plan.report()
    assert dry.data["estimated"] and dry.summary.startswith("db clean would delete ≈")
    runs = dry.data["tables"]["dag_run"]
    assert runs["estimated"] and runs["sample_percent"] == 100.0
    assert any(line.startswith("dag_run: ≈") and "% sample of the table]" in line for line in dry.lines)
    assert all(t.keys is None for t in plan.tables if t.active and t.rows)  # (empty tables: [])
    done = execute_clean(plan)
    assert done.ok, done.errors
    assert h.run_ids() == expected["kept_runs"]
    assert h.runs_of("xcom") == expected["xcom_runs"]
    assert broken_foreign_keys(h.dsn) == []


def test_dag_filter_only_touches_those_dags_and_reports_skipped_tables(history: History) -> None:
    h = history
    _scenario(h)
    others_before = table_keys(h.dsn, CLEANED)
    plan = plan_clean(h.dsn, _policy(only_dag_ids=("bravo",)), now=NOW)
    dry = plan.report()
    skipped = {t: v["skipped"] for t, v in dry.data["tables"].items() if "skipped" in v}
    for table in ("trigger", "import_error"):
        assert "restricted to some DAGs" in skipped[table]
    done = execute_clean(plan)
    assert done.ok
    assert deleted_per_table(done) == planned_per_table(dry)
    bravo = {r[0] for r in h.execute("SELECT run_id FROM dag_run WHERE dag_id = 'bravo'")}
    assert bravo == {"scheduled__b2", "manual__b3"}
    after = table_keys(h.dsn, CLEANED)
    for table in ("log", "job", "trigger", "import_error"):
        assert after[table] == others_before[table], table
    assert h.execute("SELECT count(*) FROM dag_run WHERE dag_id <> 'bravo'")[0][0] == 16


def test_auto_mode_falls_back_to_trigger_cascades_without_the_privilege(history: History) -> None:
    """A role that may not set session_replication_role gets PostgreSQL's cascades, with the
    same end state; GRANT SET ON PARAMETER (PostgreSQL 15+) enables set-based cascades."""
    h = history
    expected = _scenario(h)
    role = f"aops_clean_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(ADMIN_DSN)
    admin.autocommit = True
    db = h.dsn.rsplit("/", 1)[1]
    try:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        with h.conn.cursor() as cur:
            cur.execute(
                sql.SQL("GRANT ALL ON ALL TABLES IN SCHEMA public TO {}").format(sql.Identifier(role))
            )
        role_dsn = dsn_for(db).replace("postgres@", f"{role}@", 1)
        plan = plan_clean(role_dsn, _policy(), now=NOW)
        assert not plan.replica and "may not set session_replication_role" in plan.mode_note
        assert not any(t.set_based for t in plan.tables)
        done = execute_clean(plan)
        assert done.ok, done.errors
        assert h.run_ids() == expected["kept_runs"]
        with admin.cursor() as cur:
            cur.execute(
                sql.SQL("GRANT SET ON PARAMETER session_replication_role TO {}").format(sql.Identifier(role))
            )
        assert plan_clean(role_dsn, _policy(), now=NOW).replica
    finally:
        with admin.cursor() as cur:
            cur.execute(
                sql.SQL("REVOKE SET ON PARAMETER session_replication_role FROM {}").format(
                    sql.Identifier(role)
                )
            )
        with h.conn.cursor() as cur:
            cur.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with admin.cursor() as cur:
            cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        admin.close()


# ------------------------------------------------------------------ archive


@pytest.mark.parametrize("cascades", ["set_based", "triggers"])
def test_archive_holds_exactly_the_deleted_rows(history: History, tmp_path: Path, cascades: str) -> None:
    h = history
    _scenario(h)
    before = table_keys(h.dsn, CLEANED)
    done = execute_clean(plan_clean(h.dsn, _policy(cascades=cascades), now=NOW), archive_dir=tmp_path)
    assert done.ok, done.errors
    after = table_keys(h.dsn, CLEANED)
    archived: dict[str, set[tuple[Any, ...]]] = {}
    with connect(h.dsn, autocommit=True) as s:
        catalog = read_catalog(s)
    (run_dir,) = tmp_path.iterdir()
    manifests = sorted(run_dir.glob("*.json"))
    assert manifests and not list(run_dir.glob("*.pending"))
    for manifest in manifests:
        for table, name in json.loads(manifest.read_text())["files"].items():
            pk = catalog.tables[table].primary_key
            for row in read_archive_rows(run_dir / name):
                archived.setdefault(table, set()).add(tuple(row[c] for c in pk))
    gone = {t: before[t] - after[t] for t in before if before[t] - after[t]}
    assert {t: _norm(k) for t, k in archived.items()} == {t: _norm(k) for t, k in gone.items()}
    assert done.bytes_written == sum(p.stat().st_size for p in run_dir.glob("*.csv.gz"))


def _norm(keys: set[tuple[Any, ...]]) -> set[tuple[str, ...]]:
    # CSV gives every value as text; the DB's str() of the same values is what table_keys holds.
    return {tuple(str(v) for v in k) for k in keys}


# ------------------------------------------------------------------ locks


def test_lock_held_elsewhere_is_retried_then_reported_not_waited_on(history: History) -> None:
    h = history
    expected = _scenario(h)
    plan = plan_clean(h.dsn, _policy(tables=("dag_run",), lock_timeout=0.2, lock_retries=2), now=NOW)
    blocker = psycopg2.connect(h.dsn)
    try:
        with blocker.cursor() as cur:
            cur.execute("LOCK TABLE task_instance IN ACCESS EXCLUSIVE MODE")
        done = execute_clean(plan)
        assert not done.ok
        (error,) = done.errors
        assert error.startswith("dag_run: a lock was not granted within 0.2s, 3 times")
        assert done.data["tables"]["dag_run"]["lock_retries"] == 3
        assert done.rows_deleted == 0
    finally:
        blocker.rollback()
        blocker.close()
    # Once the lock is gone the same plan completes.
    done = execute_clean(plan)
    assert done.ok, done.errors
    assert h.run_ids() == expected["kept_runs"]


def test_rows_locked_by_airflow_are_skipped_not_waited_for(history: History) -> None:
    h = history
    expected = _scenario(h)
    a1 = expected["runs"]["a1"][0]
    holder = psycopg2.connect(h.dsn)
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT 1 FROM dag_run WHERE id = %s FOR UPDATE", (a1,))
        policy = _policy(tables=("dag_run",), lock_timeout=60)
        done = execute_clean(plan_clean(h.dsn, policy, now=NOW))
        assert done.ok, done.errors
        assert h.run_ids() == expected["kept_runs"] | {"scheduled__a1"}
    finally:
        holder.rollback()
        holder.close()
    done = execute_clean(plan_clean(h.dsn, policy, now=NOW))
    assert done.data["tables"]["dag_run"]["deleted"] == 1
    assert h.run_ids() == expected["kept_runs"]


# ------------------------------------------------------------------ killed mid-run


def _bulk_history(h: History, dags: int = 12, runs: int = 120) -> None:
    """``dags`` x ``runs`` finished daily runs (4 tasks each, with XComs and rendered fields)."""
    run_cols = "logical_date, run_after, triggered_by" if h.major == 3 else "execution_date, external_trigger"
    run_vals = "t.when_, t.when_, 'timetable'" if h.major == 3 else "t.when_, false"
    h.execute(
        f"""
        INSERT INTO dag_run (dag_id, run_id, run_type, state, queued_at, start_date, end_date, clear_number,
                             {run_cols})
        SELECT t.dag_id, 'scheduled__' || t.k, 'scheduled', 'success', t.when_, t.when_,
               t.when_ + interval '1 hour', 0, {run_vals}
        FROM (SELECT 'bulk_' || d AS dag_id, k, %(now)s - k * interval '1 day' AS when_
              FROM generate_series(1, %(dags)s) d, generate_series(1, %(runs)s) k) t
        """,
        {"now": NOW, "dags": dags, "runs": runs},
    )
    ti_id = "gen_random_uuid(), " if h.major == 3 else ""
    h.execute(
        f"""
        INSERT INTO task_instance ({"id, " if h.major == 3 else ""}dag_id, run_id, task_id, map_index, state,
                                   try_number, max_tries, pool, pool_slots, start_date, end_date)
        SELECT {ti_id}r.dag_id, r.run_id, 'task_' || n, -1, 'success', 1, 0, 'default_pool', 1,
               r.start_date, r.end_date
        FROM dag_run r, generate_series(1, 4) n WHERE r.dag_id LIKE 'bulk_%%'
        """
    )
    value = "'{\"v\": 1}'::jsonb" if h.major == 3 else "'\\x80'::bytea"
    h.execute(
        f"""
        INSERT INTO xcom (dag_run_id, task_id, map_index, key, dag_id, run_id, value, timestamp)
        SELECT r.id, ti.task_id, -1, 'return_value', r.dag_id, r.run_id, {value}, ti.end_date
        FROM task_instance ti JOIN dag_run r ON r.dag_id = ti.dag_id AND r.run_id = ti.run_id
        WHERE r.dag_id LIKE 'bulk_%%'
        """
    )
    h.execute(
        """
        INSERT INTO rendered_task_instance_fields (dag_id, task_id, run_id, map_index, rendered_fields)
        SELECT dag_id, task_id, run_id, map_index, '{"cmd": "echo"}' FROM task_instance
        WHERE dag_id LIKE 'bulk_%%'
        """
    )
    h.execute("ANALYZE")


_KILLABLE = """
import sys
from datetime import datetime
from pathlib import Path
from airflow_ops.maintenance.db_clean import CleanPolicy, execute_clean, plan_clean

dsn, now, archive = sys.argv[1], datetime.fromisoformat(sys.argv[2]), Path(sys.argv[3])
plan = plan_clean(dsn, CleanPolicy(retention={"dag_run": 30 * 86400}, batch_size=10), now=now)
print("planned", plan.total_rows, flush=True)
execute_clean(plan, lambda done, total, unit: print("batch", done, flush=True), archive_dir=archive)
print("finished", flush=True)
"""


@pytest.fixture
def twin(history: History) -> Iterator[Callable[[], str]]:
    """Clones ``history``'s database as it is when called (its DSN)."""
    names: list[str] = []

    def clone() -> str:
        name = f"aops_dbclean_twin_{uuid.uuid4().hex[:8]}"
        history.conn.close()
        dsn = create_database(name, template=history.dsn.rsplit("/", 1)[1])
        history.conn = psycopg2.connect(history.dsn)
        history.conn.autocommit = True
        names.append(name)
        return dsn

    yield clone
    for name in names:
        drop_database(name)


def test_killed_mid_run_leaves_a_consistent_db_and_a_second_run_finishes(
    history: History, twin: Callable[[], str], tmp_path: Path
) -> None:
    h = history
    _bulk_history(h)
    reference = twin()  # cleaned in one go, for the end state to compare with
    archive = tmp_path / "archive"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLABLE, h.dsn, NOW.isoformat(), str(archive)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    planned = int(proc.stdout.readline().split()[1])
    batches = 0
    for line in proc.stdout:
        if line.startswith("batch"):
            batches += 1
            if batches == 8:
                proc.send_signal(signal.SIGKILL)
                break
    proc.wait()
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    # Consistent: some batches committed, the one in flight rolled back, no FK broken.
    partial = h.execute("SELECT count(*) FROM dag_run WHERE dag_id LIKE 'bulk_%%'")[0][0]
    assert 12 * 120 > partial > 12 * 30
    assert broken_foreign_keys(h.dsn) == []

    second = execute_clean(
        plan_clean(h.dsn, CleanPolicy(retention={"dag_run": 30 * DAY}), now=NOW), archive_dir=archive
    )
    assert second.ok, second.errors
    whole = execute_clean(plan_clean(reference, CleanPolicy(retention={"dag_run": 30 * DAY}), now=NOW))
    assert whole.ok and whole.rows_deleted == planned
    tables = ["dag_run", "task_instance", "xcom", "rendered_task_instance_fields"]
    assert table_keys(h.dsn, tables) == table_keys(reference, tables)
    assert broken_foreign_keys(h.dsn) == []
    # Across both runs the archive holds each deleted run exactly once (the killed batch's files
    # were settled: removed if it rolled back, completed if it had committed).
    runs = [
        (row["dag_id"], row["run_id"])
        for manifest in archive.glob("*/*.json")
        for table, name in json.loads(manifest.read_text())["files"].items()
        if table == "dag_run"
        for row in read_archive_rows(manifest.parent / name)
    ]
    assert len(runs) == len(set(runs)) == 12 * 90  # runs 31..120 days old
    assert not list(archive.glob("*/*.pending"))


# ------------------------------------------------------------------ config


def test_config_builds_the_policy_the_tests_use(history: History) -> None:
    h = history
    expected = _scenario(h)
    config = DbCleanConfig.model_validate(
        {
            "retention": dict.fromkeys(THIRTY_DAYS, "30d") | {"xcom": "20d"},
            "dag_overrides": [
                {"dag_ids": ["keep3"], "keep_last_runs": 3},
                {"pattern": "sh.*", "retention": {"dag_run": "5d"}},
            ],
            "batch_size": 3,
        }
    )
    done = execute_clean(plan_clean(h.dsn, config.to_policy(), now=NOW))
    assert done.ok
    assert h.run_ids() == expected["kept_runs"]


# ------------------------------------------------------------------ on a running Airflow


def _age_run(stack: AirflowStack, run_id: str, days: float) -> None:
    """Move a finished run of clean_probe, its task instances and their XComs ``days`` back."""
    shift = timedelta(days=days)
    with psycopg2.connect(stack.db_dsn) as conn, conn.cursor() as cur:
        date_col = "logical_date" if stack.major == 3 else "execution_date"
        extra = ", run_after = run_after - %(s)s" if stack.major == 3 else ""
        cur.execute(
            f"UPDATE dag_run SET start_date = start_date - %(s)s, end_date = end_date - %(s)s,"
            f" queued_at = queued_at - %(s)s, {date_col} = {date_col} - %(s)s{extra}"
            " WHERE dag_id = 'clean_probe' AND run_id = %(r)s",
            {"s": shift, "r": run_id},
        )
        cur.execute(
            "UPDATE task_instance SET start_date = start_date - %(s)s, end_date = end_date - %(s)s,"
            " queued_dttm = queued_dttm - %(s)s WHERE dag_id = 'clean_probe' AND run_id = %(r)s",
            {"s": shift, "r": run_id},
        )
        cur.execute(
            "UPDATE xcom SET timestamp = timestamp - %(s)s WHERE dag_id = 'clean_probe' AND run_id = %(r)s",
            {"s": shift, "r": run_id},
        )
    conn.close()


@pytest.mark.airflow
def test_airflow_still_works_after_clean(airflow_stack: AirflowStack) -> None:
    stack = airflow_stack
    tag = uuid.uuid4().hex[:6]
    run_ids = [f"clean_{tag}_{i}" for i in range(4)]
    for run_id in run_ids:
        stack.trigger("clean_probe", run_id)
        assert stack.wait_for_run("clean_probe", run_id) == "success"
    for run_id in run_ids[:3]:
        _age_run(stack, run_id, 100)
    h = History(stack.db_dsn, stack.major)
    try:
        old_log, new_log = h.log("clean_probe", 100), h.log("clean_probe", 1)
        other_runs = h.execute("SELECT count(*) FROM dag_run WHERE dag_id <> 'clean_probe'")[0][0]
        policy = CleanPolicy(retention={"dag_run": 30 * DAY, "log": 30 * DAY}, only_dag_ids=("clean_probe",))
        plan = plan_clean(stack.db_dsn, policy)
        dry = plan.report()
        assert dry.ok and plan.table("dag_run").rows == 3  # type: ignore[union-attr]
        done = execute_clean(plan)
        assert done.ok, done.errors
        assert planned_per_table(dry) == deleted_per_table(done)
        probe_runs = {r[0] for r in h.execute("SELECT run_id FROM dag_run WHERE dag_id = 'clean_probe'")}
        assert run_ids[3] in probe_runs and not probe_runs & set(run_ids[:3])
        for table in ("task_instance", "xcom", "rendered_task_instance_fields"):
            rows = {r[0] for r in h.execute(f"SELECT run_id FROM {table} WHERE dag_id = 'clean_probe'")}
            assert not rows & set(run_ids[:3]), table
            if table != "rendered_task_instance_fields":  # written by some versions only
                assert run_ids[3] in rows, table
        logs = {r[0] for r in h.execute("SELECT id FROM log WHERE id IN %s", ((old_log, new_log),))}
        assert logs == {new_log}
        assert h.execute("SELECT count(*) FROM dag_run WHERE dag_id <> 'clean_probe'")[0][0] >= other_runs
    finally:
        h.close()
    assert broken_foreign_keys(stack.db_dsn) == []
    stack.airflow("db", "check")
    assert "clean_probe" in stack.dag_ids()
    run_id = f"clean_{tag}_after"
    stack.trigger("clean_probe", run_id)
    assert stack.wait_for_run("clean_probe", run_id) == "success"
