"""Benchmark ``db clean`` against the real ``airflow db clean`` on identical copies of one database.

The database is built once by ``bench.generate_history`` (an Airflow 3.3 metadata DB migrated by
the real ``airflow db migrate``, filled with synthetic history) and given the rows Airflow writes
beside task instances: an XCom (``return_value``) for every task instance that ran, a history row
for every retried one. It is kept between runs (``--rebuild`` makes it again).

Each round makes fresh copies (``CREATE DATABASE … TEMPLATE``) and cleans every table older than
the cutoff:

- ``airflow db clean --clean-before-timestamp <cutoff> --yes --skip-archive``, the CLI of the real
  Airflow 3.3.2 from the devstack venv;
- airflow-ops (``plan_clean`` + ``execute_clean`` with the equivalent policy: every table's
  retention = the cutoff, keep the last non-manual run per DAG): set-based cascades with one and
  with two workers (connections), and trigger cascades (what a role without the right to set
  session_replication_role gets).

Each runs as a subprocess (interpreter start and imports included for both) timed by wall clock.
Rows deleted are counted the same way for both: ``count(*)`` of every table before and after.
Statement durations are sampled from ``pg_stat_activity`` every 20 ms for both (a statement
shorter than the sampling interval may be missed; the longest ones are not); airflow-ops also
times each of its statements itself. Rounds alternate which tool goes first.

    python -m bench.bench_db_clean                   # preset medium, cutoff 7 days, 2 rounds
    python -m bench.bench_db_clean --preset small --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psycopg2

from airflow_ops.devstack import database as shared
from airflow_ops.devstack.install import ensure_airflow

from .generate_history import AIRFLOW_VERSION, PLAN_SCHEMA, PRESETS, create_history_database, is_complete

SAMPLE_SECONDS = 0.02
CHILDREN_MARK = "dbclean_children"

_OURS = """
import json, sys
from datetime import datetime
from airflow_ops.maintenance.db_clean import CleanPolicy, execute_clean, plan_clean
from airflow_ops.maintenance.db_tables import KNOWN_TABLES

dsn, now, days, cascades = sys.argv[1], datetime.fromisoformat(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
policy = CleanPolicy(retention=dict.fromkeys(KNOWN_TABLES, days * 86400), keep_last_runs=1, cascades=cascades,
                     workers=int(sys.argv[5]))
plan = plan_clean(dsn, policy, now=now)
report = execute_clean(plan)
print(json.dumps({"ok": report.ok, "errors": report.errors, "rows": report.rows_deleted,
                  "plan_seconds": plan.plan_seconds, "plan_longest": plan.slowest.seconds,
                  "longest": report.data["longest_statement_seconds"],
                  "longest_what": report.data["longest_statement"], "seconds": report.data["seconds"],
                  "set_based": any(report.data["set_based"].values())}))
"""


# ---------------------------------------------------------------------------- the database


def ensure_base(preset_name: str, rebuild: bool) -> str:
    """The generated database with child rows, built once; returns its name."""
    preset = PRESETS[preset_name]
    name = f"airflow_ops_bench_dbclean_{preset.name}"
    if shared.database_exists(name) and (rebuild or not _has_children(name, preset_name)):
        shared.drop_database(name)
    if not shared.database_exists(name):
        started = time.monotonic()
        create_history_database(preset, name, progress=lambda m: print(m, file=sys.stderr, flush=True))
        _add_children(shared.dsn_for(name))
        print(f"[bench] built {name} in {time.monotonic() - started:.0f}s", file=sys.stderr)
    return name


def _has_children(name: str, preset_name: str) -> bool:
    dsn = shared.dsn_for(name)
    if not is_complete(dsn, PRESETS[preset_name]):
        return False
    with closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT 1 FROM {PLAN_SCHEMA}.info WHERE key = %s", (CHILDREN_MARK,))
        return cur.fetchone() is not None


def _add_children(dsn: str) -> None:
    """What Airflow writes beside task instances: an XCom for every one that ran (return_value),
    a history row for every retried one (its first try)."""
    with closing(psycopg2.connect(dsn)) as conn:
        with conn, conn.cursor() as cur:
            cur.execute(
                """
                INSERT INTO xcom (dag_run_id, task_id, map_index, key, dag_id, run_id, value, timestamp)
                SELECT r.id, ti.task_id, ti.map_index, 'return_value', ti.dag_id, ti.run_id,
                       '{"rows": 1}'::jsonb, ti.end_date
                FROM task_instance ti JOIN dag_run r ON r.dag_id = ti.dag_id AND r.run_id = ti.run_id
                WHERE ti.state IN ('success', 'failed') AND ti.end_date IS NOT NULL
                """
            )
            cur.execute(
                """
                INSERT INTO task_instance_history (task_instance_id, task_id, dag_id, run_id, map_index,
                    try_number, start_date, end_date, state, pool, pool_slots, queue, dag_version_id)
                SELECT gen_random_uuid(), task_id, dag_id, run_id, map_index, 1,
                       start_date - interval '5 minutes', start_date - interval '4 minutes', 'failed',
                       pool, pool_slots, queue, dag_version_id
                FROM task_instance WHERE try_number > 1
                """
            )
            cur.execute(f"INSERT INTO {PLAN_SCHEMA}.info VALUES (%s, 'yes')", (CHILDREN_MARK,))
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("VACUUM (ANALYZE) xcom, task_instance_history")


def generated_now(dsn: str) -> datetime:
    with closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT value FROM {PLAN_SCHEMA}.info WHERE key = 'now'")
        return datetime.fromisoformat(cur.fetchone()[0])  # type: ignore[index]


def row_counts(dsn: str) -> dict[str, int]:
    """Exact row count of every table of Airflow's schema."""
    with closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'"
        )
        tables = [r[0] for r in cur.fetchall()]
        counts = {}
        for table in tables:
            cur.execute(f'SELECT count(*) FROM "{table}"')
            counts[table] = int(cur.fetchone()[0])  # type: ignore[index]
        return counts


