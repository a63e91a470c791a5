"""db stats and db vacuum on real databases migrated by the real Airflow 2.11 and 3.3."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest

from airflow_ops.devstack import install
from airflow_ops.devstack.database import create_database, drop_database, migrated_template
from airflow_ops.maintenance.db_connection import DbMaintenanceError
from airflow_ops.maintenance.db_stats import collect_stats
from airflow_ops.maintenance.db_vacuum import execute_vacuum, plan_vacuum
from airflow_ops.maintenance.report import Report

VERSIONS = {"af2": install.AIRFLOW2, "af3": install.AIRFLOW3}
PROBE = "ops_probe_child"


@pytest.fixture(params=sorted(VERSIONS))
def db(request: pytest.FixtureRequest) -> Iterator[tuple[str, int, psycopg2.extensions.connection]]:
    """A migrated database with a table that references dag_run through an unindexed FK, 2000
    rows of which 1500 are deleted (dead tuples, and a heap far bigger than its live rows)."""
    version = VERSIONS[request.param]
    name = f"aops_dbstats_{request.param}_{uuid.uuid4().hex[:8]}"
    dsn = create_database(name, template=migrated_template(version))
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            date = "execution_date" if version.startswith("2") else "run_after"
            cur.execute(
                f"INSERT INTO dag_run (dag_id, run_id, run_type, clear_number, {date})"
                " VALUES ('probe', 'manual__1', 'manual', 0, now()) RETURNING id"
            )
            (run_pk,) = cur.fetchone()
            cur.execute(
                f"CREATE TABLE {PROBE} (id serial PRIMARY KEY,"
                " run_id integer REFERENCES dag_run (id) ON DELETE CASCADE, pad text)"
            )
            cur.execute(
                f"INSERT INTO {PROBE} (run_id, pad)"
                " SELECT %s, repeat('x', 200) FROM generate_series(1, 2000)",
                (run_pk,),
            )
            cur.execute(f"DELETE FROM {PROBE} WHERE id > 500")
            cur.execute(f"ANALYZE {PROBE}")
            cur.execute("SELECT pg_stat_force_next_flush()")
            cur.execute("SELECT 1")
        yield dsn, int(version[0]), conn
    finally:
        conn.close()
        drop_database(name)


def _table(report: Report, name: str) -> dict[str, Any]:
    return next(t for t in report.data["tables"] if t["table"] == name)


def _stats_when(dsn: str, ready: Any, timeout: float = 30.0) -> Report:
    """collect_stats once ``ready(report)`` holds: the statistics views are updated asynchronously."""
    deadline = time.monotonic() + timeout
    while True:
        report = collect_stats(dsn)
        if ready(report) or time.monotonic() > deadline:
            return report
        time.sleep(0.2)


def test_stats_report_sizes_tuples_bloat_and_unindexed_foreign_keys(db: Any) -> None:
    dsn, major, conn = db
    report = _stats_when(dsn, lambda r: _table(r, PROBE)["dead_tuples"] >= 1500)
    assert report.ok and report.action == "db.stats"
    probe = _table(report, PROBE)
    # Counters of the statistics system: estimates, updated asynchronously.
    assert probe["dead_tuples"] >= 1500 and probe["live_tuples"] >= 500 and probe["dead_ratio"] > 0.5
    assert probe["heap_bytes"] > 0 and probe["index_bytes"] > 0
    assert probe["total_bytes"] == probe["heap_bytes"] + probe["index_bytes"] + probe["toast_bytes"]
    assert probe["last_analyze"] is not None and probe["last_vacuum"] is None
    # The heap still holds the pages of 2000 rows; 500 live rows need a quarter of them.
    assert probe["bloat_bytes_estimate"] >= probe["heap_bytes"] // 2

    missing = {fk["constraint"]: fk for fk in report.data["unindexed_foreign_keys"]}
    fk = missing[f"{PROBE}_run_id_fkey"]
    assert fk["create_index"] == (
        f'CREATE INDEX CONCURRENTLY IF NOT EXISTS "idx_{PROBE}_run_id" ON "public"."{PROBE}" ("run_id")'
    )
    if major == 3:  # Airflow 3.3's own: deleting a run scans deadline
        assert missing["deadline_dagrun_id_fkey"]["on_delete"] == "cascade"
    assert any(fk["create_index"] in line for line in report.lines)
    # The suggested statement runs as printed (CONCURRENTLY: outside a transaction) and fixes it.
    with conn.cursor() as cur:
        cur.execute(fk["create_index"])
    after = collect_stats(dsn)
    assert f"{PROBE}_run_id_fkey" not in {f["constraint"] for f in after.data["unindexed_foreign_keys"]}
    assert len(after.data["unindexed_foreign_keys"]) == len(missing) - 1


def test_vacuum_analyze_then_full(db: Any) -> None:
    dsn = db[0]
    plan = plan_vacuum(dsn, [PROBE])
    planned = plan.report()
    assert planned.planned and [t["table"] for t in planned.data["tables"]] == [PROBE]
    done = execute_vacuum(plan)
    assert done.ok, done.errors
    (result,) = done.data["tables"]
    assert result["table"] == PROBE and result["seconds"] >= 0
    stats = _stats_when(dsn, lambda r: _table(r, PROBE)["last_vacuum"] is not None)
    assert _table(stats, PROBE)["dead_tuples"] == 0

    full = execute_vacuum(plan_vacuum(dsn, [PROBE], full=True))
    assert full.ok, full.errors
    (result,) = full.data["tables"]
    assert result["bytes_after"] < result["bytes_before"]
    assert full.bytes_freed == result["bytes_before"] - result["bytes_after"]
    assert "FULL" in full.summary


def test_vacuum_full_does_not_queue_behind_a_reader(db: Any) -> None:
    dsn, _, _ = db
    reader = psycopg2.connect(dsn)
    try:
        with reader.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {PROBE}")  # holds ACCESS SHARE until rollback
        done = execute_vacuum(plan_vacuum(dsn, [PROBE, "dag_run"], full=True, lock_timeout=0.2))
        assert not done.ok
        assert done.errors == [
            f"{PROBE}: lock not granted within 0.2s (canceling statement due to lock timeout)"
        ]
        assert [t["table"] for t in done.data["tables"]] == ["dag_run"]  # the others went on
    finally:
        reader.rollback()
        reader.close()


def test_vacuum_of_every_table_and_unknown_tables(db: Any) -> None:
    dsn, _, _ = db
    plan = plan_vacuum(dsn)
    names = [t.table for t in plan.tables]
    assert {"dag_run", "task_instance", PROBE} <= set(names) and names[0] == PROBE  # most dead first
    with pytest.raises(DbMaintenanceError, match="no such table in schema 'public': dag_runs"):
        plan_vacuum(dsn, ["dag_run", "dag_runs"])
    done = execute_vacuum(plan)
    assert done.ok and len(done.data["tables"]) == len(names)
