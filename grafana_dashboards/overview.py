"""Airflow overview: is every deployment up, healthy and running its DAGs, and what is on fire."""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.models.common import BigValueTextMode

from .panels import (
    HEALTHY,
    Column,
    add_row,
    dag_cell_links,
    dag_series_links,
    dag_table,
    increase,
    new_dashboard,
    query,
    runbook_cell_links,
    runbook_link,
    sel,
    sources_up_stat,
    standard_variables,
    stat_panel,
    sum_by,
    table_panel,
    thresholds,
    timeseries_panel,
    to_json_model,
)

UID = "airflow-ops-overview"

# Rule names of the shipped rules all start with "Airflow"; scoping ALERTS to them keeps every
# alertname cell's runbook link pointing at a runbook that exists. The watchdog always fires (a
# dead man's switch), so it would only hide the alerts that matter.
SHIPPED_ALERTS = 'alertname=~"Airflow.+"'
WATCHDOG = "AirflowOpsWatchdog"


def build() -> dict[str, Any]:
    board = new_dashboard(
        UID,
        "Airflow overview",
        "Health of every Airflow deployment watched by airflow-ops: sources, components, DAGs,"
        " import errors, queues and firing alerts.",
        standard_variables(),
    )
    add_row(
        board,
        "Deployments",
        [
            sources_up_stat("Whether airflow-ops' last poll of each source (metadb, api, broker) succeeded."),
            stat_panel(
                "Components healthy",
                [query(sel("airflow_component_healthy"), "{{deployment}} {{component}}", instant=True)],
                unit="none",
                description="Airflow's own health endpoint, per component.",
                width=8,
                mappings=HEALTHY,
                steps=thresholds((None, "red"), (1, "green")),
            ),
            stat_panel(
                "Airflow version",
                [query(sel("airflow_info"), "{{deployment}}: {{version}}", instant=True)],
                unit="none",
                description="The version the REST API reports.",
                width=4,
                text_mode=BigValueTextMode.NAME,
                colour_background=False,
            ),
            stat_panel(
                "DAGs",
                [query(sum_by("state", sel("airflow_dags")), "{{state}}", instant=True)],
                unit="none",
                description="DAGs by state (active, paused, stale) across the selected deployments.",
                width=4,
                colour_background=False,
            ),
        ],
    )
    add_row(
        board,
        "Component heartbeats",
        [
            timeseries_panel(
                "Newest heartbeat age by component",
                [
                    query(
                        sel("airflow_component_newest_heartbeat_age_seconds"),
                        "{{deployment}} {{component}}",
                    )
                ],
                unit="s",
                description="Seconds since any host of the component last heartbeat. Over 120 s: the"
                " component is down (AirflowSchedulerDown and friends).",
                steps=thresholds((None, "green"), (120, "red")),
                links=[runbook_link("AirflowSchedulerDown")],
            ),
            timeseries_panel(
                "Heartbeat age per host",
                [
                    query(
                        sel("airflow_component_heartbeat_age_seconds"),
                        "{{deployment}} {{component}} {{hostname}}",
                    )
                ],
                unit="s",
                description="Seconds since each running component job's newest heartbeat. Over 60 s: stale.",
                steps=thresholds((None, "green"), (60, "red")),
                links=[runbook_link("AirflowSchedulerHeartbeatStale")],
            ),
        ],
    )
    add_row(
        board,
        "DAGs",
        [
            stat_panel(
                "Runs succeeded (time range)",
                [
                    query(
                        increase("airflow_dag_runs_finished_total", 'state="success"', window="$__range")
                        + " / "
                        + increase("airflow_dag_runs_finished_total", window="$__range"),
                        instant=True,
                    )
                ],
                unit="percentunit",
                description="Share of the DAG runs that finished in the time range which succeeded.",
                width=4,
                height=8,
                steps=thresholds((None, "red"), (0.9, "orange"), (0.99, "green")),
            ),
            timeseries_panel(
                "DAG runs finished by state",
                [
                    query(
                        increase("airflow_dag_runs_finished_total", by="state"),
                        "{{state}}",
                    )
                ],
                unit="short",
                width=20,
                bars=True,
                stacked=True,
            ),
            dag_table(
                "Lowest DAG success ratios",
                f"bottomk(25, {sel('airflow_dag_success_ratio')})",
                value="success ratio",
                unit="percentunit",
                steps=thresholds((None, "red"), (0.5, "orange"), (0.9, "green")),
                description="Share of successful runs among each DAG's last N finished runs, worst first."
                " Click a DAG for Airflow's UI or the DAG detail dashboard.",
                width=8,
                height=10,
                descending=False,
            ),
            dag_table(
                "Failing DAGs",
                f"{sel('airflow_dag_failing_seconds')} > 0",
                value="failing for",
                unit="s",
                steps=thresholds((None, "orange"), (3600, "red")),
                description="DAGs with no successful run since their first failed run, and for how long."
                " Over an hour: AirflowDagFailing.",
                width=8,
                height=10,
            ),
            dag_table(
                "Overdue DAGs",
                f"{sel('airflow_dag_run_overdue_seconds')} > 0",
                value="overdue by",
                unit="s",
                steps=thresholds((None, "orange"), (900, "red")),
                description="Scheduled, unpaused DAGs whose next run is past due without having been"
                " created. Over 15 minutes: AirflowDagRunOverdue.",
                width=8,
                height=10,
            ),
            timeseries_panel(
                "Success ratio of the least successful DAGs",
                [query(f"bottomk(10, {sel('airflow_dag_success_ratio')})", "{{deployment}} {{dag_id}}")],
                unit="percentunit",
                description="The 10 lowest success ratios at each point in time. Click a line for the DAG"
                " in Airflow's UI or the DAG detail dashboard.",
                width=24,
                max_value=1,
                links=dag_series_links(),
            ),
        ],
    )
    add_row(
        board,
        "Import errors and queues",
        [
            stat_panel(
                "Import errors",
                [query(sum_by("deployment", sel("airflow_import_errors")), "{{deployment}}", instant=True)],
                unit="none",
                description="DAG files that currently fail to import.",
                width=4,
                height=8,
                steps=thresholds((None, "green"), (1, "red")),
                links=[runbook_link("AirflowDagImportError")],
            ),
            table_panel(
                "Files failing to import",
                [query(sel("airflow_import_error_info"))],
                unit="none",
                width=8,
                hidden=["Value"],
                columns={"filename": Column(links=[runbook_link("AirflowDagImportError")])},
            ),
            timeseries_panel(
                "Broker queue depth",
                [
                    query(
                        sum_by("deployment, queue", sel("airflow_executor_queue_depth")),
                        "{{deployment}} {{queue}}",
                    )
                ],
                unit="short",
                description="Messages waiting in the Celery broker's queues.",
                width=6,
            ),
            timeseries_panel(
                "Task instances waiting",
                [
                    query(
                        sum_by(
                            "deployment, state", sel("airflow_task_instances", 'state=~"scheduled|queued"')
                        ),
                        "{{deployment}} {{state}}",
                    )
                ],
                unit="short",
                description="Task instances scheduled (waiting for a slot) or queued (waiting for a worker).",
                width=6,
            ),
        ],
    )
    add_row(
        board,
        "Alerts",
        [
            table_panel(
                "Firing alerts (Prometheus)",
                [query(sel("ALERTS", 'alertstate="firing"', SHIPPED_ALERTS, f'alertname!="{WATCHDOG}"'))],
                unit="none",
                description="Alerts of the shipped rules firing in Prometheus. Click an alert name for"
                " its runbook, a DAG id for Airflow (the always-firing watchdog is left out).",
                width=18,
                height=8,
                hidden=["Value", "alertstate"],
                columns={
                    "alertname": Column(links=runbook_cell_links()),
                    "dag_id": Column(links=dag_cell_links()),
                },
            ),
            stat_panel(
                "Firing alerts (airflow-ops engine)",
                [
                    query(
                        sum_by("deployment", sel("airflow_ops_alerts", 'state="firing"')),
                        "{{deployment}}",
                        instant=True,
                    )
                ],
                unit="none",
                description="Alerts the built-in evaluator of airflow-ops has firing (reported by the"
                " replica that holds the alerting lock). With the shipped rules 1 is healthy: the"
                f" {WATCHDOG} dead man's switch always fires.",
                width=6,
                height=8,
                steps=thresholds((None, "green"), (2, "red")),
            ),
        ],
    )
    return to_json_model(board)
