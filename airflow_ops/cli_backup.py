"""`airflow-ops backup create|list|verify|restore|prune` (see cli_maintenance for the common flow)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .cli_maintenance import deployment_option, dry_run_option, json_option, path_option, session, yes_option
from .config import Config
from .config.backup import ExportMode
from .maintenance import tasks

dir_option = path_option("--dir", "backup_dir", "Backup directory (default: maintenance.backup.dir).")


def backup_group(load: Callable[[str | None], Config], config_option: Any) -> click.Group:
    @click.group("backup")
    def group() -> None:
        """Verified backups of the metadata database (pg_dump -Fc plus a manifest)."""

    @group.command("create")
    @config_option
    @deployment_option
    @dir_option
    @click.option(
        "--export",
        type=click.Choice([m.value for m in ExportMode]),
        help="Also export pools, variables and connections as JSON: secrets left out or encrypted "
        "with maintenance.backup.export_key (default: maintenance.backup.export, else none).",
    )
    @yes_option
    @dry_run_option
    @json_option
    def create(
        config_path: str | None,
        deployment: str | None,
        backup_dir: Path | None,
        export: str | None,
        yes: bool,
        dry_run: bool,
        as_json: bool,
    ) -> None:
        """Back up the metadata database; written atomically, never listed unless complete."""
        sess = session(load(config_path), deployment, as_json)
        t = sess.target
        sess.act(
            task="backup",
            plan=lambda: tasks.backup_create(t, t.backup(backup_dir), export),
            yes=yes,
            dry_run=dry_run,
            confirm="Create this backup?",
        )

    @group.command("list")
    @config_option
    @deployment_option
    @dir_option
    @json_option
    def list_(
        config_path: str | None, deployment: str | None, backup_dir: Path | None, as_json: bool
    ) -> None:
        """The backups in the directory: complete or not, verified or not."""
        from .maintenance.backup import list_report

        sess = session(load(config_path), deployment, as_json)
        sess.once(task="backup_list", fn=lambda: list_report(sess.target.backup(backup_dir).dir))

    @group.command("verify")
    @config_option
    @deployment_option
    @dir_option
    @click.argument("backup_id", required=False)
    @click.option(
        "--scratch-dsn",
        envvar="AIRFLOW_OPS_SCRATCH_DSN",
        help="Server to restore into a throwaway database (default: maintenance.backup.scratch_dsn, "
        "else the deployment's own server). The user needs CREATEDB.",
    )
    @json_option
    def verify(
        config_path: str | None,
        deployment: str | None,
        backup_dir: Path | None,
        backup_id: str | None,
        scratch_dsn: str | None,
        as_json: bool,
    ) -> None:
        """Check a backup (default: the newest complete one): checksums, then a restore into a
        scratch database, row counts and schema revision against the manifest, and — given
        maintenance.backup.airflow_fernet_key — that a stored connection decrypts."""
        sess = session(load(config_path), deployment, as_json)
        if scratch_dsn:
            sess.extra_secrets.append(scratch_dsn)
        t = sess.target
        sess.once(
            task="backup_verify",
            fn=lambda: tasks.backup_verify(t, t.backup(backup_dir), backup_id, scratch_dsn, sess.progress()),
        )

    @group.command("restore")
    @config_option
    @deployment_option
    @dir_option
    @click.argument("backup_id")
    @click.option("--to", "target", required=True, help="DSN of the database to restore into.")
    @click.option("--force", is_flag=True, help="Restore even into a non-empty database.")
    @yes_option
    @dry_run_option
    @json_option
    def restore(
        config_path: str | None,
        deployment: str | None,
        backup_dir: Path | None,
        backup_id: str,
        target: str,
        force: bool,
        yes: bool,
        dry_run: bool,
        as_json: bool,
    ) -> None:
        """Restore a backup into the database at --to; refuses a non-empty target unless --force."""
        sess = session(load(config_path), deployment, as_json)
        sess.extra_secrets.append(target)
        sess.act(
            task="backup_restore",
            plan=lambda: tasks.backup_restore(sess.target.backup(backup_dir), backup_id, target, force=force),
            yes=yes,
            dry_run=dry_run,
            confirm="Restore into this database?",
        )

    @group.command("prune")
    @config_option
    @deployment_option
    @dir_option
    @yes_option
    @dry_run_option
    @json_option
    def prune(
        config_path: str | None,
        deployment: str | None,
        backup_dir: Path | None,
        yes: bool,
        dry_run: bool,
        as_json: bool,
    ) -> None:
        """Delete backups outside the retention (keep-last plus daily/weekly/monthly); never the
        newest verified one."""
        sess = session(load(config_path), deployment, as_json)
        sess.act(
            task="backup_prune",
            plan=lambda: tasks.backup_prune(sess.target.backup(backup_dir)),
            yes=yes,
            dry_run=dry_run,
            confirm="Delete these backups?",
        )

    return group
