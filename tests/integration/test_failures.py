"""What a DAG-failure notification shows, read through the real REST API of Airflow 3 and 2: the
failed task, the last lines of its log (a credential-looking line masked), links into the UI."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from airflow_ops.airflow.failures import failure_context, log_lines, scrub
from airflow_ops.airflow.rest import RestApiSource
from airflow_ops.config import ApiConfig, Secret

pytestmark = pytest.mark.airflow


def api_of(stack: Any) -> RestApiSource:
    return RestApiSource(
        "test", ApiConfig(url=stack.api_url, username=stack.username, password=Secret(stack.password))
    )


def test_the_latest_failed_run_its_failed_task_and_log_tail(airflow_stack: Any) -> None:
    dag = "alert_probe_notify" if airflow_stack.api_version == "v1" else "ops_probe"
    run_id = f"ctx_{uuid.uuid4().hex[:8]}"
    airflow_stack.trigger(dag, run_id, {"fail": True})
    assert airflow_stack.wait_for_run(dag, run_id) == "failed"
    api = RestApiSource(
        "test",
        ApiConfig(
            url=airflow_stack.api_url,
            username=airflow_stack.username,
            password=Secret(airflow_stack.password),
        ),
    )
    try:
        ctx = failure_context(api, dag, ui_url="https://airflow.example.com/", tail=150)
    finally:
        api.close()
    assert ctx is not None
    assert ctx["run_id"] == run_id
    [task] = ctx["failed_tasks"]
    task_id = "extract" if dag.startswith("alert_probe") else "probe"
    assert task["task_id"] == task_id and task["try_number"] == 1
    tail = task["log_tail"]
    assert "failed on request" in tail  # the error itself, not just Airflow's framing
    assert len(tail.splitlines()) <= 150
    if dag.startswith("alert_probe"):
        # The whole log fits in 150 lines: the credential line is in it, masked.
        assert "hunter2" not in tail
        assert "password=***" in tail
    assert ctx["dag_url"].startswith(f"https://airflow.example.com/dags/{dag}")
    assert run_id in task["log_url"] and task_id in task["log_url"]


def test_a_dag_without_failed_runs_has_no_context(airflow3: Any) -> None:
    api = RestApiSource(
        "test",
        ApiConfig(url=airflow3.api_url, username=airflow3.username, password=Secret(airflow3.password)),
    )
    try:
        assert failure_context(api, "weekly_ml_pipeline", ui_url="http://x", tail=5) is None
    finally:
        api.close()


def test_log_lines_of_both_generations_and_scrubbing() -> None:
    v1 = {"content": "line one\nINFO - password: hunter2\nline three"}
    v2 = {
        "content": [
            {"event": "starting", "level": "info"},
            "a plain line",
            {
                "event": "Task failed with exception",
                "level": "error",
                "error_detail": [{"exc_type": "RuntimeError", "exc_value": "boom <b>"}],
            },
        ]
    }
    assert log_lines(v1) == ["line one", "INFO - password: hunter2", "line three"]
    # Airflow 2 sends the repr of [(host, text), ...] as the content string.
    assert log_lines({"content": "[('vm', 'a\\nb'), ('vm2', 'c')]"}) == ["a", "b", "c"]
    assert log_lines(v2) == [
        "INFO starting",
        "a plain line",
        "ERROR Task failed with exception",
        "RuntimeError: boom <b>",
    ]
    assert scrub("INFO - password: hunter2 and token=abc") == "INFO - password: *** and token=***"
    assert (
        scrub("conn postgresql://u:sekrit@db", lambda t: t.replace("sekrit", "***"))
        == "conn postgresql://u:***@db"
    )
