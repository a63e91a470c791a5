"""Archives of what db clean deletes: gzip'd CSV files outside the database.

Each batch writes one file per table it deletes from (``COPY (DELETE … RETURNING …) TO STDOUT``
in set-based mode, so the file holds exactly the deleted rows), plus a manifest naming the batch's
root keys. Files and manifest are fsynced before the batch's transaction commits; the manifest is
written as ``*.json.pending`` and renamed to ``*.json`` after the commit. A run killed between
the two leaves a pending manifest, which the next run settles by asking the database whether the
batch's root rows still exist: gone means committed (the manifest is completed), present means
rolled back (the batch's files are removed, the rows will be archived again when deleted).
"""

from __future__ import annotations

import gzip
import json
import os
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

MANIFEST_VERSION = 1
# Fast compression: archiving must not make the cleanup CPU-bound on the client.
_COMPRESSLEVEL = 3


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _GzipSink:
    """A gzip writer over a real file, so that the file itself can be fsynced."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.raw = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.gz = gzip.GzipFile(fileobj=self.raw, mode="wb", compresslevel=_COMPRESSLEVEL, mtime=0)

    def close(self, sync: bool) -> int:
        self.gz.close()
        self.raw.flush()
        if sync:
            os.fsync(self.raw.fileno())
        self.raw.close()
        return self.path.stat().st_size


class ArchiveBatch:
    def __init__(
        self, archive: Archive, seq: int, root: str, key_columns: Sequence[str], keys: Sequence[Sequence[Any]]
    ) -> None:
        self.archive = archive
        self.name = f"b{seq:06d}"
        self.root = root
        self.key_columns = list(key_columns)
        self.keys = [list(k) for k in keys]
        self.sinks: dict[str, _GzipSink] = {}
        self.rows: dict[str, int] = {}
        self.bytes_written = 0

    def sink(self, table: str) -> tuple[BinaryIO, bool]:
        """The file rows of ``table`` are copied into (one per table per batch), and whether it
        is new (and so needs the CSV header line; a table reached along two paths is copied twice)."""
        new = table not in self.sinks
        if new:
            self.sinks[table] = _GzipSink(self.archive.dir / f"{self.name}.{table}.csv.gz")
        return self.sinks[table].gz, new  # type: ignore[return-value]

    def add_rows(self, table: str, rows: int) -> None:
        self.rows[table] = self.rows.get(table, 0) + rows

    @property
    def _pending(self) -> Path:
        return self.archive.dir / f"{self.name}.json.pending"

    def seal(self) -> None:
        """Close and fsync every file and the pending manifest: call before COMMIT."""
        files = {table: sink.path.name for table, sink in self.sinks.items()}
        for sink in self.sinks.values():
            self.bytes_written += sink.close(sync=True)
        manifest = {
            "version": MANIFEST_VERSION,
            "root": self.root,
            "key_columns": self.key_columns,
            "keys": self.keys,
            "files": files,
            "rows": self.rows,
            "written_at": datetime.now(timezone.utc).isoformat(),
        }
        with open(self._pending, "w") as f:
            json.dump(manifest, f, default=str)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(self.archive.dir)

    def commit(self) -> None:
        """The batch's transaction committed: the manifest becomes final."""
        os.replace(self._pending, self.archive.dir / f"{self.name}.json")
        _fsync_dir(self.archive.dir)

    def discard(self) -> None:
        """The batch's transaction rolled back: nothing of it stays."""
        for sink in self.sinks.values():
            if not sink.raw.closed:
                sink.close(sync=False)
            sink.path.unlink(missing_ok=True)
        self._pending.unlink(missing_ok=True)
        self.bytes_written = 0


class Archive:
    """One directory per execution under ``base``: ``clean-<UTC time>-<pid>/``."""

    def __init__(self, base: Path) -> None:
        self.base = base
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self.dir = base / f"clean-{stamp}-{os.getpid()}"
        self._seq = 0
        self.bytes_written = 0
        self.batches = 0
        self._lock = threading.Lock()  # batches of several workers

    def open(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        _fsync_dir(self.base)

    def batch(self, root: str, key_columns: Sequence[str], keys: Sequence[Sequence[Any]]) -> ArchiveBatch:
        with self._lock:
            self._seq += 1
            seq = self._seq
        return ArchiveBatch(self, seq, root, key_columns, keys)

    def committed(self, batch: ArchiveBatch) -> None:
        batch.commit()
        with self._lock:
            self.bytes_written += batch.bytes_written
            self.batches += 1

    def settle_pending(self, still_there: Callable[[str, list[str], list[list[Any]]], bool]) -> list[str]:
        """Complete or remove the batches a killed run left pending (see the module doc);
        ``still_there(root, key_columns, keys)`` asks the database. Files of a batch that has no
        manifest at all never reached its commit and are removed. Directories of a process still
        running on this host (a concurrent cleanup) are left alone. Returns what was done."""
        done = []
        for run_dir in sorted(p for p in self.base.glob("clean-*") if p.is_dir() and p != self.dir):
            if _process_alive(run_dir.name.rsplit("-", 1)[-1]):
                continue
            done += self._settle_dir(run_dir, still_there)
        return done

    def _settle_dir(
        self, run_dir: Path, still_there: Callable[[str, list[str], list[list[Any]]], bool]
    ) -> list[str]:
        done = []
        sealed = {p.name.split(".", 1)[0] for p in run_dir.glob("b*.json*")}
        for stray in sorted(run_dir.glob("b*.csv.gz")):
            if stray.name.split(".", 1)[0] not in sealed:
                stray.unlink()
                done.append(f"{run_dir.name}/{stray.name}: batch never committed, file removed")
        for pending in sorted(run_dir.glob("*.json.pending")):
            manifest = json.loads(pending.read_text())
            if still_there(manifest["root"], manifest["key_columns"], manifest["keys"]):
                for name in manifest["files"].values():
                    (pending.parent / name).unlink(missing_ok=True)
                pending.unlink()
                done.append(f"{pending.parent.name}/{pending.name}: rolled back, files removed")
            else:
                os.replace(pending, pending.with_suffix(""))
                done.append(f"{pending.parent.name}/{pending.name}: committed, manifest completed")
            _fsync_dir(pending.parent)
        if done:
            _fsync_dir(run_dir)
        return done


def _process_alive(pid_text: str) -> bool:
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_archive_rows(path: Path) -> list[dict[str, str]]:
    """The rows of one archive file (CSV with a header), as strings: for verification and tests."""
    import csv
    import io

    with gzip.open(path, "rb") as f:
        return list(csv.DictReader(io.TextIOWrapper(f, encoding="utf-8", newline="")))
