"""backup list and the status the metrics read: what a backup directory holds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from airflow_ops.maintenance import backup_store as store
from airflow_ops.maintenance.backup_errors import BackupError
from airflow_ops.maintenance.backup_report import size_text
from airflow_ops.maintenance.backup_store import BackupInfo
from airflow_ops.maintenance.report import Report


def list_backups(backup_dir: Path) -> list[BackupInfo]:
    """Every backup (and leftover of an interrupted create) in ``backup_dir``, oldest first."""
    if backup_dir.exists() and not backup_dir.is_dir():
        raise BackupError(f"backup directory {backup_dir}: not a directory")
    return store.scan(backup_dir)


def list_report(backup_dir: Path) -> Report:
    """``backup list``: one line per backup with its status, size, schema and verification."""
    if not backup_dir.exists():  # asked for by name: most likely a typo, not "no backups yet"
        raise BackupError(f"backup directory {backup_dir} does not exist")
    backups = list_backups(backup_dir)
    good = [b for b in backups if b.good]
    lines = []
    for b in backups:
        verified = (
            f"verified {b.verified_at:%Y-%m-%d %H:%M}"
            if b.verified_at
            else f"verify FAILED {b.verify_failed}"
            if b.verify_failed
            else "not verified"
        )
        detail = verified if b.good else b.problem
        airflow = f"Airflow {b.airflow_version or '?'} ({b.alembic_revision})" if b.alembic_revision else ""
        lines.append(f"{b.id}  {b.status:<16} {size_text(b.size_bytes):>9}  {airflow}  {detail}".rstrip())
    others = len(backups) - len(good)
    return Report(
        action="backup.list",
        planned=False,
        ok=True,
        summary=f"{len(good)} good backups in {backup_dir}" + (f", {others} not good" if others else ""),
        lines=lines,
        data={"backups": [b.as_dict() for b in backups]},
    )


@dataclass(frozen=True)
class BackupStatus:
    """What the metrics need: the newest good and the newest verified backup."""

    good: int
    not_good: int
    newest_id: str | None = None
    newest_created: datetime | None = None
    newest_size_bytes: int | None = None
    newest_verified_id: str | None = None
    newest_verified_created: datetime | None = None
    newest_verified_at: datetime | None = None  # when it was verified


def backup_status(backup_dir: Path) -> BackupStatus:
    """For ``airflow_ops_backup_age_seconds`` / size: read from the directory, cheaply (no hashing)."""
    backups = list_backups(backup_dir)
    good = [b for b in backups if b.good]
    newest = good[-1] if good else None
    verified = newest_verified(backups)
    return BackupStatus(
        good=len(good),
        not_good=len(backups) - len(good),
        newest_id=newest.id if newest else None,
        newest_created=newest.created if newest else None,
        newest_size_bytes=newest.size_bytes if newest else None,
        newest_verified_id=verified.id if verified else None,
        newest_verified_created=verified.created if verified else None,
        newest_verified_at=verified.verified_at if verified else None,
    )


def newest_verified(backups: Sequence[BackupInfo]) -> BackupInfo | None:
    """The newest good backup whose last verification succeeded."""
    verified = [b for b in backups if b.verified]
    return max(
        verified, key=lambda b: (b.created or datetime.min.replace(tzinfo=timezone.utc), b.id), default=None
    )


def find_backup(backup_dir: Path, backup_id: str) -> BackupInfo:
    """The committed backup ``backup_id``; BackupError naming what exists if there is none."""
    if not store.is_backup_id(backup_id):
        raise BackupError(f"backup id {backup_id!r} is not a backup id (like 20261121T103000Z)")
    path = backup_dir / backup_id
    if not path.is_dir():
        known = [b.id for b in list_backups(backup_dir) if b.good][-3:]
        hint = f"; the newest are {', '.join(known)}" if known else "; it holds no good backup"
        raise BackupError(f"no backup {backup_id} in {backup_dir}{hint}")
    return store.read_backup(path)
