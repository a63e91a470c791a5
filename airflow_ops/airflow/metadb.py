"""The metadata-database source: Airflow's state read with SQL, at a cost that grows with live work.

Nothing here scans or groups ``dag_run``/``task_instance`` history. Gauges come from the
indexes Airflow keeps for its own scheduler (``ti_state``, the partial queued/running dag_run
indexes, ``job_type_heart``); the statements are in ``metadb_queries``. Counters, histograms and
per-DAG health come from terminal transitions that this source watches happen, in memory (health
is bootstrapped once per DAG with LIMIT-N queries); the counting rules and their blind spots are
in ``run_tracker``.

Unlabelled aggregates (live run counts, task groups, stale heartbeats, queue waits by pool/queue)
cover every DAG; the DAG filter applies to everything labelled with a dag_id.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from airflow_ops.airflow.metadb_queries import MAX_RUN_ID_SQL, SESSION_SQL, Queries
from airflow_ops.airflow.run_tracker import (
    DagHealth,
    HealthBook,
    RunHistoryBook,
    RunRow,
    RunTracker,
    TiRow,
    failing_streaks,
    from_epoch,
    health_from_recent,
    to_epoch,
)
from airflow_ops.airflow.schema import SchemaProfile, UnsupportedSchema, detect_profile
from airflow_ops.airflow.source import SourceError
from airflow_ops.config import DatabaseConfig, MetricsConfig
from airflow_ops.snapshot import (
    LIVE_RUN_STATES,
    LIVE_TI_STATES,
    WAITING_TI_STATES,
    ComponentHeartbeat,
    DagInfo,
    DagRunHealth,
    DbState,
    TableStats,
    TaskInstanceGroup,
)

log = logging.getLogger(__name__)

APPLICATION_NAME = "airflow-ops"
# New runs taken per poll; a backlog (e.g. after an outage) is worked off over several polls so
# that no statement grows with it.
NEW_RUNS_PER_POLL = 2000
# Runs whose task instances are read in one statement.
TI_RUNS_PER_QUERY = 500
# DAGs bootstrapped per statement.
DAGS_PER_BOOTSTRAP_QUERY = 200

# "No lower bound" for timestamptz comparisons (PostgreSQL accepts year 1).
_NO_BOUND = datetime(1, 1, 1, tzinfo=timezone.utc)


# ------------------------------------------------------------------ small helpers


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ------------------------------------------------------------------ the source


class MetadataDbSource:
    """Reads Airflow's metadata database (PostgreSQL) into a DbState; see the module docstring."""

    name = "metadb"

    def __init__(self, deployment: str, db: DatabaseConfig, metrics: MetricsConfig) -> None:
        self.deployment = deployment
        self._db = db
        self._metrics = metrics
        self._wanted = metrics.dag_filter()
        self._conn: psycopg2.extensions.connection | None = None
        self._profile: SchemaProfile | None = None
        self._queries: Queries | None = None
        self._history = RunHistoryBook(metrics)
        self._health = HealthBook(metrics.success_ratio_runs)
        self._tracker = RunTracker(metrics, self._history, self._health)
        self._tables: tuple[TableStats, ...] = ()
        self._tables_at: float | None = None
        # dag_id -> (the health window it was computed for, task streaks): recomputed only when
        # a failing DAG's window of recent runs changes.
        self._streaks: dict[str, tuple[tuple[tuple[int, str], ...], dict[str, int]]] = {}
        self._secrets = secrets_of(db.dsn.value)
        # DB time per statement name in the last poll (self-observability, benchmarks).
        self.last_query_seconds: dict[str, float] = {}

    # ---- Source protocol

    def poll(self, now: float) -> DbState:
        self.last_query_seconds = {}
        try:
            self._ensure_connected()
            return self._read(now)
        except SourceError:
            self._disconnect()
            raise
        except UnsupportedSchema as exc:
            self._disconnect()
            raise SourceError("query", f"unsupported metadata schema: {exc}") from None
        except psycopg2.Error as exc:
            self._disconnect()
            raise self._query_error(exc) from None

    def close(self) -> None:
        self._disconnect()

    @property
    def profile(self) -> SchemaProfile | None:
        """The schema profile detected on the current connection (None before the first connect)."""
        return self._profile

    # ---- connection

    def _ensure_connected(self) -> None:
        if self._conn is not None and not self._conn.closed:
            return
        try:
            conn = psycopg2.connect(
                self._db.dsn.value,
                connect_timeout=max(1, math.ceil(self._db.connect_timeout)),
                application_name=APPLICATION_NAME,
                keepalives=1,
                keepalives_idle=30,
                keepalives_interval=10,
                keepalives_count=3,
            )
        except psycopg2.Error as exc:
            raise self._connect_error(exc) from None
        try:
            conn.set_session(readonly=True, autocommit=True)
            with conn.cursor() as cur:
                cur.execute(
                    SESSION_SQL,
                    {
                        "statement_ms": max(1, int(self._db.statement_timeout * 1000)),
                        "lock_ms": max(1, int(self._db.lock_timeout * 1000)),
                    },
                )
            profile = detect_profile(conn)
        except BaseException:
            conn.close()
            raise
        if self._profile is not None and profile.major != self._profile.major:
            log.warning("metadata schema changed from Airflow %d to %d", self._profile.major, profile.major)
        self._conn, self._profile = conn, profile
        self._queries = Queries.for_profile(profile)

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg2.Error):
                conn.close()

    def _fetch(self, name: str, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        assert self._conn is not None
        started = time.perf_counter()
        with self._conn.cursor() as cur:
            cur.execute(sql, params)
            rows = cur.fetchall()
        elapsed = time.perf_counter() - started
        self.last_query_seconds[name] = self.last_query_seconds.get(name, 0.0) + elapsed
        return rows

    # ---- one poll

    def _read(self, now: float) -> DbState:
        assert self._profile is not None and self._queries is not None
        dags = self._read_dags()
        self._bootstrap_health([d.dag_id for d in dags])
        oldest_running, runs_active = self._track_runs(now)
        return DbState(
            schema_major=self._profile.major,
            dags=dags,
            dag_health=self._dag_health(dags, oldest_running),
            runs_active=runs_active,
            task_groups=self._read_task_groups(),
            stale_heartbeat_task_instances=self._read_stale_heartbeats(now),
            heartbeats=self._read_heartbeats(now),
            newest_heartbeats=self._read_newest_heartbeats(),
            task_failing_streaks=self._read_failing_streaks(),
            tables=self._read_tables(now),
            history=self._history.freeze(),
        )

    def _read_dags(self) -> tuple[DagInfo, ...]:
        assert self._queries is not None
        dags = []
        for dag_id, owner, paused, stale, scheduled, create_after, tags in self._fetch(
            "dags", self._queries.dags
        ):
            if self._wanted(dag_id):
                dags.append(
                    DagInfo(
                        dag_id,
                        owner,
                        bool(paused),
                        bool(stale),
                        bool(scheduled),
                        to_epoch(create_after),
                        tuple(tags),
                    )
                )
        return tuple(sorted(dags, key=lambda d: d.dag_id))

    def _track_runs(self, now: float) -> tuple[dict[str, float], dict[str, int]]:
        """Advance the run/TI tracker; returns (oldest running start per DAG, live run counts)."""
        assert self._queries is not None
        q, tracker = self._queries, self._tracker
        startup = not tracker.primed
        max_id = self._fetch("max_run_id", MAX_RUN_ID_SQL)[0][0]
        if tracker.watermark is None or max_id < tracker.watermark:
            # First poll; or the newest runs were deleted or the DB restored: ids restart lower.
            tracker.watermark = max_id
        ids = sorted({*tracker.runs, *self._health.watched_runs()})
        rows = [
            RunRow.from_db(r)
            for r in self._fetch("live_or_tracked_runs", q.live_or_tracked_runs, {"ids": ids})
        ]
        tracker.observe_known_or_live(rows, now, startup)
        if not startup:
            new = self._fetch(
                "new_runs", q.new_runs, {"after_id": tracker.watermark, "limit": NEW_RUNS_PER_POLL}
            )
            tracker.observe_new((RunRow.from_db(r) for r in new), now)
        self._read_tis()
        tracker.forget_finished(now)
        return _live_summary(rows, self._wanted)

    def _read_tis(self) -> None:
        assert self._queries is not None
        # A queued run's TIs cannot move until it runs; its first read then still judges them.
        runs = [r for r in self._tracker.runs.values() if r.state != "queued"]
        for chunk in _chunks(runs, TI_RUNS_PER_QUERY):
            params = {"dag_ids": [r.dag_id for r in chunk], "run_ids": [r.run_id for r in chunk]}
            rows = [TiRow.from_db(r) for r in self._fetch("run_tis", self._queries.run_tis, params)]
            self._tracker.observe_tis(rows)
            with_rows = {(r.dag_id, r.run_id) for r in rows}
            self._tracker.mark_tis_read(r.pk for r in chunk if (r.dag_id, r.run_id) not in with_rows)

    def _read_task_groups(self) -> tuple[TaskInstanceGroup, ...]:
        assert self._queries is not None
        rows = self._fetch("task_groups", self._queries.task_groups, {"states": list(LIVE_TI_STATES)})
        groups = [
            TaskInstanceGroup(
                state, pool, queue, count, to_epoch(since) if state in WAITING_TI_STATES else None
            )
            for state, pool, queue, count, since in rows
        ]
        return tuple(sorted(groups, key=lambda g: (g.state, g.pool, g.queue)))

    def _read_stale_heartbeats(self, now: float) -> int:
        assert self._queries is not None
        cutoff = from_epoch(now - self._metrics.stale_heartbeat_threshold)
        return int(self._fetch("stale_heartbeat", self._queries.stale_heartbeat, {"cutoff": cutoff})[0][0])

    def _read_heartbeats(self, now: float) -> tuple[ComponentHeartbeat, ...]:
        assert self._profile is not None and self._queries is not None
        component_of = self._profile.component_by_job_type
        params = {
            "job_types": list(component_of),
            "since": from_epoch(now - self._metrics.heartbeat_lookback),
        }
        beats = [
            ComponentHeartbeat(component_of[job_type], hostname, beat.timestamp())
            for job_type, hostname, beat in self._fetch("heartbeats", self._queries.heartbeats, params)
        ]
        return tuple(sorted(beats, key=lambda b: (b.component, b.hostname)))

    def _read_newest_heartbeats(self) -> dict[str, float | None]:
        assert self._profile is not None and self._queries is not None
        component_of = self._profile.component_by_job_type
        params = {"job_types": list(component_of)}
        newest: dict[str, float | None] = {}
        for job_type, beat in self._fetch("newest_heartbeats", self._queries.newest_heartbeats, params):
            component = component_of[job_type]
            ts = to_epoch(beat)
            if newest.get(component) is None or (ts is not None and ts > (newest[component] or 0.0)):
                newest[component] = ts
        return newest

    def _read_failing_streaks(self) -> dict[tuple[str, str], int]:
        """Tasks failing across consecutive runs, within the recent-runs window of failing DAGs."""
        assert self._queries is not None
        failing = {
            dag_id: h for dag_id, h in self._health.dags.items() if h.last_state == "failed" and h.window
        }
        self._streaks = {d: v for d, v in self._streaks.items() if d in failing}
        stale = {d: h for d, h in failing.items() if self._streaks.get(d, ((), {}))[0] != h.key()}
        if stale:
            ids = [pk for h in stale.values() for pk, _, _ in h.window]
            failed_by_run: dict[int, list[str]] = {}
            for chunk in _chunks(ids, TI_RUNS_PER_QUERY):
                rows = self._fetch("failed_tis", self._queries.failed_tis, {"ids": list(chunk)})
                for run_pk, task_id in rows:
                    failed_by_run.setdefault(run_pk, []).append(task_id)
            for dag_id, h in stale.items():
                self._streaks[dag_id] = (h.key(), failing_streaks(h.window, failed_by_run))
        return {
            (dag_id, task_id): n
            for dag_id, (_, streaks) in sorted(self._streaks.items())
            for task_id, n in sorted(streaks.items())
        }

    def _read_tables(self, now: float) -> tuple[TableStats, ...]:
        assert self._queries is not None
        if self._tables_at is None or now - self._tables_at >= self._db.table_stats_interval:
            rows = self._fetch("tables", self._queries.tables)
            self._tables = tuple(TableStats(name, int(rows_), int(size)) for name, rows_, size in rows)
            self._tables_at = now
        return self._tables

    def _dag_health(
        self, dags: Sequence[DagInfo], oldest_running: Mapping[str, float]
    ) -> tuple[DagRunHealth, ...]:
        self._health.retain(d.dag_id for d in dags)
        return tuple(
            self._health.dags[d.dag_id].freeze(d.dag_id, oldest_running.get(d.dag_id))
            for d in dags
            if d.dag_id in self._health.dags
        )

    # ---- health bootstrap

    def _bootstrap_health(self, dag_ids: Sequence[str]) -> None:
        assert self._queries is not None
        new = [d for d in dag_ids if d not in self._health.dags]
        n = self._health.window
        for chunk in _chunks(new, DAGS_PER_BOOTSTRAP_QUERY):
            recent: dict[str, list[tuple[int, str, float | None]]] = {d: [] for d in chunk}
            for name, sql in (
                ("health_recent", self._queries.recent_finished),
                ("health_recent", self._queries.recent_finished_undated),
            ):
                if sql is None:
                    continue
                for dag_id, pk, state, end in self._fetch(name, sql, {"dag_ids": list(chunk), "n": n}):
                    recent[dag_id].append((pk, state, to_epoch(end)))
            for dag_id, runs in recent.items():
                health, needs_streak = health_from_recent(runs, n)
                if needs_streak:
                    self._lookup_streak(dag_id, health)
                self._health.dags[dag_id] = health

    def _lookup_streak(self, dag_id: str, health: DagHealth) -> None:
        """For a DAG whose whole window failed: when it last succeeded and when it began failing."""
        assert self._queries is not None
        q, key = self._queries, {"dag_id": dag_id}
        dated = self._fetch("health_streak", q.last_success, key)  # [(logical date, end)] or []
        success_date = dated[0][0] if dated else _NO_BOUND
        ends = [end for _, end in dated if end is not None]
        if q.last_success_undated is not None:
            ends += [end for _, end in self._fetch("health_streak", q.last_success_undated, key) if end]
        success_end = max(ends) if ends else _NO_BOUND
        health.last_success_at = to_epoch(success_end) if ends else None
        params = {**key, "after_date": success_date, "after_end": success_end}
        firsts = self._fetch("health_streak", q.first_failure_after, params)
        if q.first_failure_after_undated is not None:
            firsts += self._fetch("health_streak", q.first_failure_after_undated, params)
        starts = [first for (first,) in firsts if first is not None]
        health.failing_since = to_epoch(min(starts)) if starts else None

    # ---- errors

    def _connect_error(self, exc: psycopg2.Error) -> SourceError:
        text = self._scrub(first_line(exc))
        lowered = text.lower()
        if any(marker in lowered for marker in _AUTH_MARKERS):
            return SourceError("auth", f"metadata DB refused the login: {text}")
        return SourceError("connect", f"cannot connect to the metadata DB: {text}")

    def _query_error(self, exc: psycopg2.Error) -> SourceError:
        text = self._scrub(first_line(exc))
        if isinstance(exc, psycopg2.errors.QueryCanceled | psycopg2.errors.LockNotAvailable):
            return SourceError("timeout", f"metadata DB statement timed out: {text}")
        if isinstance(exc, psycopg2.errors.InsufficientPrivilege):
            return SourceError("auth", f"metadata DB permission denied: {text}")
        if isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError):
            return SourceError("connect", f"lost the metadata DB connection: {text}")
        return SourceError("query", f"metadata DB query failed: {text}")

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


