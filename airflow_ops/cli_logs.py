"""`airflow-ops logs clean` (see cli_maintenance for the common flow)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .cli_maintenance import deployment_option, dry_run_option, json_option, path_option, session, yes_option
from .config import Config
from .maintenance import tasks


def logs_group(load: Callable[[str | None], Config], config_option: Any) -> click.Group:
    @click.group("logs")
    def group() -> None:
        """Retention of Airflow's task, scheduler and dag-processor logs."""

    @group.command("clean")
    @config_option
    @deployment_option
    @path_option("--folder", "folder", "Log folder (default: logs.folder, else Airflow's base_log_folder).")
    @yes_option
    @dry_run_option
    @json_option
    def clean(
        config_path: str | None,
        deployment: str | None,
        folder: Path | None,
        yes: bool,
        dry_run: bool,
        as_json: bool,
    ) -> None:
        """Delete logs older than the retention; never those of a task instance that is queued,
        running, deferred or up for retry (checked against the metadata DB)."""
        sess = session(load(config_path), deployment, as_json)
        sess.act(
            task="logs_clean",
            plan=lambda: tasks.logs_clean(sess.target, sess.target.logs(), folder),
            yes=yes,
            dry_run=dry_run,
            confirm="Delete these logs?",
        )

    return group
