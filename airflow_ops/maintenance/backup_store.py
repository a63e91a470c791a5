"""Backups on disk: the layout, atomic creation, listing, checksums and the verification record.

::

    <backup dir>/
      20261121T103000Z/             a complete backup; its id is the UTC time of its snapshot
        metadata.pgdump             pg_dump -Fc of the metadata database
        export.json                 pools, variables, connections (only when exported)
        manifest.json               what the backup holds, with the size and sha256 of each file
        verified.json               the result of the last verify (written later, atomically)
      .partial-20261121T110000Z/    a create in progress, or one that was interrupted
      .deleting-20261101T103000Z-…/ a backup prune is removing

A backup is built inside ``.partial-<id>`` and becomes ``<id>`` by one rename after every file
and the directory were fsynced, so a crash at any point leaves either a complete backup or a
``.partial-`` directory that nothing takes for a good backup. The creating process holds an
exclusive ``flock`` on its partial directory: a partial directory whose lock can be taken
belongs to a dead process. Prune renames a backup to ``.deleting-…`` before removing its files,
so a half-deleted backup is never listed as good either.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from airflow_ops.maintenance.backup_errors import BackupError
from airflow_ops.maintenance.report import Progress, no_progress

BACKUP_FORMAT = "airflow-ops-backup/1"
MANIFEST = "manifest.json"
VERIFIED = "verified.json"
DUMP = "metadata.pgdump"
EXPORT = "export.json"
PARTIAL_PREFIX = ".partial-"
DELETING_PREFIX = ".deleting-"

GOOD = "good"
INCOMPLETE = "incomplete"
CORRUPT_MANIFEST = "corrupt-manifest"
DAMAGED = "damaged"  # manifest fine, but a file is missing or has another size

_ID = re.compile(r"^(\d{8}T\d{6}Z)(?:-(\d+))?$")
_ID_TIME = "%Y%m%dT%H%M%SZ"
_CHUNK = 1 << 20
# Backups hold the metadata database, connection passwords included: owner only.
_DIR_MODE = 0o700
_FILE_MODE = 0o600


def backup_id_for(when: datetime, n: int = 1) -> str:
    """Sortable id of a backup whose snapshot was taken at ``when``; n > 1 for a same-second one."""
    base = when.astimezone(timezone.utc).strftime(_ID_TIME)
    return base if n == 1 else f"{base}-{n}"


def time_of_id(backup_id: str) -> datetime | None:
    m = _ID.match(backup_id)
    return datetime.strptime(m.group(1), _ID_TIME).replace(tzinfo=timezone.utc) if m else None


def is_backup_id(text: str) -> bool:
    return _ID.match(text) is not None


# ------------------------------------------------------------------ writing


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class HashingWriter:
    """A new file written in chunks, hashed as it is written (the dump is never read back)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        self.sha256.update(data)
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]
        self.size += len(data)

    def close(self) -> dict[str, Any]:
        """fsync, close, and return the file's manifest entry."""
        try:
            os.fsync(self.fd)
        finally:
            os.close(self.fd)
        return {"size": self.size, "sha256": self.sha256.hexdigest()}

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def write_file(path: Path, data: bytes) -> dict[str, Any]:
    """A new file with ``data``, fsynced; returns its manifest entry."""
    writer = HashingWriter(path)
    try:
        writer.write(data)
    except BaseException:
        writer.discard()
        raise
    return writer.close()


def json_bytes(doc: Any) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n").encode()