_AUTH_MARKERS = (
    "password authentication failed",
    "no password supplied",
    "authentication failed",
    "pg_hba.conf",
    "role ",
    "permission denied",
)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def secrets_of(dsn: str) -> tuple[str, ...]:
    """The DSN and its password (as parsed and as written): never shown in an error message."""
    found = [dsn]
    with contextlib.suppress(psycopg2.Error):
        found.append(psycopg2.extensions.parse_dsn(dsn).get("password") or "")
    with contextlib.suppress(ValueError):
        found.append(urlsplit(dsn).password or "" if "://" in dsn else "")
    return tuple(sorted({s for s in found if s}, key=len, reverse=True))


def _live_summary(
    rows: Iterable[RunRow], wanted: Callable[[str], bool]
) -> tuple[dict[str, float], dict[str, int]]:
    """Live run counts by state (all DAGs) and the oldest running start per (exported) DAG."""
    counts = dict.fromkeys(LIVE_RUN_STATES, 0)
    oldest: dict[str, float] = {}
    for row in rows:
        if row.state not in LIVE_RUN_STATES:
            continue
        counts[row.state] += 1
        if row.state == "running" and row.start is not None and wanted(row.dag_id):
            oldest[row.dag_id] = min(oldest.get(row.dag_id, row.start), row.start)
    return oldest, counts
