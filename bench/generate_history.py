"""Fill an Airflow 3 metadata database with synthetic history, entirely in SQL.

The target is an empty database migrated by the real ``airflow db migrate`` of Airflow 3 (a clone
of ``migrated_template("3.3.2")``). Rows are produced by ``INSERT ... SELECT generate_series`` in
chunks, from a per-DAG plan drawn once in Python with a fixed seed, so the same preset always
gives the same history. Every value is derived from hash functions of row keys, never
``random()``, for the same reason.

What the history looks like (per preset: DAGs / dag_runs / task_instances):

- DAGs on 15-minute, hourly, 6-hourly and daily cron schedules (5/20/25/50 %); all DAGs cover
  the same span of time, so frequent DAGs own most runs, as in real deployments. 5 % paused,
  2 % stale; several owners; 2-19 tasks each; tasks spread over four pools and three queues.
- Runs: ~4 % manual (half of them with a NULL logical_date, as Airflow 3 creates them), the
  rest scheduled; ~1-2 % failed, 10 % of DAGs flaky (25 % failures), 4 % of DAGs failing for
  their last few runs; ~1 % of failed runs never started (NULL start_date).
- Task instances follow their run: success (a few skipped, some retried), failed +
  upstream_failed after the failing task, and in live runs the
  running/deferred/up_for_retry/queued/scheduled/none frontier; ~2 % of running TIs have a
  stale heartbeat.
- The newest run of ~15 % of active DAGs is live (queued or running), so the live-state
  indexes hold a realistic few hundred rows at the large preset.

:func:`advance` then plays the scheduler between polls: it finishes live runs, moves task
instances along, creates new runs and beats the component heartbeats, so steady-state polls
have real incremental work to do.

Besides Airflow's tables, the generator keeps its plan in a separate schema
``airflow_ops_bench`` (``dag_plan``, ``info``); nothing of Airflow's reads it.

    python -m bench.generate_history --preset small             # new DB on the shared server
    python -m bench.generate_history --preset small --dsn postgresql://...   # an empty migrated DB
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import psycopg2
import psycopg2.extensions

# Bump when the shape of the generated history changes: a kept database with another version is
# regenerated instead of being reused.
GENERATOR_VERSION = 1
AIRFLOW_VERSION = "3.3.2"
BUNDLE = "dags-folder"
PLAN_SCHEMA = "airflow_ops_bench"


@dataclass(frozen=True)
class Preset:
    name: str
    dags: int
    runs: int
    task_instances: int


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("tiny", 20, 1_000, 10_000),
        Preset("small", 200, 10_000, 100_000),
        # The DAGs and live work of "large" over 1 % of its history: isolates the cost of history.
        Preset("wide", 2_000, 10_000, 100_000),
        Preset("medium", 1_000, 100_000, 1_000_000),
        Preset("large", 2_000, 1_000_000, 10_000_000),
    )
}

Progress = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# The per-DAG plan (drawn in Python: a few thousand rows at most)

_INTERVALS = ((900, 0.05), (3600, 0.20), (21600, 0.25), (86400, 0.50))
_CRON = {900: "*/15 * * * *", 3600: "0 * * * *", 21600: "0 */6 * * *", 86400: "0 0 * * *"}
_CRON_TEXT = {
    900: "Every 15 minutes",
    3600: "At 0 minutes past the hour",
    21600: "At 0 minutes past the hour, every 6 hours",
    86400: "At 00:00",
}
_OWNERS = ("data-eng", "analytics", "ml-platform", "finance", "growth", "airflow", "data-eng,analytics")
_OWNER_WEIGHTS = (30, 20, 12, 10, 10, 13, 5)
_PREFIXES = ("etl", "report", "ml", "sync", "export", "quality")
# Extra pools beyond Airflow's default_pool (slots); a DAG uses one, some tasks override it.
POOLS = {"default_pool": 128, "etl_pool": 64, "ml_pool": 8, "reporting_pool": 32}
QUEUES = ("default", "high_mem", "gpu")
# Probability that a DAG's newest run is live, by schedule interval.
_LIVE = {900: 0.75, 3600: 0.25, 21600: 0.08, 86400: 0.05}


@dataclass(frozen=True)
class DagPlan:
    idx: int
    dag_id: str
    owner: str
    interval_s: int
    n_runs: int
    n_tasks: int
    task_secs: float
    pool: str
    queue: str
    paused: bool
    stale: bool
    fail_rate: float
    broken_runs: int  # the last finished runs that all failed (the DAG is "failing")
    live: str  # '', 'running', 'queued' or 'running,queued' (newest runs, oldest first)
    end_offset_s: float  # how long before "now" the newest run was due


def plan_dags(preset: Preset, seed: int = 20240101) -> list[DagPlan]:
    """Draw the DAGs of a preset; run and task counts add up exactly to the preset's runs and
    (within a few rows) to its task instances."""
    # Separate generators, so that presets with the same number of DAGs get the same DAGs (ids,
    # schedules, owners, pools, live runs) whatever their history depth: "wide" and "large"
    # differ only in how much history lies behind the same live work.
    rnd = random.Random(seed)
    rnd_adjust = random.Random(seed + 1)
    intervals = [
        rnd.choices([i for i, _ in _INTERVALS], [w for _, w in _INTERVALS])[0] for _ in range(preset.dags)
    ]
    # Every DAG covers the same span, so runs are proportional to frequency.
    span = preset.runs / sum(1 / iv for iv in intervals)
    n_runs = [max(2, round(span / iv)) for iv in intervals]
    _adjust(n_runs, preset.runs, weights=[1] * len(n_runs), rnd=rnd_adjust, floor=2)
    n_tasks = [rnd.randint(2, 18) for _ in intervals]
    total = sum(r * t for r, t in zip(n_runs, n_tasks, strict=True))
    n_tasks = [max(2, min(40, round(t * preset.task_instances / total))) for t in n_tasks]
    _adjust(n_tasks, preset.task_instances, weights=n_runs, rnd=rnd_adjust, floor=2, ceiling=40)

    plans = []
    for i, (iv, runs, tasks) in enumerate(zip(intervals, n_runs, n_tasks, strict=True), start=1):
        paused = rnd.random() < 0.05
        stale = not paused and rnd.random() < 0.02
        active = not (paused or stale)
        profile = rnd.random()
        fail_rate = 0.25 if profile < 0.10 else 0.01
        broken = rnd.randint(3, 12) if active and 0.10 <= profile < 0.14 else 0
        # A run must fit well inside its interval, or the newest one could not have finished.
        task_secs = min(rnd.lognormvariate(math.log(60), 1.0), 0.4 * iv / tasks)
        live = ""
        if active and rnd.random() < _LIVE[iv]:
            live = rnd.choices(("running", "queued", "running,queued"), (80, 8, 12))[0]
        run_secs = tasks * task_secs
        if live:
            end_offset = 60 + rnd.random() * min(iv, run_secs) * 0.8
        elif active:
            # Finished, next one not yet due; 2 % of DAGs overdue (the scheduler is behind).
            end_offset = run_secs * 1.5 + rnd.random() * (iv - run_secs * 1.5)
            if rnd.random() < 0.02:
                end_offset = iv + rnd.random() * 1800
        else:
            end_offset = 86400 * rnd.uniform(1, 10)  # paused or gone some days ago
        owner = rnd.choices(_OWNERS, _OWNER_WEIGHTS)[0]
        pool = rnd.choices(list(POOLS), (70, 15, 5, 10))[0]
        queue = rnd.choices(QUEUES, (85, 10, 5))[0]
        plans.append(
            DagPlan(
                idx=i,
                dag_id=f"{_PREFIXES[i % len(_PREFIXES)]}_{i:04d}",
                owner=owner,
                interval_s=iv,
                n_runs=runs,
                n_tasks=tasks,
                task_secs=round(task_secs, 3),
                pool=pool,
                queue=queue,
                paused=paused,
                stale=stale,
                fail_rate=fail_rate,
                broken_runs=min(broken, max(0, runs - 3)),
                live=live,
                end_offset_s=round(end_offset, 3),
            )
        )
    return plans


def _adjust(
    values: list[int],
    target: int,
    weights: list[int],
    rnd: random.Random,
    floor: int,
    ceiling: int = 1 << 30,
) -> None:
    """Nudge values by ±1 until sum(values * weights) is as close to target as they allow."""
    order = sorted(range(len(values)), key=lambda i: -weights[i])
    for _ in range(4):
        for i in order:
            diff = target - sum(v * w for v, w in zip(values, weights, strict=True))
            if diff == 0:
                return
            step = 1 if diff > 0 else -1
            if abs(diff) >= weights[i] and floor <= values[i] + step <= ceiling:
                values[i] += step
        rnd.shuffle(order)
        order.sort(key=lambda i: -weights[i])


# ---------------------------------------------------------------------------------------------
# SQL helpers


def _u(expr: str, salt: int) -> str:
    """A deterministic uniform number in [0, 1) from an integer key (hash, not random())."""
    return f"((hashint8extended(({expr})::bigint, {salt}) & 2147483647)::float8 / 2147483648.0)"


def _secs(expr: str) -> str:
    return f"(({expr}) * interval '1 second')"


def _uuid7(ms_expr: str, a_expr: str, b_expr: str) -> str:
    """A version-7 UUID: 48 bits of Unix milliseconds (so ids grow with time, like Airflow 3's
    task_instance ids), then a 12-bit and a 60-bit field that together must be unique."""
    return (
        f"(lpad(to_hex(({ms_expr})::bigint), 12, '0') || '7' || lpad(to_hex(({a_expr})::int & 4095), 3, '0')"
        f" || '8' || lpad(to_hex(({b_expr})::bigint & 1152921504606846975), 15, '0'))::uuid"
    )


def _epoch_ms(ts_expr: str) -> str:
    return f"floor(extract(epoch FROM {ts_expr}) * 1000)"


_TASK_NAMES = (
    "extract",
    "transform",
    "load",
    "validate",
    "enrich",
    "aggregate",
    "publish",
    "notify",
    "train",
    "score",
    "export",
    "cleanup",
)
_OPERATORS = (
    "PythonOperator",
    "BashOperator",
    "SQLExecuteQueryOperator",
    "KubernetesPodOperator",
    "EmptyOperator",
    "HttpSensor",
)


def _sql_array(values: tuple[str, ...]) -> str:
    return "ARRAY[" + ",".join(f"'{v}'" for v in values) + "]"


# Columns of a task instance that depend only on its DAG, run and task position. They read the
# bare names dag_id, run_id, context_carrier (of the run), idx, n_tasks, pool, queue, version_id
# (of the DAG's plan) and t (the task's position, 1-based), which every caller's FROM provides.
_TASK_ID = f"({_sql_array(_TASK_NAMES)})[1 + mod(t - 1, {len(_TASK_NAMES)})] || '_' || lpad(t::text, 2, '0')"
_TASK_KEY = "(idx::bigint * 64 + t)"
_MAX_TRIES = f"CASE WHEN {_u(_TASK_KEY, 41)} < 0.6 THEN 0 WHEN {_u(_TASK_KEY, 41)} < 0.9 THEN 1 ELSE 3 END"
_TI_STATIC = {
    "task_id": _TASK_ID,
    "dag_id": "dag_id",
    "run_id": "run_id",
    "map_index": "-1",
    "max_tries": _MAX_TRIES,
    "pool": (
        f"CASE WHEN {_u(_TASK_KEY, 42)} < 0.15 THEN "
        f"({_sql_array(tuple(POOLS))})[1 + floor({_u(_TASK_KEY, 43)} * {len(POOLS)})::int] ELSE pool END"
    ),
    "pool_slots": "1",
    "queue": f"CASE WHEN {_u(_TASK_KEY, 44)} < 0.1 THEN 'high_mem' ELSE queue END",
    "priority_weight": "n_tasks - t + 1",
    "operator": f"({_sql_array(_OPERATORS)})[1 + floor({_u(_TASK_KEY, 45)} * {len(_OPERATORS)})::int]",
    "executor_config": "'\\x80057d942e'::bytea",  # pickled {}: what Airflow 3 stores
    "context_carrier": "context_carrier",
    "task_display_name": _TASK_ID,
    "dag_version_id": "version_id",
    "next_kwargs": "'null'::jsonb",
}


# ---------------------------------------------------------------------------------------------
# Generation


@dataclass
class GenerationReport:
    preset: str
    rows: dict[str, int]
    seconds: float
    database_bytes: int


def generate(
    dsn: str,
    preset: Preset,
    *,
    now: datetime | None = None,
    chunk_runs: int = 50_000,
    progress: Progress = _stderr,
) -> GenerationReport:
    """Fill the empty Airflow 3 database at ``dsn``; VACUUM ANALYZE it; return what was made.

    Everything up to the final VACUUM happens in one transaction: an interrupted run leaves the
    database as empty as it found it. Secondary indexes and constraints of ``dag_run`` and
    ``task_instance`` are dropped for the load and recreated from their own definitions (bulk
    loading into ten indexes row by row is several times slower); recreating them validates every
    row against every unique and foreign-key constraint, and the schema is compared before and
    after to prove it came back identical.
    """
    started = time.monotonic()
    now = now or datetime.now(timezone.utc)
    plans = plan_dags(preset)
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SET LOCAL maintenance_work_mem = '512MB'")
            cur.execute("SELECT (SELECT count(*) FROM dag) + (SELECT count(*) FROM dag_run)")
            if cur.fetchone()[0]:  # type: ignore[index]
                raise ValueError("the database already holds DAGs or runs; give an empty migrated database")
            schema_before = _schema_fingerprint(cur)
            _write_plan(cur, plans, preset, now)
            _fill_static(cur, now)
            progress(f"[{preset.name}] plan: {len(plans)} DAGs, {sum(p.n_runs for p in plans):,} runs")
            recreate = _detach_indexes(cur, ("dag_run", "task_instance"))
            _fill_runs(cur, preset, now, chunk_runs, progress)
            _fill_task_instances(cur, preset, now, chunk_runs, progress)
            t0 = time.monotonic()
            for stmt in recreate:
                t1 = time.monotonic()
                cur.execute(stmt)
                if time.monotonic() - t1 > 5:
                    progress(f"[{preset.name}] {time.monotonic() - t1:.0f}s: {stmt[:100]}")
            progress(f"[{preset.name}] indexes and constraints rebuilt in {time.monotonic() - t0:.1f}s")
            if _schema_fingerprint(cur) != schema_before:
                raise RuntimeError("the schema differs after reloading indexes; nothing was committed")
            cur.execute("SELECT setval('dag_run_id_seq', (SELECT max(id) FROM dag_run))")
        conn.autocommit = True
        with conn.cursor() as cur:
            t0 = time.monotonic()
            # Production tables are vacuumed by autovacuum; without this the first reader of each
            # page pays for setting hint bits, which would skew whichever query runs first.
            cur.execute(
                "VACUUM (ANALYZE) dag, dag_version, serialized_dag, job, slot_pool, dag_run, task_instance"
            )
            progress(f"[{preset.name}] VACUUM ANALYZE in {time.monotonic() - t0:.1f}s")
            rows = table_rows(cur)
            cur.execute("SELECT pg_database_size(current_database())")
            size = int(cur.fetchone()[0])  # type: ignore[index]
            cur.execute(
                f"INSERT INTO {PLAN_SCHEMA}.info (key, value) VALUES ('completed_at', %s)",
                (datetime.now(timezone.utc).isoformat(),),
            )
    finally:
        conn.close()
    return GenerationReport(preset.name, rows, time.monotonic() - started, size)


def table_rows(cur: psycopg2.extensions.cursor) -> dict[str, int]:
    out = {}
    for table in ("dag", "dag_version", "serialized_dag", "dag_run", "task_instance", "job", "slot_pool"):
        cur.execute(f"SELECT count(*) FROM {table}")
        out[table] = int(cur.fetchone()[0])  # type: ignore[index]
    return out


def generated_info(dsn: str) -> dict[str, str]:
    """The generator's record in a database: preset, version, completed_at; {} if none."""
    with closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", (f"{PLAN_SCHEMA}.info",))
        if cur.fetchone()[0] is None:  # type: ignore[index]
            return {}
        cur.execute(f"SELECT key, value FROM {PLAN_SCHEMA}.info")
        return dict(cur.fetchall())