def write_json_atomic(path: Path, doc: Any) -> None:
    """Replace ``path`` with ``doc`` so that readers see the old or the new file, never a part."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        write_file(tmp, json_bytes(doc))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


class PartialBackup:
    """The locked ``.partial-<id>`` directory a backup is built in, until commit() or abort()."""

    def __init__(self, backup_dir: Path, started: datetime) -> None:
        try:
            backup_dir.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        except OSError as e:
            raise BackupError(f"backup directory {backup_dir}: cannot create it: {e.strerror}") from None
        self.backup_dir = backup_dir
        for n in range(1, 1000):
            backup_id = backup_id_for(started, n)
            path = backup_dir / f"{PARTIAL_PREFIX}{backup_id}"
            if (backup_dir / backup_id).exists():
                continue
            try:
                path.mkdir(mode=_DIR_MODE)
            except FileExistsError:
                continue  # another create took this id first
            except OSError as e:
                raise BackupError(f"backup directory {backup_dir}: cannot write: {e.strerror}") from None
            if (backup_dir / backup_id).exists():  # committed between our check and mkdir
                path.rmdir()
                continue
            self.id, self.path = backup_id, path
            self._fd: int | None = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            return
        raise BackupError(f"backup directory {backup_dir}: no free backup id for {started.isoformat()}")

    @property
    def final_path(self) -> Path:
        return self.backup_dir / self.id

    def commit(self) -> Path:
        """Make the backup visible: fsync the directory, rename it into place, fsync the parent."""
        fsync_dir(self.path)
        os.rename(self.path, self.final_path)
        fsync_dir(self.backup_dir)
        self._unlock()
        return self.final_path

    def abort(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self._unlock()

    def _unlock(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None


# ------------------------------------------------------------------ reading


@dataclass
class BackupInfo:
    """One entry of the backup directory, as list shows it."""

    id: str
    path: Path
    status: str  # good | incomplete | corrupt-manifest | damaged
    created: datetime | None  # when the snapshot was taken
    size_bytes: int
    finished: datetime | None = None
    airflow_version: str | None = None
    alembic_revision: str | None = None
    export: str | None = None
    # When the last verify succeeded (None if never verified or if the last verify failed).
    verified_at: datetime | None = None
    verify_failed: str | None = None  # the reason, when the last verify failed
    problem: str | None = None  # why the status is not good
    manifest: dict[str, Any] | None = None

    @property
    def good(self) -> bool:
        return self.status == GOOD

    @property
    def verified(self) -> bool:
        return self.good and self.verified_at is not None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": str(self.path),
            "status": self.status,
            "created": _iso(self.created),
            "finished": _iso(self.finished),
            "size_bytes": self.size_bytes,
            "airflow_version": self.airflow_version,
            "alembic_revision": self.alembic_revision,
            "export": self.export,
            "verified_at": _iso(self.verified_at),
            "verify_failed": self.verify_failed,
            "problem": self.problem,
        }


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


def parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def scan(backup_dir: Path) -> list[BackupInfo]:
    """Every backup and partial backup in ``backup_dir``, oldest first. Other entries are ignored."""
    if not backup_dir.is_dir():
        return []
    found = []
    for entry in backup_dir.iterdir():
        if entry.name.startswith(PARTIAL_PREFIX) and entry.is_dir():
            found.append(_partial_info(entry))
        elif is_backup_id(entry.name) and entry.is_dir():
            found.append(read_backup(entry))
    return sorted(found, key=lambda b: b.id)


def read_backup(path: Path) -> BackupInfo:
    """What ``path`` (a committed backup directory) holds, checked cheaply (names and sizes)."""
    # Without a usable manifest, the size is what the directory holds.
    info = BackupInfo(path.name, path, INCOMPLETE, time_of_id(path.name), 0)
    try:
        text = (path / MANIFEST).read_text()
    except FileNotFoundError:
        info.problem, info.size_bytes = f"no {MANIFEST}", _tree_size(path)
        return info
    except OSError as e:
        info.status, info.problem = CORRUPT_MANIFEST, f"{MANIFEST}: {e.strerror}"
        info.size_bytes = _tree_size(path)
        return info
    try:
        manifest = json.loads(text)
        problem = _manifest_problem(manifest)
    except ValueError as e:
        manifest, problem = None, f"not valid JSON ({e})"
    if problem:
        info.status, info.problem = CORRUPT_MANIFEST, f"{MANIFEST}: {problem}"
        info.size_bytes = _tree_size(path)
        return info
    info.manifest = manifest
    info.created = parse_time(manifest["started_at"]) or info.created
    info.finished = parse_time(manifest.get("finished_at"))
    info.size_bytes = sum(int(f["size"]) for f in manifest["files"].values())
    airflow = manifest.get("airflow") or {}
    info.airflow_version = airflow.get("version")
    info.alembic_revision = airflow.get("alembic_revision")
    info.export = (manifest.get("export") or {}).get("mode")
    missing = file_problems(path, manifest, hash_files=False)
    if missing:
        info.status, info.problem = DAMAGED, "; ".join(missing)
    else:
        info.status = GOOD
    _read_verification(info)
    return info


def _manifest_problem(manifest: Any) -> str | None:
    if not isinstance(manifest, dict) or manifest.get("format") != BACKUP_FORMAT:
        return f"not an {BACKUP_FORMAT} manifest"
    files = manifest.get("files")
    if not isinstance(files, dict) or DUMP not in files:
        return f"lists no {DUMP}"
    for name, entry in files.items():
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("size"), int)
            or not isinstance(entry.get("sha256"), str)
            or "/" in name
        ):
            return f"bad entry for file {name!r}"
    if parse_time(manifest.get("started_at")) is None:
        return "no valid started_at"
    if not isinstance(manifest.get("tables"), dict):
        return "no table row counts"
    return None


def _read_verification(info: BackupInfo) -> None:
    try:
        record = json.loads((info.path / VERIFIED).read_text())
    except (OSError, ValueError):
        return  # never verified (an unreadable record counts as none)
    if not isinstance(record, dict):
        return
    if record.get("ok") is True:
        info.verified_at = parse_time(record.get("verified_at"))
    else:
        errors = record.get("errors") or ["unknown reason"]
        info.verify_failed = f"{record.get('verified_at')}: {errors[0]}"


def _partial_info(path: Path) -> BackupInfo:
    backup_id = path.name[len(PARTIAL_PREFIX) :]
    running = is_locked(path)
    return BackupInfo(
        backup_id,
        path,
        INCOMPLETE,
        time_of_id(backup_id),
        _tree_size(path),
        problem="a create is still writing it" if running else "left by an interrupted create",
    )


def file_problems(
    path: Path, manifest: dict[str, Any], *, hash_files: bool = True, progress: Progress = no_progress
) -> list[str]:
    """What is wrong with the backup's files against the manifest: missing, truncated, grown, or
    (with hash_files) a sha256 that differs. Empty when all is well."""
    problems = []
    files = manifest["files"]
    total = sum(int(f["size"]) for f in files.values())
    done = 0
    for name, entry in sorted(files.items()):
        file = path / name
        try:
            size = file.stat().st_size
        except FileNotFoundError:
            problems.append(f"{name}: missing")
            continue
        if size < entry["size"]:
            problems.append(f"{name}: truncated ({size:,} of {entry['size']:,} bytes)")
            continue
        if size > entry["size"]:
            problems.append(f"{name}: {size - entry['size']:,} bytes longer than written ({entry['size']:,})")
            continue
        if hash_files:
            digest = hashlib.sha256()
            with open(file, "rb") as f:
                while chunk := f.read(_CHUNK):
                    digest.update(chunk)
                    done += len(chunk)
                    progress(done, total, "bytes")
            if digest.hexdigest() != entry["sha256"]:
                problems.append(
                    f"{name}: sha256 {digest.hexdigest()} differs from the manifest's {entry['sha256']}"
                    " (the file was changed or corrupted after it was written)"
                )
    return problems


def record_verification(path: Path, record: dict[str, Any]) -> None:
    write_json_atomic(path / VERIFIED, record)


# ------------------------------------------------------------------ temporaries and removal


def is_locked(path: Path) -> bool:
    """True while a live process holds the directory's flock (a create writing it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise
    finally:
        os.close(fd)  # also drops the lock we may have taken
    return False


