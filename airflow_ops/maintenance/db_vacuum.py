"""``db vacuum``: VACUUM (ANALYZE) table by table, FULL only when asked for.

A plain VACUUM makes the space of deleted rows reusable and refreshes the planner's statistics
(stale ones after a big cleanup once stopped a scheduler, apache/airflow#32986); it returns disk
space only from the end of a table. VACUUM FULL rewrites the table and returns the space, but
holds an ACCESS EXCLUSIVE lock for the whole rewrite (Airflow stops on that table) and needs room
for a second copy: it runs only with ``full=True``. Every table waits at most ``lock_timeout``
for its lock, so a VACUUM FULL never queues behind a long transaction while blocking everyone
behind it; a table whose lock is not granted is reported and the others go on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import psycopg2
import psycopg2.errors

from .db_catalog import read_catalog
from .db_connection import DbMaintenanceError, connect, milliseconds, quote_ident
from .report import Progress, Report, no_progress

_SIZES_SQL = """
SELECT c.relname, pg_total_relation_size(c.oid), COALESCE(s.n_dead_tup, 0), COALESCE(s.n_live_tup, 0)
FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.relnamespace = to_regnamespace(%(schema)s) AND c.relkind IN ('r', 'm')
"""


@dataclass
class VacuumTable:
    table: str
    bytes_before: int
    dead_tuples: int
    live_tuples: int


@dataclass
class VacuumPlan:
    dsn: str = field(repr=False)
    schema: str
    tables: list[VacuumTable]
    full: bool
    lock_timeout: float

    def report(self) -> Report:
        kind = "VACUUM (FULL, ANALYZE)" if self.full else "VACUUM (ANALYZE)"
        lines = [
            f"{t.table}: {t.bytes_before:,} bytes, {t.dead_tuples:,} dead / {t.live_tuples:,} live tuples"
            for t in self.tables
        ]
        if self.full:
            largest = max((t.bytes_before for t in self.tables), default=0)
            lines.insert(
                0,
                "FULL rewrites each table under an ACCESS EXCLUSIVE lock (Airflow waits on it) and "
                f"needs free disk for a copy of the largest table ({largest:,} bytes)",
            )
        return Report(
            action="db.vacuum",
            planned=True,
            ok=True,
            summary=f"db vacuum would run {kind} on {len(self.tables)} tables",
            lines=lines,
            data={"full": self.full, "tables": [t.__dict__ for t in self.tables]},
        )


def plan_vacuum(
    dsn: str, tables: Sequence[str] | None = None, full: bool = False, *, lock_timeout: float = 5.0
) -> VacuumPlan:
    """Every table of Airflow's schema (or ``tables``), most dead tuples first."""
    with connect(dsn, autocommit=True) as s:
        catalog = read_catalog(s)
        unknown = [t for t in tables or () if t not in catalog.tables]
        if unknown:
            raise DbMaintenanceError(
                f"tables: no such table in schema {catalog.schema!r}: {', '.join(unknown)}"
            )
        rows = s.rows("table sizes", _SIZES_SQL, {"schema": catalog.schema})
    wanted = set(tables) if tables else None
    chosen = [
        VacuumTable(name, int(size), int(dead), int(live))
        for name, size, dead, live in rows
        if wanted is None or name in wanted
    ]
    chosen.sort(key=lambda t: (-t.dead_tuples, t.table))
    return VacuumPlan(dsn, catalog.schema, chosen, full, lock_timeout)


def execute_vacuum(plan: VacuumPlan, progress: Progress = no_progress) -> Report:
    """VACUUM each planned table in autocommit mode; size before/after and time per table."""
    started = time.monotonic()
    lines, errors, results = [], [], []
    options = "FULL, ANALYZE" if plan.full else "ANALYZE"
    with connect(plan.dsn, autocommit=True) as s:
        # A vacuum of a large table is long by nature: no statement timeout, but a lock timeout.
        s.run(
            "session settings",
            "SET statement_timeout = 0; SET lock_timeout = %s",
            (milliseconds(plan.lock_timeout),),
        )
        for i, t in enumerate(plan.tables):
            name = f"{quote_ident(plan.schema)}.{quote_ident(t.table)}"
            t0 = time.monotonic()
            try:
                before = int(s.scalar("size", "SELECT pg_total_relation_size(%s::regclass)", (name,)))
                s.run(f"vacuum {t.table}", f"VACUUM ({options}) {name}")
                after = int(s.scalar("size", "SELECT pg_total_relation_size(%s::regclass)", (name,)))
            except psycopg2.errors.LockNotAvailable as exc:
                errors.append(
                    f"{t.table}: lock not granted within {plan.lock_timeout:g}s ({s.describe(exc)})"
                )
                continue
            except psycopg2.Error as exc:
                errors.append(f"{t.table}: {s.describe(exc)}")
                continue
            finally:
                progress(i + 1, len(plan.tables), "tables")
            seconds = time.monotonic() - t0
            results.append(
                {"table": t.table, "seconds": round(seconds, 3), "bytes_before": before, "bytes_after": after}
            )
            lines.append(f"{t.table}: {before:,} -> {after:,} bytes in {seconds:.2f}s")
        slowest = s.slowest
    freed = sum(max(0, r["bytes_before"] - r["bytes_after"]) for r in results)
    return Report(
        action="db.vacuum",
        planned=False,
        ok=not errors,
        summary=f"db vacuum ({options}) of {len(results)}/{len(plan.tables)} tables freed {freed:,} bytes"
        f" in {time.monotonic() - started:.1f}s",
        lines=lines,
        errors=errors,
        data={
            "full": plan.full,
            "tables": results,
            "longest_statement_seconds": round(slowest.seconds, 3),
            "longest_statement": slowest.what,
        },
        bytes_freed=freed,
    )
