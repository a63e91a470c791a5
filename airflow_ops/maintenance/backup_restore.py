"""Restoring a backup: into a scratch database to verify it, or into a target database.

Both restore in one transaction with ``--no-owner --no-acl`` (the objects belong to the
connecting user; grants to roles that may not exist on the target are not replayed) and
``--exit-on-error``, then compare the database with the manifest: the alembic revision and the
row count of every table. Verify also checks, given Airflow's Fernet key, that every value Airflow
stored encrypted decrypts, and records its result in the backup (``verified.json``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from airflow_ops.airflow.releases import read_alembic_revision, release_text
from airflow_ops.config.base import Secret
from airflow_ops.maintenance import backup_pg as pg
from airflow_ops.maintenance import backup_store as store
from airflow_ops.maintenance.backup_airflow import encrypted_values, undecryptable
from airflow_ops.maintenance.backup_crypto import Key, MultiFernet, fernet_option
from airflow_ops.maintenance.backup_errors import BackupError
from airflow_ops.maintenance.backup_listing import find_backup
from airflow_ops.maintenance.backup_report import failed_report, size_text
from airflow_ops.maintenance.backup_store import BackupInfo
from airflow_ops.maintenance.report import Progress, Report, no_progress

_MAX_COUNT_ERRORS = 20


def verify_backup(
    backup_dir: Path,
    backup_id: str,
    *,
    scratch_dsn: str,
    airflow_fernet_key: Key = None,
    pg_bin_dir: Path | None = None,
    progress: Progress = no_progress,
) -> Report:
    """Check a backup end to end by restoring it into a scratch database on the server of
    ``scratch_dsn`` (created and always dropped). The result is recorded in the backup unless
    the check itself could not run (then the backup's record is left as it was)."""
    t0 = time.monotonic()
    info = find_backup(backup_dir, backup_id)
    fernet = fernet_option(airflow_fernet_key, "airflow_fernet_key")
    checks: dict[str, str] = {}
    lines: list[str] = []
    errors: list[str] = []
    if not info.good:
        errors.append(f"backup {backup_id} is {info.status}: {info.problem}")
    else:
        errors += store.file_problems(info.path, info.manifest, progress=progress)  # type: ignore[arg-type]
        checks["checksums"] = "failed" if errors else "ok"
    if not errors:
        manifest: dict[str, Any] = info.manifest  # type: ignore[assignment]
        try:
            tool = _restore_tool(manifest, pg_bin_dir)
            with pg.scratch_database(scratch_dsn, f"airflow_ops_verify_{backup_id.lower()}") as scratch:
                started = time.monotonic()
                try:
                    _pg_restore(tool, info.path / store.DUMP, scratch, clean=False)
                except BackupError as e:
                    checks["restore"] = "failed"
                    errors.append(f"restore into a scratch database failed: {e}")
                else:
                    checks["restore"] = "ok"
                    lines.append(
                        f"restored into scratch database {pg.database_name(scratch)} on "
                        f"{pg.describe(scratch_dsn)} in {time.monotonic() - started:.1f}s"
                        " (dropped afterwards)"
                    )
                    found, fernet_check = _check_restored(scratch, manifest, fernet)
                    errors += found.errors
                    lines += found.lines
                    checks.update(found.checks)
                    checks["fernet"] = fernet_check.status
                    lines.append(f"fernet: {fernet_check.text}")
                    errors += fernet_check.errors
        except BackupError as e:
            # The check could not run (no scratch server, no pg_restore): nothing is known about
            # the backup, so its verification record is left as it was.
            return failed_report(
                "backup.verify", f"could not verify backup {backup_id}", [str(e)], lines=lines
            )
    ok = not errors
    verified_at = datetime.now(timezone.utc)
    if info.path.is_dir():
        store.record_verification(
            info.path,
            {
                "ok": ok,
                "backup_id": backup_id,
                "verified_at": verified_at.isoformat(),
                "checks": checks,
                "errors": errors,
                "fernet_key_given": fernet is not None,
            },
        )
    seconds = time.monotonic() - t0
    summary = (
        f"backup {backup_id} verified in {seconds:.1f}s: "
        "checksums, restore, row counts and alembic revision match"
        if ok
        else f"backup {backup_id} FAILED verification: {errors[0]}"
    )
    return Report(
        action="backup.verify",
        planned=False,
        ok=ok,
        summary=summary,
        lines=lines,
        data={
            "backup_id": backup_id,
            "checks": checks,
            "verified_at": verified_at.isoformat(),
            "seconds": seconds,
        },
        errors=errors,
    )


@dataclass
class _Findings:
    lines: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    checks: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _FernetCheck:
    status: str  # ok | failed | not checked | nothing encrypted
    text: str
    errors: list[str] = field(default_factory=list)


def _check_restored(
    dsn: str, manifest: Mapping[str, Any], fernet: MultiFernet | None, *, other_tables: bool = False
) -> tuple[_Findings, _FernetCheck]:
    """Compare a restored database with the manifest; check the Fernet key against it.
    ``other_tables``: the target may hold tables that are not in the backup (a forced restore)."""
    found = _Findings()
    with contextlib.closing(pg.connect(dsn)) as conn, conn.cursor() as cur:
        revision = read_alembic_revision(cur)
        counts = pg.count_rows(cur, pg.user_tables(cur))
        if other_tables:
            extra = sorted(set(counts) - set(manifest["tables"]))
            counts = {t: n for t, n in counts.items() if t in manifest["tables"]}
            if extra:
                found.lines.append(f"left in place, not in the backup: {', '.join(extra)}")
        values = encrypted_values(cur) if revision is not None else []
        conn.rollback()
    expected_rev = manifest["airflow"]["alembic_revision"]
    if revision == expected_rev:
        found.checks["alembic_revision"] = "ok"
        found.lines.append(f"alembic revision {revision} (as in the manifest)")
    else:
        found.checks["alembic_revision"] = "failed"
        found.errors.append(f"alembic revision {revision} restored, the manifest says {expected_rev}")
    mismatches = _count_mismatches(manifest["tables"], counts)
    found.checks["row_counts"] = "failed" if mismatches else "ok"
    found.errors += mismatches
    if not mismatches:
        rows = sum(manifest["tables"].values())
        found.lines.append(f"row counts of all {len(counts)} tables match the manifest ({rows:,} rows)")
    if fernet is None:
        note = f"{len(values)} encrypted values" if values else "no encrypted values"
        return found, _FernetCheck("not checked", f"not checked: no Airflow Fernet key given ({note} stored)")
    if not values:
        return found, _FernetCheck("nothing encrypted", "no connection or variable is stored encrypted")
    failed = undecryptable(values, fernet)
    if failed:
        return found, _FernetCheck(
            "failed",
            f"{len(failed)} of {len(values)} encrypted values do not decrypt",
            [
                f"{failed[0].label} does not decrypt with the given Airflow Fernet key"
                + (f" (nor do {len(failed) - 1} more)" if len(failed) > 1 else "")
                + ": restored with this key, Airflow could not read its connections and variables"
            ],
        )
    conns = sorted({v.name for v in values if v.kind == "connection"})
    return found, _FernetCheck(
        "ok",
        f"all {len(values)} encrypted values decrypt with the given key"
        f" (connections: {', '.join(conns) or '-'})",
    )


def _count_mismatches(expected: Mapping[str, int], actual: Mapping[str, int]) -> list[str]:
    problems = []
    for table in sorted(set(expected) | set(actual)):
        want, got = expected.get(table), actual.get(table)
        if want is None:
            problems.append(f"{table}: restored but not in the manifest")
        elif got is None:
            problems.append(f"{table}: in the manifest ({want:,} rows) but not restored")
        elif want != got:
            problems.append(f"{table}: {got:,} rows restored, the manifest says {want:,}")
    if len(problems) > _MAX_COUNT_ERRORS:
        problems[_MAX_COUNT_ERRORS:] = [f"... and {len(problems) - _MAX_COUNT_ERRORS} more tables differ"]
    return problems


def _restore_tool(manifest: Mapping[str, Any], pg_bin_dir: Path | None) -> pg.PgTool:
    archive_major = int(manifest["pg_dump"]["major"])
    tool = pg.find_tool("pg_restore", at_least=archive_major, bin_dir=pg_bin_dir)
    pg.require_major(tool, archive_major, f"the backup's pg_dump {manifest['pg_dump']['version']}")
    return tool


def _pg_restore(tool: pg.PgTool, dump: Path, target_dsn: str, *, clean: bool) -> None:
    """Restore in one transaction: on any error the target is left as it was."""
    conninfo, env = pg.client_args(target_dsn)
    cmd = [
        str(tool.path),
        "--no-owner",
        "--no-acl",
        "--exit-on-error",
        "--single-transaction",
        "--no-password",
        f"--dbname={conninfo}",
    ]
    if clean:
        cmd += ["--clean", "--if-exists"]
    pg.run_tool([*cmd, str(dump)], env, target_dsn)


@dataclass(frozen=True)
class RestorePlan:
    backup: BackupInfo
    target_dsn: Secret = field(repr=False)
    force: bool
    clean: bool  # drop the backup's objects in the target first (forced onto a non-empty target)
    pg_restore: pg.PgTool
    report: Report


def plan_restore(
    backup_dir: Path,
    backup_id: str,
    target_dsn: str,
    *,
    force: bool = False,
    pg_bin_dir: Path | None = None,
) -> RestorePlan:
    """Look at the backup and the target database; refuse (``report.ok`` false) a target that
    holds any table or another alembic revision, unless ``force``."""
    info = find_backup(backup_dir, backup_id)
    if not info.good:
        raise BackupError(f"backup {backup_id} is {info.status}: {info.problem}")
    manifest: dict[str, Any] = info.manifest  # type: ignore[assignment]
    where = pg.describe(target_dsn)
    with contextlib.closing(pg.connect(target_dsn, autocommit=True)) as conn, conn.cursor() as cur:
        _, target_version = pg.server_version(conn)
        tables = [pg.qualified(t) for t in pg.user_tables(cur)]
        revision = read_alembic_revision(cur)
        sessions = pg.other_sessions(cur)
    tool = _restore_tool(manifest, pg_bin_dir)
    backup_rev = manifest["airflow"]["alembic_revision"]
    refusals = []
    if tables:
        refusals.append(
            f"target {where} is not empty: it holds {len(tables)} tables ({', '.join(tables[:5])}"
            f"{', ...' if len(tables) > 5 else ''})"
        )
    if revision is not None and revision != backup_rev:
        refusals.append(
            f"target {where} has alembic revision {revision} ({release_text(revision)}), "
            f"the backup {backup_rev} ({release_text(backup_rev)})"
        )
    clean = bool(tables) and force
    lines = [
        f"backup: {info.id} ({size_text(info.size_bytes)}, Airflow {info.airflow_version}, "
        f"alembic {backup_rev}, "
        f"{'verified ' + info.verified_at.isoformat() if info.verified_at else 'NOT verified'})",
        f"target: {where} (PostgreSQL {target_version}): "
        + (f"{len(tables)} tables, alembic {revision}" if tables else "empty"),
        f"client: {tool.name} {tool.version} ({tool.path})",
        "one transaction: a failed restore changes nothing",
        "ownership and grants are not restored: objects will belong to the connecting user",
    ]
    if clean:
        lines.append("forced: the backup's objects are dropped from the target first (--clean --if-exists)")
    if sessions:
        lines.append(
            f"warning: {len(sessions)} other sessions on the target"
            f" ({', '.join(sorted(set(sessions))[:5])}); stop Airflow's components before restoring"
        )
    if info.verify_failed:
        lines.append(f"warning: the last verify of this backup failed: {info.verify_failed}")
    errors = [] if force else refusals
    if force and refusals:
        lines += [f"forced past: {r}" for r in refusals]
    summary = (
        f"would restore backup {info.id} into {where}" + (" (forced)" if force and refusals else "")
        if not errors
        else f"refusing to restore backup {info.id} into {where} (use force to override)"
    )
    report = Report(
        action="backup.restore",
        planned=True,
        ok=not errors,
        summary=summary,
        lines=lines,
        errors=[f"{r}; use force to restore anyway" for r in errors],
        data={
            "backup_id": info.id,
            "target": where,
            "target_tables": len(tables),
            "target_alembic_revision": revision,
            "backup_alembic_revision": backup_rev,
            "force": force,
            "clean": clean,
            "other_sessions": len(sessions),
        },
    )
    return RestorePlan(info, Secret(target_dsn), force, clean, tool, report)


def execute_restore(plan: RestorePlan, progress: Progress = no_progress) -> Report:
    """Restore as planned, then check the target against the manifest. A refused plan changes
    nothing and returns the refusal."""
    if not plan.report.ok:
        return Report(
            action="backup.restore",
            planned=False,
            ok=False,
            summary=plan.report.summary + ": nothing done",
            lines=plan.report.lines,
            errors=plan.report.errors,
            data=plan.report.data,
        )
    t0 = time.monotonic()
    dsn = plan.target_dsn.value
    where = pg.describe(dsn)
    info = plan.backup
    manifest: dict[str, Any] = info.manifest  # type: ignore[assignment]
    lines: list[str] = []
    try:
        if not plan.force:
            # The target may have changed since the plan was made.
            with contextlib.closing(pg.connect(dsn, autocommit=True)) as conn, conn.cursor() as cur:
                if pg.user_tables(cur):
                    raise BackupError(f"target {where} is no longer empty; nothing was restored")
        problems = store.file_problems(info.path, manifest, progress=progress)
        if problems:
            raise BackupError(f"backup {info.id} is damaged, nothing was restored: {'; '.join(problems)}")
        lines.append("checksums match the manifest")
        _pg_restore(plan.pg_restore, info.path / store.DUMP, dsn, clean=plan.clean)
    except BackupError as e:
        return failed_report(
            "backup.restore", f"restore of backup {info.id} into {where} failed", [str(e)], lines=lines
        )
    seconds = time.monotonic() - t0
    lines.append(f"pg_restore {plan.pg_restore.version}: one transaction, {seconds:.1f}s")
    if plan.clean:
        lines.append("the backup's objects were dropped and recreated in the target (forced)")
    try:
        found, _ = _check_restored(dsn, manifest, None, other_tables=plan.clean)
    except BackupError as e:
        found = _Findings(errors=[f"restored, but the check against the manifest could not run: {e}"])
    lines += found.lines
    ok = not found.errors
    return Report(
        action="backup.restore",
        planned=False,
        ok=ok,
        summary=(
            f"restored backup {info.id} into {where} in {seconds:.1f}s"
            + (" (forced onto a non-empty target)" if plan.clean else " (target was empty)")
            if ok
            else f"restored backup {info.id} into {where}, but it differs from the manifest"
        ),
        lines=lines,
        errors=found.errors,
        data={**plan.report.data, "seconds": round(seconds, 3), "checks": found.checks},
    )
