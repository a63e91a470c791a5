"""Backups against real PostgreSQL, real pg_dump/pg_restore and real Airflow 3 and 2.

The key proof (issue 4 §6): runs of a DAG of our own, backup, verify, restore into a new
database, a real Airflow started on the restored database serves the same runs through its REST
API and reads the connection Airflow stored encrypted. Around it: damaged backups fail verify with
the reason, an interrupted create is never listed as good, restore refuses a non-empty target,
Fernet checks, exports and their secrets, and prune never deletes the newest verified backup.

Each test makes its own databases (unique names, dropped at the end) and backup directory.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from cryptography.fernet import Fernet, InvalidToken

from airflow_ops.config.backup import RetentionPolicy
from airflow_ops.devstack import install
from airflow_ops.devstack.database import ADMIN_DSN, create_database, drop_database, migrated_template
from airflow_ops.devstack.stack import EXAMPLE_DAGS_DIR, AirflowStack
from airflow_ops.maintenance import backup_store as store
from airflow_ops.maintenance.backup import (
    BackupError,
    backup_status,
    execute_create,
    execute_prune,
    execute_restore,
    list_backups,
    list_report,
    plan_create,
    plan_prune,
    plan_restore,
    verify_backup,
)
from airflow_ops.maintenance.backup_pg import find_tool
from airflow_ops.maintenance.report import Report

DAG_ID = "backup_probe"
TEST_DAGS_DIR = Path(__file__).resolve().parents[1] / "dags"  # as the session stacks have them


# ------------------------------------------------------------------ helpers


@contextmanager
def new_database(label: str, template: str | None = None) -> Iterator[str]:
    """A database of this test's own (unique name), dropped at the end; yields its DSN."""
    name = f"aops_backup_{label}_{secrets.token_hex(4)}"
    dsn = create_database(name, template=template)
    try:
        yield dsn
    finally:
        drop_database(name)


