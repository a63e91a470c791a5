"""The ``maintenance:`` section of a deployment: backups, metadata-DB cleanup, log retention, and
the cron schedules on which ``airflow-ops serve`` runs them."""

from __future__ import annotations

from enum import Enum

from croniter import croniter
from pydantic import field_validator, model_validator

from .backup import BackupConfig
from .base import _Model
from .db_clean import DbCleanConfig
from .logs import LogsConfig


class Task(str, Enum):
    """What a schedule runs; also the ``task`` label of the maintenance metrics."""

    BACKUP = "backup"  # create, then verify, then prune
    DB_CLEAN = "db_clean"
    DB_VACUUM = "db_vacuum"
    LOGS_CLEAN = "logs_clean"


class MaintenanceConfig(_Model):
    backup: BackupConfig | None = None
    db_clean: DbCleanConfig = DbCleanConfig()  # Airflow-version defaults per table
    logs: LogsConfig | None = None  # also where the log volume's free space is read
    # Cron expressions (5 fields, the service's local time zone is UTC) per task, e.g.
    # {backup: "0 2 * * *", db_clean: "30 3 * * 0", logs_clean: "15 * * * *"}.
    schedules: dict[Task, str] = {}

    @field_validator("schedules")
    @classmethod
    def _cron(cls, v: dict[Task, str]) -> dict[Task, str]:
        for task, expr in v.items():
            if len(expr.split()) != 5 or not croniter.is_valid(expr):
                raise ValueError(f"{task.value}: {expr!r} is not a 5-field cron expression")
        return v

    @model_validator(mode="after")
    def _scheduled_tasks_configured(self) -> MaintenanceConfig:
        if Task.BACKUP in self.schedules and self.backup is None:
            raise ValueError("schedules.backup needs a backup section (at least backup.dir)")
        if Task.LOGS_CLEAN in self.schedules and self.logs is None:
            raise ValueError("schedules.logs_clean needs a logs section (at least logs: {})")
        return self
