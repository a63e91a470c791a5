"""DSNs for the client tools (the password only in the environment) and the client version rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_ops.maintenance import backup_pg as pg
from airflow_ops.maintenance.backup_errors import BackupError

DSN = "postgresql+psycopg2://airflow:s3cr%40t-pw@db.internal:5433/airflow?sslmode=require"


def test_the_password_goes_to_the_environment_only() -> None:
    conninfo, env = pg.client_args(DSN)
    assert "s3cr@t-pw" not in conninfo and "password" not in conninfo
    assert pg.libpq_params(conninfo) == {
        "user": "airflow",
        "dbname": "airflow",
        "host": "db.internal",
        "port": "5433",
        "sslmode": "require",
    }
    assert env["PGPASSWORD"] == "s3cr@t-pw"
    assert pg.describe(DSN) == "airflow@db.internal:5433/airflow"
    assert pg.masked("FATAL: bad s3cr@t-pw here", DSN) == "FATAL: bad *** here"


def test_dsn_with_database_keeps_server_and_credentials() -> None:
    other = pg.dsn_with_database(DSN, "airflow_ops_verify_x")
    assert pg.libpq_params(other) == {**pg.libpq_params(DSN), "dbname": "airflow_ops_verify_x"}
    assert pg.database_name(other) == "airflow_ops_verify_x"


def test_an_invalid_dsn_is_reported_without_its_text() -> None:
    with pytest.raises(BackupError, match="not a valid libpq connection string") as info:
        pg.libpq_params("host=h password=hunter2 bogus_option=1")
    assert "hunter2" not in str(info.value)


def test_a_client_older_than_the_server_is_refused_with_how_to_fix() -> None:
    old = pg.PgTool("pg_dump", Path("/usr/lib/postgresql/14/bin/pg_dump"), "14.11", 14)
    with pytest.raises(BackupError) as info:
        pg.require_major(old, 15, "the server of airflow@db:5432/airflow")
    assert str(info.value) == (
        "pg_dump 14.11 (/usr/lib/postgresql/14/bin/pg_dump) is older than the server of "
        "airflow@db:5432/airflow (PostgreSQL 15) and cannot handle it: install the PostgreSQL 15 "
        "client (e.g. apt-get install postgresql-client-15) or point backup.pg_bin_dir at a newer one"
    )
    pg.require_major(old, 14, "x")  # same major: fine
    pg.require_major(old, 13, "x")  # newer client than server: fine


def test_find_tool_in_a_pinned_directory_that_lacks_it(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match=r"pg_dump not found in .* \(backup.pg_bin_dir\)"):
        pg.find_tool("pg_dump", at_least=15, bin_dir=tmp_path)


def test_find_tool_prefers_the_servers_major() -> None:
    tool = pg.find_tool("pg_dump", at_least=1)  # the installed client (this machine: 15)
    assert tool.major >= 1 and tool.path.is_file()
    assert pg.find_tool("pg_dump", at_least=tool.major).major == tool.major
