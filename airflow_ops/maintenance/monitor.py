"""What the service exports about maintenance, read each poll: the audit records in the ops store,
the backup directory, and the free space of the log volume."""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

from croniter import croniter

from ..config import MaintenanceConfig
from ..snapshot import MaintenanceState, MaintenanceTaskState
from .audit import TaskSummary

log = logging.getLogger(__name__)


def next_scheduled(expr: str, after: float) -> float:
    """The first time after ``after`` that the cron expression names (UTC)."""
    return float(croniter(expr, datetime.fromtimestamp(after, tz=timezone.utc)).get_next(float))


def overdue_seconds(expr: str, last_success_at: float | None, now: float, since: float) -> float:
    """Seconds since the first scheduled time after the last success (or, never having
    succeeded, after ``since``: when the schedules started), 0 while that time is still ahead.

    Missed or failed runs keep it growing, across as many scheduled times as they miss, until a
    run succeeds."""
    due = next_scheduled(expr, last_success_at if last_success_at is not None else since)
    return max(0.0, now - due)


def task_states(
    summaries: Iterable[TaskSummary],
    deployment: str,
    cfg: MaintenanceConfig | None,
    now: float,
    since: float,
) -> dict[str, MaintenanceTaskState]:
    schedules = {task.value: expr for task, expr in (cfg.schedules if cfg else {}).items()}
    out: dict[str, MaintenanceTaskState] = {}
    for s in summaries:
        if s.deployment != deployment:
            continue
        expr = schedules.get(s.task)
        out[s.task] = MaintenanceTaskState(
            last_status=s.last_status.value,
            last_success_at=s.last_success_at,
            overdue_seconds=overdue_seconds(expr, s.last_success_at, now, since) if expr else None,
            rows_deleted=s.rows_deleted,
            files_deleted=s.files_deleted,
            bytes_freed=s.bytes_freed,
            bytes_written=s.bytes_written,
        )
    for task, expr in schedules.items():  # scheduled and never run: overdue since its first time
        if task not in out:
            out[task] = MaintenanceTaskState(overdue_seconds=overdue_seconds(expr, None, now, since))
    return out


def log_folder(cfg: MaintenanceConfig) -> Path | None:
    """The log folder whose volume is watched: where ``logs clean`` works, if it is configured."""
    if cfg.logs is None:
        return None
    from .tasks import log_folder as find

    try:
        return find(cfg.logs)
    except Exception as e:  # a folder that cannot be found is a config problem, said once per poll
        log.warning("maintenance: no log folder to watch: %s", e)
        return None


def maintenance_state(
    summaries: Iterable[TaskSummary],
    deployment: str,
    cfg: MaintenanceConfig | None,
    now: float,
    since: float,
    log_folder: Path | None = None,
) -> MaintenanceState:
    """``since``: when the schedules started (the service's start), for tasks never run."""
    tasks = task_states(summaries, deployment, cfg, now, since)
    backup: dict[str, float | None] = {}
    if cfg is not None and cfg.backup is not None:
        backup = _backup_figures(cfg.backup.dir, now)
    volume: dict[str, float | None] = {}
    if log_folder is not None:
        volume = _volume_figures(log_folder)
    return MaintenanceState(tasks=tasks, **backup, **volume)


def _backup_figures(backup_dir: Path, now: float) -> dict[str, float | None]:
    from .backup import backup_status

    try:
        status = backup_status(backup_dir)
    except OSError as e:  # an unreadable directory reads as "no backup": the stale alert fires
        log.warning("maintenance: cannot read the backup directory %s: %s", backup_dir, e)
        return {"backup_age_seconds": math.inf, "backup_verified_age_seconds": math.inf}
    created, verified = status.newest_created, status.newest_verified_created
    return {
        "backup_age_seconds": now - created.timestamp() if created else math.inf,
        "backup_size_bytes": float(status.newest_size_bytes)
        if status.newest_size_bytes is not None
        else None,
        "backup_verified_age_seconds": now - verified.timestamp() if verified else math.inf,
    }


def _volume_figures(folder: Path) -> dict[str, float | None]:
    try:
        usage = shutil.disk_usage(folder)
    except OSError as e:
        log.warning("maintenance: cannot read the free space of %s: %s", folder, e)
        return {}
    return {"log_volume_free_bytes": float(usage.free), "log_volume_free_ratio": usage.free / usage.total}
