"""Backups on disk without a database: ids, the locked partial directory and its atomic commit,
listing statuses, checksums, stale temporaries and removal."""

from __future__ import annotations

import json
import os
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from airflow_ops.config.backup import RetentionPolicy
from airflow_ops.maintenance import backup_store as store
from airflow_ops.maintenance.backup import backup_status, execute_prune, list_backups, plan_prune

T0 = datetime(2026, 11, 21, 10, 30, 0, tzinfo=timezone.utc)


def _commit(backup_dir: Path, started: datetime, payload: bytes = b"dump bytes") -> store.PartialBackup:
    """A complete backup as create writes it (dump + manifest), committed."""
    partial = store.PartialBackup(backup_dir, started)
    entry = store.write_file(partial.path / store.DUMP, payload)
    manifest = {
        "format": store.BACKUP_FORMAT,
        "id": partial.id,
        "started_at": started.isoformat(),
        "finished_at": (started + timedelta(seconds=5)).isoformat(),
        "airflow": {"version": "3.3.0", "alembic_revision": "d2f4e1b3c5a7"},
        "tables": {"public.dag": 1},
        "files": {store.DUMP: entry},
        "export": {"mode": "none"},
    }
    store.write_file(partial.path / store.MANIFEST, store.json_bytes(manifest))
    partial.commit()
    return partial


def test_ids_sort_by_time() -> None:
    ids = [store.backup_id_for(T0 + timedelta(seconds=s)) for s in (0, 1, 59, 3600, 86400 * 40)]
    assert ids[0] == "20261121T103000Z"
    assert ids == sorted(ids)
    assert store.backup_id_for(T0, 2) == "20261121T103000Z-2" > ids[0]
    assert store.time_of_id("20261121T103000Z-2") == T0
    assert not store.is_backup_id(".partial-20261121T103000Z") and not store.is_backup_id("x")


def test_commit_makes_a_good_backup_in_one_rename(tmp_path: Path) -> None:
    partial = store.PartialBackup(tmp_path, T0)
    assert partial.path.name == ".partial-20261121T103000Z" and store.is_locked(partial.path)
    # While it is written, list shows it as incomplete (and as still being written), never good.
    [entry] = list_backups(tmp_path)
    assert entry.status == store.INCOMPLETE and entry.problem == "a create is still writing it"
    partial.abort()
    assert list_backups(tmp_path) == []

    _commit(tmp_path, T0, b"x" * 1000)
    [b] = list_backups(tmp_path)
    assert (b.id, b.status, b.size_bytes, b.created) == ("20261121T103000Z", store.GOOD, 1000, T0)
    assert (b.airflow_version, b.alembic_revision, b.verified_at) == ("3.3.0", "d2f4e1b3c5a7", None)
    # Backups hold connection secrets: readable by their owner only.
    assert stat.S_IMODE(os.stat(b.path).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(b.path / store.DUMP).st_mode) == 0o600


def test_same_second_creates_get_distinct_ids(tmp_path: Path) -> None:
    first = store.PartialBackup(tmp_path, T0)
    second = store.PartialBackup(tmp_path, T0)  # while the first is still being written
    assert (first.id, second.id) == ("20261121T103000Z", "20261121T103000Z-2")
    second.abort()
    _commit(tmp_path, T0)  # takes -2 or -3: the first is still reserved
    first.abort()
    assert [b.id for b in list_backups(tmp_path)] == ["20261121T103000Z-2"]


def test_list_statuses(tmp_path: Path) -> None:
    _commit(tmp_path, T0)
    damaged = _commit(tmp_path, T0 + timedelta(hours=1), b"0123456789")
    with open(damaged.final_path / store.DUMP, "r+b") as f:
        f.truncate(4)
    corrupt = _commit(tmp_path, T0 + timedelta(hours=2))
    (corrupt.final_path / store.MANIFEST).write_text("{not json")
    no_manifest = tmp_path / "20261121T133000Z"
    no_manifest.mkdir()
    (tmp_path / "notes.txt").write_text("not a backup")  # other files are ignored
    statuses = {b.id: (b.status, b.problem) for b in list_backups(tmp_path)}
    assert statuses["20261121T103000Z"] == (store.GOOD, None)
    assert statuses["20261121T113000Z"] == (store.DAMAGED, "metadata.pgdump: truncated (4 of 10 bytes)")
    assert statuses["20261121T123000Z"][0] == store.CORRUPT_MANIFEST
    assert "not valid JSON" in statuses["20261121T123000Z"][1]
    assert statuses["20261121T133000Z"] == (store.INCOMPLETE, "no manifest.json")
    status = backup_status(tmp_path)
    assert (status.good, status.not_good, status.newest_id) == (1, 3, "20261121T103000Z")


