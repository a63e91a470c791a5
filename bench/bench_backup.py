"""Benchmark ``backup create`` against raw ``pg_dump -Fc`` of the same database, in the same run.

On a synthetic Airflow 3 metadata database (``bench.generate_history``; the ``large`` preset is
1M dag_runs and 10M task_instances), repetitions alternate between

- raw: ``pg_dump --format=custom --file=…`` (the same pg_dump binary; it fsyncs its output), and
- ours: ``plan_create`` + ``execute_create`` (snapshot export, row counts of every table in the
  dump's snapshot, pg_dump streamed through a SHA-256, fsync, manifest, atomic rename),

in the order raw, ours, ours, raw, raw, ours, … so that a drift in machine load or cache state
falls on both sides alike. A first raw dump warms the cache and is not counted. Each output is
deleted before the next repetition. The target is ours <= 1.15 x raw (median wall time); the
ratio of the fastest runs and the CPU seconds of each side (pg_dump, and our own process) are
printed too, as they depend less on what else the machine is doing.

    python -m bench.bench_backup                      # large preset, 3 repetitions each
    python -m bench.bench_backup --preset small --repetitions 5
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from airflow_ops.maintenance.backup import execute_create, plan_create
from airflow_ops.maintenance.backup_pg import client_args, connect, find_tool, server_version
from bench.generate_history import PRESETS, create_history_database, is_complete, print_report

TARGET_RATIO = 1.15


@dataclass
class Run:
    kind: str  # raw | ours
    seconds: float
    cpu_children: float  # pg_dump
    cpu_self: float  # our process (hashing, counting thread, manifest)
    dump_bytes: int


def _cpu() -> tuple[float, float]:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    me = resource.getrusage(resource.RUSAGE_SELF)
    return children.ru_utime + children.ru_stime, me.ru_utime + me.ru_stime


def _measure(kind: str, action: Callable[[], int]) -> Run:
    c0, s0 = _cpu()
    t0 = time.perf_counter()
    size = action()
    seconds = time.perf_counter() - t0
    c1, s1 = _cpu()
    return Run(kind, seconds, c1 - c0, s1 - s0, size)


def raw_dump(pg_dump: Path, dsn: str, out_dir: Path) -> int:
    conninfo, env = client_args(dsn)
    path = out_dir / "raw.pgdump"
    subprocess.run(
        [str(pg_dump), "--format=custom", f"--file={path}", "--no-password", f"--dbname={conninfo}"],
        env=env,
        check=True,
    )
    size = path.stat().st_size
    path.unlink()
    return size


def our_backup(dsn: str, out_dir: Path) -> int:
    report = execute_create(plan_create(dsn, out_dir))
    if not report.ok:
        raise SystemExit(f"backup create failed: {report.errors}")
    shutil.rmtree(Path(report.data["path"]))
    return int(report.data["files"]["metadata.pgdump"]["size"])


def _order(repetitions: int) -> list[str]:
    pattern = ["raw", "ours", "ours", "raw"]
    return [pattern[i % 4] for i in range(2 * repetitions)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_backup", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--preset", choices=sorted(PRESETS, key=lambda k: PRESETS[k].runs), default="large")
    parser.add_argument("--repetitions", type=int, default=3, help="runs of each side (default 3)")
    parser.add_argument(
        "--name", help="database on the shared server (default airflow_ops_bench_backup_<preset>)"
    )
    parser.add_argument("--drop", action="store_true", help="drop the database at the end (default: keep it)")
    parser.add_argument("--out", type=Path, help="directory for the dumps (default: a temporary one)")
    args = parser.parse_args(argv)

    from airflow_ops.devstack import database as shared

    preset = PRESETS[args.preset]
    name = args.name or f"airflow_ops_bench_backup_{preset.name}"
    dsn = shared.dsn_for(name)
    if shared.database_exists(name) and not is_complete(dsn, preset):
        print(f"database {name} is incomplete or of another generator version: regenerating", flush=True)
        shared.drop_database(name)
    if not shared.database_exists(name):
        _, generated = create_history_database(preset, name)
        print_report(generated)
    try:
        with closing(connect(dsn, autocommit=True)) as conn, conn.cursor() as cur:
            major, version = server_version(conn)
            cur.execute("SELECT pg_database_size(current_database())")
            db_bytes = int(cur.fetchone()[0])
            cur.execute("SELECT count(*) FROM task_instance")
            tis = int(cur.fetchone()[0])
        pg_dump = find_tool("pg_dump", at_least=major).path
        out_root = args.out or Path(tempfile.mkdtemp(prefix="bench-backup-"))
        out_root.mkdir(parents=True, exist_ok=True)
        print(
            f"database {name}: {db_bytes / 2**20:,.0f} MiB, {tis:,} task instances; PostgreSQL {version};"
            f" {pg_dump}; dumps in {out_root}; load average {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        warm = _measure("raw", lambda: raw_dump(pg_dump, dsn, out_root))
        print(f"warm-up raw pg_dump: {warm.seconds:.2f}s (not counted)", flush=True)
        runs: list[Run] = []
        for kind in _order(args.repetitions):
            if kind == "raw":
                run = _measure(kind, lambda: raw_dump(pg_dump, dsn, out_root))
            else:
                run = _measure(kind, lambda: our_backup(dsn, out_root))
            runs.append(run)
            print(
                f"  {kind:<4} {run.seconds:7.2f}s wall  cpu pg_dump {run.cpu_children:6.2f}s"
                f"  cpu self {run.cpu_self:5.2f}s  dump {run.dump_bytes / 2**20:,.1f} MiB",
                flush=True,
            )
        if args.out is None:
            shutil.rmtree(out_root, ignore_errors=True)
    finally:
        if args.drop:
            shared.drop_database(name)

    raw = [r for r in runs if r.kind == "raw"]
    ours = [r for r in runs if r.kind == "ours"]
    raw_med = statistics.median(r.seconds for r in raw)
    ours_med = statistics.median(r.seconds for r in ours)
    ratio = ours_med / raw_med
    raw_cpu = statistics.median(r.cpu_children + r.cpu_self for r in raw)
    ours_cpu = statistics.median(r.cpu_children + r.cpu_self for r in ours)
    print()
    print(f"raw pg_dump -Fc   median {raw_med:7.2f}s  (runs: {', '.join(f'{r.seconds:.2f}' for r in raw)})")
    print(f"backup create     median {ours_med:7.2f}s  (runs: {', '.join(f'{r.seconds:.2f}' for r in ours)})")
    verdict = "OK" if ratio <= TARGET_RATIO else "MISSED"
    print(f"ratio (median wall)      {ratio:.3f}x   target <= {TARGET_RATIO}x  {verdict}")
    # The fastest run of each side is the one least disturbed by other load on the machine.
    best = min(r.seconds for r in ours) / min(r.seconds for r in raw)
    print(f"ratio (fastest runs)     {best:.3f}x")
    print(f"client CPU (median)      raw {raw_cpu:.2f}s, ours {ours_cpu:.2f}s ({ours_cpu / raw_cpu:.3f}x)")
    print(f"load average at the end  {os.getloadavg()[0]:.2f}")
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
