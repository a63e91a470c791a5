"""Connections and statement timing shared by db clean, vacuum and stats.

Every statement these commands run goes through :class:`Session`, which times it (the longest
statement is part of every report) and turns database errors into messages without the DSN or its
password in them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from airflow_ops.airflow.metadb import APPLICATION_NAME, first_line, secrets_of


class DbMaintenanceError(RuntimeError):
    """A maintenance step failed; the message is safe to print (no DSN, no password)."""


@dataclass
class SlowestStatement:
    seconds: float = 0.0
    what: str = ""  # e.g. "delete task_instance (cascade of dag_run)"


@dataclass
class Session:
    """One connection plus the clock of every statement run on it."""

    conn: psycopg2.extensions.connection
    secrets: tuple[str, ...]
    statements: int = 0
    slowest: SlowestStatement = field(default_factory=SlowestStatement)
    # The longest statement since the caller last reset it (e.g. within one batch).
    since_mark: float = 0.0

    def run(self, what: str, query: str, params: Any = None) -> psycopg2.extensions.cursor:
        """Execute one statement, timed; returns the cursor (fetch from it before the next run)."""
        cur = self.conn.cursor()
        started = time.monotonic()
        try:
            cur.execute(query, params)
        finally:
            self._clock(what, time.monotonic() - started)
        return cur

    def copy_out(self, what: str, query: str, sink: BinaryIO, *, header: bool = True) -> int:
        """``COPY (query) TO STDOUT`` as CSV (with a header line) into ``sink``; returns the rows."""
        cur = self.conn.cursor()
        started = time.monotonic()
        try:
            cur.copy_expert(f"COPY ({query}) TO STDOUT WITH (FORMAT csv, HEADER {str(header).upper()})", sink)
        finally:
            self._clock(what, time.monotonic() - started)
        return max(0, cur.rowcount)

    def rows(self, what: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        return self.run(what, query, params).fetchall()

    def scalar(self, what: str, query: str, params: Any = None) -> Any:
        row = self.run(what, query, params).fetchone()
        return None if row is None else row[0]

    def set_timeouts(self, *, statement: float, lock: float, replica: bool = False) -> None:
        """SET LOCAL the timeouts (and, for set-based cascades, the replication role) of the
        transaction in progress: they end with it, whatever happens."""
        parts = [
            f"SET LOCAL statement_timeout = {milliseconds(statement)}",
            f"SET LOCAL lock_timeout = {milliseconds(lock)}",
        ]
        if replica:
            parts.append("SET LOCAL session_replication_role = replica")
        self.run("set timeouts", "; ".join(parts))

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def describe(self, exc: BaseException) -> str:
        """The first line of a database error, without secrets."""
        return self.scrub(first_line(exc))

    def _clock(self, what: str, seconds: float) -> None:
        self.statements += 1
        self.since_mark = max(self.since_mark, seconds)
        if seconds > self.slowest.seconds:
            self.slowest = SlowestStatement(seconds, what)


def milliseconds(seconds: float) -> int:
    """A timeout for SET …_timeout: 0 would mean "no timeout" to PostgreSQL, so at least 1 ms."""
    return max(1, round(seconds * 1000))


@contextmanager
def connect(dsn: str, *, autocommit: bool = False, connect_timeout: float = 10.0) -> Iterator[Session]:
    """A session on ``dsn``; connection errors come out as DbMaintenanceError without secrets."""
    secrets = secrets_of(dsn)
    try:
        conn = psycopg2.connect(
            dsn,
            connect_timeout=max(1, round(connect_timeout)),
            application_name=APPLICATION_NAME + " maintenance",
        )
    except psycopg2.Error as exc:
        text = first_line(exc)
        for secret in secrets:
            text = text.replace(secret, "***")
        raise DbMaintenanceError(f"cannot connect to the metadata DB: {text}") from None
    conn.autocommit = autocommit
    try:
        yield Session(conn, secrets)
    finally:
        conn.close()


def quote_ident(name: str) -> str:
    """A SQL identifier, always quoted: Airflow has columns named like keywords (``group``, ``key``)."""
    return '"' + name.replace('"', '""') + '"'


def column_list(alias: str, columns: Sequence[str]) -> str:
    """``a.x, a.y`` — or ``(a.x, a.y)`` ready for row comparisons when there are several."""
    cols = ", ".join(f"{alias}.{quote_ident(c)}" for c in columns)
    return cols if len(columns) == 1 else f"({cols})"
