"""What the live database's catalog says about Airflow's tables: primary keys, foreign keys with
their ON DELETE actions, indexes, user triggers and row estimates.

db clean follows foreign keys from here rather than from a hand-kept list, so a table or a
cascade added by a later Airflow release is handled (and counted) without a code change; db stats
uses the same foreign keys to find the ones without a supporting index.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .db_connection import Session

# pg_constraint.confdeltype -> the words of CREATE TABLE.
_ON_DELETE = {"a": "no action", "r": "restrict", "c": "cascade", "n": "set null", "d": "set default"}

# Airflow's schema is where dag_run resolves (search_path aware); a database without Airflow
# (db stats works on any) falls back to the current schema.
_SCHEMA_SQL = """
SELECT COALESCE(
    (SELECT relnamespace FROM pg_class WHERE oid = to_regclass('dag_run')),
    (SELECT oid FROM pg_namespace WHERE nspname = current_schema()))::oid,
    COALESCE((SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.oid = to_regclass('dag_run')), current_schema())
"""

_TABLES_SQL = """
SELECT c.relname, GREATEST(c.reltuples, 0)::bigint,
       EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal)
FROM pg_class c
WHERE c.relnamespace = %(ns)s AND c.relkind IN ('r', 'p')
"""

_COLUMNS_SQL = """
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
WHERE c.relnamespace = %(ns)s AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY c.relname, a.attnum
"""

_PRIMARY_KEYS_SQL = """
SELECT c.relname, a.attname
FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid
CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, pos)
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indisprimary AND c.relnamespace = %(ns)s
ORDER BY c.relname, k.pos
"""

_FOREIGN_KEYS_SQL = """
SELECT con.conname, child.relname,
       ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(n, pos)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.pos),
       parent.relname,
       ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(n, pos)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.pos),
       con.confdeltype
FROM pg_constraint con
JOIN pg_class child ON child.oid = con.conrelid
JOIN pg_class parent ON parent.oid = con.confrelid
WHERE con.contype = 'f' AND child.relnamespace = %(ns)s AND parent.relnamespace = %(ns)s
ORDER BY child.relname, con.conname
"""

# Plain (non-partial, column-only) indexes as column lists: what can support an FK lookup.
_INDEXES_SQL = """
SELECT c.relname, ic.relname,
       ARRAY(SELECT a.attname FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(n, pos)
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n ORDER BY k.pos)
FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_class ic ON ic.oid = i.indexrelid
WHERE c.relnamespace = %(ns)s AND i.indpred IS NULL AND i.indisvalid
  AND NOT (0 = ANY (i.indkey::int2[]))
"""


@dataclass(frozen=True)
class ForeignKey:
    name: str
    child: str
    child_columns: tuple[str, ...]
    parent: str
    parent_columns: tuple[str, ...]
    on_delete: str  # "cascade", "set null", "set default", "restrict" or "no action"

    @property
    def blocks_delete(self) -> bool:
        """A referenced parent row cannot be deleted (the statement would fail)."""
        return self.on_delete in ("restrict", "no action")


@dataclass(frozen=True)
class TableInfo:
    name: str
    primary_key: tuple[str, ...]
    column_types: Mapping[str, str]  # column -> SQL type, in table order
    estimated_rows: int  # pg_class.reltuples: what ANALYZE last saw
    has_user_triggers: bool

    def type_of(self, column: str) -> str:
        return self.column_types[column]


@dataclass(frozen=True)
class Catalog:
    schema: str
    tables: Mapping[str, TableInfo]
    foreign_keys: tuple[ForeignKey, ...]
    indexes: Mapping[str, tuple[tuple[str, tuple[str, ...]], ...]]  # table -> (index, columns)

    def referencing(self, table: str) -> tuple[ForeignKey, ...]:
        """Foreign keys of other tables (or of this one) that point at ``table``."""
        return tuple(fk for fk in self.foreign_keys if fk.parent == table)

    def has(self, table: str) -> bool:
        return table in self.tables

    def supporting_index(self, fk: ForeignKey) -> str | None:
        """An index whose leading columns are the FK's columns (in any order), or None: then every
        delete of a parent row scans the child table."""
        wanted = set(fk.child_columns)
        for name, columns in self.indexes.get(fk.child, ()):
            if set(columns[: len(wanted)]) == wanted:
                return name
        return None


def read_catalog(session: Session) -> Catalog:
    """Read the catalog of Airflow's schema (the one holding dag_run, else the current one)."""
    ns, schema = session.rows("read catalog", _SCHEMA_SQL)[0]
    params = {"ns": ns}
    types: dict[str, dict[str, str]] = {}
    for table, column, sql_type in session.rows("read catalog", _COLUMNS_SQL, params):
        types.setdefault(table, {})[column] = sql_type
    pks: dict[str, list[str]] = {}
    for table, column in session.rows("read catalog", _PRIMARY_KEYS_SQL, params):
        pks.setdefault(table, []).append(column)
    tables = {
        name: TableInfo(name, tuple(pks.get(name, ())), types.get(name, {}), int(rows), bool(triggers))
        for name, rows, triggers in session.rows("read catalog", _TABLES_SQL, params)
    }
    fks = tuple(
        ForeignKey(name, child, tuple(ccols), parent, tuple(pcols), _ON_DELETE[action])
        for name, child, ccols, parent, pcols, action in session.rows(
            "read catalog", _FOREIGN_KEYS_SQL, params
        )
    )
    indexes: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    for table, index, columns in session.rows("read catalog", _INDEXES_SQL, params):
        indexes.setdefault(table, []).append((index, tuple(columns)))
    return Catalog(schema, tables, fks, {t: tuple(v) for t, v in indexes.items()})