def is_complete(dsn: str, preset: Preset) -> bool:
    info = generated_info(dsn)
    return (
        "completed_at" in info
        and info.get("preset") == preset.name
        and info.get("generator_version") == str(GENERATOR_VERSION)
    )


def _schema_fingerprint(cur: psycopg2.extensions.cursor) -> list[tuple[str, ...]]:
    cur.execute(
        """
        SELECT 'c', conrelid::regclass::text, conname, pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = 'public'::regnamespace
        UNION ALL
        SELECT 'i', indrelid::regclass::text, indexrelid::regclass::text, pg_get_indexdef(indexrelid)
        FROM pg_index JOIN pg_class c ON c.oid = indexrelid
        WHERE c.relnamespace = 'public'::regnamespace
        ORDER BY 1, 2, 3
        """
    )
    return [tuple(row) for row in cur.fetchall()]


def _detach_indexes(cur: psycopg2.extensions.cursor, tables: tuple[str, ...]) -> list[str]:
    """Drop the indexes and constraints of ``tables`` (and foreign keys pointing at them);
    return the statements that recreate them, in a valid order."""
    oids = "ARRAY[" + ",".join(f"'{t}'::regclass" for t in tables) + "]"
    cur.execute(
        f"""
        SELECT conrelid::regclass::text, conname, contype, pg_get_constraintdef(oid)
        FROM pg_constraint
        WHERE (conrelid = ANY({oids}) AND contype IN ('p', 'u', 'f'))
           OR (confrelid = ANY({oids}) AND contype = 'f')
        """
    )
    constraints = cur.fetchall()
    cur.execute(
        f"""
        SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
        FROM pg_index i
        WHERE i.indrelid = ANY({oids})
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                          WHERE c.conindid = i.indexrelid AND c.contype IN ('p', 'u'))
        """
    )
    indexes = cur.fetchall()
    fks = [c for c in constraints if c[2] == "f"]
    keys = [c for c in constraints if c[2] in ("p", "u")]
    for table, name, _, _ in fks + keys:
        cur.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    for name, _ in indexes:
        cur.execute(f"DROP INDEX {name}")
    return (
        [f'ALTER TABLE {t} ADD CONSTRAINT "{n}" {d}' for t, n, _, d in keys]
        + [d for _, d in indexes]
        + [f'ALTER TABLE {t} ADD CONSTRAINT "{n}" {d}' for t, n, _, d in fks]
    )


