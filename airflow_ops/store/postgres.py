"""The PostgreSQL backend: state shared by replicas; leadership by a session advisory lock.

The store may live inside another application's database (even Airflow's): it touches only its
``ops_`` tables and advisory-lock keys derived from ``airflow-ops:<name>``. The DSN's password
never appears in a StoreError or a log line.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

import psycopg2
import psycopg2.extensions
import psycopg2.extras

from .backend import Backend, Leadership, Row, StoreError, T, Tx, stable_key, upsert_sql

log = logging.getLogger(__name__)

_CONNECT_TIMEOUT_S = 10
# A store call must not hang the poll loop behind a lock held by someone else's long query.
_STATEMENT_TIMEOUT_MS = 60_000
# The leadership connection must notice a dead peer fast in both directions: client keepalives
# and tcp_user_timeout for us, server-side keepalives (settable per session) so the server drops
# a vanished holder's session, and with it the lock, within ~15 s instead of hours.
_LEADER_TCP = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3}
_LEADER_TCP_USER_TIMEOUT_MS = 10_000
_LEADER_SERVER_OPTIONS = "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3"


class _Dsn:
    """The DSN, how to describe it without its password, and how to scrub that password out of
    driver messages."""

    def __init__(self, url: str) -> None:
        try:
            self.params = psycopg2.extensions.parse_dsn(url)
        except psycopg2.Error:
            # The driver's message quotes the DSN: say only which part of it is wrong.
            raise StoreError(
                f"invalid PostgreSQL URL for the ops store ({url.split(':', 1)[0]}://…): "
                "expected postgresql://user:password@host:port/dbname"
            ) from None
        self.url = url
        password = self.params.get("password") or ""
        self._secrets = sorted({password, quote(password, safe="")} - {""}, key=len, reverse=True)
        p = self.params
        host = p.get("host", "localhost")
        self.where = f"postgresql://{p.get('user', '')}@{host}:{p.get('port', '5432')}/{p.get('dbname', '')}"

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def error(self, what: str, exc: BaseException) -> StoreError:
        detail = " ".join(str(exc).split())  # libpq messages span lines; logs want one
        return StoreError(self.scrub(f"ops store {self.where}: {what}: {detail}"))

    def connect(self, application_name: str, extra_options: str = "", **defaults: Any) -> Any:
        """A new connection; ``defaults`` apply unless the DSN sets them; ``extra_options`` are
        appended to the DSN's server options."""
        kwargs = {"connect_timeout": _CONNECT_TIMEOUT_S, "application_name": application_name, **defaults}
        kwargs = {k: v for k, v in kwargs.items() if k not in self.params}
        options = " ".join(filter(None, [self.params.get("options", ""), extra_options]))
        if options:
            kwargs["options"] = options
        try:
            return psycopg2.connect(self.url, **kwargs)
        except psycopg2.Error as exc:
            # from None: the chained driver exception would carry its own unscrubbed text.
            raise self.error("cannot connect", exc) from None


