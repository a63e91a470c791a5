"""Schema profile selection from information_schema columns (no database needed).

The column sets below are the relevant columns of databases migrated by the real Airflow 2.11.2
and 3.3.2; the integration tests check the same profiles against those live schemas.
"""

from __future__ import annotations

import pytest

from airflow_ops.airflow.schema import (
    AIRFLOW2,
    AIRFLOW3,
    UnsupportedSchema,
    profile_for_columns,
)

_AF2 = {
    "dag": ["dag_id", "is_paused", "is_active", "owners", "schedule_interval", "next_dagrun_create_after"],
    "dag_run": [
        "id",
        "dag_id",
        "run_id",
        "state",
        "run_type",
        "execution_date",
        "start_date",
        "end_date",
        "data_interval_end",
    ],
    "task_instance": [
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
        "job_id",
    ],
    "job": ["id", "job_type", "hostname", "state", "latest_heartbeat"],
}
_AF3 = {
    "dag": [
        "dag_id",
        "is_paused",
        "is_stale",
        "owners",
        "timetable_summary",
        "timetable_periodic",
        "next_dagrun_create_after",
    ],
    "dag_run": [
        "id",
        "dag_id",
        "run_id",
        "state",
        "run_type",
        "logical_date",
        "run_after",
        "start_date",
        "end_date",
        "data_interval_end",
    ],
    "task_instance": [
        *(c for c in _AF2["task_instance"] if c != "job_id"),
        "scheduled_dttm",
        "last_heartbeat_at",
    ],
    "job": _AF2["job"],
}


def columns(spec: dict[str, list[str]], nullable: tuple[str, ...] = ()) -> dict[str, dict[str, bool]]:
    return {t: {c: f"{t}.{c}" in nullable for c in cols} for t, cols in spec.items()}


def test_airflow2_schema_gets_the_airflow2_profile() -> None:
    profile = profile_for_columns(columns(_AF2))
    assert profile == AIRFLOW2
    assert (profile.run_date_column, profile.run_expected_start_column) == (
        "execution_date",
        "data_interval_end",
    )
    assert profile.ti_heartbeat_expr == "hb.latest_heartbeat"
    assert "job hb" in profile.ti_heartbeat_join


def test_airflow3_schema_gets_the_airflow3_profile() -> None:
    profile = profile_for_columns(columns(_AF3, nullable=("dag_run.logical_date",)))
    assert profile == AIRFLOW3
    assert (profile.run_date_column, profile.run_expected_start_column) == ("logical_date", "run_after")
    assert profile.run_date_nullable is True
    assert profile.ti_heartbeat_join == ""
    assert profile.dag_scheduled_expr == "d.timetable_periodic"


def test_airflow3_before_3_3_falls_back_to_the_timetable_summary() -> None:
    spec = {**_AF3, "dag": [c for c in _AF3["dag"] if c != "timetable_periodic"]}
    profile = profile_for_columns(columns(spec))
    assert "timetable_summary" in profile.dag_scheduled_expr
    assert profile.major == 3


def test_nullability_comes_from_the_schema_not_the_version() -> None:
    assert profile_for_columns(columns(_AF3)).run_date_nullable is False


def test_job_types_per_component() -> None:
    for profile in (AIRFLOW2, AIRFLOW3):
        assert profile.job_type_by_component == {
            "scheduler": "SchedulerJob",
            "triggerer": "TriggererJob",
            "dag_processor": "DagProcessorJob",
        }
        assert profile.component_by_job_type["SchedulerJob"] == "scheduler"


def test_waiting_since_is_per_waiting_state() -> None:
    assert AIRFLOW3.waiting_since_expr() == (
        "CASE ti.state WHEN 'scheduled' THEN COALESCE(ti.scheduled_dttm, ti.updated_at)"
        " WHEN 'queued' THEN COALESCE(ti.queued_dttm, ti.updated_at) END"
    )
    assert "ti.updated_at" in AIRFLOW2.waiting_since_expr()
    assert "scheduled_dttm" not in AIRFLOW2.waiting_since_expr()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, "no dag_run table"),
        ({"dag_run": ["id", "dag_id"]}, "neither logical_date nor execution_date"),
        (
            {**_AF2, "task_instance": [c for c in _AF2["task_instance"] if c != "run_id"]},
            "task_instance.run_id",
        ),
        ({**_AF3, "job": ["id"]}, "job.job_type"),
    ],
)
def test_unsupported_schemas_are_refused_with_what_is_missing(
    spec: dict[str, list[str]], message: str
) -> None:
    with pytest.raises(UnsupportedSchema, match=message):
        profile_for_columns(columns(spec))