def test_file_problems_find_a_flipped_byte(tmp_path: Path) -> None:
    b = _commit(tmp_path, T0, bytes(range(256)) * 10)
    manifest = json.loads((b.final_path / store.MANIFEST).read_text())
    assert store.file_problems(b.final_path, manifest) == []
    with open(b.final_path / store.DUMP, "r+b") as f:
        f.seek(1234)
        byte = f.read(1)
        f.seek(1234)
        f.write(bytes([byte[0] ^ 0xFF]))
    seen = []
    [problem] = store.file_problems(b.final_path, manifest, progress=lambda d, t, u: seen.append((d, t, u)))
    assert problem.startswith("metadata.pgdump: sha256 ") and "corrupted after it was written" in problem
    assert seen[-1] == (2560, 2560, "bytes")
    # The cheap check of list only looks at sizes.
    assert list_backups(tmp_path)[0].status == store.GOOD


def test_verification_record(tmp_path: Path) -> None:
    b = _commit(tmp_path, T0)
    _commit(tmp_path, T0 + timedelta(days=1))
    assert backup_status(tmp_path).newest_verified_id is None
    at = T0 + timedelta(hours=1)
    store.record_verification(b.final_path, {"ok": True, "verified_at": at.isoformat(), "errors": []})
    status = backup_status(tmp_path)
    assert (status.newest_verified_id, status.newest_verified_at, status.newest_id) == (
        b.id,
        at,
        "20261122T103000Z",
    )
    store.record_verification(b.final_path, {"ok": False, "verified_at": at.isoformat(), "errors": ["boom"]})
    info = list_backups(tmp_path)[0]
    assert info.verified_at is None and info.verify_failed == f"{at.isoformat()}: boom"
    assert backup_status(tmp_path).newest_verified_id is None
    assert not [p for p in b.final_path.iterdir() if p.name.endswith(".tmp")]  # atomic: no leftovers


def test_stale_temporaries_are_unlocked_and_old(tmp_path: Path) -> None:
    live = store.PartialBackup(tmp_path, T0)
    dead = store.PartialBackup(tmp_path, T0 + timedelta(minutes=1))
    dead._unlock()  # what a killed process leaves: the directory, without its lock
    deleting = tmp_path / ".deleting-20261101T000000Z-abc123"
    deleting.mkdir()
    now = datetime.now(timezone.utc)
    assert store.stale_temporaries(tmp_path, now, older_than=0) == [deleting, dead.path]
    assert store.stale_temporaries(tmp_path, now, older_than=3600) == [deleting]  # dead one is recent
    assert store.stale_temporaries(tmp_path, now + timedelta(hours=2), older_than=3600) == [
        deleting,
        dead.path,
    ]
    live.abort()


def test_remove_tree_counts_what_it_frees(tmp_path: Path) -> None:
    b = _commit(tmp_path, T0, b"y" * 300)
    manifest_size = (b.final_path / store.MANIFEST).stat().st_size
    assert store.remove_tree(b.final_path) == (2, 300 + manifest_size)
    assert list(tmp_path.iterdir()) == []


def test_write_json_atomic_replaces(tmp_path: Path) -> None:
    path = tmp_path / "verified.json"
    store.write_json_atomic(path, {"n": 1})
    store.write_json_atomic(path, {"n": 2})
    assert json.loads(path.read_text()) == {"n": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["verified.json"]


def test_partial_backup_in_an_unwritable_place(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(store.BackupError, match=r"backup directory .*/file/backups: cannot create it"):
        store.PartialBackup(blocker / "backups", T0)


def test_prune_removes_stale_temporaries_but_not_a_running_create(tmp_path: Path) -> None:
    for day in range(3):
        _commit(tmp_path, T0 + timedelta(days=day))
    damaged = _commit(tmp_path, T0 + timedelta(days=3))
    (damaged.final_path / store.DUMP).unlink()
    dead = store.PartialBackup(tmp_path, T0 + timedelta(days=4))
    dead._unlock()  # its process was killed
    running = store.PartialBackup(tmp_path, T0 + timedelta(days=5))
    policy = RetentionPolicy(keep_last=1, daily=0, weekly=0, monthly=0, stale_after=0)

    plan = plan_prune(tmp_path, policy, datetime.now(timezone.utc))
    assert [b.id for b in plan.delete] == ["20261121T103000Z", "20261122T103000Z"]
    assert plan.stale == (dead.path,) and [b.id for b in plan.untouched] == [damaged.id]
    assert "warning: no backup has been verified" in plan.report.lines[-1]
    report = execute_prune(plan)
    assert report.ok and report.data["deleted"] == ["20261121T103000Z", "20261122T103000Z"]
    assert report.data["removed_stale_temporaries"] == [dead.path.name]
    assert report.files_deleted == 4 and report.bytes_freed > 0
    remaining = {b.id: b.status for b in list_backups(tmp_path)}
    assert remaining == {
        "20261123T103000Z": store.GOOD,
        damaged.id: store.DAMAGED,  # left for a human to look at
        running.id: store.INCOMPLETE,  # a create still writing it
    }
    running.abort()
