"""`airflow-ops db clean|vacuum|stats` (see cli_maintenance for the common flow)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from .cli_maintenance import deployment_option, dry_run_option, json_option, path_option, session, yes_option
from .config import Config
from .config.db_clean import DbCleanConfig
from .maintenance import tasks

table_option = click.option("--table", "tables", multiple=True, help="Only this table (repeatable).")


def _instant(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    """An ISO-8601 instant; one without an offset is UTC (the plan prints its `now` that way)."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        example = "2026-11-01T02:00:00+00:00"
        raise click.BadParameter(f"{value!r} is not an ISO-8601 time, e.g. {example}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def db_group(load: Callable[[str | None], Config], config_option: Any) -> click.Group:
    @click.group("db")
    def group() -> None:
        """Cleanup, vacuum and statistics of the metadata database."""

    @group.command("clean")
    @config_option
    @deployment_option
    @click.option("--dag-id", "dag_ids", multiple=True, help="Only the history of this DAG (repeatable).")
    @click.option("--dag-pattern", help="Only the history of the DAGs whose id fully matches this regex.")
    @table_option
    @path_option("--archive-dir", "archive_dir", "Archive deleted rows here (gzip'd CSV) before deleting.")
    @click.option(
        "--workers",
        type=click.IntRange(1, 16),
        help="Connections deleting disjoint batches at once (default: maintenance.db_clean.workers).",
    )
    @click.option(
        "--now",
        callback=_instant,
        help="Cut off as if it were this time: the `now` an interrupted run's plan printed, to resume"
        " it with exactly its cutoffs (default: the current time).",
    )
    @yes_option
    @dry_run_option
    @json_option
    def clean(
        config_path: str | None,
        deployment: str | None,
        dag_ids: tuple[str, ...],
        dag_pattern: str | None,
        tables: tuple[str, ...],
        archive_dir: Path | None,
        workers: int | None,
        now: datetime | None,
        yes: bool,
        dry_run: bool,
        as_json: bool,
    ) -> None:
        """Delete history older than the retention (per table, per DAG; the newest runs of each DAG
        and everything live are kept) in small batches; run again to resume."""
        sess = session(load(config_path), deployment, as_json)
        cfg = sess.target.maintenance.db_clean
        if tables:  # validated like the config's own list: an unknown table is named
            try:
                cfg = DbCleanConfig.model_validate({**cfg.model_dump(), "tables": tables})
            except ValidationError as e:
                raise click.BadParameter(e.errors()[0]["msg"], param_hint="--table") from None
        if workers is not None:
            cfg = cfg.model_copy(update={"workers": workers})
        sess.act(
            task="db_clean",
            plan=lambda: tasks.db_clean(
                sess.target,
                cfg,
                dag_ids=dag_ids or None,
                dag_pattern=dag_pattern,
                archive_dir=archive_dir,
                now=now,
            ),
            yes=yes,
            dry_run=dry_run,
            confirm="Delete these rows?",
        )

    @group.command("vacuum")
    @config_option
    @deployment_option
    @table_option
    @click.option("--full", is_flag=True, help="VACUUM FULL: returns space to the OS, locks each table.")
    @yes_option
    @dry_run_option
    @json_option
    def vacuum(
        config_path: str | None,
        deployment: str | None,
        tables: tuple[str, ...],
        full: bool,
        yes: bool,
        dry_run: bool,
        as_json: bool,
    ) -> None:
        """VACUUM ANALYZE each table (most dead tuples first); FULL only with --full."""
        sess = session(load(config_path), deployment, as_json)
        sess.act(
            task="db_vacuum",
            plan=lambda: tasks.db_vacuum(sess.target, tables or None, full=full),
            yes=yes,
            dry_run=dry_run,
            confirm="Vacuum these tables?",
        )

    @group.command("stats")
    @config_option
    @deployment_option
    @json_option
    def stats(config_path: str | None, deployment: str | None, as_json: bool) -> None:
        """Table sizes, dead tuples, bloat estimate, last (auto)vacuum/analyze, and foreign keys
        without an index with the CREATE INDEX CONCURRENTLY that fixes each."""
        sess = session(load(config_path), deployment, as_json)
        sess.once(task="db_stats", fn=lambda: tasks.db_stats(sess.target))

    return group
