"""backup prune: apply the retention policy (``backup_retention``) to a backup directory.

The newest verified backup is never deleted: the plan keeps it, and execution checks again, as
a verify may have run since the plan was made. Damaged backups and corrupt manifests are left
for a human to look at. A backup is renamed out of the listing before its files are removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from airflow_ops.config.backup import RetentionPolicy
from airflow_ops.maintenance import backup_store as store
from airflow_ops.maintenance.backup_listing import list_backups, newest_verified
from airflow_ops.maintenance.backup_report import size_text
from airflow_ops.maintenance.backup_retention import select_retained
from airflow_ops.maintenance.backup_store import BackupInfo
from airflow_ops.maintenance.report import Report


@dataclass(frozen=True)
class PrunePlan:
    backup_dir: Path
    keep: dict[str, list[str]]  # backup id -> reasons
    delete: tuple[BackupInfo, ...]
    stale: tuple[Path, ...]
    untouched: tuple[BackupInfo, ...]  # damaged / corrupt: left for a human
    policy: RetentionPolicy
    report: Report


def plan_prune(backup_dir: Path, policy: RetentionPolicy, now: datetime) -> PrunePlan:
    backups = list_backups(backup_dir)
    good = [b for b in backups if b.good and b.created is not None]
    verified = newest_verified(backups)
    keep = select_retained(
        [(b.id, b.created) for b in good],  # type: ignore[misc]
        policy,
        verified.id if verified else None,
    )
    delete = tuple(b for b in good if b.id not in keep)
    stale = tuple(store.stale_temporaries(backup_dir, now, policy.stale_after))
    untouched = tuple(b for b in backups if not b.good and not b.path.name.startswith(store.PARTIAL_PREFIX))
    freed = sum(b.size_bytes for b in delete)
    lines = [f"keep {bid}: {', '.join(reasons)}" for bid, reasons in sorted(keep.items())]
    lines += [f"delete {b.id} ({size_text(b.size_bytes)})" for b in delete]
    lines += [f"remove stale temporary {p.name}" for p in stale]
    lines += [f"leave {b.id} ({b.status}: {b.problem}) for a human to look at" for b in untouched]
    if verified is None and good:
        lines.append("warning: no backup has been verified; run verify so prune can protect one")
    report = Report(
        action="backup.prune",
        planned=True,
        ok=True,
        summary=(
            f"would delete {len(delete)} of {len(good)} backups ({size_text(freed)}) and "
            f"{len(stale)} stale temporaries in {backup_dir}; keeping {len(keep)}"
        ),
        lines=lines,
        data={
            "keep": keep,
            "delete": [b.id for b in delete],
            "stale_temporaries": [p.name for p in stale],
            "newest_verified": verified.id if verified else None,
            "policy": policy.model_dump(),
        },
        bytes_freed=freed,
    )
    return PrunePlan(backup_dir, keep, delete, stale, untouched, policy, report)


def execute_prune(plan: PrunePlan) -> Report:
    """Delete what the plan says, re-checking each backup against the current state first."""
    now = datetime.now(timezone.utc)
    current = list_backups(plan.backup_dir)
    verified = newest_verified(current)
    files = freed = 0
    lines: list[str] = []
    errors: list[str] = []
    deleted = []
    for b in plan.delete:
        if verified is not None and b.id == verified.id:
            lines.append(f"kept {b.id}: it became the newest verified backup after the plan")
            continue
        if not b.path.is_dir():
            lines.append(f"{b.id} is already gone")
            continue
        try:
            n, size = store.remove_tree(b.path)
        except OSError as e:
            errors.append(f"{b.id}: cannot delete: {e.strerror}")
            continue
        files, freed = files + n, freed + size
        deleted.append(b.id)
        lines.append(f"deleted {b.id} ({size_text(size)})")
    still_stale = set(store.stale_temporaries(plan.backup_dir, now, plan.policy.stale_after))
    removed = []
    for path in plan.stale:
        if path not in still_stale:
            continue  # taken up again, or already gone
        n, size = store.remove_tree(path)
        files, freed = files + n, freed + size
        removed.append(path.name)
        lines.append(f"removed stale temporary {path.name} ({size_text(size)})")
    kept = sorted(set(plan.keep) | ({verified.id} if verified else set()))
    return Report(
        action="backup.prune",
        planned=False,
        ok=not errors,
        summary=(
            f"deleted {len(deleted)} backups and {len(removed)} stale temporaries ({size_text(freed)}) "
            f"in {plan.backup_dir}; {len(kept)} kept"
        ),
        lines=lines,
        errors=errors,
        data={
            "deleted": deleted,
            "removed_stale_temporaries": removed,
            "kept": kept,
            "newest_verified": verified.id if verified else None,
        },
        files_deleted=files,
        bytes_freed=freed,
    )
