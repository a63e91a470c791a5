"""What the ops store needs from a database: transactions, bulk upserts, leadership.

``OpsStore`` writes its SQL once with ``?`` placeholders and standard ``ON CONFLICT`` upserts
(both SQLite >= 3.24 and PostgreSQL speak them); a backend supplies the connection handling and
the few statements whose fast form differs.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
Row = Sequence[Any]


class StoreError(RuntimeError):
    """The ops store failed; the message says what and where, and never carries a password."""


class Tx(ABC):
    """One open transaction (``?`` placeholders)."""

    @abstractmethod
    def execute(self, sql: str, params: Row = ()) -> int:
        """Run one statement; returns the number of rows it changed."""

    @abstractmethod
    def query(self, sql: str, params: Row = ()) -> list[tuple[Any, ...]]:
        """Run one statement and return all its rows."""

    @abstractmethod
    def upsert(self, table: str, columns: Sequence[str], key: Sequence[str], rows: Sequence[Row]) -> None:
        """Insert ``rows``, replacing the non-key columns of rows whose ``key`` already exists.
        Keys must be unique within ``rows``."""

    @abstractmethod
    def delete_keys(self, table: str, column: str, keys: Sequence[Any]) -> None:
        """Delete the rows whose ``column`` is one of ``keys``."""

    def insert_returning_id(self, table: str, columns: Sequence[str], row: Row) -> int:
        marks = ", ".join("?" * len(columns))
        rows = self.query(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) RETURNING id", row)
        return int(rows[0][0])

    def serialize(self, name: str) -> None:  # noqa: B027 - deliberately a no-op by default
        """Serialize this transaction against others that serialize on ``name`` (schema changes by
        two replicas starting at once). SQLite's write transactions are serial already."""


class Leadership(ABC):
    """Which replica evaluates and notifies: at most one process holds a given name at a time."""

    name: str

    @property
    @abstractmethod
    def held(self) -> bool:
        """Whether this process held leadership at the last ``try_acquire``."""

    @abstractmethod
    def try_acquire(self) -> bool:
        """Non-blocking: whether this process holds leadership now (acquiring it if free)."""

    @abstractmethod
    def release(self) -> None:
        """Give leadership up (no-op if not held)."""


class Backend(ABC):
    """One database connection shared by the store's threads, plus leadership."""

    #: the auto-incrementing primary key column type, for the schema
    serial_pk: str

    @abstractmethod
    def run(self, fn: Callable[[Tx], T], *, write: bool) -> T:
        """Run ``fn`` in one transaction (committed if it returns, rolled back if it raises).
        ``fn`` may be run twice if the connection was lost under it, so it must only touch the
        database. Database errors surface as StoreError."""

    @abstractmethod
    def leadership(self, name: str) -> Leadership: ...

    @abstractmethod
    def close(self) -> None: ...


def stable_key(name: str) -> int:
    """A signed 64-bit key for ``name``, the same in every process (unlike ``hash()``)."""
    return int.from_bytes(hashlib.sha256(f"airflow-ops:{name}".encode()).digest()[:8], "big", signed=True)


def upsert_sql(table: str, columns: Sequence[str], key: Sequence[str], values: str) -> str:
    """``INSERT … VALUES <values> ON CONFLICT (key) DO UPDATE`` of the non-key columns."""
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES {values} "
        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
    )
