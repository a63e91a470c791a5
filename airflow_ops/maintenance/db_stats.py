"""``db stats``: how big Airflow's tables are, how much of them is dead or bloated, when they were
last vacuumed and analyzed, and which foreign keys lack the index their cascades need.

Bloat estimate: for each table, the heap pages that ``reltuples`` live rows of the average row
width (``pg_stats.avg_width`` of every column, plus the 23-byte tuple header and null bitmap
rounded up to 8, plus the 4-byte line pointer) would fill at the table's fillfactor, against the
pages it really has (``relpages``); the difference is reported as bloat. It comes from the
statistics of the last ANALYZE (tables never analyzed show "unknown"), ignores TOAST and index
bloat, and is an estimate of the kind ``check_postgres`` uses: good for ranking tables and
for before/after comparisons, not to the byte.

A foreign key without an index led by its columns makes every deleted parent row scan the child
table (the "9 hours for task_instance" of apache/airflow#24484): each one is listed with the
``CREATE INDEX CONCURRENTLY`` that fixes it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from .db_catalog import Catalog, ForeignKey, read_catalog
from .db_connection import connect, quote_ident
from .report import Report

_TABLES_SQL = """
SELECT c.relname,
       pg_relation_size(c.oid) AS heap_bytes,
       pg_indexes_size(c.oid) AS index_bytes,
       COALESCE(pg_total_relation_size(c.reltoastrelid), 0) AS toast_bytes,
       COALESCE(s.n_live_tup, 0), COALESCE(s.n_dead_tup, 0),
       s.last_vacuum, s.last_autovacuum, s.last_analyze, s.last_autoanalyze,
       c.relpages, c.reltuples,
       COALESCE((SELECT split_part(o, '=', 2)::int FROM unnest(c.reloptions) o
                 WHERE o LIKE 'fillfactor=%%'), 100) AS fillfactor,
       (SELECT sum(st.avg_width) FROM pg_stats st
        WHERE st.schemaname = %(schema)s AND st.tablename = c.relname) AS row_width,
       (SELECT count(*) FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0
        AND NOT a.attisdropped) AS columns
FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.relnamespace = to_regnamespace(%(schema)s) AND c.relkind IN ('r', 'm')
ORDER BY pg_total_relation_size(c.oid) DESC
"""

_BLOCK_SQL = "SELECT current_setting('block_size')::int"


def estimate_bloat_bytes(
    *, relpages: int, reltuples: float, row_width: float | None, columns: int, fillfactor: int, block: int
) -> int | None:
    """Heap bytes beyond what the live rows need (see the module doc); None without statistics."""
    if row_width is None or reltuples < 0:
        return None
    header = 23 + (columns + 7) // 8  # tuple header + null bitmap
    tuple_bytes = -(-(header + int(row_width)) // 8) * 8 + 4  # MAXALIGN, plus the line pointer
    usable = (block - 24) * fillfactor / 100  # minus the page header
    per_page = max(1, int(usable // tuple_bytes))
    expected_pages = -(-int(reltuples) // per_page)
    return max(0, relpages - expected_pages) * block


def index_name(fk: ForeignKey) -> str:
    """A name for the missing index: readable, and within PostgreSQL's 63 bytes."""
    name = f"idx_{fk.child}_{'_'.join(fk.child_columns)}"
    if len(name) > 63:
        name = f"{name[:54]}_{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return name


def create_index_sql(catalog: Catalog, fk: ForeignKey) -> str:
    columns = ", ".join(quote_ident(c) for c in fk.child_columns)
    table = f"{quote_ident(catalog.schema)}.{quote_ident(fk.child)}"
    return f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {quote_ident(index_name(fk))} ON {table} ({columns})"