def _write_plan(cur: psycopg2.extensions.cursor, plans: list[DagPlan], preset: Preset, now: datetime) -> None:
    cur.execute(f"CREATE SCHEMA {PLAN_SCHEMA}")
    cur.execute(f"CREATE TABLE {PLAN_SCHEMA}.info (key text PRIMARY KEY, value text NOT NULL)")
    cur.execute(
        f"INSERT INTO {PLAN_SCHEMA}.info VALUES ('preset', %s), ('generator_version', %s), ('now', %s)",
        (preset.name, str(GENERATOR_VERSION), now.isoformat()),
    )
    cur.execute(
        f"""
        CREATE TABLE {PLAN_SCHEMA}.dag_plan (
            idx int PRIMARY KEY, dag_id text UNIQUE NOT NULL, owner text NOT NULL,
            interval_s int NOT NULL, n_runs int NOT NULL, n_tasks int NOT NULL,
            task_secs float8 NOT NULL, pool text NOT NULL, queue text NOT NULL,
            paused bool NOT NULL, stale bool NOT NULL, fail_rate float8 NOT NULL,
            broken_runs int NOT NULL, live text NOT NULL, live_count int NOT NULL,
            first_at timestamptz NOT NULL, version_id uuid NOT NULL)
        """
    )
    rows = []
    for p in plans:
        last_slot = now.timestamp() - p.end_offset_s
        first_at = datetime.fromtimestamp(last_slot - (p.n_runs - 1) * p.interval_s, timezone.utc)
        live_count = len(p.live.split(",")) if p.live else 0
        rows.append(
            (
                p.idx,
                p.dag_id,
                p.owner,
                p.interval_s,
                p.n_runs,
                p.n_tasks,
                p.task_secs,
                p.pool,
                p.queue,
                p.paused,
                p.stale,
                p.fail_rate,
                p.broken_runs,
                p.live,
                live_count,
                first_at,
            )
        )
    args = ",".join(
        cur.mogrify("(%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)", r).decode() for r in rows
    )
    version_id = _uuid7(_epoch_ms("v.first_at - interval '1 day'"), "0", "v.idx")
    cur.execute(
        f"""
        INSERT INTO {PLAN_SCHEMA}.dag_plan
        SELECT v.*, {version_id}
        FROM (VALUES {args}) AS v(idx, dag_id, owner, interval_s, n_runs, n_tasks, task_secs, pool, queue,
                                  paused, stale, fail_rate, broken_runs, live, live_count, first_at)
        """
    )