def stale_temporaries(backup_dir: Path, now: datetime, older_than: float) -> list[Path]:
    """Partial backups no process holds that were last written over ``older_than`` seconds ago,
    and leftovers of interrupted prunes."""
    if not backup_dir.is_dir():
        return []
    stale = []
    for entry in sorted(backup_dir.iterdir()):
        if not entry.is_dir():
            continue
        if entry.name.startswith(DELETING_PREFIX) or (
            entry.name.startswith(PARTIAL_PREFIX)
            and now.timestamp() - _last_write(entry) >= older_than
            and not is_locked(entry)
        ):
            stale.append(entry)
    return stale


def remove_tree(path: Path) -> tuple[int, int]:
    """Remove a backup or temporary directory; returns (files, bytes) removed. A committed backup
    is renamed out of the listing first, so an interrupted removal never leaves a 'good' backup
    with files missing."""
    if is_backup_id(path.name):
        trash = path.with_name(f"{DELETING_PREFIX}{path.name}-{secrets.token_hex(3)}")
        os.rename(path, trash)
        fsync_dir(path.parent)
        path = trash
    files = size = 0
    for file in _walk_files(path):
        with contextlib.suppress(OSError):
            size += file.stat().st_size
            files += 1
    shutil.rmtree(path, ignore_errors=True)
    return files, size


def _walk_files(path: Path) -> Iterator[Path]:
    for root, _dirs, names in os.walk(path):
        for name in names:
            yield Path(root) / name


def _tree_size(path: Path) -> int:
    total = 0
    for file in _walk_files(path):
        with contextlib.suppress(OSError):
            total += file.stat().st_size
    return total


def _last_write(path: Path) -> float:
    latest = path.stat().st_mtime
    for file in _walk_files(path):
        with contextlib.suppress(OSError):
            latest = max(latest, file.stat().st_mtime)
    return latest