def unindexed_foreign_keys(catalog: Catalog) -> list[ForeignKey]:
    """Foreign keys with no index led by their columns (deleting a parent row scans the child)."""
    # Cascading and SET NULL keys first: those are the ones a cleanup runs into.
    missing = [fk for fk in catalog.foreign_keys if catalog.supporting_index(fk) is None]
    return sorted(missing, key=lambda fk: (fk.on_delete not in ("cascade", "set null"), fk.child, fk.name))


def collect_stats(dsn: str) -> Report:
    """Sizes, tuples, bloat estimate and vacuum/analyze times per table, and the FKs without an
    index with the statement that creates it. Reads only catalogs and statistics views."""
    with connect(dsn, autocommit=True) as s:
        s.run("session settings", "SET statement_timeout = 30000")
        catalog = read_catalog(s)
        block = int(s.scalar("block size", _BLOCK_SQL))
        rows = s.rows("table stats", _TABLES_SQL, {"schema": catalog.schema})
    tables: list[dict[str, Any]] = []
    for (
        name,
        heap,
        index,
        toast,
        live,
        dead,
        last_vacuum,
        last_autovacuum,
        last_analyze,
        last_autoanalyze,
        relpages,
        reltuples,
        fillfactor,
        row_width,
        columns,
    ) in rows:
        bloat = estimate_bloat_bytes(
            relpages=relpages,
            reltuples=reltuples,
            row_width=row_width,
            columns=columns,
            fillfactor=fillfactor,
            block=block,
        )
        tables.append(
            {
                "table": name,
                "heap_bytes": heap,
                "index_bytes": index,
                "toast_bytes": toast,
                "total_bytes": heap + index + toast,
                "live_tuples": live,
                "dead_tuples": dead,
                "dead_ratio": round(dead / (live + dead), 4) if live + dead else 0.0,
                "bloat_bytes_estimate": bloat,
                "last_vacuum": _iso(last_vacuum),
                "last_autovacuum": _iso(last_autovacuum),
                "last_analyze": _iso(last_analyze),
                "last_autoanalyze": _iso(last_autoanalyze),
            }
        )
    missing = [
        {
            "constraint": fk.name,
            "table": fk.child,
            "columns": list(fk.child_columns),
            "references": fk.parent,
            "on_delete": fk.on_delete,
            "create_index": create_index_sql(catalog, fk),
        }
        for fk in unindexed_foreign_keys(catalog)
    ]
    return Report(
        action="db.stats",
        planned=False,
        ok=True,
        summary=f"{len(tables)} tables, {sum(t['total_bytes'] for t in tables):,} bytes, "
        f"{sum(t['dead_tuples'] for t in tables):,} dead tuples; "
        f"{len(missing)} foreign keys without an index",
        lines=_lines(tables, missing),
        data={
            "schema": catalog.schema,
            "tables": tables,
            "unindexed_foreign_keys": missing,
            "bloat_method": "heap pages beyond reltuples x avg row width (pg_stats) at the fillfactor",
        },
    )


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _lines(tables: list[Mapping[str, Any]], missing: list[Mapping[str, Any]]) -> list[str]:
    lines = []
    for t in tables[:25]:
        bloat = (
            "unknown (not analyzed)"
            if t["bloat_bytes_estimate"] is None
            else f"{t['bloat_bytes_estimate']:,}"
        )
        vacuumed = max(filter(None, (t["last_vacuum"], t["last_autovacuum"])), default="never")
        analyzed = max(filter(None, (t["last_analyze"], t["last_autoanalyze"])), default="never")
        lines.append(
            f"{t['table']}: heap {t['heap_bytes']:,} + index {t['index_bytes']:,}"
            f" + toast {t['toast_bytes']:,} bytes;"
            f" {t['live_tuples']:,} live, {t['dead_tuples']:,} dead; bloat ≈{bloat} bytes;"
            f" vacuumed {vacuumed}, analyzed {analyzed}"
        )
    for fk in missing:
        lines.append(
            f"FK {fk['constraint']} ({fk['table']} -> {fk['references']}) has no index: {fk['create_index']};"
        )
    return lines
