"""The maintenance commands' common contract, on a real Airflow 3 metadata database (a clone of the
template the real `airflow db migrate` made) and a real ops store: plan first, act only with --yes,
--json, an audit record for every run, exit 1 on failure, one run per task at a time, secrets never
shown; and the same actions on the service's cron schedules, exported as metrics."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from airflow_ops.cli import main
from airflow_ops.config import load_config
from airflow_ops.devstack.database import create_database, drop_database, migrated_template
from airflow_ops.devstack.install import AIRFLOW3
from airflow_ops.maintenance.audit import RunStatus, Trigger
from airflow_ops.maintenance.runner import lock_name
from airflow_ops.maintenance.schedule import MaintenanceScheduler
from airflow_ops.service import OpsService
from airflow_ops.store import open_store

# Trust auth on loopback accepts any password: one given here must never be shown.
PASSWORD = "not-the-password-7f3a"


@pytest.fixture(scope="module")
def airflow_db() -> Iterator[str]:
    name = f"aops_maint_cli_{os.getpid()}"
    dsn = create_database(name, template=migrated_template(AIRFLOW3))
    yield dsn.replace("postgres@", f"postgres:{PASSWORD}@", 1)
    drop_database(name)


@pytest.fixture
def config_file(tmp_path: Path, airflow_db: str) -> Path:
    return write_config(tmp_path, airflow_db)


def write_config(tmp_path: Path, dsn: str, schedules: dict[str, str] | None = None) -> Path:
    maintenance: dict[str, Any] = {"backup": {"dir": str(tmp_path / "backups")}}
    if schedules:
        maintenance["schedules"] = schedules
    config = {
        "store": f"sqlite:///{tmp_path / 'ops.db'}",
        "deployments": {"prod": {"database": {"dsn": dsn}, "maintenance": maintenance}},
    }
    (tmp_path / "backups").mkdir(exist_ok=True)
    path = tmp_path / "airflow-ops.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run(config: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [*args, "--config", str(config)], catch_exceptions=False)
    return result.exit_code, result.output


def audit(config: Path) -> list[Any]:
    with open_store(load_config(config).store.value) as store:
        return store.audit_runs()


def backups(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "backups").iterdir())


def test_plan_first_act_only_with_yes_and_audit_every_run(tmp_path: Path, config_file: Path) -> None:
    code, out = run(config_file, "backup", "create")
    assert code == 0
    assert "PLAN: would back up" in out and "nothing done: rerun with --yes" in out
    assert backups(tmp_path) == []  # no TTY to ask on, no --yes: nothing written
    (dry,) = audit(config_file)
    assert (dry.task, dry.planned, dry.status, dry.trigger) == (
        "backup",
        True,
        RunStatus.PLANNED,
        Trigger.CLI,
    )

    code, out = run(config_file, "backup", "create", "--yes")
    assert code == 0, out
    assert out.index("PLAN:") < out.index("DONE: backup ")  # the plan is printed before acting
    (made,) = backups(tmp_path)
    real = audit(config_file)[0]
    assert (real.task, real.planned, real.status) == ("backup", False, RunStatus.SUCCESS)
    assert real.action == "backup.create" and real.report is not None
    assert made in real.report["summary"] and real.report["bytes_written"] > 0

    code, out = run(config_file, "backup", "create", "--dry-run")
    assert code == 0 and "nothing done" not in out and len(backups(tmp_path)) == 1
    assert PASSWORD not in out
    assert all(PASSWORD not in json.dumps(r.to_json()) for r in audit(config_file))


def test_json_output_and_exit_status_on_failure(tmp_path: Path, config_file: Path) -> None:
    code, out = run(config_file, "backup", "create", "--yes", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["deployment"] == "prod" and doc["plan"]["planned"] is True
    assert doc["result"]["ok"] is True and doc["result"]["action"] == "backup.create"
    assert PASSWORD not in out

    code, out = run(config_file, "backup", "verify", "20000101T000000Z", "--json")
    assert code == 1
    doc = json.loads(out)
    assert doc["result"]["ok"] is False and "20000101T000000Z" in " ".join(doc["result"]["errors"])
    assert audit(config_file)[0].status is RunStatus.FAILED

    code, out = run(config_file, "backup", "list", "--deployment", "nope")
    assert code == 2 and "'nope' is not a configured deployment" in out

    missing = tmp_path / "no-such-dir"
    code, out = run(config_file, "backup", "list", "--dir", str(missing))
    assert code == 1 and f"backup directory {missing} does not exist" in out
    assert not missing.exists()


def test_a_run_waits_for_nobody_when_its_task_is_already_running(tmp_path: Path, config_file: Path) -> None:
    with open_store(load_config(config_file).store.value) as store:
        held = store.leadership(lock_name("prod", "backup"))
        assert held.try_acquire()
        try:
            code, out = run(config_file, "backup", "create", "--yes")
        finally:
            held.release()
    assert code == 1 and "another backup run for deployment 'prod' is in progress" in out
    assert backups(tmp_path) == []
    code, _ = run(config_file, "backup", "create", "--yes")  # free again
    assert code == 0 and len(backups(tmp_path)) == 1


def test_maintenance_runs_lists_the_audit(tmp_path: Path, config_file: Path) -> None:
    run(config_file, "backup", "create", "--yes")
    run(config_file, "backup", "list")
    code, out = run(config_file, "maintenance", "runs", "--json")
    assert code == 0
    assert [(r["task"], r["status"]) for r in json.loads(out)] == [
        ("backup_list", "success"),
        ("backup", "success"),
    ]
    code, out = run(config_file, "maintenance", "runs", "--task", "backup")
    assert code == 0 and "backup " in out and "backup_list" not in out


def test_scheduled_backup_creates_verifies_and_prunes_and_the_service_exports_it(
    tmp_path: Path, airflow_db: str
) -> None:
    config = load_config(write_config(tmp_path, airflow_db, schedules={"backup": "0 2 * * *"}))
    with open_store(config.store.value) as store:
        clock = [1_800_000_000.0]  # 2027-01-15 08:00 UTC: 02:00 is the next day
        scheduler = MaintenanceScheduler(config, store, clock=lambda: clock[0])
        other_store = open_store(config.store.value)  # a second replica on the same store
        other = MaintenanceScheduler(config, other_store, clock=lambda: clock[0])
        assert scheduler.tick() == []  # not due yet
        clock[0] += 18 * 3600 + 1  # past 02:00
        assert other.tick() != []  # this one schedules: it holds the scheduler lock first
        other.join()
        assert scheduler.tick() == []  # the other replica schedules; this one stays in step
        other.stop()
        other_store.close()

        runs = store.audit_runs()
        assert [(r.task, r.status, r.trigger) for r in reversed(runs)] == [
            ("backup", RunStatus.SUCCESS, Trigger.SCHEDULE),
            ("backup_verify", RunStatus.SUCCESS, Trigger.SCHEDULE),
            ("backup_prune", RunStatus.SUCCESS, Trigger.SCHEDULE),
        ]
        assert runs[-1].actor == "airflow-ops serve" and len(backups(tmp_path)) == 1
        scheduler.stop()

    service = OpsService(config)
    try:
        text = service.poll_once().encode(openmetrics=False).decode()
    finally:
        service.stop()
    samples = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line[:1] != "#"}
    dep = 'deployment="prod"'
    assert 0 <= samples[f"airflow_ops_backup_age_seconds{{{dep}}}"] < 600
    assert 0 <= samples[f"airflow_ops_backup_verified_age_seconds{{{dep}}}"] < 600
    assert samples[f"airflow_ops_backup_size_bytes{{{dep}}}"] > 0
    assert samples[f'airflow_ops_maintenance_last_run_status{{{dep},task="backup_verify"}}'] == 1
    # The runs finished (at real time) after the last real 02:00: that time was answered.
    assert samples[f'airflow_ops_maintenance_overdue_seconds{{{dep},task="backup"}}'] == 0
    assert not math.isnan(
        samples[f'airflow_ops_maintenance_last_success_timestamp_seconds{{{dep},task="backup"}}']
    )


def test_db_and_logs_commands_plan_act_and_run_on_schedule(tmp_path: Path, airflow_db: str) -> None:
    logs = tmp_path / "logs"
    old = logs / "dag_id=etl" / "run_id=manual__1" / "task_id=load" / "attempt=1.log"
    old.parent.mkdir(parents=True)
    old.write_text("done\n")
    os.utime(old, (1_600_000_000, 1_600_000_000))  # 2020: far past any retention
    path = write_config(tmp_path, airflow_db, schedules={"db_vacuum": "0 4 * * *", "logs_clean": "0 * * * *"})
    doc = yaml.safe_load(path.read_text())
    doc["deployments"]["prod"]["maintenance"]["logs"] = {"folder": str(logs), "retention": "30d"}
    path.write_text(yaml.safe_dump(doc))

    code, out = run(path, "db", "stats", "--json")
    assert code == 0 and json.loads(out)["result"]["action"] == "db.stats"
    code, out = run(path, "db", "clean", "--dry-run")
    assert code == 0 and "PLAN: db clean would delete 0 rows" in out
    # An interrupted run is resumed with the cutoffs its plan printed, and as many connections as asked.
    code, out = run(
        path, "db", "clean", "--dry-run", "--json", "--now", "2026-11-01T02:00:00", "--workers", "3"
    )
    plan = json.loads(out)["plan"]["data"]
    assert code == 0 and (plan["now"], plan["workers"]) == ("2026-11-01T02:00:00+00:00", 3)
    code, out = run(path, "db", "clean", "--now", "last tuesday")
    assert code == 2 and "Invalid value for '--now': 'last tuesday' is not an ISO-8601 time" in out
    code, out = run(path, "db", "clean", "--table", "no_such_table")
    assert code == 2 and "Invalid value for --table: Value error, unknown table 'no_such_table'" in out
    code, out = run(path, "logs", "clean")
    assert code == 0 and "would delete 1 files" in out and old.exists()

    config = load_config(path)
    with open_store(config.store.value) as store:
        clock = [1_800_000_000.0]  # 08:00 UTC
        scheduler = MaintenanceScheduler(config, store, clock=lambda: clock[0])
        clock[0] += 3600  # 09:00: logs_clean is due, db_vacuum (04:00) is not
        assert [job.task.value for job in scheduler.tick()] == ["logs_clean"]
        scheduler.join()
        scheduler.stop()
        (logs_run,) = store.audit_runs(task="logs_clean", limit=1)
    assert (logs_run.status, logs_run.trigger, logs_run.report["files_deleted"]) == (
        RunStatus.SUCCESS,
        Trigger.SCHEDULE,
        1,
    )
    assert not old.exists()

    service = OpsService(config)
    try:
        text = service.poll_once().encode(openmetrics=False).decode()
    finally:
        service.stop()
    assert 'airflow_ops_maintenance_files_deleted_total{deployment="prod",task="logs_clean"} 1.0' in text
    assert 'airflow_ops_log_volume_free_ratio{deployment="prod"}' in text
    assert 'airflow_ops_maintenance_overdue_seconds{deployment="prod",task="db_vacuum"}' in text