def _fill_static(cur: psycopg2.extensions.cursor, now: datetime) -> None:
    """Bundle, pools, DAGs with their version and serialized form, component jobs."""
    params = {"now": now, "bundle": BUNDLE}
    cur.execute(
        "INSERT INTO dag_bundle (name, active, last_refreshed, template_params) "
        "VALUES (%(bundle)s, true, %(now)s, '{}') ON CONFLICT DO NOTHING",
        params,
    )
    for pool, slots in POOLS.items():
        cur.execute(
            "INSERT INTO slot_pool (pool, slots, description, include_deferred) VALUES (%s, %s, %s, false) "
            "ON CONFLICT (pool) DO NOTHING",
            (pool, slots, f"{pool} (benchmark)"),
        )
    cron = "CASE p.interval_s " + " ".join(f"WHEN {k} THEN '{v}'" for k, v in _CRON.items()) + " END"
    cron_text = (
        "CASE p.interval_s " + " ".join(f"WHEN {k} THEN '{v}'" for k, v in _CRON_TEXT.items()) + " END"
    )
    next_run = "(p.first_at + (p.n_runs * p.interval_s) * interval '1 second')"
    cur.execute(
        f"""
        INSERT INTO dag (dag_id, is_paused, is_stale, last_parsed_time, last_parse_duration, fileloc,
            relative_fileloc, bundle_name, owners, description, timetable_type, timetable_summary,
            timetable_description, timetable_periodic, partition_mapper_info, max_active_tasks,
            max_active_runs, max_consecutive_failed_dag_runs, has_task_concurrency_limits,
            allowed_run_types, next_dagrun, next_dagrun_data_interval_start,
            next_dagrun_data_interval_end, next_dagrun_create_after)
        SELECT p.dag_id, p.paused, p.stale,
            CASE WHEN p.stale THEN %(now)s - interval '3 days'
                 ELSE %(now)s - {_secs(_u("p.idx", 1) + " * 60")} END,
            0.05 + {_u("p.idx", 2)}, '/opt/airflow/dags/' || p.dag_id || '.py', p.dag_id || '.py',
            %(bundle)s, p.owner, 'Synthetic benchmark DAG ' || p.dag_id, 'CronTriggerTimetable',
            {cron}, {cron_text}, true, '[]', 16, CASE WHEN p.interval_s = 900 THEN 4 ELSE 1 END, 0, false,
            'null', {next_run}, {next_run}, {next_run}, {next_run}
        FROM {PLAN_SCHEMA}.dag_plan p ORDER BY p.idx
        """,
        params,
    )
    # Airflow 3 gives every run and task instance the id of the DAG version it ran; the
    # serialized DAG is what epoch8-style exporters join to (only DAGs that still exist).
    cur.execute(
        f"""
        INSERT INTO dag_version (id, version_number, dag_id, bundle_name, version_data, created_at,
                                 last_updated)
        SELECT p.version_id, 1, p.dag_id, %(bundle)s, 'null', p.first_at - interval '1 day',
               p.first_at - interval '1 day'
        FROM {PLAN_SCHEMA}.dag_plan p ORDER BY p.idx
        """,
        params,
    )
    data = f"""jsonb_build_object('__version', 3, 'dag', jsonb_build_object(
        'dag_id', p.dag_id, 'fileloc', '/opt/airflow/dags/' || p.dag_id || '.py',
        'timetable', jsonb_build_object('__type', 'airflow.timetables.trigger.CronTriggerTimetable',
                                        '__var', jsonb_build_object('expression', {cron})),
        'tasks', (SELECT jsonb_agg(jsonb_build_object('__type', 'operator', '__var',
                    jsonb_build_object('task_id', {_TASK_ID}, 'pool', p.pool, 'queue', p.queue,
                                       'ui_color', '#fff', 'template_fields', jsonb_build_array())))
                  FROM generate_series(1, p.n_tasks) t)))"""
    cur.execute(
        f"""
        INSERT INTO serialized_dag (id, dag_id, data, created_at, last_updated, dag_hash, dag_version_id)
        SELECT {_uuid7(_epoch_ms("p.first_at - interval '1 day'"), "1", "p.idx")}, p.dag_id, d.data,
               p.first_at - interval '1 day', %(now)s, md5(d.data::text), p.version_id
        FROM {PLAN_SCHEMA}.dag_plan p CROSS JOIN LATERAL (SELECT {data} AS data) d ORDER BY p.idx
        """,
        params,
    )
    # Components: two HA schedulers, a triggerer and a DAG processor alive now, plus the
    # ended jobs of earlier restarts.
    cur.execute(
        """
        INSERT INTO job (state, job_type, start_date, end_date, latest_heartbeat, hostname, unixname)
        SELECT 'success', jt, s, s + interval '1 day', s + interval '1 day', 'airflow-' || mod(g, 3),
               'airflow'
        FROM generate_series(30, 1, -1) g
        CROSS JOIN LATERAL (SELECT %(now)s - g * interval '2 days' AS s) started,
             unnest(ARRAY['SchedulerJob', 'TriggererJob', 'DagProcessorJob']) jt
        """,
        params,
    )
    cur.execute(
        """
        INSERT INTO job (state, job_type, start_date, latest_heartbeat, hostname, unixname)
        VALUES ('running', 'SchedulerJob', %(now)s - interval '1 day', %(now)s - interval '2 seconds',
                'scheduler-0', 'airflow'),
               ('running', 'SchedulerJob', %(now)s - interval '1 day', %(now)s - interval '3 seconds',
                'scheduler-1', 'airflow'),
               ('running', 'TriggererJob', %(now)s - interval '1 day', %(now)s - interval '4 seconds',
                'triggerer-0', 'airflow'),
               ('running', 'DagProcessorJob', %(now)s - interval '1 day', %(now)s - interval '5 seconds',
                'dag-processor-0', 'airflow')
        """,
        params,
    )


