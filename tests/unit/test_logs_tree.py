"""``logs clean`` on synthetic log trees (temp dirs, no Airflow): the edge cases that a real
deployment makes hard to stage — files written between plan and execute, permission errors,
vanished files, symlinks, empty folders, a concurrent clean, hostile names."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_ops.maintenance.logs import LogCleanError, LogPolicy, execute_clean, plan_clean

DAY = 86400.0
NO_DB = LogPolicy(retention=30 * DAY, require_db=False)


def _put(root: Path, rel: str, days: float, text: str = "line\n") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    _age(path, days)
    return path


def _age(path: Path, days: float) -> None:
    when = time.time() - days * DAY
    os.utime(path, (when, when), follow_symlinks=False)


@contextlib.contextmanager
def _undeletable(path: Path) -> Iterator[None]:
    """Make unlinking ``path`` fail with a real permission error, as root or not."""
    if os.geteuid() == 0:  # root ignores modes; the immutable attribute stops it (EPERM)
        subprocess.run(["chattr", "+i", str(path)], check=True, capture_output=True)
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True, capture_output=True)
    else:
        parent = path.parent
        parent.chmod(0o555)  # EACCES on unlink of anything inside
        try:
            yield
        finally:
            parent.chmod(0o755)


def test_plan_changes_nothing_and_execute_deletes_what_it_planned(tmp_path: Path) -> None:
    old = _put(tmp_path, "dag_id=d/run_id=r1/task_id=t/attempt=1.log", 40, "x" * 100)
    mapped = _put(tmp_path, "dag_id=d/run_id=r1/task_id=m/map_index=0/attempt=1.log", 40, "y" * 10)
    new = _put(tmp_path, "dag_id=d/run_id=r2/task_id=t/attempt=1.log", 5)
    calls: list[tuple[int, int | None, str]] = []
    plan = plan_clean(tmp_path, NO_DB, dsn=None, progress=lambda *a: calls.append(a))
    report = plan.report()
    assert old.exists() and mapped.exists()
    assert report.planned and report.ok
    assert (report.files_deleted, report.bytes_freed) == (2, 110)
    assert report.data["dags"]["d"]["files_deleted"] == 2
    assert report.data["dags"]["d"]["kept_recent_files"] == 1
    assert report.data["folders_removed"] == 4  # t, m/map_index=0, m, run_id=r1
    assert "live-task protection: OFF" in report.lines[0]
    assert calls[-1] == (3, None, "files")
    json.dumps(report.as_dict())  # JSON-able as is

    done = execute_clean(plan, progress=lambda *a: calls.append(a))
    assert done.ok and not done.planned
    assert (done.files_deleted, done.bytes_freed) == (2, 110)
    assert calls[-1] == (3, 3, "files")  # the plan's file count is the execution's total
    assert not (tmp_path / "dag_id=d/run_id=r1").exists()
    assert new.exists()
    assert tmp_path.is_dir()


def test_a_file_written_to_between_plan_and_execute_is_kept(tmp_path: Path) -> None:
    touched = _put(tmp_path, "dag_id=d/run_id=r/task_id=a/attempt=1.log", 40)
    untouched = _put(tmp_path, "dag_id=d/run_id=r/task_id=b/attempt=1.log", 40)
    plan = plan_clean(tmp_path, NO_DB, dsn=None)
    assert plan.report().files_deleted == 2
    with touched.open("a") as f:
        f.write("a task wrote again\n")
    report = execute_clean(plan)
    assert report.ok
    assert touched.exists() and not untouched.exists()
    assert report.files_deleted == 1
    assert report.data["dags"]["d"]["kept_recent_files"] == 1
    assert (tmp_path / "dag_id=d/run_id=r/task_id=a").is_dir()  # its folder stays with it


def test_permission_errors_are_counted_and_fail_the_report(tmp_path: Path) -> None:
    stuck = _put(tmp_path, "dag_id=d/run_id=r/task_id=a/attempt=1.log", 40)
    other = _put(tmp_path, "dag_id=d/run_id=r/task_id=b/attempt=1.log", 40)
    plan = plan_clean(tmp_path, NO_DB, dsn=None)
    with _undeletable(stuck):
        report = execute_clean(plan)
    assert not report.ok
    assert stuck.exists() and not other.exists()  # the walk went on past the failure
    assert report.files_deleted == 1
    assert report.data["failures"] == 1
    assert report.data["dags"]["d"]["failed_files"] == 1
    (error,) = report.errors
    assert error.startswith("dag_id=d/run_id=r/task_id=a/attempt=1.log: cannot delete: ")
    assert "1 failures" in report.summary
    assert (tmp_path / "dag_id=d/run_id=r/task_id=a").is_dir()


def test_a_file_that_vanished_is_not_a_failure(tmp_path: Path) -> None:
    gone = _put(tmp_path, "dag_id=d/run_id=r/task_id=a/attempt=1.log", 40)
    plan = plan_clean(tmp_path, NO_DB, dsn=None)
    gone.unlink()
    report = execute_clean(plan)
    assert report.ok
    assert report.files_deleted == 0
    # Its folder was just modified (by whoever deleted it): left for a later clean to judge.
    assert (tmp_path / "dag_id=d/run_id=r/task_id=a").is_dir()


def test_symlinks_are_never_followed_nor_deleted(tmp_path: Path) -> None:
    logs, outside = tmp_path / "logs", tmp_path / "outside"
    target = _put(outside, "dag_id=x/run_id=r/task_id=t/attempt=1.log", 400)
    logs.mkdir()
    (logs / "dag_id=x").symlink_to(outside / "dag_id=x", target_is_directory=True)
    link = logs / "dag_id=y/run_id=r/task_id=t/attempt=1.log"
    link.parent.mkdir(parents=True)
    link.symlink_to(target)
    _age(link, 400)
    (logs / "scheduler").symlink_to(outside, target_is_directory=True)
    plan = plan_clean(logs, NO_DB, dsn=None)
    assert plan.report().files_deleted == 0
    report = execute_clean(plan)
    assert report.ok and report.files_deleted == 0
    assert report.data["symlinks_skipped"] == 3
    assert target.exists() and link.is_symlink()
    assert (logs / "dag_id=x").is_symlink() and (logs / "scheduler").is_symlink()


def test_empty_folders(tmp_path: Path) -> None:
    stale = tmp_path / "dag_id=d/run_id=r/task_id=stale"
    stale.mkdir(parents=True)
    _age(stale, 40)
    fresh = tmp_path / "dag_id=d/run_id=r/task_id=fresh"  # e.g. just made for a log to come
    fresh.mkdir()
    component = tmp_path / "scheduler"
    component.mkdir()
    _age(component, 400)
    report = execute_clean(plan_clean(tmp_path, NO_DB, dsn=None))
    assert report.ok
    assert not stale.exists() and fresh.is_dir()
    assert component.is_dir()  # a component's own folder is never removed
    assert report.data["folders_removed"] == 1

    # The root itself is never removed, even emptied.
    _put(tmp_path, "dag_id=z/run_id=r/task_id=t/attempt=1.log", 40)
    shutil.rmtree(fresh.parent.parent)
    component.rmdir()
    execute_clean(plan_clean(tmp_path, NO_DB, dsn=None))
    assert tmp_path.is_dir() and not any(tmp_path.iterdir())


def test_folders_can_be_kept(tmp_path: Path) -> None:
    log = _put(tmp_path, "dag_id=d/run_id=r/task_id=t/attempt=1.log", 40)
    policy = LogPolicy(require_db=False, remove_empty_folders=False)
    report = execute_clean(plan_clean(tmp_path, policy, dsn=None))
    assert report.files_deleted == 1 and report.data["folders_removed"] == 0
    assert not log.exists() and log.parent.is_dir()


def test_retention_per_kind_and_other_files(tmp_path: Path) -> None:
    files = {
        "task": _put(tmp_path, "dag_id=d/run_id=r/task_id=t/attempt=1.log", 10),
        "scheduler": _put(tmp_path, "scheduler/2024-01-01/d.py.log", 10),
        "processor": _put(tmp_path, "dag_processor/2024-01-01/dags-folder/d.py.log", 10),
        "manager": _put(tmp_path, "dag_processor_manager/dag_processor_manager.log.2", 10),
        "other": _put(tmp_path, "something/else.txt", 400),
        "stray": _put(tmp_path, "dag_id=d/run_id=r/task_id=t/core.1234", 400),
    }
    policy = LogPolicy(
        retention=30 * DAY, scheduler_retention=7 * DAY, processor_retention=7 * DAY, require_db=False
    )
    report = execute_clean(plan_clean(tmp_path, policy, dsn=None))
    assert {name for name, path in files.items() if not path.exists()} == {
        "scheduler",
        "processor",
        "manager",
    }
    kinds = report.data["kinds"]
    assert kinds["scheduler"]["files_deleted"] == 1 and kinds["dag_processor"]["files_deleted"] == 2
    assert kinds["other"]["files"] == 2 and kinds["other"]["files_deleted"] == 0
    # Other files go only with an explicit retention of their own.
    policy = LogPolicy(other_retention=100 * DAY, require_db=False)
    execute_clean(plan_clean(tmp_path, policy, dsn=None))
    assert not files["other"].exists() and not files["stray"].exists()


def test_hostile_names_are_escaped_in_the_report(tmp_path: Path) -> None:
    name = os.fsdecode(b"dag_id=evil\n\x1b[31m\xff")
    (tmp_path / name / "run_id=r" / "task_id=t").mkdir(parents=True)
    log = tmp_path / name / "run_id=r" / "task_id=t" / "attempt=1.log"
    log.write_text("x")
    _age(log, 40)
    report = execute_clean(plan_clean(tmp_path, NO_DB, dsn=None))
    assert list(report.data["dags"]) == ["evil\\n\\x1b[31m\\xff"]
    text = json.dumps(report.as_dict(), ensure_ascii=False)
    text.encode("utf-8")  # no lone surrogate left
    assert "\n\x1b" not in "".join(report.lines)


def test_without_a_database(tmp_path: Path) -> None:
    with pytest.raises(LogCleanError, match=r"no metadata DB.*logs\.require_db: false"):
        plan_clean(tmp_path, LogPolicy(), dsn=None)


def test_an_unreachable_database_is_refused_without_showing_the_password(tmp_path: Path) -> None:
    dsn = "postgresql://ops:s3cr3t-pw@127.0.0.1:1/airflow"
    with pytest.raises(LogCleanError, match="cannot connect to the metadata DB") as info:
        plan_clean(tmp_path, LogPolicy(), dsn=dsn)
    assert "s3cr3t-pw" not in str(info.value)


def test_bad_folders(tmp_path: Path) -> None:
    with pytest.raises(LogCleanError, match="does not exist"):
        plan_clean(tmp_path / "missing", NO_DB, dsn=None)
    with pytest.raises(LogCleanError, match="filesystem root"):
        plan_clean(Path("/"), NO_DB, dsn=None)
    with pytest.raises(LogCleanError, match="not an absolute path"):
        plan_clean(Path("relative"), NO_DB, dsn=None)


def test_one_clean_at_a_time(tmp_path: Path) -> None:
    log = _put(tmp_path, "dag_id=d/run_id=r/task_id=t/attempt=1.log", 40)
    plan = plan_clean(tmp_path, NO_DB, dsn=None)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a clean running in another process would hold it
        report = execute_clean(plan)
    finally:
        os.close(fd)
    assert not report.ok and "another logs clean is running" in report.summary
    assert log.exists()
    assert execute_clean(plan).ok and not log.exists()


def test_a_folder_removed_after_the_plan(tmp_path: Path) -> None:
    _put(tmp_path, "logs/dag_id=d/run_id=r/task_id=t/attempt=1.log", 40)
    plan = plan_clean(tmp_path / "logs", NO_DB, dsn=None)
    shutil.rmtree(tmp_path / "logs")
    report = execute_clean(plan)
    assert not report.ok and report.summary.startswith("nothing deleted:")
