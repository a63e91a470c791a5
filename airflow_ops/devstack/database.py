"""Throwaway PostgreSQL databases for the local Airflow stack and the tests.

Every stack gets its own database, cloned from a template that the real Airflow release migrated
once (``CREATE DATABASE ... TEMPLATE`` takes about a second; ``airflow db migrate`` takes tens of
seconds). Templates are keyed by version and constraints hash, so they are reused across test
sessions and rebuilt only when the package set changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import psycopg2.errors
from psycopg2 import sql

from airflow_ops.devstack.install import constraints_hash, ensure_airflow

ADMIN_DSN = os.environ.get("AIRFLOW_OPS_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")

# CREATE DATABASE ... TEMPLATE fails while anything is connected to the template; such a
# connection is transient (e.g. autovacuum), so creating retries for this long.
_TEMPLATE_BUSY_TIMEOUT = 30.0
_MIGRATE_TIMEOUT = 900


class DatabaseError(RuntimeError):
    """A devstack database operation failed; the message says which and how to fix it."""


def dsn_for(name: str) -> str:
    """libpq URI of database ``name`` on the server of ADMIN_DSN (same host, port, user)."""
    parts = urlsplit(ADMIN_DSN)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def create_database(name: str, template: str | None = None) -> str:
    """Create database ``name`` (optionally as a copy of ``template``); returns its DSN."""
    stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        stmt = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(template)
        )
    deadline = time.monotonic() + _TEMPLATE_BUSY_TIMEOUT
    with _admin() as conn, conn.cursor() as cur:
        while True:
            try:
                cur.execute(stmt)
                break
            except psycopg2.errors.ObjectInUse:
                if not template or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    return dsn_for(name)


def drop_database(name: str) -> None:
    """Drop database ``name`` after terminating its connections; no error if it does not exist."""
    with _admin() as conn, conn.cursor() as cur:
        # Templates refuse connections and cannot be dropped while marked as templates.
        cur.execute("SELECT datistemplate FROM pg_database WHERE datname = %s", (name,))
        row = cur.fetchone()
        if row is None:
            return
        if row[0]:
            cur.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false").format(sql.Identifier(name)))
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def database_exists(name: str) -> bool:
    with _admin() as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        return cur.fetchone() is not None


def template_name(version: str) -> str:
    """Name of the migrated template for ``version`` and the current constraints file."""
    return f"airflow_ops_tpl_{version.replace('.', '_')}_{constraints_hash(version) or 'unpinned'}"


def migrated_template(version: str) -> str:
    """Name of a template database migrated by the real Airflow ``version`` (``airflow db migrate``
    in its venv). Built once and reused; concurrent callers serialize on an advisory lock, and the
    database gets its final name only after the migration succeeded."""
    venv = ensure_airflow(version)
    name = template_name(version)
    tmp_name = name + "_building"
    lock_key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
    with _admin() as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (lock_key,))
        try:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is not None:
                return name
            # A leftover from a crashed build holds a half-migrated schema.
            drop_database(tmp_name)
            create_database(tmp_name)
            try:
                _migrate(venv, version, dsn_for(tmp_name))
            except BaseException:
                drop_database(tmp_name)
                raise
            cur.execute(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                    sql.Identifier(tmp_name), sql.Identifier(name)
                )
            )
            # IS_TEMPLATE documents intent and makes accidental DROP fail; clones still work.
            cur.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true").format(sql.Identifier(name)))
            return name
        finally:
            cur.execute("SELECT pg_advisory_unlock(%s)", (lock_key,))


def _migrate(venv: Path, version: str, dsn: str) -> None:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="airflow-ops-migrate-") as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(
            AIRFLOW_HOME=home,
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=dsn,
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            PATH=f"{venv}/bin:{env.get('PATH', '/usr/bin:/bin')}",
        )
        cmd = [str(venv / "bin" / "airflow"), "db", "migrate"]
        proc = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=_MIGRATE_TIMEOUT, check=False
        )
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise DatabaseError(
            f"`{' '.join(cmd)}` (Airflow {version}) failed with exit code {proc.returncode}:\n{tail}"
        )
    elapsed = time.monotonic() - started
    print(
        f"[airflow-ops devstack] migrated template for Airflow {version} in {elapsed:.1f}s", file=sys.stderr
    )


@contextmanager
def _admin() -> Iterator[psycopg2.extensions.connection]:
    """Autocommit connection to the admin database (CREATE/DROP DATABASE cannot run in a transaction)."""
    try:
        conn = psycopg2.connect(ADMIN_DSN, connect_timeout=10)
    except psycopg2.OperationalError as exc:
        raise DatabaseError(
            f"cannot connect to PostgreSQL at {ADMIN_DSN} ({str(exc).strip()}). Start it "
            "(e.g. `service postgresql start`) or point AIRFLOW_OPS_TEST_PG_ADMIN at a server "
            "where this user may create databases."
        ) from exc
    conn.autocommit = True
    try:
        yield conn
    finally:
        conn.close()
