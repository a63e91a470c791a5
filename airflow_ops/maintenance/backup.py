"""Verified backups of Airflow's metadata database: create, list, verify, restore, prune.

The API the CLI, the scheduler and the metrics call; each action lives in a module of its own:

- ``backup_create``: ``pg_dump -Fc`` on an exported snapshot, row counts taken in that snapshot,
  the dump hashed as it streams, an optional export of pools/variables/connections, and a
  manifest; built in a locked ``.partial-`` directory renamed into place last, so an interrupted
  create is never listed as good.
- ``backup_listing``: the backups of a directory with their status; the newest good and newest
  verified backup for the metrics.
- ``backup_restore``: verify (checksums, a restore into a scratch database that is always
  dropped, row counts and alembic revision against the manifest, Airflow's Fernet key against
  the stored connections; the result recorded in the backup) and restore (refuses a target with
  any table or another alembic revision unless forced; one transaction).
- ``backup_prune``: keep-last-N plus daily/weekly/monthly generations; never the newest verified.

Beneath them: ``backup_store`` (the layout on disk, atomic writes), ``backup_pg`` (DSNs, client
tools, scratch databases), ``backup_airflow`` (encrypted values), ``airflow.releases`` (alembic
revision -> release), ``backup_export``, ``backup_crypto`` (Fernet), ``backup_retention`` (pure selection).

Errors: ``plan_*``, ``list_backups`` and an unknown backup id raise :class:`BackupError` (bad input
or an unusable environment, phrased for the operator, never holding a secret). A plan that would be
refused comes back with ``report.ok`` false, and executing it changes nothing. ``execute_*`` and
``verify_backup`` report failures in the returned :class:`Report` and do not raise them.
"""

from __future__ import annotations

from airflow_ops.config.backup import ExportMode, RetentionPolicy
from airflow_ops.maintenance.backup_create import CreatePlan, execute_create, plan_create
from airflow_ops.maintenance.backup_errors import BackupError
from airflow_ops.maintenance.backup_listing import BackupStatus, backup_status, list_backups, list_report
from airflow_ops.maintenance.backup_prune import PrunePlan, execute_prune, plan_prune
from airflow_ops.maintenance.backup_restore import RestorePlan, execute_restore, plan_restore, verify_backup
from airflow_ops.maintenance.backup_store import BackupInfo

__all__ = [
    "BackupError",
    "BackupInfo",
    "BackupStatus",
    "CreatePlan",
    "ExportMode",
    "PrunePlan",
    "RestorePlan",
    "RetentionPolicy",
    "backup_status",
    "execute_create",
    "execute_prune",
    "execute_restore",
    "list_backups",
    "list_report",
    "plan_create",
    "plan_prune",
    "plan_restore",
    "verify_backup",
]
