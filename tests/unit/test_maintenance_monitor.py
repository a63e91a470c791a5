"""What the service exports about scheduled maintenance: overdue times from cron and the audit."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_ops.config import ConfigError, MaintenanceConfig, load_config
from airflow_ops.maintenance.audit import RunStatus, TaskSummary
from airflow_ops.maintenance.monitor import next_scheduled, overdue_seconds, task_states


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def test_next_scheduled_is_strictly_after() -> None:
    assert next_scheduled("0 2 * * *", ts("2026-11-22T02:00:00")) == ts("2026-11-23T02:00:00")
    assert next_scheduled("0 2 * * *", ts("2026-11-22T01:59:59.5")) == ts("2026-11-22T02:00:00")


def test_overdue_counts_from_the_first_time_after_the_last_success_across_missed_times() -> None:
    success = ts("2026-11-21T02:03:00")  # day 1's run
    start = ts("2026-11-01T00:00:00")
    assert overdue_seconds("0 2 * * *", success, ts("2026-11-22T01:59:00"), start) == 0  # not due yet
    assert overdue_seconds("0 2 * * *", success, ts("2026-11-22T02:10:00"), start) == 600
    # Day 2 failed and day 3's time passes too: it keeps growing, it does not restart at 02:00.
    assert overdue_seconds("0 2 * * *", success, ts("2026-11-23T02:01:00"), start) == 86400 + 60
    assert overdue_seconds("0 2 * * *", ts("2026-11-23T02:05:00"), ts("2026-11-23T02:06:00"), start) == 0
    # Never succeeded: from the first time after the schedules started.
    assert (
        overdue_seconds("0 2 * * *", None, ts("2026-11-22T05:00:00"), ts("2026-11-22T01:00:00")) == 3 * 3600
    )
    assert overdue_seconds("0 2 * * *", None, ts("2026-11-22T05:00:00"), ts("2026-11-22T03:00:00")) == 0


def test_task_states_cover_audited_and_scheduled_never_run_tasks() -> None:
    now = ts("2026-11-22T05:00:00")
    summaries = [
        TaskSummary(
            "prod", "db_clean", now - 100, RunStatus.FAILED, ts("2026-11-21T03:10:00"), 1000, 0, 0, 0
        ),
        TaskSummary("prod", "backup_list", now - 50, RunStatus.SUCCESS, now - 49, 0, 0, 0, 0),
        TaskSummary("other", "db_clean", now - 100, RunStatus.SUCCESS, now - 99, 7, 0, 0, 0),
    ]
    schedules = {"db_clean": "0 3 * * *", "logs_clean": "0 * * * *"}
    cfg = MaintenanceConfig.model_validate({"schedules": schedules, "logs": {}})
    states = task_states(summaries, "prod", cfg, now, since=ts("2026-11-22T04:30:00"))
    assert set(states) == {"db_clean", "backup_list", "logs_clean"}
    assert (states["db_clean"].last_status, states["db_clean"].rows_deleted) == ("failed", 1000)
    assert states["db_clean"].overdue_seconds == 2 * 3600  # 03:00 not answered: the run failed
    assert states["backup_list"].overdue_seconds is None  # not scheduled
    assert states["logs_clean"].last_status is None and states["logs_clean"].overdue_seconds == 0


@pytest.mark.parametrize(
    ("maintenance", "expected"),
    [
        ({"schedules": {"backup": "61 * * * *"}}, "backup: '61 * * * *' is not a 5-field cron expression"),
        ({"schedules": {"db_clean": "@daily"}}, "db_clean: '@daily' is not a 5-field cron expression"),
        ({"schedules": {"vacuum": "0 2 * * *"}}, "deployments.prod.maintenance.schedules.vacuum"),
        ({"schedules": {"backup": "0 2 * * *"}}, "schedules.backup needs a backup section"),
    ],
)
def test_bad_schedules_are_located(tmp_path: Path, maintenance: dict[str, Any], expected: str) -> None:
    path = tmp_path / "c.yaml"
    doc = {"deployments": {"prod": {"api": {"url": "http://x:8080"}, "maintenance": maintenance}}}
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert expected in str(err.value) and str(path) in str(err.value)