def sql(dsn: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with closing(psycopg2.connect(dsn)) as conn, conn, conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchall() if cur.description else []


def backup(dsn: str, backup_dir: Path, **kw: Any) -> Report:
    report = execute_create(plan_create(dsn, backup_dir, **kw))
    assert report.ok, report.errors
    return report


def add_secrets(stack: AirflowStack, tag: str) -> dict[str, str]:
    """A connection and a variable stored by Airflow itself (encrypted with the stack's key)."""
    values = {
        "conn_id": f"backup_conn_{tag}",
        "password": f"conn-pw-{secrets.token_hex(8)}",
        "extra_token": f"extra-{secrets.token_hex(8)}",
        "var_key": f"backup_var_{tag}",
        "var_value": f"var-{secrets.token_hex(8)}",
    }
    stack.airflow(
        "connections", "add", values["conn_id"], "--conn-type", "http", "--conn-host", "example.invalid",
        "--conn-login", "etl", "--conn-password", values["password"],
        "--conn-extra", json.dumps({"token": values["extra_token"]}),
    )  # fmt: skip
    stack.airflow("variables", "set", values["var_key"], values["var_value"])
    return values


def dag_runs(stack: AirflowStack, run_ids: set[str]) -> dict[str, str]:
    runs = stack._paged(f"dags/{DAG_ID}/dagRuns", "dag_runs")
    return {r["dag_run_id"]: r["state"] for r in runs if r["dag_run_id"] in run_ids}


def everything_printed(*reports: Report) -> str:
    return "\n".join(json.dumps(r.as_dict(), default=str) for r in reports)


def backup_files_text(path: Path) -> str:
    """Every file of a backup but the (compressed) dump, as text."""
    return "\n".join(f.read_text() for f in sorted(path.iterdir()) if f.name != store.DUMP)


# ------------------------------------------------------------------ the key proof


@pytest.mark.airflow
def test_backup_verify_restore_and_a_real_airflow_serves_the_same_runs(
    airflow_stack: AirflowStack, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    stack = airflow_stack
    tag = secrets.token_hex(3)
    run_ids = {f"backup_ok_{tag}": {}, f"backup_fail_{tag}": {"fail": True}}
    for run_id, conf in run_ids.items():
        stack.trigger(DAG_ID, run_id, conf)
    states = {run_id: stack.wait_for_run(DAG_ID, run_id) for run_id in run_ids}
    assert states == {f"backup_ok_{tag}": "success", f"backup_fail_{tag}": "failed"}
    stored = add_secrets(stack, tag)
    export_key = Fernet.generate_key().decode()

    plan = plan_create(
        stack.db_dsn, tmp_path, export="encrypted", export_key=export_key, airflow_fernet_key=stack.fernet_key
    )
    assert plan.report.planned and plan.report.ok
    created = execute_create(plan)
    assert created.ok, created.errors
    backup_id = created.data["backup_id"]
    manifest = json.loads((tmp_path / backup_id / store.MANIFEST).read_text())
    expected_rev = {3: "d2f4e1b3c5a7", 2: "5f2621c13b39"}[stack.major]
    assert manifest["airflow"] == {
        "major": stack.major,
        "version": {3: "3.3.0", 2: "2.10.3"}[stack.major],
        "version_note": manifest["airflow"]["version_note"],
        "alembic_revision": expected_rev,
    }
    assert manifest["tables"]["public.dag_run"] >= 2
    assert created.bytes_written == sum(f["size"] for f in manifest["files"].values()) > 0

    verified = verify_backup(tmp_path, backup_id, scratch_dsn=ADMIN_DSN, airflow_fernet_key=stack.fernet_key)
    assert verified.ok, verified.errors
    assert verified.data["checks"] == {
        "checksums": "ok",
        "restore": "ok",
        "alembic_revision": "ok",
        "row_counts": "ok",
        "fernet": "ok",
    }
    assert stored["conn_id"] in " ".join(verified.lines)
    [info] = list_backups(tmp_path)
    assert info.verified and backup_status(tmp_path).newest_verified_id == backup_id

    with new_database(f"restored_af{stack.major}") as target:
        restore_plan = plan_restore(tmp_path, backup_id, target)
        assert restore_plan.report.ok, restore_plan.report.errors
        restored = execute_restore(restore_plan)
        assert restored.ok, restored.errors
        assert "(target was empty)" in restored.summary

        # A real Airflow of the same version on the restored database, with the same Fernet key.
        again = AirflowStack(
            stack.version,
            f"restored-af{stack.major}",
            [EXAMPLE_DAGS_DIR, TEST_DAGS_DIR],
            database=restored_name(target),
            fernet_key=stack.fernet_key,
        )
        again.password = stack.password  # Airflow 2 keeps its users in the database
        with again:
            assert dag_runs(again, set(run_ids)) == dag_runs(stack, set(run_ids)) == states
            shown = again.airflow("connections", "get", stored["conn_id"], "-o", "json").stdout
            assert stored["password"] in shown  # Airflow decrypts what it stored before the backup
            assert again.airflow("variables", "get", stored["var_key"]).stdout.strip() == stored["var_value"]

    # Secrets: nowhere in what was printed, reported or written besides the dump; the export
    # holds them encrypted with the export key only.
    backup_path = tmp_path / backup_id
    printed = capfd.readouterr()
    everything = everything_printed(plan.report, created, verified, restore_plan.report, restored)
    everything += backup_files_text(backup_path) + printed.out + printed.err
    for secret in (
        stored["password"],
        stored["extra_token"],
        stored["var_value"],
        stack.fernet_key,
        export_key,
    ):
        assert secret not in everything
    export = json.loads((backup_path / store.EXPORT).read_text())
    assert export["secrets"] == "encrypted"
    [conn] = [c for c in export["connections"] if c["conn_id"] == stored["conn_id"]]
    assert Fernet(export_key.encode()).decrypt(conn["password"].encode()).decode() == stored["password"]
    with pytest.raises(InvalidToken):
        Fernet(stack.fernet_key.encode()).decrypt(conn["password"].encode())


def restored_name(dsn: str) -> str:
    return dsn.rsplit("/", 1)[1]


# ------------------------------------------------------------------ damaged and interrupted backups


@pytest.fixture(scope="module")
def af3_db() -> Iterator[str]:
    """A database migrated by the real Airflow 3 with some history: runs, a log, a pool."""
    with new_database("af3", template=migrated_template(install.AIRFLOW3)) as dsn:
        sql(dsn, "INSERT INTO log (dttm, event) SELECT now(), 'e' || g FROM generate_series(1, 5000) g")
        sql(dsn, "INSERT INTO slot_pool (pool, slots, include_deferred) VALUES ('etl', 4, false)")
        yield dsn


@pytest.mark.airflow
def test_truncated_and_byte_flipped_backups_fail_verify_with_the_reason(af3_db: str, tmp_path: Path) -> None:
    truncated = backup(af3_db, tmp_path).data
    flipped = backup(af3_db, tmp_path).data
    dump = tmp_path / truncated["backup_id"] / store.DUMP
    with open(dump, "r+b") as f:
        f.truncate(truncated["files"][store.DUMP]["size"] // 2)
    dump = tmp_path / flipped["backup_id"] / store.DUMP
    with open(dump, "r+b") as f:
        f.seek(flipped["files"][store.DUMP]["size"] // 2)
        byte = f.read(1)[0]
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte ^ 0x01]))

    report = verify_backup(tmp_path, truncated["backup_id"], scratch_dsn=ADMIN_DSN)
    assert not report.ok
    size = truncated["files"][store.DUMP]["size"]
    assert report.errors == [
        f"backup {truncated['backup_id']} is damaged: "
        f"metadata.pgdump: truncated ({size // 2:,} of {size:,} bytes)"
    ]
    report = verify_backup(tmp_path, flipped["backup_id"], scratch_dsn=ADMIN_DSN)
    assert not report.ok and report.data["checks"] == {"checksums": "failed"}
    assert "metadata.pgdump: sha256" in report.errors[0] and "corrupted" in report.errors[0]
    assert "FAILED verification" in report.summary

    statuses = {b.id: b for b in list_backups(tmp_path)}
    assert statuses[truncated["backup_id"]].status == store.DAMAGED
    assert statuses[flipped["backup_id"]].status == store.GOOD  # same size: only a checksum finds it
    assert "sha256" in (statuses[flipped["backup_id"]].verify_failed or "")
    assert backup_status(tmp_path).newest_verified_id is None

    # Neither can be restored: the truncated one is refused, the flipped one fails its checksum
    # before anything is written to the target.
    with new_database("target") as target:
        with pytest.raises(BackupError, match="is damaged"):
            plan_restore(tmp_path, truncated["backup_id"], target)
        restored = execute_restore(plan_restore(tmp_path, flipped["backup_id"], target))
        assert not restored.ok and "nothing was restored" in restored.errors[0]
        assert sql(target, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]


@pytest.mark.airflow
def test_verify_compares_the_restored_database_with_the_manifest(af3_db: str, tmp_path: Path) -> None:
    # A manifest that claims one row more than the dump holds: checksums pass (the dump is
    # intact), the restore-and-count step must catch it.
    backup_id = backup(af3_db, tmp_path).data["backup_id"]
    path = tmp_path / backup_id / store.MANIFEST
    manifest = json.loads(path.read_text())
    manifest["tables"]["public.log"] += 1
    path.write_text(json.dumps(manifest))
    report = verify_backup(tmp_path, backup_id, scratch_dsn=ADMIN_DSN)
    n = manifest["tables"]["public.log"]
    assert not report.ok
    assert report.errors == [f"public.log: {n - 1:,} rows restored, the manifest says {n:,}"]
    assert report.data["checks"]["restore"] == "ok" and report.data["checks"]["row_counts"] == "failed"


@pytest.mark.airflow
def test_counts_are_those_of_the_dump_while_airflow_keeps_writing(tmp_path: Path) -> None:
    with new_database("busy", template=migrated_template(install.AIRFLOW3)) as dsn:
        fill = (
            "INSERT INTO log (dttm, event, extra)"
            " SELECT now(), 'e', repeat('x', 500) FROM generate_series(1, %s)"
        )
        sql(dsn, fill, (200_000,))
        stop = threading.Event()
        written = [0]

        def write() -> None:
            with closing(psycopg2.connect(dsn)) as conn:
                conn.autocommit = True
                with conn.cursor() as cur:
                    while not stop.is_set():
                        cur.execute("INSERT INTO log (dttm, event) VALUES (now(), 'during backup')")
                        written[0] += 1

        writer = threading.Thread(target=write)
        writer.start()
        try:
            plan = plan_create(dsn, tmp_path)
            before = written[0]
            report = execute_create(plan)
            during = written[0] - before
        finally:
            stop.set()
            writer.join()
        assert report.ok, report.errors
        assert during > 0  # rows were committed while the backup ran
        verified = verify_backup(tmp_path, report.data["backup_id"], scratch_dsn=ADMIN_DSN)
        assert verified.ok, verified.errors
        manifest = json.loads((tmp_path / report.data["backup_id"] / store.MANIFEST).read_text())
        # The backup holds the rows of its snapshot; the database went on growing after it.
        assert 200_000 <= manifest["tables"]["public.log"] < sql(dsn, "SELECT count(*) FROM log")[0][0]


PG_DUMP_KILLED_MID_WAY = """#!/bin/sh
# The real pg_dump, killed after 64 KiB of output (a crash, an OOM kill, a full disk).
case "$1" in --version) exec "{real}" --version ;; esac
"{real}" "$@" | head -c 65536
kill -KILL $$
"""


@pytest.mark.airflow
def test_a_failed_or_interrupted_create_is_never_listed_as_good(af3_db: str, tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    # 1. pg_dump dies mid-way: the create fails, names pg_dump, and leaves nothing behind.
    real = find_tool("pg_dump", at_least=1).path
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "pg_dump"
    wrapper.write_text(PG_DUMP_KILLED_MID_WAY.format(real=real))
    wrapper.chmod(0o755)
    report = execute_create(plan_create(af3_db, backups, pg_bin_dir=bin_dir))
    assert not report.ok
    assert report.errors[0].startswith("pg_dump failed with exit code -9")
    assert list_backups(backups) == [] and list(backups.iterdir()) == []

    # 2. The process running create is killed (SIGKILL) mid-way: its partial directory stays,
    # listed as incomplete, never good; the next create removes it once it is stale.
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from pathlib import Path
        from airflow_ops.maintenance.backup import execute_create, plan_create
        def die(done, total, unit):
            os.kill(os.getpid(), signal.SIGKILL)
        execute_create(plan_create({af3_db!r}, Path({str(backups)!r})), die)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[2], check=False)
    assert proc.returncode == -signal.SIGKILL
    [left] = list_backups(backups)
    assert left.status == store.INCOMPLETE and left.problem == "left by an interrupted create"
    assert left.path.name.startswith(store.PARTIAL_PREFIX)
    assert backup_status(backups).good == 0 and "0 good backups" in list_report(backups).summary
    # Not yet stale: a create keeps it (it might be a slow create on a file system without locks).
    kept = backup(af3_db, backups)
    assert kept.data["removed_stale_temporaries"] == [] and left.path.exists()
    cleaned = execute_create(plan_create(af3_db, backups, stale_after=0))
    assert cleaned.ok and cleaned.data["removed_stale_temporaries"] == [left.path.name]
    assert [b.status for b in list_backups(backups)] == [store.GOOD, store.GOOD]


# ------------------------------------------------------------------ restore refusals


@pytest.mark.airflow
def test_restore_refuses_a_non_empty_target_or_another_revision_unless_forced(
    af3_db: str, tmp_path: Path
) -> None:
    backup_id = backup(af3_db, tmp_path).data["backup_id"]
    with new_database("nonempty") as target:
        sql(target, "CREATE TABLE precious (x int); INSERT INTO precious VALUES (42)")
        plan = plan_restore(tmp_path, backup_id, target)
        assert not plan.report.ok and plan.report.planned
        assert "is not empty: it holds 1 tables (public.precious)" in plan.report.errors[0]
        report = execute_restore(plan)
        assert not report.ok and report.summary.endswith("nothing done")
        assert sql(target, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'") == [("precious",)]

        # Forced: the backup is restored next to what was there, which is left alone.
        forced = execute_restore(plan_restore(tmp_path, backup_id, target, force=True))
        assert forced.ok, forced.errors
        assert "left in place, not in the backup: public.precious" in forced.lines
        assert sql(target, "SELECT x FROM precious") == [(42,)]
        assert sql(target, "SELECT count(*) FROM log")[0][0] == 5000

    with new_database("af2", template=migrated_template(install.AIRFLOW2)) as target:
        plan = plan_restore(tmp_path, backup_id, target)
        assert not plan.report.ok
        assert any(
            "has alembic revision 5f2621c13b39 (Airflow 2.10.3), the backup d2f4e1b3c5a7 (Airflow 3.3.0)" in e
            for e in plan.report.errors
        )


# ------------------------------------------------------------------ Fernet and exports


@pytest.mark.airflow
def test_verify_checks_the_airflow_fernet_key(airflow_stack: AirflowStack, tmp_path: Path) -> None:
    stored = add_secrets(airflow_stack, secrets.token_hex(3))
    backup_id = backup(airflow_stack.db_dsn, tmp_path).data["backup_id"]
    # Airflow stored them encrypted: the plain value is not in the database.
    in_clear = "SELECT count(*) FROM connection WHERE password = %s"
    assert sql(airflow_stack.db_dsn, in_clear, (stored["password"],)) == [(0,)]

    good = verify_backup(
        tmp_path, backup_id, scratch_dsn=ADMIN_DSN, airflow_fernet_key=airflow_stack.fernet_key
    )
    assert good.ok and good.data["checks"]["fernet"] == "ok"
    wrong = verify_backup(
        tmp_path, backup_id, scratch_dsn=ADMIN_DSN, airflow_fernet_key=Fernet.generate_key().decode()
    )
    assert not wrong.ok and wrong.data["checks"]["fernet"] == "failed"
    assert "does not decrypt with the given Airflow Fernet key" in wrong.errors[0]
    assert wrong.data["checks"]["row_counts"] == "ok"  # the backup itself is fine
    unchecked = verify_backup(tmp_path, backup_id, scratch_dsn=ADMIN_DSN)
    assert unchecked.ok and unchecked.data["checks"]["fernet"] == "not checked"
    assert "no Airflow Fernet key given" in " ".join(unchecked.lines)


@pytest.mark.airflow
def test_exports_never_show_a_secret(airflow3: AirflowStack, tmp_path: Path) -> None:
    stored = add_secrets(airflow3, secrets.token_hex(3))
    plain = (stored["password"], stored["extra_token"], stored["var_value"])

    without = backup(airflow3.db_dsn, tmp_path / "without", export="without-secrets")
    path = tmp_path / "without" / without.data["backup_id"]
    export = json.loads((path / store.EXPORT).read_text())
    [conn] = [c for c in export["connections"] if c["conn_id"] == stored["conn_id"]]
    assert conn["password"] is None and conn["extra"] is None and conn["login"] == "etl"
    [var] = [v for v in export["variables"] if v["key"] == stored["var_key"]]
    assert var["val"] is None
    assert (
        "WITHOUT secrets" in " ".join(without.lines) and without.data["export"]["mode"] == "without-secrets"
    )
    assert not any(s in backup_files_text(path) + everything_printed(without) for s in plain)

    # Encrypted export: it needs Airflow's key to read what Airflow encrypted, and says so.
    export_key = Fernet.generate_key().decode()
    with pytest.raises(BackupError, match=r"stored encrypted with Airflow's Fernet key.*airflow_fernet_key"):
        plan_create(airflow3.db_dsn, tmp_path / "enc", export="encrypted", export_key=export_key)
    with pytest.raises(BackupError, match="does not decrypt with the given Airflow Fernet key"):
        plan_create(
            airflow3.db_dsn,
            tmp_path / "enc",
            export="encrypted",
            export_key=export_key,
            airflow_fernet_key=Fernet.generate_key().decode(),
        )
    with pytest.raises(BackupError, match="export 'encrypted' needs an export key"):
        plan_create(airflow3.db_dsn, tmp_path / "enc", export="encrypted")
    encrypted = backup(
        airflow3.db_dsn,
        tmp_path / "enc",
        export="encrypted",
        export_key=export_key,
        airflow_fernet_key=airflow3.fernet_key,
    )
    path = tmp_path / "enc" / encrypted.data["backup_id"]
    export = json.loads((path / store.EXPORT).read_text())
    assert export["secrets"] == "encrypted" and "ENCRYPTED with your export key" in " ".join(encrypted.lines)
    reader = Fernet(export_key.encode())
    [conn] = [c for c in export["connections"] if c["conn_id"] == stored["conn_id"]]
    [var] = [v for v in export["variables"] if v["key"] == stored["var_key"]]
    assert reader.decrypt(conn["password"].encode()).decode() == stored["password"]
    assert json.loads(reader.decrypt(conn["extra"].encode())) == {"token": stored["extra_token"]}
    assert reader.decrypt(var["val"].encode()).decode() == stored["var_value"]
    for other in (Fernet.generate_key(), airflow3.fernet_key.encode()):
        with pytest.raises(InvalidToken):
            Fernet(other).decrypt(conn["password"].encode())
    assert not any(s in backup_files_text(path) + everything_printed(encrypted) for s in plain)
    assert export_key not in backup_files_text(path) + everything_printed(encrypted)


# ------------------------------------------------------------------ prune


@pytest.mark.airflow
def test_prune_never_deletes_the_newest_verified_backup(af3_db: str, tmp_path: Path) -> None:
    ids = [backup(af3_db, tmp_path).data["backup_id"] for _ in range(4)]
    assert ids == sorted(ids) and len(set(ids)) == 4
    assert verify_backup(tmp_path, ids[0], scratch_dsn=ADMIN_DSN).ok
    policy = RetentionPolicy(keep_last=1, daily=0, weekly=0, monthly=0)

    plan = plan_prune(tmp_path, policy, datetime.now(timezone.utc))
    assert plan.keep == {ids[3]: ["last 1"], ids[0]: ["newest verified"]}
    assert [b.id for b in plan.delete] == [ids[1], ids[2]]
    assert plan.report.planned and [b.id for b in list_backups(tmp_path)] == ids  # nothing changed yet

    # ids[2] gets verified after the plan: it is now the newest verified one and must survive.
    assert verify_backup(tmp_path, ids[2], scratch_dsn=ADMIN_DSN).ok
    report = execute_prune(plan)
    assert report.ok, report.errors
    assert report.data["deleted"] == [ids[1]]
    assert f"kept {ids[2]}: it became the newest verified backup after the plan" in report.lines
    assert [b.id for b in list_backups(tmp_path)] == [ids[0], ids[2], ids[3]]
    assert report.files_deleted == 2 and report.bytes_freed > 0

    # An older verified backup is not protected: only the newest verified one is.
    report = execute_prune(plan_prune(tmp_path, policy, datetime.now(timezone.utc)))
    assert report.data["deleted"] == [ids[0]] and report.data["newest_verified"] == ids[2]
    assert [b.id for b in list_backups(tmp_path)] == [ids[2], ids[3]]
