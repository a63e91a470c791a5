"""A private PostgreSQL cluster for the benchmark, with ``pg_stat_statements`` preloaded.

The shared server at 127.0.0.1:5432 cannot load ``pg_stat_statements`` without a restart that
would break everyone else's tests, and it carries other people's load. The benchmark therefore
runs its own cluster (``initdb`` + ``pg_ctl``, same PostgreSQL binaries, same untuned memory
settings as the shared server) so that DB time is what the server itself measured, per
statement. Its data directory is kept under the dev stack directory, so a generated large
history survives between runs; ``python -m bench.bench_poll --remove-cluster`` deletes it.

Airflow's schema gets in by ``pg_dump`` of the template that the real ``airflow db migrate``
built on the shared server (``airflow_ops.devstack.database.migrated_template``): the copy is
the migrated schema, byte for byte in its DDL.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import psycopg2.errors
from psycopg2 import sql

from airflow_ops.devstack.install import stack_dir

DEFAULT_PORT = int(os.environ.get("AIRFLOW_OPS_BENCH_PG_PORT", "55432"))

# Identical to the shared server's (Debian defaults: shared_buffers 128MB, work_mem 4MB), so
# neither our queries nor the baseline get a tuned server. Only WAL/checkpoint settings differ:
# they make bulk generation faster and do not affect reads.
_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "shared_buffers": "'128MB'",
    "work_mem": "'4MB'",
    "maintenance_work_mem": "'64MB'",
    "effective_cache_size": "'4GB'",
    "max_connections": "50",
    "shared_preload_libraries": "'pg_stat_statements'",
    "pg_stat_statements.max": "10000",
    # DB time = planning + execution; planning is real work the server does for every poll.
    "pg_stat_statements.track_planning": "on",
    "max_wal_size": "'2GB'",
    "checkpoint_timeout": "'30min'",
    "log_min_messages": "'warning'",
}


class ClusterError(RuntimeError):
    """The benchmark cluster could not be created, started or reached."""


def _pg_bindir() -> Path:
    """The newest installed PostgreSQL server binaries (Debian keeps them off PATH)."""
    configured = os.environ.get("AIRFLOW_OPS_BENCH_PG_BIN")
    if configured:
        return Path(configured)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        return Path(pg_ctl).parent
    raise ClusterError(
        "no PostgreSQL server binaries found (install postgresql, or set AIRFLOW_OPS_BENCH_PG_BIN)"
    )


def _as_cluster_owner(cmd: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root; the Debian package provides the postgres user.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@dataclass
class BenchCluster:
    datadir: Path
    port: int = DEFAULT_PORT
    host: str = "127.0.0.1"

    @classmethod
    def default(cls) -> BenchCluster:
        return cls(stack_dir() / "bench-pg", DEFAULT_PORT)

    # ------------------------------------------------------------ connection strings

    def dsn(self, dbname: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@{self.host}:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres", autocommit: bool = True) -> psycopg2.extensions.connection:
        conn = psycopg2.connect(self.dsn(dbname), connect_timeout=10)
        conn.autocommit = autocommit
        return conn

    # ------------------------------------------------------------ lifecycle

    @property
    def initialized(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def running(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1):
                pass
        except OSError:
            return False
        try:
            self.connect().close()
        except psycopg2.OperationalError:
            return False
        return True

    def ensure_running(self) -> bool:
        """Initialize and start the cluster as needed; True if this call started it."""
        if self.running():
            return False
        if not self.initialized:
            self._initdb()
        bindir = _pg_bindir()
        log = self.datadir / "server.log"
        proc = subprocess.run(
            _as_cluster_owner(
                [str(bindir / "pg_ctl"), "-D", str(self.datadir), "-l", str(log), "-w", "-t", "120", "start"]
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise ClusterError(f"pg_ctl start failed ({proc.stderr.strip()}):\n{tail}")
        deadline = time.monotonic() + 30
        while not self.running():
            if time.monotonic() > deadline:
                raise ClusterError(f"benchmark cluster on port {self.port} did not accept connections")
            time.sleep(0.2)
        with closing(self.connect()) as conn, conn.cursor() as cur:
            # The view lives in the admin database only; Airflow's databases stay untouched.
            cur.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        return True

    def stop(self) -> None:
        if not self.initialized:
            return
        subprocess.run(
            _as_cluster_owner(
                [str(_pg_bindir() / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop"]
            ),
            capture_output=True,
            check=False,
        )

    def remove(self) -> None:
        """Stop the cluster and delete its data directory (every benchmark database with it)."""
        self.stop()
        shutil.rmtree(self.datadir, ignore_errors=True)

    def _initdb(self) -> None:
        if self.datadir.exists() and any(self.datadir.iterdir()):
            raise ClusterError(f"{self.datadir} exists but is not a PostgreSQL data directory")
        self.datadir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.datadir, owner.pw_uid, owner.pw_gid)
        self.datadir.chmod(0o700)
        cmd = [
            str(_pg_bindir() / "initdb"),
            "-D",
            str(self.datadir),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",  # the shared server's collation: text sorts cost the same
        ]
        proc = subprocess.run(_as_cluster_owner(cmd), capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ClusterError(f"initdb failed:\n{proc.stdout}\n{proc.stderr}")
        settings = "".join(f"{k} = {v}\n" for k, v in _SETTINGS.items())
        conf = self.datadir / "postgresql.conf"
        conf.write_text(
            conf.read_text()
            + f"\n# airflow-ops benchmark cluster\nport = {self.port}\n"
            + f"unix_socket_directories = '{self.datadir}'\n"
            + settings
        )

    # ------------------------------------------------------------ databases

    def database_exists(self, name: str) -> bool:
        with closing(self.connect()) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            return cur.fetchone() is not None

    def create_database(self, name: str, template: str | None = None) -> str:
        stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            stmt = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(stmt)
        finally:
            conn.close()
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        finally:
            conn.close()

    def airflow_template(self, version: str) -> str:
        """A database in this cluster holding the schema ``airflow db migrate`` of ``version``
        built on the shared server; copied once, reused afterwards."""
        from airflow_ops.devstack import database as shared

        source = shared.migrated_template(version)
        if self.database_exists(source):
            return source
        building = source + "_building"
        self.drop_database(building)
        self.create_database(building)
        bindir = _pg_bindir()
        dump = subprocess.Popen(
            [str(bindir / "pg_dump"), "--no-owner", "--no-privileges", "-d", shared.dsn_for(source)],
            stdout=subprocess.PIPE,
        )
        restore = subprocess.run(
            [str(bindir / "psql"), "-q", "-X", "-v", "ON_ERROR_STOP=1", "-d", self.dsn(building)],
            stdin=dump.stdout,
            capture_output=True,
            text=True,
            check=False,
        )
        assert dump.stdout is not None
        dump.stdout.close()
        if dump.wait() != 0 or restore.returncode != 0:
            self.drop_database(building)
            raise ClusterError(
                f"copying {source} into the benchmark cluster failed:\n{restore.stderr[-2000:]}"
            )
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(
                    sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                        sql.Identifier(building), sql.Identifier(source)
                    )
                )
        finally:
            conn.close()
        return source


def wait_for_no_connections(cluster: BenchCluster, dbname: str, timeout: float = 30) -> None:
    """CREATE DATABASE ... TEMPLATE needs the template idle (autovacuum may be visiting it)."""
    deadline = time.monotonic() + timeout
    with closing(cluster.connect()) as conn, conn.cursor() as cur:
        while True:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (dbname,))
            row = cur.fetchone()
            if not row or row[0] == 0 or time.monotonic() > deadline:
                return
            time.sleep(0.2)
