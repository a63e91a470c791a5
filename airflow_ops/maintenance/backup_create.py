"""backup create: ``pg_dump -Fc`` of the metadata database with a manifest, written atomically.

``pg_dump`` runs on a snapshot exported by a transaction that first takes the same ACCESS SHARE
locks pg_dump takes, then counts the rows of every table and reads the optional export while
pg_dump dumps: the manifest's counts are exactly those of the dump. The dump is hashed as it
streams out of pg_dump (it is never read back). Everything is built in a locked ``.partial-``
directory that is renamed into place last (``backup_store``), so an interrupted create is never
listed as good; stale ``.partial-`` directories of dead creates are removed first.

pg_dump writes to a pipe, so its archive carries no data offsets: pg_restore reads it in order
(also in parallel with ``-j``, scanning for each table's data), which costs nothing for a full
restore.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg2.extensions

from airflow_ops.airflow.releases import airflow_release, read_alembic_revision, release_note
from airflow_ops.airflow.schema import UnsupportedSchema, detect_profile
from airflow_ops.config.backup import ExportMode, RetentionPolicy
from airflow_ops.config.base import Secret
from airflow_ops.maintenance import backup_pg as pg
from airflow_ops.maintenance import backup_store as store
from airflow_ops.maintenance.backup_crypto import Key, MultiFernet, fernet_option
from airflow_ops.maintenance.backup_errors import BackupError
from airflow_ops.maintenance.backup_export import MODE_TEXT, Export, build_export, read_rows
from airflow_ops.maintenance.backup_report import failed_report, size_text
from airflow_ops.maintenance.report import Progress, Report, no_progress

DEFAULT_STALE_AFTER = RetentionPolicy().stale_after
# pg_dump waits this long for its ACCESS SHARE locks (e.g. behind a running migration), then fails.
LOCK_WAIT_TIMEOUT_MS = 120_000
_PIPE_SIZE = 1 << 20
_READ_SIZE = 1 << 20


@dataclass(frozen=True)
class CreatePlan:
    dsn: Secret = field(repr=False)
    backup_dir: Path
    export: ExportMode
    pg_dump: pg.PgTool
    report: Report
    export_key: Secret | None = field(default=None, repr=False)
    airflow_fernet_key: Secret | None = field(default=None, repr=False)
    stale_after: float = DEFAULT_STALE_AFTER


def plan_create(
    dsn: str,
    backup_dir: Path,
    *,
    export: ExportMode | str = ExportMode.NONE,
    export_key: Key = None,
    airflow_fernet_key: Key = None,
    pg_bin_dir: Path | None = None,
    stale_after: float = DEFAULT_STALE_AFTER,
    now: datetime | None = None,
) -> CreatePlan:
    """Check everything a backup of ``dsn`` into ``backup_dir`` needs; change nothing.

    ``export_key`` (a Fernet key) is required for ``export="encrypted"``; ``airflow_fernet_key``
    (Airflow's ``[core] fernet_key``) is needed to re-encrypt values Airflow stored encrypted."""
    mode = _export_mode(export)
    export_fernet = fernet_option(export_key, "export_key")
    airflow_fernet = fernet_option(airflow_fernet_key, "airflow_fernet_key")
    if mode is ExportMode.ENCRYPTED and export_fernet is None:
        raise BackupError("export 'encrypted' needs an export key (export_key): a Fernet key of your own")
    if mode is not ExportMode.ENCRYPTED and export_fernet is not None:
        raise BackupError(f"export_key is only used with export 'encrypted' (export is {mode.value!r})")
    _check_writable(backup_dir)
    where = pg.describe(dsn)
    with contextlib.closing(pg.connect(dsn, autocommit=True)) as conn, conn.cursor() as cur:
        major, version = pg.server_version(conn)
        source = _inspect_airflow(conn, cur, where)
        tables = pg.user_tables(cur)
        size = pg.database_size(cur)
        export_doc = _build_export(cur, mode, export_fernet, airflow_fernet)
    tool = pg.find_tool("pg_dump", at_least=major, bin_dir=pg_bin_dir)
    pg.require_major(tool, major, f"the server of {where}")
    stale = store.stale_temporaries(backup_dir, now or datetime.now(timezone.utc), stale_after)

    lines = [
        f"database: {where} (PostgreSQL {version}, {size_text(size)}, {len(tables)} tables)",
        f"airflow: {release_note(source['revision'])}",
        f"client: {tool.name} {tool.version} ({tool.path})",
        f"into: {backup_dir}/<id> (built in {store.PARTIAL_PREFIX}<id>, renamed into place when complete)",
        f"export: {MODE_TEXT[mode]}" + (f" — {_export_counts(export_doc)}" if export_doc else ""),
        *(f"would remove stale temporary {p.name}" for p in stale),
    ]
    free = _free_bytes(backup_dir)
    if free is not None and free < size // 2:
        lines.append(f"warning: {size_text(free)} free in {backup_dir}; the database is {size_text(size)}")
    report = Report(
        action="backup.create",
        planned=True,
        ok=True,
        summary=f"would back up {where} ({size_text(size)}) into {backup_dir}; export: {mode.value}",
        lines=lines,
        data={
            "database": where,
            "server_version": version,
            "database_bytes": size,
            "tables": len(tables),
            "airflow_version": source["release"],
            "alembic_revision": source["revision"],
            "pg_dump": {"path": str(tool.path), "version": tool.version},
            "backup_dir": str(backup_dir),
            "export": mode.value,
            "export_counts": export_doc.counts if export_doc else {},
            "stale_temporaries": [p.name for p in stale],
        },
    )
    return CreatePlan(
        dsn=Secret(dsn),
        backup_dir=backup_dir,
        export=mode,
        pg_dump=tool,
        report=report,
        export_key=Secret(str(export_key)) if export_key else None,
        airflow_fernet_key=Secret(str(airflow_fernet_key)) if airflow_fernet_key else None,
        stale_after=stale_after,
    )


def execute_create(plan: CreatePlan, progress: Progress = no_progress) -> Report:
    """Write the backup planned; progress counts bytes of the dump (total unknown)."""
    started = datetime.now(timezone.utc)
    t0 = time.monotonic()
    dsn = plan.dsn.value
    where = pg.describe(dsn)
    removed = _remove_stale(plan.backup_dir, started, plan.stale_after)
    try:
        partial = store.PartialBackup(plan.backup_dir, started)
    except BackupError as e:
        return failed_report("backup.create", f"backup of {where} failed", [str(e)])
    try:
        manifest = _write_backup(plan, partial, started, progress)
        final = partial.commit()
    except Exception as e:
        partial.abort()
        reason = str(e) if isinstance(e, BackupError) else f"{type(e).__name__}: {pg.masked(str(e), dsn)}"
        return failed_report(
            "backup.create",
            f"backup of {where} failed; nothing was kept",
            [reason],
            lines=[f"removed the partial backup {partial.path.name}"],
        )
    except BaseException:
        partial.abort()  # interrupted (Ctrl-C): leave nothing behind, then stop
        raise
    seconds = time.monotonic() - t0
    size = sum(f["size"] for f in manifest["files"].values())
    rows = sum(manifest["tables"].values())
    export = manifest["export"]
    lines = [
        f"path: {final}",
        f"database: {where} (PostgreSQL {manifest['database']['server_version']}); "
        f"{len(manifest['tables'])} tables, {rows:,} rows (counted in the dump's snapshot)",
        f"airflow: {manifest['airflow']['version_note']}",
        f"pg_dump {manifest['pg_dump']['version']} ({manifest['pg_dump']['path']})",
        *(f"{name}: {size_text(f['size'])}, sha256 {f['sha256']}" for name, f in manifest["files"].items()),
        f"export: {MODE_TEXT[ExportMode(export['mode'])]}",
        *(f"removed stale temporary {name}" for name in removed),
    ]
    return Report(
        action="backup.create",
        planned=False,
        ok=True,
        summary=(
            f"backup {partial.id}: {size_text(size)} of {where} in {seconds:.1f}s; export: {export['mode']}"
        ),
        lines=lines,
        data={
            "backup_id": partial.id,
            "path": str(final),
            "size_bytes": size,
            "seconds": round(seconds, 3),
            "tables": len(manifest["tables"]),
            "rows": rows,
            "airflow_version": manifest["airflow"]["version"],
            "alembic_revision": manifest["airflow"]["alembic_revision"],
            "export": export,
            "files": manifest["files"],
            "removed_stale_temporaries": removed,
        },
        bytes_written=size,
    )


def _write_backup(
    plan: CreatePlan, partial: store.PartialBackup, started: datetime, progress: Progress
) -> dict[str, Any]:
    """Dump, export and manifest into the partial directory; returns the manifest."""
    dsn = plan.dsn.value
    conn = pg.connect(dsn)
    try:
        # The snapshot's transaction: it locks the tables as pg_dump does, hands its snapshot to
        # pg_dump, then counts rows while pg_dump dumps — both see exactly the same data.
        conn.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ, readonly=True)
        with conn.cursor() as cur:
            cur.execute("SELECT pg_export_snapshot()")
            snapshot = cur.fetchone()[0]
            cur.execute("SET LOCAL lock_timeout = %s", (f"{LOCK_WAIT_TIMEOUT_MS}ms",))
            # The counts run alongside pg_dump, which takes far longer: parallel workers would
            # only take cores from it.
            cur.execute("SET LOCAL max_parallel_workers_per_gather = 0")
            tables = pg.user_tables(cur)
            pg.lock_tables(cur, tables)
            _, server_version = pg.server_version(conn)
            source = _inspect_airflow(conn, cur, pg.describe(dsn))
            export_doc = _build_export(
                cur,
                plan.export,
                fernet_option(plan.export_key, "export_key"),
                fernet_option(plan.airflow_fernet_key, "airflow_fernet_key"),
            )
            database_bytes = pg.database_size(cur)
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="backup-count") as pool:
                counting = pool.submit(pg.count_rows, cur, tables)
                try:
                    dump_entry = _stream_dump(plan, snapshot, partial.path / store.DUMP, progress)
                except BaseException:
                    conn.cancel()  # stop the count; the partial backup is discarded anyway
                    raise
                counts = counting.result()
        conn.rollback()
    finally:
        conn.close()

    files = {store.DUMP: dump_entry}
    export_info: dict[str, Any] = {"mode": plan.export.value}
    if export_doc is not None:
        files[store.EXPORT] = store.write_file(
            partial.path / store.EXPORT, store.json_bytes(export_doc.document)
        )
        export_info.update(export_doc.counts, secret_values=export_doc.secrets)
    manifest = {
        "format": store.BACKUP_FORMAT,
        "id": partial.id,
        "started_at": started.isoformat(),
        "finished_at": datetime.now(timezone.utc).isoformat(),
        "database": {
            "server": pg.describe(dsn),
            "server_version": server_version,
            "size_bytes": database_bytes,
        },
        "pg_dump": {
            "version": plan.pg_dump.version,
            "major": plan.pg_dump.major,
            "path": str(plan.pg_dump.path),
            "format": "custom",
        },
        "airflow": {
            "major": source["major"],
            "version": source["release"],
            "version_note": release_note(source["revision"]),
            "alembic_revision": source["revision"],
        },
        "tables": counts,
        "files": files,
        "export": export_info,
    }
    store.write_file(partial.path / store.MANIFEST, store.json_bytes(manifest))
    return manifest


