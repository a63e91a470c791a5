"""The SQLite backend: one file (or memory) for a single replica; leadership by ``flock``."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .backend import Backend, Leadership, Row, StoreError, T, Tx, upsert_sql

MEMORY = ":memory:"
# Another process (e.g. `airflow-ops silence add` next to the service) may hold the write lock.
_BUSY_TIMEOUT_S = 30.0
_MIN_VERSION = (3, 35)


class _SqliteTx(Tx):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Row = ()) -> int:
        return self.conn.execute(sql, params).rowcount

    def query(self, sql: str, params: Row = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, params).fetchall()

    def upsert(self, table: str, columns: Sequence[str], key: Sequence[str], rows: Sequence[Row]) -> None:
        self.conn.executemany(upsert_sql(table, columns, key, f"({', '.join('?' * len(columns))})"), rows)

    def delete_keys(self, table: str, column: str, keys: Sequence[Any]) -> None:
        self.conn.executemany(f"DELETE FROM {table} WHERE {column} = ?", [(k,) for k in keys])


class SqliteBackend(Backend):
    serial_pk = "INTEGER PRIMARY KEY AUTOINCREMENT"  # AUTOINCREMENT: ids never reused after prune

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        if sqlite3.sqlite_version_info < _MIN_VERSION:
            raise StoreError(
                f"the ops store needs SQLite >= {'.'.join(map(str, _MIN_VERSION))} (for RETURNING); "
                f"this Python uses {sqlite3.sqlite_version}: use a newer Python or a PostgreSQL store"
            )
        try:
            if path != MEMORY:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: transactions are begun explicitly below, not by the driver.
            self._conn = sqlite3.connect(
                path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            if path != MEMORY:
                # WAL: readers (the CLI, HTTP threads) never block the writer and vice versa.
                self._conn.execute("PRAGMA journal_mode=WAL")
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the ops store {path}: {exc}") from exc

    def run(self, fn: Callable[[Tx], T], *, write: bool) -> T:
        with self._lock:
            try:
                # IMMEDIATE takes the write lock up front: a deferred transaction that later
                # needs it fails with SQLITE_BUSY instead of waiting out the busy timeout.
                self._conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    result = fn(_SqliteTx(self._conn))
                    self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StoreError(f"ops store {self.path}: {exc}") from exc
            return result

    def leadership(self, name: str) -> Leadership:
        if self.path == MEMORY:
            return _AlwaysLeader(name)
        return FlockLeadership(name, f"{self.path}.lock")

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class _AlwaysLeader(Leadership):
    """A memory store is private to its process: nobody to share leadership with."""

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def held(self) -> bool:
        return True

    def try_acquire(self) -> bool:
        return True

    def release(self) -> None:
        pass


class FlockLeadership(Leadership):
    """An exclusive ``flock`` on ``<dbfile>.lock``: the kernel drops it when the process dies.

    One lock file serves one leadership name (there is only "alerting" today); another name gets
    its own file. flock locks belong to the open file, so two stores in one process exclude each
    other too.
    """

    def __init__(self, name: str, lock_path: str) -> None:
        self.name = name
        self.lock_path = lock_path if name == "alerting" else f"{lock_path}.{name}"
        self._fd: int | None = None
        self._mutex = threading.Lock()

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        with self._mutex:
            if self._fd is not None:
                return True
            try:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise StoreError(f"cannot open the leadership lock file {self.lock_path}: {exc}") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            self._fd = fd
            return True

    def release(self) -> None:
        with self._mutex:
            if self._fd is not None:
                os.close(self._fd)  # closing the only descriptor drops the lock
                self._fd = None
