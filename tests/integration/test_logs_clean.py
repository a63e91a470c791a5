"""``logs clean`` on the log folders of real Airflow 3 and Airflow 2 deployments.

A run of ``logs_probe`` (tests/dags/logs_probe.py) finishes; a second one keeps its ``hold`` task
running until the test releases it. Every log of both runs is then made 40 days old (os.utime),
beside synthetic logs of the test's own DAG ids (overrides, the 2.0/2.1 layout, scheduler and
dag-processor logs, symlinks out of the tree). The clean must delete exactly the finished run's
logs and the synthetic ones past their retention, keep the running task's log, report the
figures per DAG and kind — and the held task must then finish normally.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from airflow_ops.devstack.stack import AirflowStack
from airflow_ops.maintenance.logs import (
    LogCleanError,
    LogPolicy,
    execute_clean,
    find_log_folder,
    find_log_layout,
    plan_clean,
)
from airflow_ops.maintenance.logs_live import read_live_task_instances

DAG = "logs_probe"
DAY = 86400.0
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _age(path: Path, days: float) -> None:
    when = time.time() - days * DAY
    os.utime(path, (when, when), follow_symlinks=False)


def _put(root: Path, rel: str, days: float, text: str = "a log line\n") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    _age(path, days)
    return path


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def _wait_running(stack: AirflowStack, run_id: str, task_id: str, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        state = stack.api("GET", f"dags/{DAG}/dagRuns/{run_id}/taskInstances/{task_id}").get("state")
        if state == "running" and log.is_file() and log.stat().st_size > 0:
            return
        if state in ("success", "failed", "upstream_failed"):
            break
        time.sleep(0.5)
    raise AssertionError(f"{task_id} of {run_id} never ran with a log (last state {state!r})")


@pytest.mark.airflow
def test_clean_beside_a_running_task(airflow_stack: AirflowStack, tmp_path: Path) -> None:
    stack = airflow_stack
    logs = find_log_folder(stack.env)
    assert logs == stack.logs_dir
    tag = uuid.uuid4().hex[:8]
    done_run, live_run = f"logs_done_{tag}", f"logs_live_{tag}"
    flag = tmp_path / "release"

    stack.trigger(DAG, done_run, {})
    assert stack.wait_for_run(DAG, done_run) == "success"
    stack.trigger(DAG, live_run, {"flag": str(flag), "max_wait": 600})
    released = False
    try:
        live_dir = logs / f"dag_id={DAG}" / f"run_id={live_run}"
        hold_log = live_dir / "task_id=hold" / "attempt=1.log"
        _wait_running(stack, live_run, "hold", hold_log)
        done_dir = logs / f"dag_id={DAG}" / f"run_id={done_run}"
        done_files = _files(done_dir)
        # first, two mapped, hold: the real 3.x/2.x layout, map_index folders included.
        assert {p.relative_to(done_dir).as_posix() for p in done_files} >= {
            "task_id=first/attempt=1.log",
            "task_id=mapped/map_index=0/attempt=1.log",
            "task_id=mapped/map_index=1/attempt=1.log",
            "task_id=hold/attempt=1.log",
        }
        for path in done_files + _files(live_dir):
            _age(path, 40)
        done_bytes = sum(p.stat().st_size for p in done_files)

        # The DB sees the held task live, by the keys the layout is matched on.
        live = read_live_task_instances(stack.db_dsn, limit=1000)
        assert (DAG, live_run, "hold", -1) in live.tis
        assert (DAG, live_run) in live.runs
        assert not any(key[1] == done_run for key in live.tis)

        override, short, recent = f"logs_override_{tag}", f"logs_short_{tag}", f"logs_recent_{tag}"
        old_layout = f"logs_oldlayout_{tag}"
        synthetic = {
            "override": _put(logs, f"dag_id={override}/run_id=r/task_id=t/attempt=1.log", 40),
            "short": _put(logs, f"dag_id={short}/run_id=r/task_id=t/attempt=1.log", 3),
            "recent": _put(logs, f"dag_id={recent}/run_id=r/task_id=t/attempt=1.log", 5),
            "old_layout": _put(logs, f"{old_layout}/t/2021-01-01T00:00:00+00:00/1.log", 400),
            "not_a_log": _put(logs, f"dag_id={recent}/run_id=r/task_id=t/notes.txt", 400),
            "scheduler_old": _put(logs, f"scheduler/2000-01-01/dag_{tag}.py.log", 40),
            "scheduler_new": _put(logs, f"scheduler/2000-01-02/dag_{tag}.py.log", 3),
            "processor_old": _put(logs, f"dag_processor/2000-01-01/dags-folder/dag_{tag}.py.log", 10),
            "manager_rotated": _put(logs, "dag_processor_manager/dag_processor_manager.log.5", 10),
        }
        # Symlinks out of the tree, to old logs: neither followed nor deleted.
        outside = tmp_path / "outside"
        outside_log = _put(outside, "secret.log", 400)
        (logs / f"dag_id=logs_link_{tag}").symlink_to(outside, target_is_directory=True)
        file_link = logs / f"dag_id=logs_links_{tag}" / "run_id=r" / "task_id=t" / "attempt=1.log"
        file_link.parent.mkdir(parents=True)
        file_link.symlink_to(outside_log)
        _age(file_link, 400)

        policy = LogPolicy(
            retention=30 * DAY,
            dag_overrides={override: 60 * DAY, "re:logs_short_.*": 1 * DAY},
            scheduler_retention=7 * DAY,
            processor_retention=7 * DAY,
        )
        layout = find_log_layout(logs, stack.env)
        with pytest.raises(LogCleanError, match="more than 0 live"):
            plan_clean(logs, LogPolicy(live_limit=0), dsn=stack.db_dsn, layout=layout)

        plan = plan_clean(logs, policy, dsn=stack.db_dsn, layout=layout)
        planned = plan.report()
        assert planned.planned and planned.ok, planned.errors
        assert all(p.exists() for p in done_files), "the dry run deleted something"
        assert planned.data["live_protection"]["enabled"]
        assert planned.data["live_protection"]["task_instances"] >= 1

        # What the protection is worth: without the DB, the live run's (aged) logs would go too.
        unprotected = plan_clean(logs, replace(policy, require_db=False), dsn=None, layout=layout).report()
        assert unprotected.data["dags"][DAG]["files_deleted"] > len(done_files)
        assert "live-task protection: OFF" in unprotected.lines[0]

        report = execute_clean(plan)
        assert report.ok, report.errors
        assert not report.planned
        assert report.data["live_protection"]["task_instances"] >= 1  # read again to execute

        # The finished run's logs are gone, with their folders; the live run's are all there,
        # aged 40 days: kept for being live (the held task's own log may have been written to
        # since the plan — Airflow appends to a running task's log — which keeps it too).
        assert not done_dir.exists()
        assert hold_log.is_file()
        assert all(p.exists() for p in _files(live_dir))
        probe = report.data["dags"][DAG]
        assert probe["files_deleted"] == len(done_files)
        assert probe["bytes_freed"] == done_bytes
        assert probe["kept_live_files"] >= 1  # at least hold's, whatever the other tasks wrote since
        planned_probe = planned.data["dags"][DAG]
        assert planned_probe["files_deleted"] == probe["files_deleted"]
        assert planned_probe["bytes_freed"] == probe["bytes_freed"]

        # Per-DAG overrides (exact and regex) and the default retention.
        dags = report.data["dags"]
        assert dags[override]["files_deleted"] == 0 and dags[override]["kept_recent_files"] == 1
        assert dags[short]["files_deleted"] == 1
        assert dags[recent]["files_deleted"] == 0 and dags[recent]["kept_recent_files"] == 1
        assert dags[old_layout]["files_deleted"] == 1
        assert synthetic["override"].exists() and synthetic["recent"].exists()
        assert not (logs / f"dag_id={short}").exists()
        assert not (logs / old_layout).exists()
        assert synthetic["not_a_log"].exists()  # not an Airflow log: never touched by default

        # Scheduler and dag-processor logs, by their own retention; component folders stay.
        kinds = report.data["kinds"]
        assert kinds["scheduler"]["files_deleted"] == 1
        assert kinds["dag_processor"]["files_deleted"] == 2
        assert not synthetic["scheduler_old"].parent.exists()
        assert synthetic["scheduler_new"].exists()
        assert not synthetic["processor_old"].exists() and not synthetic["manager_rotated"].exists()
        assert (logs / "scheduler").is_dir() and (logs / "dag_processor").is_dir()
        # What the real Airflow writes beside its task logs is recognised (and fresh, so kept).
        if stack.major >= 3:
            assert kinds["dag_processor"]["files"] > 2  # dag_processor/<date>/dags-folder/*.py.log
        else:
            assert kinds["scheduler"]["files"] > 2  # scheduler/<date>/*.py.log
            assert kinds["dag_processor"]["files"] > 2  # + dag_processor_manager.log

        assert outside_log.exists() and file_link.is_symlink()
        assert (logs / f"dag_id=logs_link_{tag}").is_symlink()
        assert report.data["symlinks_skipped"] >= 2
        assert report.files_deleted == sum(k["files_deleted"] for k in kinds.values())
        assert report.bytes_freed == sum(k["bytes_freed"] for k in kinds.values())

        flag.touch()
        released = True
        assert stack.wait_for_run(DAG, live_run) == "success"
        assert "released" in hold_log.read_text()  # the task went on writing its kept log
    finally:
        if not released:
            flag.touch()


@pytest.mark.airflow
def test_live_read_failures_are_refused_with_the_reason(airflow3: AirflowStack, tmp_path: Path) -> None:
    policy = LogPolicy()
    # A PostgreSQL database that is not Airflow's.
    with pytest.raises(LogCleanError, match="unsupported metadata schema: no dag_run table"):
        plan_clean(tmp_path, policy, dsn=ADMIN_DSN)
    # The stack's DB under its SQLAlchemy name works as well as the libpq one.
    sqlalchemy_dsn = airflow3.db_dsn.replace("postgresql://", "postgresql+psycopg2://", 1)
    plan = plan_clean(tmp_path, policy, dsn=sqlalchemy_dsn)
    assert plan.report().ok