@functools.lru_cache(maxsize=256)
def _pg_sql(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


class _PgTx(Tx):
    def __init__(self, cur: Any) -> None:
        self.cur = cur

    def execute(self, sql: str, params: Row = ()) -> int:
        self.cur.execute(_pg_sql(sql), tuple(params))
        return self.cur.rowcount

    def query(self, sql: str, params: Row = ()) -> list[tuple[Any, ...]]:
        self.cur.execute(_pg_sql(sql), tuple(params))
        return self.cur.fetchall()

    def upsert(self, table: str, columns: Sequence[str], key: Sequence[str], rows: Sequence[Row]) -> None:
        # execute_values: one round trip per 1000 rows instead of one per row (executemany).
        psycopg2.extras.execute_values(self.cur, upsert_sql(table, columns, key, "%s"), rows, page_size=1000)

    def delete_keys(self, table: str, column: str, keys: Sequence[Any]) -> None:
        self.cur.execute(f"DELETE FROM {table} WHERE {column} = ANY(%s)", (list(keys),))

    def serialize(self, name: str) -> None:
        self.cur.execute("SELECT pg_advisory_xact_lock(%s)", (stable_key(name),))


class PostgresBackend(Backend):
    serial_pk = "BIGSERIAL PRIMARY KEY"

    def __init__(self, url: str) -> None:
        self.dsn = _Dsn(url)
        self._lock = threading.Lock()
        self._conn: Any = None
        with self._lock:
            self._connection()  # fail at open, not at first use, on a wrong DSN

    def _connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            user_set = "statement_timeout" in self.dsn.params.get("options", "")
            extra = "" if user_set else f"-c statement_timeout={_STATEMENT_TIMEOUT_MS}"
            self._conn = self.dsn.connect("airflow-ops store", extra, keepalives=1, keepalives_idle=30)
        return self._conn

    def run(self, fn: Callable[[Tx], T], *, write: bool) -> T:
        with self._lock:
            for attempt in (1, 2):
                conn = self._connection()
                try:
                    with conn.cursor() as cur:
                        result = fn(_PgTx(cur))
                except psycopg2.Error as exc:
                    if conn.closed and attempt == 1:
                        # The connection was lost (server restart, failover, terminated backend)
                        # before anything was committed: run the whole transaction again.
                        log.warning("ops store %s: connection lost, reconnecting", self.dsn.where)
                        continue
                    _rollback_quietly(conn)
                    raise self.dsn.error("query failed", exc) from None
                except BaseException:
                    _rollback_quietly(conn)
                    raise
                try:
                    conn.commit()
                except psycopg2.Error as exc:
                    # Not retried: the server may have committed before the connection dropped,
                    # and running the transaction again could queue a notification twice.
                    _rollback_quietly(conn)
                    raise self.dsn.error("commit failed (outcome unknown)", exc) from None
                return result
        raise AssertionError("unreachable")

    def leadership(self, name: str) -> Leadership:
        return AdvisoryLockLeadership(name, self.dsn)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _rollback_quietly(conn: Any) -> None:
    if not conn.closed:
        try:
            conn.rollback()
        except psycopg2.Error:
            conn.close()


class AdvisoryLockLeadership(Leadership):
    """A session-level ``pg_try_advisory_lock`` on a dedicated autocommit connection.

    PostgreSQL releases the lock when the session ends, so a holder that dies (even by SIGKILL)
    frees it for another replica's next ``try_acquire``. When the holder's own connection is
    lost, the lock may already belong to another replica, so ``try_acquire`` reports False for
    that call (the caller steps down and, once it wins again, reloads state from the store) and
    competes again on a fresh connection at the next call.
    """

    def __init__(self, name: str, dsn: _Dsn) -> None:
        self.name = name
        self.key = stable_key(f"leadership:{name}")
        self._dsn = dsn
        self._conn: Any = None
        self._held = False
        self._mutex = threading.Lock()
        self._last_error = ""

    @property
    def held(self) -> bool:
        return self._held

    def try_acquire(self) -> bool:
        with self._mutex:
            if self._conn is None or self._conn.closed:
                if self._held:
                    return self._step_down()
                try:
                    self._conn = self._connect()
                except StoreError as exc:
                    self._note_error(str(exc))
                    return False
            try:
                with self._conn.cursor() as cur:
                    if self._held:
                        cur.execute("SELECT 1")  # the session lives, so the lock is still ours
                    else:
                        cur.execute("SELECT pg_try_advisory_lock(%s)", (self.key,))
                        self._held = bool(cur.fetchone()[0])
            except psycopg2.Error as exc:
                self._note_error(self._dsn.error("leadership connection lost", exc).args[0])
                self._conn.close()
                return self._step_down()
            self._last_error = ""
            return self._held

    def _connect(self) -> Any:
        conn = self._dsn.connect(
            "airflow-ops leadership",
            _LEADER_SERVER_OPTIONS,
            **_LEADER_TCP,
            tcp_user_timeout=_LEADER_TCP_USER_TIMEOUT_MS,
        )
        conn.autocommit = True  # never idle in a transaction while holding the session lock
        return conn

    def _step_down(self) -> bool:
        if self._held:
            log.warning("lost leadership %r: its PostgreSQL session ended", self.name)
        self._held = False
        return False

    def _note_error(self, message: str) -> None:
        # try_acquire runs every poll: log a persisting failure once, not every few seconds.
        if message != self._last_error:
            log.warning("%s", message)
            self._last_error = message

    def release(self) -> None:
        with self._mutex:
            if self._conn is not None and not self._conn.closed:
                try:
                    if self._held:
                        with self._conn.cursor() as cur:
                            cur.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
                except psycopg2.Error:
                    pass  # closing the session below releases it anyway
                self._conn.close()
            self._conn = None
            self._held = False
