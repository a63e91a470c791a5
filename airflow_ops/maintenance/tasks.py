"""Each maintenance action built from a deployment's config: the one place the CLI and the
service's schedules get their plans from, so both act the same way.

A planning function returns ``(plan report, execute)``; ``execute(progress)`` carries the plan out
and is None when there is nothing to do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..config import DeploymentConfig, MaintenanceConfig
from ..config.backup import BackupConfig
from ..config.db_clean import DbCleanConfig
from ..config.logs import LogsConfig
from .report import Progress, Report, no_progress

Execute = Callable[[Progress], Report]
Planned = tuple[Report, Execute | None]


class NotConfigured(Exception):
    """The deployment's config lacks what the action needs; the message names the key."""


@dataclass(frozen=True)
class Target:
    """A deployment as maintenance sees it."""

    name: str
    config: DeploymentConfig

    @property
    def maintenance(self) -> MaintenanceConfig:
        return self.config.maintenance or MaintenanceConfig()

    @property
    def dsn(self) -> str:
        if self.config.database is None:
            raise NotConfigured(f"deployments.{self.name}.database: maintenance needs the metadata DB's DSN")
        return self.config.database.dsn.value

    def logs(self) -> LogsConfig:
        return self.maintenance.logs or LogsConfig()

    def backup(self, backup_dir: Path | None = None) -> BackupConfig:
        """The backup settings, with an explicit directory taking precedence."""
        cfg = self.maintenance.backup
        if backup_dir is not None:
            return cfg.model_copy(update={"dir": backup_dir}) if cfg else BackupConfig(dir=backup_dir)
        if cfg is None:
            raise NotConfigured(
                f"no backup directory: pass --dir or set deployments.{self.name}.maintenance.backup.dir"
            )
        return cfg


def _value(secret: object) -> str | None:
    return secret.value if secret is not None else None  # type: ignore[attr-defined]


def scheduled_planners(target: Target) -> dict[str, Callable[[], Planned]]:
    """The planners of the scheduled steps other than backups (see schedule.STEPS)."""
    return {
        "db_clean": lambda: db_clean(target, target.maintenance.db_clean),
        "db_vacuum": lambda: db_vacuum(target),
        "logs_clean": lambda: logs_clean(target, target.logs()),
    }


def db_clean(
    target: Target,
    cfg: DbCleanConfig,
    *,
    dag_ids: tuple[str, ...] | None = None,
    dag_pattern: str | None = None,
    archive_dir: Path | None = None,
    now: datetime | None = None,
) -> Planned:
    from .db_clean import execute_clean, plan_clean

    policy = cfg.to_policy(only_dag_ids=dag_ids, only_dag_pattern=dag_pattern)
    plan = plan_clean(target.dsn, policy, now=now)
    archive = archive_dir or cfg.archive_dir
    if plan.nothing_to_delete:
        return plan.report(), None
    return plan.report(), lambda progress: execute_clean(plan, progress, archive_dir=archive)


def db_vacuum(target: Target, tables: tuple[str, ...] | None = None, *, full: bool = False) -> Planned:
    from .db_vacuum import execute_vacuum, plan_vacuum

    plan = plan_vacuum(
        target.dsn, tables or None, full, lock_timeout=target.maintenance.db_clean.lock_timeout
    )
    return plan.report(), lambda progress: execute_vacuum(plan, progress)


def db_stats(target: Target) -> Report:
    from .db_stats import collect_stats

    return collect_stats(target.dsn)


def log_folder(cfg: LogsConfig, override: Path | None = None) -> Path:
    """Airflow's log folder: ``override``, else ``logs.folder``, else Airflow's own setting."""
    from .logs import find_log_folder

    return find_log_folder(override=override or cfg.folder)


def logs_clean(target: Target, cfg: LogsConfig, folder: Path | None = None) -> Planned:
    from .logs import LogPolicy, execute_clean, find_log_layout, plan_clean

    where = log_folder(cfg, folder)
    dsn = target.config.database.dsn.value if target.config.database is not None else None
    plan = plan_clean(where, LogPolicy.from_config(cfg), dsn=dsn, layout=find_log_layout(where))
    if plan.files_to_delete == 0:
        return plan.report(), None
    return plan.report(), lambda progress: execute_clean(plan, progress)


def backup_create(target: Target, cfg: BackupConfig, export: str | None = None) -> Planned:
    from .backup import execute_create, plan_create

    plan = plan_create(
        target.dsn,
        cfg.dir,
        export=export or cfg.export,
        export_key=_value(cfg.export_key),
        airflow_fernet_key=_value(cfg.airflow_fernet_key),
        pg_bin_dir=cfg.pg_bin_dir,
        stale_after=cfg.retention.stale_after,
    )
    return plan.report, lambda progress: execute_create(plan, progress)


def backup_verify(
    target: Target,
    cfg: BackupConfig,
    backup_id: str | None = None,
    scratch_dsn: str | None = None,
    progress: Progress | None = None,
) -> Report:
    """Verify ``backup_id``, by default the newest complete backup."""
    from .backup import list_backups, verify_backup

    if backup_id is None:
        good = [b for b in list_backups(cfg.dir) if b.good]
        if not good:
            raise NotConfigured(f"no complete backup in {cfg.dir} to verify")
        backup_id = good[-1].id
    return verify_backup(
        cfg.dir,
        backup_id,
        scratch_dsn=scratch_dsn or cfg.scratch_dsn_for(target.dsn),
        airflow_fernet_key=_value(cfg.airflow_fernet_key),
        pg_bin_dir=cfg.pg_bin_dir,
        progress=progress or no_progress,
    )


def backup_restore(cfg: BackupConfig, backup_id: str, to_dsn: str, *, force: bool) -> Planned:
    from .backup import execute_restore, plan_restore

    plan = plan_restore(cfg.dir, backup_id, to_dsn, force=force, pg_bin_dir=cfg.pg_bin_dir)
    return plan.report, lambda progress: execute_restore(plan, progress)


def backup_prune(cfg: BackupConfig, now: datetime | None = None) -> Planned:
    from .backup import execute_prune, plan_prune

    plan = plan_prune(cfg.dir, cfg.retention, now or datetime.now(timezone.utc))
    if not plan.delete and not plan.stale:
        return plan.report, None
    return plan.report, lambda progress: execute_prune(plan)