def _run_select(where_k: str, now_param: str = "%(now)s") -> str:
    """SELECT of dag_run rows for the plan rows ``p`` and run numbers ``k`` chosen by ``where_k``
    (a FROM-clause fragment producing k); ``id`` is left to the caller."""
    key = "(p.idx::bigint * 1000000 + k)"
    manual = f"({_u(key, 1)} < 0.04)"
    # Seconds from due to queued, and from due to started (queued first; 1 % start late).
    queue_delay = f"(0.2 + 2 * {_u(key, 5)})"
    start_delay = f"({queue_delay} + 0.5 + 20 * {_u(key, 7)} ^ 2)"
    late_start = f"CASE WHEN {_u(key, 8)} < 0.01 THEN 900 ELSE 0 END"
    state = f"""CASE
        WHEN k >= p.n_runs - p.live_count THEN
            CASE WHEN p.live = 'queued' OR (p.live = 'running,queued' AND k = p.n_runs - 1)
                 THEN 'queued' ELSE 'running' END
        WHEN k >= p.n_runs - p.live_count - p.broken_runs THEN 'failed'
        WHEN {_u(key, 2)} < p.fail_rate THEN 'failed'
        ELSE 'success' END"""
    return f"""
    SELECT b.*,
        CASE WHEN b.state IN ('success', 'failed')
             THEN LEAST(COALESCE(b.start_date, b.queued_at) + {_secs("b.run_secs")},
                        {now_param} - interval '1 second')
        END AS end_date
    FROM (
        SELECT a.*,
            a.run_after + {_secs(queue_delay)} AS queued_at,
            CASE WHEN a.state = 'queued' OR (a.state = 'failed' AND {_u(key, 6)} < 0.01) THEN NULL
                 WHEN a.state = 'running'
                 THEN LEAST(a.run_after + {_secs(start_delay)}, {now_param} - interval '5 seconds')
                 ELSE a.run_after + {_secs(f"{start_delay} + {late_start}")}
            END AS start_date,
            p.n_tasks * p.task_secs * (0.6 + 0.8 * {_u(key, 9)})
                * CASE WHEN a.state = 'failed' THEN 0.1 + 0.9 * {_u(key, 10)} ELSE 1 END AS run_secs
        FROM (
            SELECT p.idx, p.dag_id, p.version_id, k, {manual} AS manual, {state} AS state,
                p.first_at + {_secs("k::float8 * p.interval_s")} AS slot,
                CASE WHEN {manual}
                     THEN p.first_at + {_secs(f"(k + 0.1 + 0.8 * {_u(key, 3)}) * p.interval_s")}
                     ELSE p.first_at + {_secs("k::float8 * p.interval_s")} END AS run_after,
                {_u(key, 4)} < 0.5 AS no_logical_date,
                {_u(key, 11)} < 0.5 AS via_api
            FROM {PLAN_SCHEMA}.dag_plan p {where_k}
        ) a JOIN {PLAN_SCHEMA}.dag_plan p ON p.idx = a.idx
    ) b"""


_RUN_COLUMNS = (
    "id, dag_id, queued_at, logical_date, start_date, end_date, state, run_id, run_type, triggered_by,"
    " triggering_user_name, conf, data_interval_start, data_interval_end, run_after,"
    " last_scheduling_decision, log_template_id, created_at, updated_at, scheduled_by_job_id,"
    " context_carrier, created_dag_version_id"
)


def _run_values(id_expr: str) -> str:
    """The dag_run column values over a row ``c`` of :func:`_run_select`, in _RUN_COLUMNS order."""
    ts = "'YYYY-MM-DD\"T\"HH24:MI:SS'"
    ts_us = "'YYYY-MM-DD\"T\"HH24:MI:SS.US'"
    logical = "CASE WHEN c.manual AND c.no_logical_date THEN NULL ELSE c.run_after END"
    trace = f"md5(({id_expr})::text)"
    return f"""{id_expr}, c.dag_id, c.queued_at, {logical}, c.start_date, c.end_date, c.state,
        CASE WHEN c.manual
             THEN 'manual__' || to_char(c.run_after AT TIME ZONE 'UTC', {ts_us}) || '+00:00'
             ELSE 'scheduled__' || to_char(c.slot AT TIME ZONE 'UTC', {ts}) || '+00:00' END,
        CASE WHEN c.manual THEN 'manual' ELSE 'scheduled' END,
        CASE WHEN NOT c.manual THEN 'TIMETABLE' WHEN c.via_api THEN 'REST_API' ELSE 'UI' END,
        CASE WHEN c.manual THEN 'admin' END,
        '{{}}'::jsonb, {logical}, {logical}, c.run_after,
        COALESCE(c.end_date, c.start_date, c.queued_at), %(log_template_id)s, c.queued_at,
        COALESCE(c.end_date, c.start_date, c.queued_at), %(scheduler_job_id)s,
        jsonb_build_object('__var', jsonb_build_object('traceparent',
            '00-' || {trace} || '-' || left(md5({trace}), 16) || '-00'), '__type', 'dict'),
        c.version_id"""


def _ids(cur: psycopg2.extensions.cursor) -> dict[str, Any]:
    cur.execute("SELECT max(id) FROM log_template")
    log_template_id = cur.fetchone()[0]  # type: ignore[index]
    cur.execute("SELECT min(id) FROM job WHERE state = 'running' AND job_type = 'SchedulerJob'")
    scheduler_job_id = cur.fetchone()[0]  # type: ignore[index]
    return {"log_template_id": log_template_id, "scheduler_job_id": scheduler_job_id}


def _fill_runs(
    cur: psycopg2.extensions.cursor, preset: Preset, now: datetime, chunk_runs: int, progress: Progress
) -> None:
    """dag_run in time slices, so ids grow with run_after across DAGs as they do in Airflow."""
    cur.execute(
        "SELECT min(first_at), max(first_at + (n_runs * interval_s) * interval '1 second')"
        f" FROM {PLAN_SCHEMA}.dag_plan"
    )
    lo, hi = cur.fetchone()  # type: ignore[misc]
    chunks = max(1, math.ceil(preset.runs / chunk_runs))
    width = (hi - lo) / chunks
    where_k = """CROSS JOIN LATERAL generate_series(
        GREATEST(0, ceil(extract(epoch FROM (%(w0)s - p.first_at)) / p.interval_s)::int),
        LEAST(p.n_runs - 1, ceil(extract(epoch FROM (%(w1)s - p.first_at)) / p.interval_s)::int - 1)) k"""
    params = {"now": now, **_ids(cur)}
    done, t0 = 0, time.monotonic()
    for i in range(chunks):
        w0 = lo + width * i
        w1 = hi if i == chunks - 1 else lo + width * (i + 1)
        cur.execute(
            f"""
            INSERT INTO dag_run ({_RUN_COLUMNS})
            SELECT {_run_values("%(offset)s + row_number() OVER (ORDER BY c.run_after, c.idx)")}
            FROM ({_run_select(where_k)}) c
            """,
            {**params, "w0": w0, "w1": w1, "offset": done},
        )
        done += cur.rowcount
        progress(
            f"[{preset.name}] dag_run {done:,}/{preset.runs:,} ({100 * done / preset.runs:.0f}%) "
            f"{time.monotonic() - t0:.1f}s"
        )