def _stream_dump(plan: CreatePlan, snapshot: str, path: Path, progress: Progress) -> dict[str, Any]:
    """Run pg_dump on ``snapshot`` into ``path``, hashing the bytes as they pass."""
    dsn = plan.dsn.value
    conninfo, env = pg.client_args(dsn)
    cmd = [
        str(plan.pg_dump.path),
        "--format=custom",
        f"--snapshot={snapshot}",
        f"--lock-wait-timeout={LOCK_WAIT_TIMEOUT_MS}",
        "--no-password",
        f"--dbname={conninfo}",
    ]
    writer = store.HashingWriter(path)
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, env=env)
        try:
            assert proc.stdout is not None
            fd = proc.stdout.fileno()
            with contextlib.suppress(OSError, AttributeError):
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)  # fewer, larger reads
            while chunk := os.read(fd, _READ_SIZE):
                writer.write(chunk)
                progress(writer.size, None, "bytes")
            code = proc.wait()
        except BaseException:
            writer.discard()
            raise
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()  # type: ignore[union-attr]
        if code != 0:
            writer.discard()
            stderr.seek(0)
            text = stderr.read().decode(errors="replace")
            raise BackupError(f"pg_dump failed with exit code {code}: {pg.stderr_tail(text, dsn)}")
    return writer.close()


