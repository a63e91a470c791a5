"""The ops store's tables, as numbered migrations applied on open.

``ops_schema_version`` records which migrations ran, so a later release adds a migration (e.g.
the maintenance audit records) without touching existing data. Every table is prefixed ``ops_``
because the PostgreSQL store may share a database with other applications, even Airflow.
"""

from __future__ import annotations

import time

from .backend import Backend, StoreError, Tx

# Column types both SQLite and PostgreSQL accept with the same meaning; ``{serial_pk}`` differs.
# JSON is kept as TEXT so both backends store and return it byte for byte.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE ops_alert (
            fingerprint TEXT PRIMARY KEY,
            alert TEXT NOT NULL
        )""",
        """CREATE TABLE ops_nflog (
            receiver TEXT NOT NULL,
            group_key TEXT NOT NULL,
            firing TEXT NOT NULL,
            resolved TEXT NOT NULL,
            sent_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (receiver, group_key)
        )""",
        """CREATE TABLE ops_outbox (
            id {serial_pk},
            receiver TEXT NOT NULL,
            integration TEXT NOT NULL,
            group_key TEXT NOT NULL,
            payload TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at DOUBLE PRECISION NOT NULL,
            last_error TEXT,
            delivered_at DOUBLE PRECISION
        )""",
        "CREATE INDEX ops_outbox_due ON ops_outbox (next_attempt_at) WHERE delivered_at IS NULL",
        "CREATE INDEX ops_outbox_delivered ON ops_outbox (delivered_at) WHERE delivered_at IS NOT NULL",
        """CREATE TABLE ops_memo (
            integration TEXT NOT NULL,
            group_key TEXT NOT NULL,
            memo TEXT NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (integration, group_key)
        )""",
        """CREATE TABLE ops_silence (
            id TEXT PRIMARY KEY,
            matchers TEXT NOT NULL,
            starts_at DOUBLE PRECISION NOT NULL,
            ends_at DOUBLE PRECISION NOT NULL,
            created_by TEXT NOT NULL,
            comment TEXT NOT NULL,
            expired_at DOUBLE PRECISION
        )""",
    ),
    # The maintenance audit: one row per run of a maintenance action (a dry run included), written
    # when it starts and completed when it ends, so a run that died shows as never finished.
    2: (
        """CREATE TABLE ops_maintenance_run (
            id {serial_pk},
            deployment TEXT NOT NULL,
            task TEXT NOT NULL,
            action TEXT NOT NULL,
            trigger TEXT NOT NULL,
            planned INTEGER NOT NULL,
            started_at DOUBLE PRECISION NOT NULL,
            finished_at DOUBLE PRECISION,
            status TEXT NOT NULL,
            actor TEXT NOT NULL,
            rows_deleted BIGINT NOT NULL DEFAULT 0,
            files_deleted BIGINT NOT NULL DEFAULT 0,
            bytes_freed BIGINT NOT NULL DEFAULT 0,
            bytes_written BIGINT NOT NULL DEFAULT 0,
            report TEXT
        )""",
        "CREATE INDEX ops_maintenance_run_task ON ops_maintenance_run (deployment, task, started_at)",
    ),
}
LATEST = max(MIGRATIONS)


def migrate(backend: Backend) -> int:
    """Bring the schema up to LATEST; returns the version found before. Refuses a newer schema
    (written by a newer airflow-ops) rather than guess at it."""

    def apply(tx: Tx) -> int:
        tx.serialize("schema")
        tx.execute(
            "CREATE TABLE IF NOT EXISTS ops_schema_version ("
            "version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
        )
        found = tx.query("SELECT MAX(version) FROM ops_schema_version")[0][0] or 0
        if found > LATEST:
            raise StoreError(
                f"the ops store has schema version {found}, newer than this airflow-ops knows "
                f"({LATEST}); upgrade airflow-ops or point it at another store"
            )
        for version in range(found + 1, LATEST + 1):
            for ddl in MIGRATIONS[version]:
                tx.execute(ddl.format(serial_pk=backend.serial_pk))
            tx.execute(
                "INSERT INTO ops_schema_version (version, applied_at) VALUES (?, ?)", (version, time.time())
            )
        return found

    return backend.run(apply, write=True)
