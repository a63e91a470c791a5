"""The maintenance audit as the ops store keeps it: one record per run of an action."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


class RunStatus(str, Enum):
    RUNNING = "running"  # started and not finished (still running, or its process died)
    SUCCESS = "success"
    FAILED = "failed"
    PLANNED = "planned"  # a dry run: the plan was printed, nothing was changed


class Trigger(str, Enum):
    CLI = "cli"
    SCHEDULE = "schedule"


@dataclass(frozen=True)
class MaintenanceRun:
    id: int
    deployment: str
    task: str  # what the schedule and the metrics call it: backup, db_clean, db_vacuum, logs_clean
    action: str  # the Report's action: backup.create, db.clean, ...
    trigger: Trigger
    planned: bool
    started_at: float
    finished_at: float | None
    status: RunStatus
    actor: str  # user@host, or the service's name for scheduled runs
    report: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        return {**vars(self), "trigger": self.trigger.value, "status": self.status.value}


@dataclass(frozen=True)
class TaskSummary:
    """What the metrics say of one task of one deployment (dry runs left out)."""

    deployment: str
    task: str
    last_started_at: float
    last_status: RunStatus
    last_success_at: float | None  # when the newest successful run finished
    rows_deleted: int  # summed over every finished run
    files_deleted: int
    bytes_freed: int
    bytes_written: int
