"""PostgreSQL for backups: DSNs handled without exposing the password, the pg_dump/pg_restore
client matching a server, row counts, and scratch databases.

The password of a DSN goes to the client tools in ``PGPASSWORD`` only; their command line gets
the rest of the connection parameters, so ``ps`` never shows a secret.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from psycopg2 import sql

from airflow_ops.config import sqlalchemy_to_libpq
from airflow_ops.maintenance.backup_errors import BackupError

APPLICATION_NAME = "airflow-ops backup"
_CONNECT_TIMEOUT = 10
_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")
# Connection parameters that are secrets: they go to the environment, never to argv or reports.
_SECRET_PARAMS = ("password",)


# ------------------------------------------------------------------ DSNs


def libpq_params(dsn: str) -> dict[str, str]:
    """The connection parameters of a libpq string, postgresql:// URI or SQLAlchemy URL."""
    try:
        return dict(psycopg2.extensions.parse_dsn(sqlalchemy_to_libpq(dsn)))
    except (psycopg2.ProgrammingError, ValueError):
        # The reason libpq gives may quote the input, and the input may hold a password.
        raise BackupError(
            "the database DSN is not a valid libpq connection string or postgresql:// URI"
        ) from None


def describe(dsn: str) -> str:
    """``user@host:port/dbname`` for messages and reports (no password, ever)."""
    p = libpq_params(dsn)
    user = f"{p['user']}@" if p.get("user") else ""
    host = p.get("host") or "localhost"
    port = f":{p['port']}" if p.get("port") else ""
    return f"{user}{host}{port}/{p.get('dbname') or '(default database)'}"


def dsn_with_database(dsn: str, dbname: str) -> str:
    """The same server and credentials, another database."""
    return psycopg2.extensions.make_dsn(**{**libpq_params(dsn), "dbname": dbname})


def database_name(dsn: str) -> str | None:
    return libpq_params(dsn).get("dbname")


def client_args(dsn: str) -> tuple[str, dict[str, str]]:
    """(``--dbname`` value without secrets, environment carrying the password) for pg_dump/pg_restore."""
    params = libpq_params(dsn)
    env = dict(os.environ)
    if params.get("password"):
        env["PGPASSWORD"] = params["password"]
    public = {k: v for k, v in params.items() if k not in _SECRET_PARAMS}
    return psycopg2.extensions.make_dsn(**public), env


def masked(text: str, dsn: str) -> str:
    """``text`` (e.g. a tool's stderr) with the DSN's password replaced."""
    password = libpq_params(dsn).get("password")
    return text.replace(password, "***") if password else text


def connect(dsn: str, *, autocommit: bool = False) -> psycopg2.extensions.connection:
    try:
        conn = psycopg2.connect(
            sqlalchemy_to_libpq(dsn), connect_timeout=_CONNECT_TIMEOUT, application_name=APPLICATION_NAME
        )
    except psycopg2.Error as e:
        reason = masked(str(e).strip(), dsn)
        raise BackupError(f"cannot connect to {describe(dsn)}: {reason}") from None
    conn.autocommit = autocommit
    return conn


# ------------------------------------------------------------------ client tools


@dataclass(frozen=True)
class PgTool:
    name: str  # pg_dump | pg_restore
    path: Path
    version: str  # "15.20"
    major: int


@functools.lru_cache(maxsize=64)
def tool_at(path: Path) -> PgTool | None:
    """The tool at ``path`` with its version, or None if it is not an executable PostgreSQL tool."""
    try:
        out = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except OSError:
        return None
    m = _VERSION.search(out)
    if not m:
        return None
    major = int(m.group(1))
    return PgTool(path.name, path, f"{m.group(1)}.{m.group(2) or 0}", major)


def find_tool(name: str, *, at_least: int, bin_dir: Path | None = None) -> PgTool:
    """The ``name`` client to use for a server (or archive) of major version ``at_least``: the
    same major if installed, else the oldest newer one; ``bin_dir`` pins a directory.
    BackupError if there is none, or only older ones."""
    if bin_dir is not None:
        candidates = [bin_dir / name]
    else:
        # Debian/Ubuntu keep every installed major's client side by side, off PATH.
        candidates = [Path(p) for p in glob.glob(f"/usr/lib/postgresql/*/bin/{name}")]
        on_path = shutil.which(name)
        if on_path:
            candidates.append(Path(on_path))
    tools = [t for t in (tool_at(p) for p in candidates if p.is_file()) if t is not None]
    if not tools:
        where = f"in {bin_dir} (backup.pg_bin_dir)" if bin_dir else "on PATH or in /usr/lib/postgresql/*/bin"
        raise BackupError(
            f"{name} not found {where}: install the PostgreSQL {at_least} client "
            f"(e.g. apt-get install postgresql-client-{at_least}) or set backup.pg_bin_dir"
        )
    usable = sorted((t for t in tools if t.major >= at_least), key=lambda t: t.major)
    tool = usable[0] if usable else max(tools, key=lambda t: t.major)
    return tool


