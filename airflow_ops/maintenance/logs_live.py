"""The task instances whose logs a clean must not touch, read once from the metadata DB.

Two bounded statements, each on an index Airflow keeps for its own scheduler:

- task instances in a live state (``ti_state`` index on ``task_instance.state``): their logs,
  every attempt, are kept — whatever their age (a deferred task can be silent for days, and the
  log of the failed attempt of a task up for retry is what its owner reads next);
- DAG runs still queued or running (the partial ``idx_dag_run_queued_dags`` /
  ``idx_dag_run_running_dags`` indexes): every log of the run is kept, which also covers a task
  cleared back to no state inside a running run.

Each statement reads at most ``limit + 1`` rows: more live rows than the limit is an error, never a
partial (and so unsafe) answer.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg2
import psycopg2.extensions

from airflow_ops.airflow.metadb import secrets_of
from airflow_ops.airflow.metadb_queries import SESSION_SQL
from airflow_ops.airflow.schema import SchemaProfile, UnsupportedSchema, detect_profile
from airflow_ops.config import sqlalchemy_to_libpq
from airflow_ops.maintenance.logs_layout import DirInfo
from airflow_ops.snapshot import LIVE_RUN_STATES, LIVE_TI_STATES

# Airflow's states in which a task instance still runs, waits to (re)run, or is being restarted.
PROTECTED_TI_STATES: tuple[str, ...] = (*LIVE_TI_STATES, "restarting")

_TIS_SQL = """
SELECT ti.dag_id, ti.run_id, ti.task_id, ti.map_index, r.{date}
FROM task_instance ti
LEFT JOIN dag_run r ON r.dag_id = ti.dag_id AND r.run_id = ti.run_id
WHERE ti.state = ANY(%(states)s)
LIMIT %(limit)s
"""
# One OR per partial index, as the scheduler's own queries do, so each index is usable.
_RUNS_SQL = """
SELECT r.dag_id, r.run_id, r.{date} FROM dag_run r
WHERE {states}
LIMIT %(limit)s
"""

APPLICATION_NAME = "airflow-ops logs clean"


class LiveReadError(Exception):
    """The live task instances could not be read; the message never holds the DSN."""


@dataclass(frozen=True)
class LiveTaskInstances:
    """Live task instances and DAG runs, as the keys the log layouts can be matched against."""

    tis: frozenset[tuple[str, str, str, int]] = frozenset()  # (dag_id, run_id, task_id, map_index)
    runs: frozenset[tuple[str, str]] = frozenset()  # (dag_id, run_id)
    # The same by logical date, for the 2.0/2.1 layout that has no run_id.
    old_tis: frozenset[tuple[str, str, datetime]] = frozenset()  # (dag_id, task_id, logical_date)
    old_runs: frozenset[tuple[str, datetime]] = frozenset()  # (dag_id, logical_date)
    # Prefixes of the keys above: a folder above a live task (or a stray file in it) is kept too.
    _dags: frozenset[str] = field(init=False, repr=False, compare=False)
    _run_prefixes: frozenset[tuple[str, str]] = field(init=False, repr=False, compare=False)
    _task_prefixes: frozenset[tuple[str, str, str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        dags = {d for d, *_ in self.tis} | {d for d, _ in self.runs}
        dags |= {d for d, *_ in self.old_tis} | {d for d, _ in self.old_runs}
        object.__setattr__(self, "_dags", frozenset(dags))
        object.__setattr__(self, "_run_prefixes", frozenset((d, r) for d, r, _, _ in self.tis) | self.runs)
        object.__setattr__(self, "_task_prefixes", frozenset((d, r, t) for d, r, t, _ in self.tis))

    def covers(self, info: DirInfo) -> bool:
        """True if files in a task-log folder described by ``info`` may belong to a live TI.

        Unknown parts of the identity (a stray file above the task folder, a custom template)
        match anything: when in doubt, the file is kept.
        """
        dag_id = info.dag_id
        if dag_id is None or dag_id not in self._dags:
            return False
        if info.logical_date is not None:
            date = info.logical_date
            if (dag_id, date) in self.old_runs:
                return True
            return info.task_id is None or (dag_id, info.task_id, date) in self.old_tis
        run_id = info.run_id
        if run_id is None:
            return True
        if (dag_id, run_id) in self.runs:
            return True
        if info.task_id is None:
            return (dag_id, run_id) in self._run_prefixes
        if info.map_index is None:
            return (dag_id, run_id, info.task_id) in self._task_prefixes
        return (dag_id, run_id, info.task_id, info.map_index) in self.tis


def read_live_task_instances(
    dsn: str, *, limit: int, statement_timeout: float = 30.0, connect_timeout: float = 10.0
) -> LiveTaskInstances:
    """Read the live task instances and runs (raises LiveReadError, the DSN masked)."""
    secrets = secrets_of(dsn)
    try:
        conn = psycopg2.connect(
            sqlalchemy_to_libpq(dsn),
            connect_timeout=max(1, math.ceil(connect_timeout)),
            application_name=APPLICATION_NAME,
        )
    except (psycopg2.Error, ValueError) as exc:
        raise LiveReadError(f"cannot connect to the metadata DB: {_scrub(exc, secrets)}") from None
    try:
        conn.set_session(readonly=True, autocommit=True)
        with conn.cursor() as cur:
            ms = max(1, int(statement_timeout * 1000))
            cur.execute(SESSION_SQL, {"statement_ms": ms, "lock_ms": ms})
        profile = detect_profile(conn)
        return _read(conn, profile, limit)
    except UnsupportedSchema as exc:
        raise LiveReadError(f"unsupported metadata schema: {exc}") from None
    except psycopg2.Error as exc:
        raise LiveReadError(f"reading live task instances failed: {_scrub(exc, secrets)}") from None
    finally:
        with contextlib.suppress(psycopg2.Error):
            conn.close()


def _read(conn: Any, profile: SchemaProfile, limit: int) -> LiveTaskInstances:
    date = profile.run_date_column
    run_states = " OR ".join(f"r.state = '{state}'" for state in LIVE_RUN_STATES)
    with conn.cursor() as cur:
        cur.execute(_TIS_SQL.format(date=date), {"states": list(PROTECTED_TI_STATES), "limit": limit + 1})
        ti_rows = cur.fetchall()
        cur.execute(_RUNS_SQL.format(date=date, states=run_states), {"limit": limit + 1})
        run_rows = cur.fetchall()
    for what, rows in (("task instances", ti_rows), ("DAG runs", run_rows)):
        if len(rows) > limit:
            raise LiveReadError(
                f"more than {limit} live {what}: too many to protect in one clean "
                "(raise logs.live_limit if this is expected)"
            )
    return LiveTaskInstances(
        tis=frozenset((d, r, t, m) for d, r, t, m, _ in ti_rows),
        runs=frozenset((d, r) for d, r, _ in run_rows),
        old_tis=frozenset((d, t, when) for d, _, t, _, when in ti_rows if when is not None),
        old_runs=frozenset((d, when) for d, _, when in run_rows if when is not None),
    )


def _scrub(exc: BaseException, secrets: tuple[str, ...]) -> str:
    text = str(exc).strip()
    text = text.splitlines()[0].strip() if text else type(exc).__name__
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
