"""Which backups a retention policy keeps: pure selection, no files touched.

Generations count periods that *have* a backup (as borg and restic do): ``daily: 7`` keeps the
newest backup of each of the 7 most recent days with a backup, not of the last 7 calendar days,
so a pause in backups never lets prune delete everything older than the pause. Periods are UTC
days, ISO weeks and calendar months.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timezone

from airflow_ops.config.backup import RetentionPolicy

NEWEST_VERIFIED = "newest verified"

_GENERATIONS: tuple[tuple[str, Callable[[datetime], str]], ...] = (
    ("daily", lambda t: t.strftime("%Y-%m-%d")),
    ("weekly", lambda t: "{}-W{:02d}".format(*t.isocalendar()[:2])),
    ("monthly", lambda t: t.strftime("%Y-%m")),
)


def select_retained(
    backups: Sequence[tuple[str, datetime]], policy: RetentionPolicy, newest_verified: str | None = None
) -> dict[str, list[str]]:
    """backup id -> the reasons it is kept, for the good backups ``(id, created)`` given; an id
    missing from the result is deleted by prune. ``newest_verified`` is always kept."""
    newest_first = sorted(backups, key=lambda b: (b[1], b[0]), reverse=True)
    kept: dict[str, list[str]] = {}
    for backup_id, _ in newest_first[: policy.keep_last]:
        kept.setdefault(backup_id, []).append(f"last {policy.keep_last}")
    for name, period_of in _GENERATIONS:
        wanted = getattr(policy, name)
        seen: set[str] = set()
        for backup_id, created in newest_first:
            if len(seen) >= wanted:
                break
            period = period_of(created.astimezone(timezone.utc))
            if period not in seen:
                seen.add(period)
                kept.setdefault(backup_id, []).append(f"{name} {period}")
    if newest_verified is not None and any(b[0] == newest_verified for b in backups):
        kept.setdefault(newest_verified, []).append(NEWEST_VERIFIED)
    return kept
