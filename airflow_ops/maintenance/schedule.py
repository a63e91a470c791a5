"""Maintenance on cron schedules inside ``airflow-ops serve`` — outside Airflow, so it also works on
Airflow 3, whose tasks no longer reach the metadata DB.

One replica schedules (it holds the store's "maintenance-scheduler" lock, as the alerting leader
holds its own); each run also takes its task's lock, so a CLI run and a scheduled one never
overlap. A scheduled time that passes while the service is down is not caught up: the
``airflow_ops_maintenance_overdue_seconds`` metric shows it, and the next time runs as usual.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from croniter import croniter

from ..config import Config
from ..config.maintenance import Task
from ..store import OpsStore
from . import tasks
from .audit import Trigger
from .report import Report, no_progress
from .runner import run_audited

log = logging.getLogger(__name__)

# The audited steps of each scheduled task, in order; a failed step ends the run (no verify or
# prune after a failed backup).
STEPS: dict[Task, tuple[str, ...]] = {
    Task.BACKUP: ("backup", "backup_verify", "backup_prune"),
    Task.DB_CLEAN: ("db_clean",),
    Task.DB_VACUUM: ("db_vacuum",),
    Task.LOGS_CLEAN: ("logs_clean",),
}


@dataclass(frozen=True, eq=False)  # one object per schedule entry: identity is its key
class Job:
    target: tasks.Target
    task: Task
    cron: str

    def next_after(self, t: float) -> float:
        return float(croniter(self.cron, datetime.fromtimestamp(t, tz=timezone.utc)).get_next(float))


def run_step(target: tasks.Target, step: str) -> Report:
    """Plan one step from the deployment's config and carry it out (a plan with nothing to do is
    the outcome)."""
    if step == "backup_verify":
        return tasks.backup_verify(target, target.backup())
    planners: dict[str, Callable[[], tasks.Planned]] = {
        "backup": lambda: tasks.backup_create(target, target.backup()),
        "backup_prune": lambda: tasks.backup_prune(target.backup()),
        **tasks.scheduled_planners(target),
    }
    report, execute = planners[step]()
    return execute(no_progress) if execute is not None and report.ok else report


class MaintenanceScheduler:
    def __init__(
        self,
        config: Config,
        store: OpsStore,
        *,
        mask: Callable[[str], str] = lambda text: text,
        clock: Callable[[], float] = time.time,
        run: Callable[[tasks.Target, str], Report] = run_step,
    ) -> None:
        self._store = store
        self._mask = mask
        self._clock = clock
        self._run_step = run
        self.jobs = [
            Job(tasks.Target(name, dep), task, cron)
            for name, dep in config.deployments.items()
            if dep.maintenance is not None
            for task, cron in dep.maintenance.schedules.items()
        ]
        now = clock()
        self._due = {job: job.next_after(now) for job in self.jobs}
        self._running: dict[Job, threading.Thread] = {}
        self._leadership = store.leadership("maintenance-scheduler")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.jobs:
            self._thread = threading.Thread(target=self._loop, name="maintenance-scheduler", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        for thread in list(self._running.values()):
            thread.join(timeout)
        self._leadership.release()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # a store hiccup must not end the schedules
                log.exception("maintenance: scheduling round failed")
            wait = min(self._due.values(), default=self._clock() + 1) - self._clock()
            self._stop.wait(min(max(wait, 0.05), 1.0))

    def tick(self) -> list[Job]:
        """Start every job that is due (on the replica that schedules); returns those started."""
        now = self._clock()
        due = [job for job, at in self._due.items() if at <= now]
        if not due or not self._leadership.try_acquire():
            for job in due:  # another replica schedules: keep in step with the clock
                self._due[job] = job.next_after(now)
            return []
        started = []
        for job in due:
            self._due[job] = job.next_after(now)
            running = self._running.get(job)
            if running is not None and running.is_alive():
                log.warning(
                    "maintenance: %s/%s still running at its next time; skipped",
                    job.target.name,
                    job.task.value,
                )
                continue
            thread = threading.Thread(target=self._run_job, args=(job,), name=f"maintenance-{job.task.value}")
            self._running[job] = thread
            thread.start()
            started.append(job)
        return started

    def _run_job(self, job: Job) -> None:
        for step in STEPS[job.task]:
            report = run_audited(
                self._store,
                lambda s=step: self._run_step(job.target, s),
                deployment=job.target.name,
                task=step,
                action=step,
                planned=False,
                trigger=Trigger.SCHEDULE,
                mask=self._mask,
                who="airflow-ops serve",
            )
            log.info("maintenance %s/%s: %s", job.target.name, step, self._mask(report.summary))
            if not report.ok:
                break

    def join(self, timeout: float | None = None) -> None:
        """Wait for the runs in progress (tests, shutdown)."""
        for thread in list(self._running.values()):
            thread.join(timeout)