def _inspect_airflow(conn: Any, cur: Any, where: str) -> dict[str, Any]:
    try:
        profile = detect_profile(conn)
    except UnsupportedSchema as e:
        raise BackupError(f"{where} is not an Airflow 2.x/3.x metadata database: {e}") from None
    revision = read_alembic_revision(cur)
    if revision is None:
        raise BackupError(f"{where} has no alembic_version table: not a migrated Airflow database")
    return {"major": profile.major, "revision": revision, "release": airflow_release(revision)}


def _build_export(
    cur: Any, mode: ExportMode, export_fernet: MultiFernet | None, airflow_fernet: MultiFernet | None
) -> Export | None:
    if mode is ExportMode.NONE:
        return None
    return build_export(read_rows(cur), mode, export_fernet=export_fernet, airflow_fernet=airflow_fernet)


def _export_counts(export: Export) -> str:
    counts = ", ".join(f"{n} {kind}" for kind, n in export.counts.items())
    verb = "encrypted" if export.document["secrets"] == ExportMode.ENCRYPTED.value else "left out"
    return f"{counts}; {export.secrets} secret values {verb}"


def _export_mode(value: ExportMode | str) -> ExportMode:
    try:
        return ExportMode(value)
    except ValueError:
        choices = ", ".join(m.value for m in ExportMode)
        raise BackupError(f"export: {str(value)!r} is not one of {choices}") from None


def _check_writable(backup_dir: Path) -> None:
    existing = backup_dir
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise BackupError(f"backup directory {backup_dir}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise BackupError(f"backup directory {backup_dir}: {existing} is not writable")


def _free_bytes(path: Path) -> int | None:
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    try:
        return shutil.disk_usage(existing).free
    except OSError:
        return None


def _remove_stale(backup_dir: Path, now: datetime, older_than: float) -> list[str]:
    removed = []
    for path in store.stale_temporaries(backup_dir, now, older_than):
        store.remove_tree(path)
        removed.append(path.name)
    return removed