# ---------------------------------------------------------------------------- measuring


@dataclass
class StatementSampler:
    """Polls pg_stat_activity of one database; keeps the longest statement seen active."""

    dbname: str
    longest: float = 0.0
    longest_query: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> StatementSampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()

    def _run(self) -> None:
        with closing(psycopg2.connect(shared.ADMIN_DSN)) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                while not self._stop.is_set():
                    cur.execute(
                        "SELECT extract(epoch FROM clock_timestamp() - query_start), left(query, 100)"
                        " FROM pg_stat_activity"
                        " WHERE datname = %s AND state = 'active' AND pid <> pg_backend_pid()",
                        (self.dbname,),
                    )
                    for seconds, query in cur.fetchall():
                        if seconds is not None and seconds > self.longest:
                            self.longest, self.longest_query = float(seconds), " ".join(query.split())
                    self._stop.wait(SAMPLE_SECONDS)


@dataclass
class Result:
    tool: str
    rows: int
    seconds: float
    longest: float  # sampled from pg_stat_activity
    longest_query: str
    own_longest: float | None = None  # as timed by the tool itself (airflow-ops)
    phases: str = ""  # airflow-ops: plan and execute seconds
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def run_airflow(dbname: str, cutoff: datetime) -> Result:
    venv = ensure_airflow(AIRFLOW_VERSION)
    with tempfile.TemporaryDirectory(prefix="airflow-ops-bench-") as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(
            AIRFLOW_HOME=home,
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=shared.dsn_for(dbname).replace(
                "postgresql://", "postgresql+psycopg2://"
            ),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
        )
        cmd = [str(venv / "bin" / "airflow"), "db", "clean", "--clean-before-timestamp", cutoff.isoformat(),
               "--yes", "--skip-archive"]  # fmt: skip
        before = row_counts(shared.dsn_for(dbname))
        with StatementSampler(dbname) as sampler:
            started = time.monotonic()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            seconds = time.monotonic() - started
    errors = [] if proc.returncode == 0 else [f"exit {proc.returncode}: {proc.stderr[-2000:]}"]
    errors += [line for line in proc.stdout.splitlines() + proc.stderr.splitlines() if "not cleaned" in line]
    rows = _deleted(before, row_counts(shared.dsn_for(dbname)))
    return Result("airflow db clean", rows, seconds, sampler.longest, sampler.longest_query, errors=errors)


