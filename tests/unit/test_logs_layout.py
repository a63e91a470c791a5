"""Reading Airflow's log layouts from path names: task logs of 2.x/3.x and the 2.0/2.1 layout,
mapped tasks, triggerer files, component logs, odd names and files that are not logs."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from airflow_ops.maintenance.logs_layout import (
    ROOT,
    LogFile,
    LogKind,
    LogLayout,
    descend,
    is_log_name,
    parse_log_path,
    printable,
)
from airflow_ops.maintenance.logs_live import LiveTaskInstances

TS = datetime(2021, 4, 19, 13, 23, 5, 265458, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        # 2.2+ / 3.x default template.
        (
            "dag_id=etl/run_id=scheduled__2024-01-01T00:00:00+00:00/task_id=load/attempt=1.log",
            LogFile(LogKind.TASK, "etl", "scheduled__2024-01-01T00:00:00+00:00", "load", -1, None, 1),
        ),
        # Mapped task instance.
        (
            "dag_id=etl/run_id=manual__x/task_id=fan.out/map_index=12/attempt=3.log",
            LogFile(LogKind.TASK, "etl", "manual__x", "fan.out", 12, None, 3),
        ),
        # The triggerer's file beside the task log of a deferred task.
        (
            "dag_id=etl/run_id=r/task_id=wait/attempt=2.log.trigger.17.log",
            LogFile(LogKind.TASK, "etl", "r", "wait", -1, None, 2),
        ),
        # 2.0/2.1 default template: dag/task/ts/try.log.
        (
            "etl/load/2021-04-19T13:23:05.265458+00:00/2.log",
            LogFile(LogKind.TASK, "etl", None, "load", -1, TS, 2),
        ),
        # Odd but legal names: '=' in a run_id, dots and dashes, non-ASCII.
        (
            "dag_id=a.b-c/run_id=manual__k=v+1:2/task_id=grp.t-1/attempt=1.log",
            LogFile(LogKind.TASK, "a.b-c", "manual__k=v+1:2", "grp.t-1", -1, None, 1),
        ),
        (
            "dag_id=données/run_id=r/task_id=é/attempt=1.log",
            LogFile(LogKind.TASK, "données", "r", "é", -1, None, 1),
        ),
        # A map_index folder that is not a number leaves the identity as it was.
        (
            "dag_id=d/run_id=r/task_id=t/map_index=abc/attempt=1.log",
            LogFile(LogKind.TASK, "d", "r", "t", -1, None, 1),
        ),
        # Compressed or rotated copies of a task log are still its logs.
        ("dag_id=d/run_id=r/task_id=t/attempt=1.log.gz", LogFile(LogKind.TASK, "d", "r", "t", -1, None, 1)),
        # Component logs: 2.x scheduler, 2.x dag_processor_manager (+ rotations), 3.x dag-processor.
        ("scheduler/2024-01-01/etl.py.log", LogFile(LogKind.SCHEDULER)),
        ("scheduler/latest/sub/dir/etl.py.log", LogFile(LogKind.SCHEDULER)),
        ("dag_processor_manager/dag_processor_manager.log", LogFile(LogKind.PROCESSOR)),
        ("dag_processor_manager/dag_processor_manager.log.3", LogFile(LogKind.PROCESSOR)),
        ("dag_processor/2024-01-01/dags-folder/sub/etl.py.log", LogFile(LogKind.PROCESSOR)),
        # Not logs, or not where Airflow puts logs.
        ("dag_id=d/run_id=r/task_id=t/.attempt=1.log.swp", LogFile(LogKind.OTHER)),
        ("dag_id=d/run_id=r/task_id=t/.nfs000000000123", LogFile(LogKind.OTHER)),
        ("dag_id=d/run_id=r/task_id=t/notes.txt", LogFile(LogKind.OTHER)),
        ("scheduler/2024-01-01/core", LogFile(LogKind.OTHER)),
        ("airflow.log", LogFile(LogKind.OTHER)),
        ("etl/load/1.log", LogFile(LogKind.OTHER)),  # too shallow for the old layout
        ("etl/load/not-a-date/1.log", LogFile(LogKind.OTHER)),
        ("etl/load/2021/1.log", LogFile(LogKind.OTHER)),  # a year alone is no ts
        ("dag_id=/run_id=r/task_id=t/attempt=1.log", LogFile(LogKind.OTHER)),  # no dag_id
    ],
)
def test_parse_log_path(path: str, expected: LogFile) -> None:
    assert parse_log_path(path) == expected


def test_task_log_without_attempt_number() -> None:
    parsed = parse_log_path("dag_id=d/run_id=r/task_id=t/custom.log")
    assert parsed.kind is LogKind.TASK and parsed.try_number is None and parsed.task_id == "t"


def test_key_value_folders_in_another_order() -> None:
    # A custom log_filename_template keeping the key=value convention.
    parsed = parse_log_path("dag_id=d/task_id=t/run_id=r/attempt=1.log")
    assert (parsed.dag_id, parsed.run_id, parsed.task_id) == ("d", "r", "t")


def test_configured_component_folders() -> None:
    layout = LogLayout(components=((("components", "sched"), LogKind.SCHEDULER),))
    assert parse_log_path("components/sched/2024-01-01/x.py.log", layout).kind is LogKind.SCHEDULER
    # Without the default entries, "scheduler/" is just a folder of unknown meaning.
    assert parse_log_path("scheduler/2024-01-01/x.py.log", layout).kind is LogKind.OTHER


def test_component_roots_are_kept_and_their_subfolders_not() -> None:
    root = descend(ROOT, "scheduler")
    assert root.kind is LogKind.SCHEDULER and root.keep
    assert not descend(root, "2024-01-01").keep
    assert not descend(ROOT, "dag_id=x").keep


def test_relative_paths_only() -> None:
    with pytest.raises(ValueError, match="relative"):
        parse_log_path("/opt/airflow/logs/x.log")


@pytest.mark.parametrize(
    ("name", "is_log"),
    [
        ("attempt=1.log", True),
        ("x.py.log", True),
        ("dag_processor_manager.log.5", True),
        ("attempt=1.log.gz", True),
        ("x.log.2.xz", True),
        ("x.log.swp", False),
        ("x.logs", False),
        (".log", False),
        ("x.txt", False),
    ],
)
def test_is_log_name(name: str, is_log: bool) -> None:
    assert is_log_name(name) is is_log


def test_printable_escapes_control_characters_and_undecodable_bytes() -> None:
    assert printable("plain_dag") == "plain_dag"
    assert printable("evil\n\x1b[31mred") == "evil\\n\\x1b[31mred"
    assert printable(b"caf\xe9".decode("utf-8", "surrogateescape")) == "caf\\xe9"


def _info(path: str):  # the DirInfo of a folder path, as the walk builds it
    info = ROOT
    for name in path.split("/"):
        info = descend(info, name)
    return info


def test_live_matching_is_per_task_instance() -> None:
    live = LiveTaskInstances(tis=frozenset({("d", "r", "t1", -1), ("d", "r", "m", 1)}))
    assert live.covers(_info("dag_id=d/run_id=r/task_id=t1"))
    assert not live.covers(_info("dag_id=d/run_id=r/task_id=t2"))  # a finished sibling
    assert live.covers(_info("dag_id=d/run_id=r/task_id=m/map_index=1"))
    assert not live.covers(_info("dag_id=d/run_id=r/task_id=m/map_index=0"))
    assert not live.covers(_info("dag_id=d/run_id=other/task_id=t1"))
    assert not live.covers(_info("dag_id=e/run_id=r/task_id=t1"))
    # A stray file above a live task instance's folder is kept too (identity unknown).
    assert live.covers(_info("dag_id=d/run_id=r"))
    assert live.covers(_info("dag_id=d/run_id=r/task_id=m"))
    assert live.covers(_info("dag_id=d"))


def test_live_run_covers_all_its_tasks() -> None:
    live = LiveTaskInstances(runs=frozenset({("d", "r")}))
    assert live.covers(_info("dag_id=d/run_id=r/task_id=any/map_index=4"))
    assert not live.covers(_info("dag_id=d/run_id=r2/task_id=any"))


def test_live_matching_in_the_old_layout() -> None:
    live = LiveTaskInstances(old_tis=frozenset({("etl", "load", TS)}))
    assert live.covers(_info("etl/load/2021-04-19T13:23:05.265458+00:00"))
    assert not live.covers(_info("etl/extract/2021-04-19T13:23:05.265458+00:00"))
    assert not live.covers(_info("etl/load/2021-04-20T00:00:00+00:00"))
    by_run = LiveTaskInstances(old_runs=frozenset({("etl", TS)}))
    assert by_run.covers(_info("etl/extract/2021-04-19T13:23:05.265458+00:00"))