def _ti_select(run_filter: str) -> str:
    """task_instance rows (all of _TI_COLUMNS) for the runs of ``dag_run r0`` matched by
    ``run_filter``, in states that follow each run's state."""
    # Per run: which task failed, how far a live run has got (from its elapsed time), and the
    # time slot of one task.
    run = f"""
        SELECT r0.id AS run_pk, r0.id::bigint * 64 AS run_key, r0.dag_id, r0.run_id, r0.context_carrier,
            r0.state AS run_state, r0.start_date AS run_start, r0.created_at AS run_created,
            p0.idx, p0.n_tasks, p0.pool, p0.queue, p0.version_id,
            1 + floor({_u("r0.id", 21)} * p0.n_tasks)::int AS fpos,
            LEAST(p0.n_tasks, 1 + floor(extract(epoch FROM %(now)s - r0.start_date) / p0.task_secs)::int)
                AS cpos,
            CASE r0.state
                WHEN 'success' THEN extract(epoch FROM r0.end_date - r0.start_date) / p0.n_tasks
                WHEN 'failed' THEN extract(epoch FROM r0.end_date - r0.start_date)
                                   / (1 + floor({_u("r0.id", 21)} * p0.n_tasks))
                ELSE p0.task_secs END AS slot
        FROM dag_run r0 JOIN {PLAN_SCHEMA}.dag_plan p0 ON p0.dag_id = r0.dag_id
        WHERE {run_filter}"""
    tkey = "(run_key + t)"
    state = f"""CASE run_state
        WHEN 'success' THEN CASE WHEN t > 1 AND {_u(tkey, 23)} < 0.03 THEN 'skipped' ELSE 'success' END
        WHEN 'failed' THEN CASE WHEN run_start IS NULL THEN 'skipped' WHEN t < fpos THEN 'success'
                                WHEN t = fpos THEN 'failed' ELSE 'upstream_failed' END
        WHEN 'running' THEN CASE WHEN t < cpos THEN 'success'
                                 WHEN t = cpos THEN CASE WHEN {_u("run_key", 24)} < 0.08 THEN 'deferred'
                                                         WHEN {_u("run_key", 24)} < 0.12 THEN 'up_for_retry'
                                                         ELSE 'running' END
                                 WHEN t = cpos + 1 THEN 'queued'
                                 WHEN t = cpos + 2 THEN 'scheduled' END
        END"""
    # Seconds between queued and started: a long tail, but within the task's slot.
    qwait = f"LEAST(0.3 + 30 * {_u(tkey, 25)} ^ 3, 0.4 * slot)"
    ran = "ti_state IN ('success', 'failed', 'running', 'deferred', 'up_for_retry')"
    queued = f"run_start + {_secs('(t - 1) * slot')}"
    ti = f"""
        SELECT r.*, t, {state} AS ti_state, {_MAX_TRIES} AS max_tries_
        FROM ({run}) r CROSS JOIN LATERAL generate_series(1, r.n_tasks) t"""
    timed = f"""
        SELECT x.*,
            CASE WHEN {ran} THEN LEAST({queued} + {_secs(qwait)}, %(now)s - interval '2 seconds')
                 END AS ti_start,
            CASE WHEN ti_state IN ('success', 'failed', 'up_for_retry')
                 THEN LEAST({queued} + {_secs(f"{qwait} + (0.3 + 0.25 * {_u(tkey, 26)}) * slot")},
                            %(now)s - interval '1 second') END AS ti_end,
            CASE WHEN {ran} THEN LEAST({queued}, %(now)s - interval '3 seconds')
                 WHEN ti_state = 'queued' THEN %(now)s - {_secs(f"{qwait} * 4")} END AS queued_dttm_
        FROM ({ti}) x"""
    heartbeat = f"""CASE
        WHEN ti_state = 'running' AND {_u(tkey, 28)} < 0.02
             THEN %(now)s - {_secs(f"400 + 3000 * {_u(tkey, 29)}")}
        WHEN ti_state = 'running' THEN %(now)s - {_secs(f"1 + 9 * {_u(tkey, 29)}")}
        WHEN ti_state IN ('success', 'failed', 'up_for_retry') THEN ti_end END"""
    try_number = f"""CASE
        WHEN ti_state IS NULL OR ti_state IN ('upstream_failed', 'skipped') THEN 0
        WHEN ti_state = 'failed' THEN max_tries_ + 1
        WHEN ti_state = 'success' AND max_tries_ > 0 AND {_u(tkey, 27)} < 0.05 THEN 2
        ELSE 1 END"""
    scheduled = f"""CASE
        WHEN queued_dttm_ IS NOT NULL THEN queued_dttm_ - {_secs(f"0.01 + 0.5 * {_u(tkey, 30)}")}
        WHEN ti_state = 'scheduled' THEN %(now)s - {_secs(f"{qwait} * 2")} END"""
    return f"""
    SELECT {_uuid7(_epoch_ms("COALESCE(queued_dttm_, run_created)"), "t", "run_pk")},
        {", ".join(_TI_STATIC.values())},
        ti_start, ti_end, extract(epoch FROM ti_end - ti_start), ti_state, {try_number},
        CASE WHEN ti_start IS NOT NULL THEN 'worker-' || mod(run_key + t, 12) END,
        CASE WHEN ti_start IS NOT NULL THEN 'airflow' END,
        queued_dttm_, {scheduled},
        CASE WHEN queued_dttm_ IS NOT NULL OR ti_state = 'scheduled' THEN %(scheduler_job_id)s END,
        {heartbeat},
        CASE WHEN ti_state = 'running' THEN 1000 + mod(run_key + t, 30000)::int END,
        COALESCE(ti_end, ti_start, queued_dttm_, run_created)
    FROM ({timed}) y"""


_TI_COLUMNS = (
    "id, "
    + ", ".join(_TI_STATIC)
    + ", start_date, end_date, duration, state, try_number, hostname, unixname, queued_dttm, scheduled_dttm,"
    " queued_by_job_id, last_heartbeat_at, pid, updated_at"
)


def _fill_task_instances(
    cur: psycopg2.extensions.cursor, preset: Preset, now: datetime, chunk_runs: int, progress: Progress
) -> None:
    cur.execute("SELECT max(id) FROM dag_run")
    max_id = int(cur.fetchone()[0])  # type: ignore[index]
    params = {"now": now, **_ids(cur)}
    done, t0 = 0, time.monotonic()
    for lo in range(1, max_id + 1, chunk_runs):
        cur.execute(
            f"INSERT INTO task_instance ({_TI_COLUMNS}) {_ti_select('r0.id >= %(lo)s AND r0.id < %(hi)s')}",
            {**params, "lo": lo, "hi": lo + chunk_runs},
        )
        done += cur.rowcount
        progress(
            f"[{preset.name}] task_instance {done:,}/~{preset.task_instances:,} "
            f"({100 * done / preset.task_instances:.0f}%) {time.monotonic() - t0:.1f}s"
        )


# ---------------------------------------------------------------------------------------------
# The scheduler between polls


