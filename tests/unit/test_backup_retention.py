"""Retention selection: keep-last-N plus daily/weekly/monthly generations; the newest verified
backup is always kept. Pure: ids and times in, kept ids and reasons out."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from airflow_ops.config.backup import RetentionPolicy
from airflow_ops.maintenance.backup_retention import NEWEST_VERIFIED, select_retained
from airflow_ops.maintenance.backup_store import backup_id_for

UTC = timezone.utc


def _backups(*times: datetime) -> list[tuple[str, datetime]]:
    return [(backup_id_for(t), t) for t in times]


def _every(start: datetime, step: timedelta, n: int) -> list[tuple[str, datetime]]:
    return _backups(*(start + i * step for i in range(n)))


def _policy(**kw: int) -> RetentionPolicy:
    return RetentionPolicy(**{"keep_last": 0, "daily": 0, "weekly": 0, "monthly": 0, **kw})


def test_keep_last_keeps_the_newest_n() -> None:
    backups = _every(datetime(2026, 11, 1, tzinfo=UTC), timedelta(hours=1), 10)
    kept = select_retained(backups, _policy(keep_last=3))
    assert sorted(kept) == [b[0] for b in backups[-3:]]
    assert all(reasons == ["last 3"] for reasons in kept.values())


def test_daily_keeps_the_newest_backup_of_each_day() -> None:
    # Four backups a day (00, 06, 12, 18 h) for ten days.
    backups = _every(datetime(2026, 11, 1, tzinfo=UTC), timedelta(hours=6), 40)
    kept = select_retained(backups, _policy(daily=7))
    assert sorted(kept) == [backup_id_for(datetime(2026, 11, day, 18, tzinfo=UTC)) for day in range(4, 11)]
    assert kept[backup_id_for(datetime(2026, 11, 10, 18, tzinfo=UTC))] == ["daily 2026-11-10"]


def test_weekly_uses_iso_weeks_across_a_year_boundary() -> None:
    # Sunday 2026-12-27 ends ISO week 2026-W52; Monday 2026-12-28 starts 2026-W53, which runs to
    # Sunday 2027-01-03; Monday 2027-01-04 is 2027-W01.
    backups = _backups(
        datetime(2026, 12, 27, 12, tzinfo=UTC),
        datetime(2026, 12, 28, 12, tzinfo=UTC),
        datetime(2027, 1, 3, 12, tzinfo=UTC),
        datetime(2027, 1, 4, 12, tzinfo=UTC),
    )
    kept = select_retained(backups, _policy(weekly=3))
    assert kept == {
        backup_id_for(datetime(2027, 1, 4, 12, tzinfo=UTC)): ["weekly 2027-W01"],
        backup_id_for(datetime(2027, 1, 3, 12, tzinfo=UTC)): ["weekly 2026-W53"],
        backup_id_for(datetime(2026, 12, 27, 12, tzinfo=UTC)): ["weekly 2026-W52"],
    }


def test_monthly_keeps_the_newest_of_each_month() -> None:
    backups = _every(datetime(2026, 1, 15, tzinfo=UTC), timedelta(days=10), 30)  # Jan..Oct 2026
    kept = select_retained(backups, _policy(monthly=3))
    newest_of = {}
    for backup_id, t in backups:
        newest_of[(t.year, t.month)] = backup_id
    months = sorted(newest_of)[-3:]
    assert sorted(kept) == sorted(newest_of[m] for m in months)
    assert sorted(r for reasons in kept.values() for r in reasons) == [
        f"monthly {y}-{m:02d}" for y, m in months
    ]


def test_generations_count_periods_that_have_a_backup() -> None:
    # Three daily backups, then a month without any, then one: daily=3 keeps days with backups,
    # not the last three calendar days (which would leave only the newest).
    backups = _backups(
        datetime(2026, 10, 1, 1, tzinfo=UTC),
        datetime(2026, 10, 2, 1, tzinfo=UTC),
        datetime(2026, 10, 3, 1, tzinfo=UTC),
        datetime(2026, 11, 5, 1, tzinfo=UTC),
    )
    kept = select_retained(backups, _policy(daily=3))
    assert sorted(kept) == [b[0] for b in backups[1:]]


def test_policies_combine_as_a_union_with_every_reason() -> None:
    backups = _every(datetime(2026, 11, 1, 23, tzinfo=UTC), timedelta(days=1), 10)  # Nov 1..10
    kept = select_retained(backups, _policy(keep_last=2, daily=3, weekly=2, monthly=2))
    newest = backup_id_for(datetime(2026, 11, 10, 23, tzinfo=UTC))
    assert kept[newest] == ["last 2", "daily 2026-11-10", "weekly 2026-W46", "monthly 2026-11"]
    # 2026-11-08 is a Sunday: the newest backup of ISO week 45.
    assert kept[backup_id_for(datetime(2026, 11, 8, 23, tzinfo=UTC))] == [
        "daily 2026-11-08",
        "weekly 2026-W45",
    ]
    # October has no backup, so monthly=2 adds nothing beyond the newest; Nov 9 is one of the last 2.
    assert sorted(kept) == [backup_id_for(datetime(2026, 11, d, 23, tzinfo=UTC)) for d in (8, 9, 10)]


def test_the_newest_verified_backup_is_always_kept() -> None:
    backups = _every(datetime(2026, 11, 1, tzinfo=UTC), timedelta(hours=1), 6)
    oldest = backups[0][0]
    kept = select_retained(backups, _policy(keep_last=1), newest_verified=oldest)
    assert kept == {backups[-1][0]: ["last 1"], oldest: [NEWEST_VERIFIED]}
    # A verified id that is not among the good backups (e.g. damaged since) adds nothing.
    assert select_retained(backups, _policy(keep_last=1), newest_verified="20200101T000000Z") == {
        backups[-1][0]: ["last 1"]
    }


def test_same_second_backups_order_by_time_then_id() -> None:
    t = datetime(2026, 11, 1, 10, 0, 0, tzinfo=UTC)
    backups = [(backup_id_for(t), t), (backup_id_for(t, 2), t + timedelta(microseconds=5))]
    assert list(select_retained(backups, _policy(keep_last=1))) == [backup_id_for(t, 2)]


def test_no_backups_keeps_nothing() -> None:
    assert select_retained([], RetentionPolicy(), newest_verified=None) == {}


def test_a_policy_that_keeps_nothing_is_refused() -> None:
    with pytest.raises(ValidationError, match="keeps no backup"):
        _policy()
    with pytest.raises(ValidationError, match="keep_last"):
        RetentionPolicy(keep_last=-1)
