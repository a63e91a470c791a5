"""DAG detail: one DAG of one deployment — its runs, durations, delays, health and failing tasks."""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.common import BigValueTextMode

from .panels import (
    DAG_DETAIL_UID,
    Column,
    add_row,
    airflow_url_variable,
    datasource_variable,
    deployment_variable,
    increase,
    label_variable,
    new_dashboard,
    quantile_queries,
    query,
    runbook_link,
    sel,
    stat_panel,
    sum_by,
    table_panel,
    thresholds,
    timeseries_panel,
    to_json_model,
    value_map,
)

UID = DAG_DETAIL_UID
# dag_id is a single-value variable, which Grafana interpolates unescaped for an exact match.
DAG = 'dag_id="$dag_id"'
FAILED_TRIES = 'state=~"failed|up_for_retry"'


def build() -> dict[str, Any]:
    board = new_dashboard(
        UID,
        "Airflow DAG detail",
        "One DAG: runs by state, run and task durations, schedule delay, last success, failing tasks.",
        [
            datasource_variable(),
            deployment_variable(multi=False),
            label_variable(
                "dag_id", 'label_values(airflow_dag_success_ratio{deployment=~"$deployment"}, dag_id)', "DAG"
            ),
            airflow_url_variable(),
        ],
    )
    board.link(
        dashboard.DashboardLink("Open $dag_id in Airflow")
        .type(model.DashboardLinkType.LINK)
        .url("${airflow_url}/dags/${dag_id}")
        .icon("external link")
        .target_blank(True)
    )
    add_row(
        board,
        "Health",
        [
            stat_panel(
                "Success ratio",
                [query(sel("airflow_dag_success_ratio", DAG), instant=True)],
                unit="percentunit",
                description="Share of successful runs among the DAG's last N finished runs.",
                width=4,
                steps=thresholds((None, "red"), (0.5, "orange"), (0.9, "green")),
            ),
            stat_panel(
                "Failing for",
                [query(sel("airflow_dag_failing_seconds", DAG), instant=True)],
                unit="s",
                description="Since the first failed run after the last success; 0 when healthy.",
                width=4,
                steps=thresholds((None, "green"), (1, "orange"), (3600, "red")),
                links=[runbook_link("AirflowDagFailing")],
            ),
            stat_panel(
                "Last success",
                [query(f"{sel('airflow_dag_last_success_timestamp_seconds', DAG)} * 1000", instant=True)],
                unit="dateTimeFromNow",
                description="End of the DAG's last successful run.",
                width=4,
                colour_background=False,
            ),
            stat_panel(
                "Last run",
                [query(f"{sel('airflow_dag_last_run_state', DAG)} == 1", "{{state}}", instant=True)],
                unit="none",
                description="State of the DAG's last finished run.",
                width=3,
                text_mode=BigValueTextMode.NAME,
                colour_background=False,
            ),
            stat_panel(
                "Next run overdue by",
                [query(sel("airflow_dag_run_overdue_seconds", DAG), instant=True)],
                unit="s",
                description="How long the next scheduled run is past due without having been created.",
                width=3,
                steps=thresholds((None, "green"), (1, "orange"), (900, "red")),
                links=[runbook_link("AirflowDagRunOverdue")],
            ),
            stat_panel(
                "Oldest running run",
                [query(sel("airflow_dag_run_oldest_running_age_seconds", DAG), instant=True)],
                unit="s",
                description="Age of the DAG's oldest running run (no value: nothing running).",
                width=3,
                steps=thresholds((None, "green"), (21600, "orange")),
                links=[runbook_link("AirflowDagRunTooLong")],
            ),
            stat_panel(
                "Paused",
                [query(sel("airflow_dag_paused", DAG), "{{owner}}", instant=True)],
                unit="none",
                description="Whether the DAG is paused (owner as reported by Airflow).",
                width=3,
                mappings=value_map({"1": ("paused", "orange"), "0": ("active", "green")}),
            ),
        ],
    )
    add_row(
        board,
        "Runs",
        [
            timeseries_panel(
                "Runs finished by state",
                [query(increase("airflow_dag_runs_finished_total", DAG, by="state"), "{{state}}")],
                unit="short",
                bars=True,
                stacked=True,
            ),
            timeseries_panel(
                "Success ratio",
                [query(sel("airflow_dag_success_ratio", DAG), "success ratio")],
                unit="percentunit",
                max_value=1,
            ),
            timeseries_panel(
                "Run duration",
                quantile_queries("airflow_dag_run_duration_seconds", DAG, by="state", legend="{{state}}"),
                unit="s",
                description="Quantiles of the durations of runs that finished in each interval (gaps: no"
                " run finished).",
            ),
            timeseries_panel(
                "Schedule delay",
                quantile_queries("airflow_dag_run_schedule_delay_seconds", DAG),
                unit="s",
                description="Delay between when a scheduled run was due and when it started.",
            ),
            stat_panel(
                "Run duration p50 / p95 (time range)",
                quantile_queries("airflow_dag_run_duration_seconds", DAG, window="$__range", instant=True),
                unit="s",
                description="Over every run that finished in the dashboard's time range: for DAGs that"
                " run rarely, the per-interval quantiles above are mostly gaps.",
                width=12,
                colour_background=False,
            ),
            stat_panel(
                "Runs finished (time range)",
                [
                    query(
                        increase("airflow_dag_runs_finished_total", DAG, by="state", window="$__range"),
                        "{{state}}",
                        instant=True,
                    )
                ],
                unit="short",
                width=12,
                colour_background=False,
            ),
        ],
    )
    add_row(
        board,
        "Tasks",
        [
            timeseries_panel(
                "Task tries finished by state",
                [query(increase("airflow_task_instances_finished_total", DAG, by="state"), "{{state}}")],
                unit="short",
                description="Task tries that ended; up_for_retry is a failed try that will be retried.",
                bars=True,
                stacked=True,
            ),
            timeseries_panel(
                "Task failures",
                [
                    query(
                        increase("airflow_task_instances_finished_total", DAG, FAILED_TRIES, by="state"),
                        "{{state}}",
                    )
                ],
                unit="short",
                description="Failed task tries (up_for_retry: will be retried).",
                bars=True,
                stacked=True,
                links=[runbook_link("AirflowTaskFailingRepeatedly")],
            ),
            timeseries_panel(
                "Task duration",
                quantile_queries("airflow_task_instance_duration_seconds", DAG),
                unit="s",
                description="Quantiles over all the DAG's task tries (per task with metrics.task_labels:"
                " edit the query to sum by (le, task_id)).",
            ),
            table_panel(
                "Tasks failing repeatedly",
                [query(sum_by("task_id", sel("airflow_task_failing_streak", DAG)))],
                unit="short",
                description="Consecutive recent runs in which the task failed (only tasks that failed in"
                " the last run of a failing DAG). 3 or more: AirflowTaskFailingRepeatedly.",
                renames={"Value": "failed runs in a row"},
                columns={"failed runs in a row": Column(steps=thresholds((None, "orange"), (3, "red")))},
                sort_by="failed runs in a row",
            ),
        ],
    )
    return to_json_model(board)