@dataclass
class AdvanceReport:
    runs_finished: int = 0
    runs_started: int = 0
    runs_created: int = 0
    task_instances_changed: int = 0
    task_instances_created: int = 0


_UNFINISHED = (
    "(ti.state IS NULL OR ti.state NOT IN ('success', 'failed', 'skipped', 'upstream_failed', 'removed'))"
)


def advance(dsn: str, n: int = 10, now: datetime | None = None) -> AdvanceReport:
    """One scheduler tick, in one transaction: finish the ``n`` oldest running runs (most succeed,
    a DAG's fail rate fails some), start ``n`` queued runs, finish ``n`` running task instances and
    schedule their successors, move ``3n`` task instances from queued to running and from
    scheduled to queued, create ``n`` new runs for the DAGs most due, and beat the heartbeats of
    components and running task instances (stale ones stay stale)."""
    now = now or datetime.now(timezone.utc)
    report = AdvanceReport()
    params = {"now": now, "n": n, "n3": 3 * n}
    with closing(psycopg2.connect(dsn)) as conn, conn, conn.cursor() as cur:
        params.update(_ids(cur))
        cur.execute("UPDATE job SET latest_heartbeat = %(now)s WHERE state = 'running'", params)
        # About 2 % of running task instances (by id) are zombies whose heartbeat never comes.
        cur.execute(
            """UPDATE task_instance SET last_heartbeat_at = %(now)s, updated_at = %(now)s
               WHERE state = 'running' AND get_byte(uuid_send(id), 15) >= 5""",
            params,
        )
        # Finish runs: unfinished task instances succeed, or the first fails and the rest are
        # upstream_failed.
        cur.execute(
            f"""
            WITH fin AS (
                SELECT r.id, r.dag_id, r.run_id, {_u("r.id", 31)} < p.fail_rate AS fails
                FROM dag_run r JOIN {PLAN_SCHEMA}.dag_plan p ON p.dag_id = r.dag_id
                WHERE r.state = 'running'
                ORDER BY r.start_date LIMIT %(n)s
                FOR UPDATE OF r SKIP LOCKED
            ), open AS (
                SELECT ti.id, fin.fails,
                       row_number() OVER (PARTITION BY ti.dag_id, ti.run_id
                                          ORDER BY ti.priority_weight DESC) AS rn
                FROM task_instance ti JOIN fin ON ti.dag_id = fin.dag_id AND ti.run_id = fin.run_id
                WHERE {_UNFINISHED}
            ), tis AS (
                UPDATE task_instance ti SET
                    state = CASE WHEN NOT o.fails THEN 'success' WHEN o.rn = 1 THEN 'failed'
                                 ELSE 'upstream_failed' END,
                    start_date = COALESCE(ti.start_date, %(now)s - interval '20 seconds'),
                    end_date = %(now)s,
                    duration = extract(epoch FROM %(now)s
                                       - COALESCE(ti.start_date, %(now)s - interval '20 seconds')),
                    try_number = CASE WHEN o.fails AND o.rn > 1 THEN ti.try_number
                                      ELSE GREATEST(ti.try_number, 1) END,
                    queued_dttm = CASE WHEN o.fails AND o.rn > 1 THEN ti.queued_dttm
                                       ELSE COALESCE(ti.queued_dttm, %(now)s - interval '25 seconds') END,
                    hostname = COALESCE(ti.hostname, 'worker-0'), unixname = 'airflow',
                    last_heartbeat_at = %(now)s, updated_at = %(now)s
                FROM open o WHERE ti.id = o.id
                RETURNING 1
            ), runs AS (
                UPDATE dag_run r SET state = CASE WHEN fin.fails THEN 'failed' ELSE 'success' END,
                    end_date = %(now)s, updated_at = %(now)s, last_scheduling_decision = %(now)s
                FROM fin WHERE r.id = fin.id
                RETURNING 1
            )
            SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM tis)
            """,
            params,
        )
        report.runs_finished, changed = cur.fetchone()  # type: ignore[misc]
        report.task_instances_changed += changed
        # Start queued runs: the first task gets scheduled.
        cur.execute(
            f"""
            WITH q AS (
                SELECT r.id FROM dag_run r WHERE r.state = 'queued'
                ORDER BY r.run_after LIMIT %(n)s FOR UPDATE SKIP LOCKED
            ), runs AS (
                UPDATE dag_run r SET state = 'running', start_date = %(now)s, updated_at = %(now)s,
                    last_scheduling_decision = %(now)s
                FROM q WHERE r.id = q.id
                RETURNING r.dag_id, r.run_id
            ), tis AS (
                UPDATE task_instance ti SET state = 'scheduled', try_number = 1, scheduled_dttm = %(now)s,
                    queued_by_job_id = %(scheduler_job_id)s, updated_at = %(now)s
                FROM runs JOIN {PLAN_SCHEMA}.dag_plan p ON p.dag_id = runs.dag_id
                WHERE ti.dag_id = runs.dag_id AND ti.run_id = runs.run_id AND ti.priority_weight = p.n_tasks
                  AND ti.state IS NULL
                RETURNING 1
            )
            SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM tis)
            """,
            params,
        )
        report.runs_started, changed = cur.fetchone()  # type: ignore[misc]
        report.task_instances_changed += changed
        # Task instances finish inside runs that go on; their successor gets scheduled.
        cur.execute(
            """
            WITH done AS (
                UPDATE task_instance ti SET state = 'success', end_date = %(now)s,
                    duration = extract(epoch FROM %(now)s - ti.start_date), last_heartbeat_at = %(now)s,
                    updated_at = %(now)s
                WHERE ti.id IN (SELECT id FROM task_instance WHERE state = 'running'
                                ORDER BY start_date LIMIT %(n)s FOR UPDATE SKIP LOCKED)
                RETURNING ti.dag_id, ti.run_id
            ), nxt AS (
                SELECT DISTINCT ON (t.dag_id, t.run_id) t.id
                FROM task_instance t JOIN done d ON t.dag_id = d.dag_id AND t.run_id = d.run_id
                WHERE t.state IS NULL
                ORDER BY t.dag_id, t.run_id, t.priority_weight DESC
            ), sched AS (
                UPDATE task_instance ti SET state = 'scheduled', try_number = 1, scheduled_dttm = %(now)s,
                    queued_by_job_id = %(scheduler_job_id)s, updated_at = %(now)s
                WHERE ti.id IN (SELECT id FROM nxt)
                RETURNING 1
            )
            SELECT (SELECT count(*) FROM done) + (SELECT count(*) FROM sched)
            """,
            params,
        )
        report.task_instances_changed += cur.fetchone()[0]  # type: ignore[index]
        # The executor picks up queued work; the scheduler queues scheduled work.
        cur.execute(
            """
            UPDATE task_instance ti SET state = 'running', start_date = %(now)s, last_heartbeat_at = %(now)s,
                hostname = 'worker-' || (get_byte(uuid_send(ti.id), 15) %% 12), unixname = 'airflow',
                pid = 1000 + get_byte(uuid_send(ti.id), 14), updated_at = %(now)s
            WHERE ti.id IN (SELECT id FROM task_instance WHERE state = 'queued'
                            ORDER BY queued_dttm LIMIT %(n3)s FOR UPDATE SKIP LOCKED)
            """,
            params,
        )
        report.task_instances_changed += cur.rowcount
        cur.execute(
            """
            UPDATE task_instance ti SET state = 'queued', queued_dttm = %(now)s, updated_at = %(now)s
            WHERE ti.id IN (SELECT id FROM task_instance WHERE state = 'scheduled'
                            ORDER BY scheduled_dttm LIMIT %(n3)s FOR UPDATE SKIP LOCKED)
            """,
            params,
        )
        report.task_instances_changed += cur.rowcount
        report.runs_created, report.task_instances_created = _create_runs(cur, params)
    return report


