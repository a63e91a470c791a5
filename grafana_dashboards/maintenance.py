"""Maintenance and metadata DB: backups, scheduled maintenance tasks, cleanup, log volume, table growth."""

from __future__ import annotations

from typing import Any

from .panels import (
    Column,
    add_row,
    increase,
    new_dashboard,
    query,
    runbook_link,
    sel,
    standard_variables,
    stat_panel,
    table_panel,
    thresholds,
    timeseries_panel,
    to_json_model,
    value_map,
)

UID = "airflow-ops-maintenance"
# The shipped AirflowOpsBackupStale threshold: 26 hours (a daily backup plus slack).
BACKUP_STALE_SECONDS = 93600
# The shipped AirflowMetadbTableTooLarge threshold: 10 GiB.
TABLE_TOO_LARGE_BYTES = 10 * 1024**3
# What the cleanup tasks removed, one bar chart each: (title, counter, unit, description).
CLEANUP_COUNTERS = (
    ("Metadata DB rows deleted", "airflow_ops_maintenance_rows_deleted_total", "short", ""),
    (
        "Files deleted",
        "airflow_ops_maintenance_files_deleted_total",
        "short",
        "Log files and old backups removed.",
    ),
    ("Bytes freed", "airflow_ops_maintenance_bytes_freed_total", "bytes", ""),
)


# A table merging several queries joins their rows on the label columns, so each query keeps
# exactly the same labels (and no __name__, which differs between metrics). max, not sum: one
# series per key, or identical ones from several airflow-ops replicas scraped side by side.
def per_task(metric: str) -> str:
    return f"max by (deployment, task) ({sel(metric)})"


def per_table(expr: str) -> str:
    return f"max by (deployment, table) ({expr})"