def run_ours(dbname: str, now: datetime, days: float, cascades: str, workers: int) -> Result:
    before = row_counts(shared.dsn_for(dbname))
    with StatementSampler(dbname) as sampler:
        started = time.monotonic()
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                _OURS,
                shared.dsn_for(dbname),
                now.isoformat(),
                str(days),
                cascades,
                str(workers),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.monotonic() - started
    name = f"airflow-ops ({cascades}, {workers} worker{'s' if workers > 1 else ''})"
    if proc.returncode != 0:
        return Result(name, 0, seconds, 0, "", errors=[proc.stderr[-2000:]])
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = _deleted(before, row_counts(shared.dsn_for(dbname)))
    if rows != out["rows"]:
        out["errors"].append(f"reported {out['rows']:,} rows deleted, counted {rows:,}")
    if out["set_based"] != (cascades == "set_based"):
        out["errors"].append(f"asked for {cascades} cascades, got the other mode")
    return Result(
        name,
        rows,
        seconds,
        sampler.longest,
        sampler.longest_query,
        own_longest=max(out["longest"], out["plan_longest"]),
        phases=f"plan {out['plan_seconds']:.1f}s + execute {out['seconds']:.1f}s",
        errors=out["errors"],
    )


def _deleted(before: dict[str, int], after: dict[str, int]) -> int:
    return sum(max(0, n - after.get(t, 0)) for t, n in before.items())


# ---------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_db_clean", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="medium")
    parser.add_argument("--days", type=float, default=7.0, help="clean rows older than this (default 7)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--modes",
        default="set_based:1,set_based:2,triggers:1",
        help="airflow-ops runs as cascades:workers (default set_based:1,set_based:2,triggers:1)",
    )
    parser.add_argument("--rebuild", action="store_true", help="regenerate the base database")
    args = parser.parse_args(argv)
    modes = [(m.split(":")[0], int(m.split(":")[1]) if ":" in m else 1) for m in args.modes.split(",") if m]
    # A stopped benchmark drops its copy like a finished one.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    base = ensure_base(args.preset, args.rebuild)
    now = generated_now(shared.dsn_for(base))
    cutoff = now - timedelta(days=args.days)
    counts = row_counts(shared.dsn_for(base))
    print(
        f"db clean benchmark: preset {args.preset} ({counts['dag']:,} DAGs, {counts['dag_run']:,} runs, "
        f"{counts['task_instance']:,} task instances, {counts['xcom']:,} XComs, "
        f"{counts['task_instance_history']:,} task-instance history rows); cutoff = now - {args.days:g}d"
    )
    print(
        f"PostgreSQL: shared server, load average {os.getloadavg()[0]:.1f} at start ({os.cpu_count()} CPUs)"
    )
    results: dict[str, list[Result]] = {}
    for round_no in range(1, args.rounds + 1):
        runners: list[tuple[str, int] | None] = [None, *modes]  # None: airflow db clean
        if round_no % 2 == 0:
            runners.reverse()
        for mode in runners:
            copy = f"airflow_ops_bench_dbclean_copy_{os.getpid()}"
            shared.drop_database(copy)
            shared.create_database(copy, template=base)
            try:
                result = run_airflow(copy, cutoff) if mode is None else run_ours(copy, now, args.days, *mode)
            finally:
                shared.drop_database(copy)
            results.setdefault(result.tool, []).append(result)
            own = f"; own timing {result.own_longest:.3f}s" if result.own_longest is not None else ""
            print(
                f"round {round_no}: {result.tool:<38} {result.rows:>9,} rows in {result.seconds:5.1f}s"
                f" = {result.rate:>7,.0f} rows/s; longest statement {result.longest:.2f}s (sampled{own})"
                + (f"; {result.phases}" if result.phases else "")
                + f"\n    longest: {result.longest_query[:90]}"
            )
            for error in result.errors:
                print(f"    error: {error}")
    print()
    airflow = statistics.median(r.rate for r in results["airflow db clean"])
    for tool, rs in results.items():
        rate = statistics.median(r.rate for r in rs)
        longest = max(max(r.longest, r.own_longest or 0) for r in rs)
        ratio = f"{rate / airflow:.2f}x airflow" if airflow else "-"
        print(f"{tool:<38} median {rate:>7,.0f} rows/s ({ratio}); longest statement {longest:.2f}s")
    for tool, rs in results.items():
        if tool.startswith("airflow-ops"):
            ratio = statistics.median(r.rate for r in rs) / airflow if airflow else 0.0
            longest = max(max(r.longest, r.own_longest or 0) for r in rs)
            met = "met" if ratio >= 3 and longest <= 2 else "NOT met"
            print(f"target >= 3x and no statement over 2 s, {tool}: {ratio:.2f}x, {longest:.2f}s -> {met}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