def _create_runs(cur: psycopg2.extensions.cursor, params: dict[str, Any]) -> tuple[int, int]:
    """New scheduled runs for the DAGs most due that have no live run; a third start queued."""
    ts = "'YYYY-MM-DD\"T\"HH24:MI:SS'"
    step = "(p.interval_s * interval '1 second')"
    trace = "md5(d.dag_id || %(now)s::text)"
    cur.execute(
        f"""
        WITH pick AS (
            SELECT d.dag_id, d.next_dagrun, p.idx
            FROM dag d JOIN {PLAN_SCHEMA}.dag_plan p ON p.dag_id = d.dag_id
            WHERE NOT d.is_paused AND NOT d.is_stale
              AND NOT EXISTS (SELECT 1 FROM dag_run r
                              WHERE r.dag_id = d.dag_id AND r.state IN ('queued', 'running'))
            ORDER BY d.next_dagrun_create_after, d.dag_id LIMIT %(n)s
            FOR UPDATE OF d SKIP LOCKED
        ), dags AS (
            UPDATE dag d SET next_dagrun = d.next_dagrun + {step},
                next_dagrun_data_interval_start = d.next_dagrun + {step},
                next_dagrun_data_interval_end = d.next_dagrun + {step},
                next_dagrun_create_after = d.next_dagrun + {step}
            FROM pick JOIN {PLAN_SCHEMA}.dag_plan p ON p.dag_id = pick.dag_id
            WHERE d.dag_id = pick.dag_id
        ), runs AS (
            INSERT INTO dag_run ({_RUN_COLUMNS.replace("id, ", "", 1)})
            SELECT d.dag_id, %(now)s, d.next_dagrun,
                CASE WHEN mod(d.idx, 3) = 0 THEN NULL ELSE %(now)s END, NULL,
                CASE WHEN mod(d.idx, 3) = 0 THEN 'queued' ELSE 'running' END,
                'scheduled__' || to_char(d.next_dagrun AT TIME ZONE 'UTC', {ts}) || '+00:00',
                'scheduled', 'TIMETABLE', NULL, '{{}}'::jsonb, d.next_dagrun, d.next_dagrun, d.next_dagrun,
                %(now)s, %(log_template_id)s, %(now)s, %(now)s, %(scheduler_job_id)s,
                jsonb_build_object('__var', jsonb_build_object('traceparent',
                    '00-' || {trace} || '-' || left(md5({trace}), 16) || '-00'), '__type', 'dict'),
                p.version_id
            FROM pick d JOIN {PLAN_SCHEMA}.dag_plan p ON p.dag_id = d.dag_id
            RETURNING id, dag_id, run_id, state, context_carrier
        ), tis AS (
            INSERT INTO task_instance ({", ".join(_TI_STATIC)}, id, state, try_number, scheduled_dttm,
                                       queued_by_job_id, updated_at)
            SELECT {", ".join(_TI_STATIC.values())},
                {_uuid7(_epoch_ms("%(now)s::timestamptz"), "t", "run_pk")},
                CASE WHEN first THEN 'scheduled' END, CASE WHEN first THEN 1 ELSE 0 END,
                CASE WHEN first THEN %(now)s END, CASE WHEN first THEN %(scheduler_job_id)s END, %(now)s
            FROM (
                SELECT r.id AS run_pk, r.dag_id, r.run_id, r.context_carrier, p.idx, p.n_tasks, p.pool,
                       p.queue, p.version_id, t, r.state = 'running' AND t = 1 AS first
                FROM runs r JOIN {PLAN_SCHEMA}.dag_plan p ON p.dag_id = r.dag_id
                CROSS JOIN LATERAL generate_series(1, p.n_tasks) t
            ) x
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM tis)
        """,
        params,
    )
    runs, tis = cur.fetchone()  # type: ignore[misc]
    return int(runs), int(tis)


# ---------------------------------------------------------------------------------------------
# Command line


def database_name(preset: Preset) -> str:
    return f"airflow_ops_bench_{preset.name}"


def create_history_database(
    preset: Preset, name: str, progress: Progress = _stderr
) -> tuple[str, GenerationReport]:
    """A new database on the shared server, cloned from the migrated Airflow 3 template and filled."""
    from airflow_ops.devstack import database as shared

    template = shared.migrated_template(AIRFLOW_VERSION)
    dsn = shared.create_database(name, template)
    try:
        return dsn, generate(dsn, preset, progress=progress)
    except BaseException:
        shared.drop_database(name)
        raise


def print_report(report: GenerationReport) -> None:
    print(
        f"preset {report.preset}: generated in {report.seconds:.1f}s,"
        f" database {report.database_bytes / 2**20:,.0f} MiB"
    )
    for table, count in report.rows.items():
        print(f"  {table:<16} {count:>12,}")


def main(argv: list[str] | None = None) -> int:

    parser = argparse.ArgumentParser(
        prog="python -m bench.generate_history", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--preset", choices=sorted(PRESETS, key=lambda k: PRESETS[k].runs), default="small")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--dsn", help="an existing, empty database migrated by Airflow 3 (left in place)")
    where.add_argument(
        "--name", help="database to create on the shared server (default airflow_ops_bench_<preset>)"
    )
    parser.add_argument("--replace", action="store_true", help="drop --name first if it exists")
    parser.add_argument(
        "--advance", type=int, metavar="N", help="instead of generating: one scheduler tick of N runs"
    )
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]

    if args.advance is not None:
        if not args.dsn:
            parser.error("--advance needs --dsn")
        started = time.monotonic()
        tick = advance(args.dsn, args.advance)
        print(f"advanced in {(time.monotonic() - started) * 1000:.0f} ms: {tick}")
        return 0
    if args.dsn:
        print_report(generate(args.dsn, preset))
        return 0
    from airflow_ops.devstack import database as shared

    name = args.name or database_name(preset)
    if shared.database_exists(name):
        if not args.replace:
            parser.error(f"database {name} exists; pass --replace to regenerate it")
        shared.drop_database(name)
    dsn, report = create_history_database(preset, name)
    print_report(report)
    print(f"dsn: {dsn}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