def build() -> dict[str, Any]:
    board = new_dashboard(
        UID,
        "Airflow maintenance and metadata DB",
        "Backups, maintenance tasks and what they cleaned up, the log volume, and the size and growth"
        " of the metadata database's tables.",
        standard_variables(airflow_url=False),
    )
    backup_steps = thresholds((None, "green"), (BACKUP_STALE_SECONDS, "red"))
    add_row(
        board,
        "Backups",
        [
            stat_panel(
                "Newest backup age",
                [query(sel("airflow_ops_backup_age_seconds"), "{{deployment}}", instant=True)],
                unit="s",
                description="Age of the newest complete backup (+Inf: there is none).",
                width=4,
                steps=backup_steps,
            ),
            stat_panel(
                "Newest verified backup age",
                [query(sel("airflow_ops_backup_verified_age_seconds"), "{{deployment}}", instant=True)],
                unit="s",
                description="Age of the newest backup that passed verification. Over 26 hours:"
                " AirflowOpsBackupStale.",
                width=4,
                steps=backup_steps,
                links=[runbook_link("AirflowOpsBackupStale")],
            ),
            stat_panel(
                "Newest backup size",
                [query(sel("airflow_ops_backup_size_bytes"), "{{deployment}}", instant=True)],
                unit="bytes",
                width=4,
                colour_background=False,
            ),
            timeseries_panel(
                "Backup age",
                [
                    query(sel("airflow_ops_backup_age_seconds"), "{{deployment}} newest"),
                    query(sel("airflow_ops_backup_verified_age_seconds"), "{{deployment}} newest verified"),
                ],
                unit="s",
                height=4,
                steps=backup_steps,
            ),
            timeseries_panel(
                "Backup size",
                [query(sel("airflow_ops_backup_size_bytes"), "{{deployment}}")],
                unit="bytes",
                description="Size of the newest complete backup: a sudden drop is worth a look.",
                width=24,
                height=6,
            ),
        ],
    )
    add_row(
        board,
        "Maintenance tasks",
        [
            table_panel(
                "Maintenance tasks",
                [
                    query(f"{per_task('airflow_ops_maintenance_last_success_timestamp_seconds')} * 1000"),
                    query(per_task("airflow_ops_maintenance_last_run_status")),
                    query(per_task("airflow_ops_maintenance_overdue_seconds")),
                ],
                unit="none",
                description="Per maintenance task: when it last succeeded, whether its newest run"
                " succeeded, and how long a scheduled run is overdue.",
                renames={"Value #A": "last success", "Value #B": "last run", "Value #C": "overdue by"},
                columns={
                    "last success": Column(unit="dateTimeFromNow"),
                    "last run": Column(
                        mappings=value_map({"1": ("ok", "green"), "0": ("failed", "red")}),
                        steps=thresholds((None, "red"), (1, "green")),
                    ),
                    "overdue by": Column(unit="s", steps=thresholds((None, "green"), (7200, "red"))),
                },
                sort_by="overdue by",
            ),
            timeseries_panel(
                "Maintenance overdue",
                [query(sel("airflow_ops_maintenance_overdue_seconds"), "{{deployment}} {{task}}")],
                unit="s",
                description="Seconds since the first scheduled time after the last success. Over 2"
                " hours: AirflowOpsMaintenanceOverdue.",
                steps=thresholds((None, "green"), (7200, "red")),
                links=[
                    runbook_link("AirflowOpsMaintenanceOverdue"),
                    runbook_link("AirflowOpsMaintenanceFailed"),
                ],
            ),
        ],
    )
    add_row(
        board,
        "Cleanup",
        [
            timeseries_panel(
                title,
                [query(increase(counter, by="deployment, task"), "{{deployment}} {{task}}")],
                unit=unit,
                description=description,
                width=8,
                bars=True,
                stacked=True,
            )
            for title, counter, unit, description in CLEANUP_COUNTERS
        ],
    )
    add_row(
        board,
        "Log volume",
        [
            timeseries_panel(
                "Log volume free space",
                [query(sel("airflow_ops_log_volume_free_bytes"), "{{deployment}}")],
                unit="bytes",
            ),
            timeseries_panel(
                "Log volume free share",
                [query(sel("airflow_ops_log_volume_free_ratio"), "{{deployment}}")],
                unit="percentunit",
                description="Under 10%: AirflowLogVolumeLow.",
                max_value=1,
                steps=thresholds((None, "red"), (0.1, "green")),
                links=[runbook_link("AirflowLogVolumeLow")],
            ),
        ],
    )
    add_row(
        board,
        "Metadata DB tables",
        [
            table_panel(
                "Table sizes",
                [
                    query(per_table(sel("airflow_metadb_table_bytes"))),
                    query(per_table(sel("airflow_metadb_table_rows_estimate"))),
                    query(per_table(f"delta({sel('airflow_metadb_table_bytes')}[1d])")),
                ],
                unit="bytes",
                description="Size, planner row estimate and growth over the last day of each table."
                " Over 10 GiB: AirflowMetadbTableTooLarge.",
                width=24,
                renames={"Value #A": "size", "Value #B": "rows (estimate)", "Value #C": "growth (1d)"},
                columns={
                    "rows (estimate)": Column(unit="short"),
                    "size": Column(steps=thresholds((None, "green"), (TABLE_TOO_LARGE_BYTES, "red"))),
                },
                sort_by="size",
            ),
            timeseries_panel(
                "Largest tables",
                [query(f"topk(10, {sel('airflow_metadb_table_bytes')})", "{{deployment}} {{table}}")],
                unit="bytes",
                steps=thresholds((None, "green"), (TABLE_TOO_LARGE_BYTES, "red")),
                links=[runbook_link("AirflowMetadbTableTooLarge")],
            ),
            timeseries_panel(
                "Table growth",
                [
                    query(
                        f"topk(10, deriv({sel('airflow_metadb_table_bytes')}[1h]))",
                        "{{deployment}} {{table}}",
                    )
                ],
                unit="Bps",
                description="Growth rate of the fastest-growing tables, from the last hour's samples.",
                minimum=None,
            ),
            timeseries_panel(
                "Rows by table (estimate)",
                [
                    query(
                        f"topk(10, {sel('airflow_metadb_table_rows_estimate')})",
                        "{{deployment}} {{table}}",
                    )
                ],
                unit="short",
                width=24,
            ),
        ],
    )
    return to_json_model(board)
