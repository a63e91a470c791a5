"""The ``logs:`` config section, the LogPolicy built from it, and where the logs are found."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from airflow_ops.config.logs import LogsConfig
from airflow_ops.maintenance.logs import (
    LogCleanError,
    LogKind,
    LogPolicy,
    find_log_folder,
    find_log_layout,
    log_volume_free_bytes,
)

DAY = 86400.0


def test_config_to_policy() -> None:
    config = LogsConfig.model_validate(
        {
            "retention": "30d",
            "dag_overrides": {"daily_etl": "90d", "re:tmp_.*": "2d", "re:.*_etl": "10d"},
            "scheduler_retention": "7d",
            "require_db": False,
        }
    )
    policy = LogPolicy.from_config(config)
    assert policy.retention == 30 * DAY
    assert policy.retention_for_dag("daily_etl") == 90 * DAY  # exact wins over the regex below
    assert policy.retention_for_dag("tmp_x") == 2 * DAY
    assert policy.retention_for_dag("hourly_etl") == 10 * DAY
    assert policy.retention_for_dag("xtmp_x") == 30 * DAY  # full match, not search
    assert policy.retention_for_kind(LogKind.SCHEDULER) == 7 * DAY
    assert policy.retention_for_kind(LogKind.PROCESSOR) == 30 * DAY  # defaults to retention
    assert policy.retention_for_kind(LogKind.OTHER) is None  # never, unless configured
    assert not policy.require_db
    assert LogPolicy.from_config(LogsConfig()).require_db


def test_first_matching_regex_wins() -> None:
    policy = LogPolicy(dag_overrides={"re:a.*": 1 * DAY, "re:ab.*": 2 * DAY})
    assert policy.retention_for_dag("abc") == 1 * DAY


@pytest.mark.parametrize(
    ("data", "key", "message"),
    [
        ({"retention": 30}, "retention", "at least 1h"),  # 30 seconds, surely meant as days
        ({"retention": "soon"}, "retention", "not a duration"),
        ({"scheduler_retention": "10m"}, "scheduler_retention", "at least 1h"),
        ({"dag_overrides": {"re:(": "1d"}}, "dag_overrides", "re:(: invalid regular expression"),
        ({"dag_overrides": {"etl": "1s"}}, "dag_overrides", "etl: must be at least 1h"),
        ({"dag_overrides": {"re:": "1d"}}, "dag_overrides", "needs a dag_id or re:<regex>"),
        ({"folder": "logs"}, "folder", "absolute path"),
        ({"live_limit": 0}, "live_limit", "greater than or equal to 1"),
        ({"retension": "30d"}, "retension", "Extra inputs are not permitted"),
        ({"require_db": "maybe"}, "require_db", "valid boolean"),
    ],
)
def test_config_errors_name_the_key(data: dict[str, object], key: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        LogsConfig.model_validate(data)
    (error,) = info.value.errors()
    assert error["loc"][0] == key
    assert message in error["msg"]


def test_policy_rejects_what_the_config_would() -> None:
    with pytest.raises(ValueError, match="dag_overrides: re:\\[: invalid regular expression"):
        LogPolicy(dag_overrides={"re:[": DAY})
    with pytest.raises(ValueError, match="retention: a retention cannot be negative"):
        LogPolicy(retention=-1)


def test_find_log_folder_in_airflow_order(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {"AIRFLOW_HOME": str(home)}
    assert find_log_folder(env) == home / "logs"  # Airflow's default
    (home / "airflow.cfg").write_text("[logging]\nbase_log_folder = /srv/airflow/logs/\n")
    assert find_log_folder(env) == Path("/srv/airflow/logs")
    (home / "airflow.cfg").write_text("[logging]\nbase_log_folder = {AIRFLOW_HOME}/custom\n")
    assert find_log_folder(env) == home / "custom"
    cfg = tmp_path / "elsewhere.cfg"
    cfg.write_text("[logging]\nbase_log_folder = /var/log/airflow\n")
    assert find_log_folder({**env, "AIRFLOW_CONFIG": str(cfg)}) == Path("/var/log/airflow")
    env["AIRFLOW__LOGGING__BASE_LOG_FOLDER"] = "/mnt/logs"
    assert find_log_folder(env) == Path("/mnt/logs")  # env beats airflow.cfg
    assert find_log_folder(env, override="/explicit") == Path("/explicit")


def test_find_log_folder_rejects_a_relative_path(tmp_path: Path) -> None:
    with pytest.raises(LogCleanError, match=r"AIRFLOW__LOGGING__BASE_LOG_FOLDER.*'logs' is not an absolute"):
        find_log_folder({"AIRFLOW_HOME": str(tmp_path), "AIRFLOW__LOGGING__BASE_LOG_FOLDER": "logs"})
    with pytest.raises(LogCleanError, match=r"logs\.folder: 'rel' is not an absolute"):
        find_log_folder({}, override="rel")


def test_find_log_layout_from_airflow_config(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    env = {
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__SCHEDULER__CHILD_PROCESS_LOG_DIRECTORY": str(logs / "components" / "scheduler"),
        "AIRFLOW__LOGGING__DAG_PROCESSOR_MANAGER_LOG_LOCATION": "/var/log/manager/manager.log",
    }
    layout = find_log_layout(logs, env)
    assert layout.component(("components", "scheduler")) is LogKind.SCHEDULER
    assert layout.component(("scheduler",)) is LogKind.SCHEDULER  # the defaults stay known
    assert layout.component(("dag_processor",)) is LogKind.PROCESSOR
    assert layout.outside == ("[logging] dag_processor_manager_log_location: /var/log/manager",)
    # Defaults elsewhere than the log folder are not worth a note.
    assert find_log_layout(tmp_path / "other", {"AIRFLOW_HOME": str(tmp_path)}).outside == ()


def test_log_volume_free_bytes(tmp_path: Path) -> None:
    free = log_volume_free_bytes(tmp_path)
    assert free > 0
    assert abs(free - shutil.disk_usage(tmp_path).free) < 64 * 1024 * 1024
