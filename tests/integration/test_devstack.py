"""The local Airflow stacks are real and behave: health, DAG parsing, import errors, runs, and a
scheduler crash and restart. Each test runs against Airflow 3 and Airflow 2."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import psycopg2
import pytest

from airflow_ops.devstack.database import (
    create_database,
    database_exists,
    drop_database,
    dsn_for,
    migrated_template,
)
from airflow_ops.devstack.install import AIRFLOW2, AIRFLOW3
from airflow_ops.devstack.stack import AirflowStack, StackError

pytestmark = pytest.mark.airflow

TEST_DAGS_DIR = Path(__file__).resolve().parents[1] / "dags"

EXAMPLE_DAG_IDS = {
    "daily_etl",
    "weekly_ml_pipeline",
    "api_ingest",
    "always_failing",
    "slow_dag",
    "pool_limited",
}


def _run_id(label: str) -> str:
    return f"test_{label}_{uuid.uuid4().hex[:10]}"


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def test_stack_is_healthy(airflow_stack: AirflowStack) -> None:
    health = airflow_stack.health()
    assert health["metadatabase"]["status"] == "healthy"
    assert health["scheduler"]["status"] == "healthy"
    assert health["triggerer"]["status"] == "healthy"
    if airflow_stack.api_version == "v2":
        assert health["dag_processor"]["status"] == "healthy"
    assert airflow_stack.api_url.startswith("http://127.0.0.1:")


def test_lists_all_example_dags(airflow_stack: AirflowStack) -> None:
    dag_ids = set(airflow_stack.dag_ids())
    assert dag_ids >= EXAMPLE_DAG_IDS | {"ops_probe"}
    assert "broken_dag" not in dag_ids


def test_example_dags_paused_at_creation_except_probe(airflow_stack: AirflowStack) -> None:
    paused = {dag["dag_id"]: dag["is_paused"] for dag in airflow_stack.api("GET", "dags?limit=100")["dags"]}
    assert all(paused[dag_id] for dag_id in EXAMPLE_DAG_IDS)
    assert paused["ops_probe"] is False


def test_broken_file_is_an_import_error(airflow_stack: AirflowStack) -> None:
    errors = airflow_stack.import_errors()
    broken = [e for e in errors if e["filename"].endswith("broken_dag.py")]
    assert len(broken) == 1, errors
    assert "acme_warehouse" in broken[0]["stack_trace"]


def test_single_slot_pool_exists(airflow_stack: AirflowStack) -> None:
    pool = airflow_stack.api("GET", "pools/single_slot")
    assert pool["slots"] == 1


def test_probe_run_succeeds(airflow_stack: AirflowStack) -> None:
    run_id = _run_id("ok")
    airflow_stack.trigger("ops_probe", run_id)
    assert airflow_stack.wait_for_run("ops_probe", run_id, timeout=180) == "success"


def test_probe_run_fails_on_request(airflow_stack: AirflowStack) -> None:
    run_id = _run_id("fail")
    airflow_stack.trigger("ops_probe", run_id, conf={"fail": True})
    assert airflow_stack.wait_for_run("ops_probe", run_id, timeout=180) == "failed"
    tis = airflow_stack.api("GET", f"dags/ops_probe/dagRuns/{run_id}/taskInstances")["task_instances"]
    assert [(ti["task_id"], ti["state"]) for ti in tis] == [("probe", "failed")]


def test_airflow_cli_runs_against_the_stack(airflow_stack: AirflowStack) -> None:
    out = airflow_stack.airflow("pools", "list", "--output", "json").stdout
    assert "single_slot" in out
    with pytest.raises(StackError, match="exit code 2"):
        airflow_stack.airflow("no-such-command")
    assert airflow_stack.airflow("no-such-command", check=False).returncode == 2


def test_scheduler_crash_and_restart(airflow_stack: AirflowStack) -> None:
    airflow_stack.stop_component("scheduler")
    try:
        # The health check notices a missing heartbeat after the configured threshold.
        _wait_for(
            lambda: airflow_stack.health()["scheduler"]["status"] == "unhealthy",
            timeout=90,
            what="scheduler to be reported unhealthy",
        )
    finally:
        airflow_stack.start_component("scheduler")
    airflow_stack.wait_until_healthy(timeout=120)
    run_id = _run_id("after_restart")
    airflow_stack.trigger("ops_probe", run_id)
    assert airflow_stack.wait_for_run("ops_probe", run_id, timeout=180) == "success"


@pytest.mark.parametrize("version", [AIRFLOW3, AIRFLOW2], ids=["af3", "af2"])
def test_stop_leaves_no_process_and_drops_db(version: str) -> None:
    stack = AirflowStack(version, "pytest-stop", [TEST_DAGS_DIR])
    stack.start()
    try:
        run_id = _run_id("busy")
        stack.trigger("ops_probe", run_id, conf={"sleep": 600})
        # A running task lives in a process group of its own: stop() must sweep it too.
        _wait_for(lambda: stack.run_state("ops_probe", run_id) == "running", 120, "probe to run")
        component_groups = {proc.pid for proc in stack._procs.values()}
        _wait_for(
            lambda: any(_pgid(pid) not in component_groups for pid in _marked(stack)),
            60,
            "a task process outside the components' process groups",
        )
    finally:
        stack.stop(drop_db=True)
    assert _marked(stack) == []
    assert not database_exists(stack.db_name)
    stack.stop(drop_db=True)  # idempotent


def _marked(stack: AirflowStack) -> list[int]:
    return stack.processes()


def _pgid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return None


def test_unpause(airflow_stack: AirflowStack) -> None:
    airflow_stack.api("PATCH", "dags/ops_probe?update_mask=is_paused", {"is_paused": True})
    try:
        assert airflow_stack.api("GET", "dags/ops_probe")["is_paused"] is True
    finally:
        airflow_stack.unpause("ops_probe")
    assert airflow_stack.api("GET", "dags/ops_probe")["is_paused"] is False


def test_database_helpers() -> None:
    name = f"airflow_ops_test_{uuid.uuid4().hex[:8]}"
    dsn = create_database(name)
    # An open connection does not block the drop: it terminates connections first.
    holder = psycopg2.connect(dsn)
    try:
        assert dsn == dsn_for(name)
        assert database_exists(name)
        with holder.cursor() as cur:
            cur.execute("SELECT current_database()")
            assert cur.fetchone() == (name,)
    finally:
        drop_database(name)
        holder.close()
    assert not database_exists(name)
    drop_database(name)  # absent: no error


@pytest.mark.parametrize("version", [AIRFLOW3, AIRFLOW2], ids=["af3", "af2"])
def test_migrated_template_is_reused(version: str) -> None:
    first = migrated_template(version)
    assert version.replace(".", "_") in first
    assert migrated_template(version) == first
    clone = create_database(f"airflow_ops_test_{uuid.uuid4().hex[:8]}", template=first)
    try:
        with closing(psycopg2.connect(clone)) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM alembic_version")
            assert cur.fetchone() == (1,)
    finally:
        drop_database(clone.rsplit("/", 1)[1])