def require_major(tool: PgTool, needed: int, what: str) -> None:
    """BackupError unless ``tool`` is at least major ``needed`` (``what`` names what needs it)."""
    if tool.major < needed:
        raise BackupError(
            f"{tool.name} {tool.version} ({tool.path}) is older than {what} (PostgreSQL {needed}) and "
            f"cannot handle it: install the PostgreSQL {needed} client "
            f"(e.g. apt-get install postgresql-client-{needed}) or point backup.pg_bin_dir at a newer one"
        )


def server_version(conn: psycopg2.extensions.connection) -> tuple[int, str]:
    """(major, "15.20") of the server behind ``conn``."""
    with conn.cursor() as cur:
        cur.execute("SELECT current_setting('server_version_num')::int, current_setting('server_version')")
        num, text = cur.fetchone()
    return num // 10000, str(text).split()[0]


def run_tool(cmd: Sequence[str], env: Mapping[str, str], dsn: str) -> None:
    """Run a client tool to completion; BackupError with the tail of its (masked) stderr if it fails."""
    proc = subprocess.run(list(cmd), env=dict(env), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BackupError(
            f"{Path(cmd[0]).name} failed with exit code {proc.returncode}: {stderr_tail(proc.stderr, dsn)}"
        )


def stderr_tail(text: str, dsn: str, lines: int = 15) -> str:
    tail = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return masked("\n".join(tail), dsn) or "(no message)"


# ------------------------------------------------------------------ what a database holds

# Ordinary tables pg_dump dumps the data of: every schema but the system ones, no temporary
# tables, no tables that belong to an extension.
_TABLES_SQL = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relpersistence <> 't'
  AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""


def user_tables(cur: Any) -> list[tuple[str, str]]:
    """(schema, table) of every table a dump holds rows of."""
    cur.execute(_TABLES_SQL)
    return [(schema, table) for schema, table in cur.fetchall()]


def qualified(table: tuple[str, str]) -> str:
    return f"{table[0]}.{table[1]}"


def lock_tables(cur: Any, tables: Sequence[tuple[str, str]]) -> None:
    """ACCESS SHARE on every table, as pg_dump takes it: no DDL can change them until the end of
    the transaction, and counting never queues behind a waiting DDL statement."""
    if tables:
        names = sql.SQL(", ").join(sql.Identifier(*t) for t in tables)
        cur.execute(sql.SQL("LOCK TABLE {} IN ACCESS SHARE MODE").format(names))


def count_rows(cur: Any, tables: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Exact row count of each table, in the cursor's transaction snapshot."""
    counts = {}
    for table in tables:
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(*table)))
        counts[qualified(table)] = int(cur.fetchone()[0])
    return counts


def database_size(cur: Any) -> int:
    cur.execute("SELECT pg_database_size(current_database())")
    return int(cur.fetchone()[0])


def other_sessions(cur: Any) -> list[str]:
    """application_name (or client address) of every other session on the current database."""
    cur.execute(
        "SELECT coalesce(nullif(application_name, ''), client_addr::text, 'local') FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
    )
    return sorted(str(name) for (name,) in cur.fetchall())


# ------------------------------------------------------------------ scratch databases


@contextlib.contextmanager
def scratch_database(server_dsn: str, prefix: str) -> Iterator[str]:
    """A new, uniquely named database on the server of ``server_dsn``, dropped on exit whatever
    happened (only this one: its name is unique to this call). Yields its DSN."""
    name = f"{prefix}_{secrets.token_hex(4)}"[:63]
    admin = connect(server_dsn, autocommit=True)
    try:
        with admin.cursor() as cur:
            try:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except psycopg2.Error as e:
                raise BackupError(
                    f"cannot create a scratch database on {describe(server_dsn)}: "
                    f"{masked(str(e).strip(), server_dsn)}"
                    " (the user needs CREATEDB; or set backup.scratch_dsn)"
                ) from None
        try:
            yield dsn_with_database(server_dsn, name)
        finally:
            drop_database(admin, name)
    finally:
        admin.close()


def drop_database(admin: psycopg2.extensions.connection, name: str) -> None:
    """Drop ``name`` even while sessions (e.g. a killed pg_restore's) are still connected to it."""
    with admin.cursor() as cur:
        if admin.server_version >= 130000:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            return
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
