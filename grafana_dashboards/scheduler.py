"""Scheduler and queues: where task instances wait (pools, queues, broker) and whether work is alive."""

from __future__ import annotations

from typing import Any

from .panels import (
    add_row,
    dag_table,
    new_dashboard,
    quantile_queries,
    query,
    runbook_link,
    sel,
    standard_variables,
    stat_panel,
    sum_by,
    table_panel,
    thresholds,
    timeseries_panel,
    to_json_model,
)

UID = "airflow-ops-scheduler"
WAITING = 'state=~"scheduled|queued"'
IN_USE = 'state=~"running|queued|deferred"'


def build() -> dict[str, Any]:
    board = new_dashboard(
        UID,
        "Airflow scheduler and queues",
        "Task instances by state, pool and queue; queue waits, pool slots, broker queues, stale"
        " heartbeats and active runs.",
        standard_variables(),
    )
    add_row(
        board,
        "Task instances",
        [
            timeseries_panel(
                "Task instances by state",
                [
                    query(
                        sum_by("deployment, state", sel("airflow_task_instances")), "{{deployment}} {{state}}"
                    )
                ],
                unit="short",
                description="Live task instances (scheduled, queued, running, deferred, ...).",
                stacked=True,
            ),
            timeseries_panel(
                "Waiting task instances by pool and queue",
                [
                    query(
                        sum_by("deployment, pool, queue, state", sel("airflow_task_instances", WAITING)),
                        "{{deployment}} {{pool}}/{{queue}} {{state}}",
                    )
                ],
                unit="short",
                description="Scheduled: waiting for a pool slot; queued: waiting for a worker.",
                stacked=True,
            ),
            table_panel(
                "Task instances by state, pool and queue",
                [query(f"{sel('airflow_task_instances')} > 0")],
                unit="short",
                description="Current live task instances, one row per deployment, pool, queue and state.",
                width=24,
                renames={"Value": "task instances"},
                sort_by="task instances",
            ),
        ],
    )
    add_row(
        board,
        "Queue waits",
        [
            timeseries_panel(
                "Oldest waiting task instance",
                [
                    query(
                        sel("airflow_task_queued_oldest_age_seconds"),
                        "{{deployment}} {{pool}}/{{queue}}",
                    )
                ],
                unit="s",
                description="Seconds the oldest scheduled or queued task instance has waited. Over 20"
                " minutes: AirflowTasksQueuedTooLong.",
                steps=thresholds((None, "green"), (1200, "red")),
                links=[runbook_link("AirflowTasksQueuedTooLong")],
            ),
            timeseries_panel(
                "Queue wait",
                quantile_queries(
                    "airflow_task_queue_wait_seconds",
                    by="deployment, pool, queue",
                    legend="{{deployment}} {{pool}}/{{queue}}",
                ),
                unit="s",
                description="Time task tries waited between queued and started.",
            ),
        ],
    )
    add_row(
        board,
        "Pools and broker",
        [
            timeseries_panel(
                "Pool slots in use",
                [
                    query(
                        sum_by("deployment, pool, state", sel("airflow_pool_slots", IN_USE)),
                        "{{deployment}} {{pool}} {{state}}",
                    ),
                ],
                unit="short",
                description="Slots taken by running, queued and deferred task instances.",
                width=8,
                stacked=True,
            ),
            timeseries_panel(
                "Pool slots open",
                [
                    query(
                        sel("airflow_pool_slots", 'state="open"'),
                        "{{deployment}} {{pool}}",
                    ),
                    query(
                        sel("airflow_pool_slots", 'state="total"'),
                        "{{deployment}} {{pool}} total",
                    ),
                ],
                unit="short",
                description="Open and total slots per pool (total -1: unlimited).",
                width=8,
                minimum=None,
            ),
            timeseries_panel(
                "Starving task instances",
                [query(sel("airflow_pool_starving_tasks"), "{{deployment}} {{pool}}")],
                unit="short",
                description="Scheduled task instances that cannot run for lack of open pool slots.",
                width=8,
                steps=thresholds((None, "green"), (1, "red")),
                links=[runbook_link("AirflowPoolStarving")],
            ),
            timeseries_panel(
                "Broker queue depth",
                [query(sel("airflow_executor_queue_depth"), "{{deployment}} {{queue}}")],
                unit="short",
                description="Messages waiting in the Celery broker's queues: work no worker has taken yet.",
                width=24,
            ),
        ],
    )
    add_row(
        board,
        "Heartbeats and runs",
        [
            stat_panel(
                "Stale task heartbeats",
                [query(sel("airflow_task_instances_stale_heartbeat"), "{{deployment}}", instant=True)],
                unit="short",
                description="Running task instances whose heartbeat is older than the stale threshold"
                " (their worker is probably gone).",
                width=4,
                height=8,
                steps=thresholds((None, "green"), (1, "red")),
                links=[runbook_link("AirflowTaskInstancesStaleHeartbeat")],
            ),
            timeseries_panel(
                "Component heartbeat age per host",
                [
                    query(
                        sel("airflow_component_heartbeat_age_seconds"),
                        "{{deployment}} {{component}} {{hostname}}",
                    ),
                    query(
                        sel("airflow_component_newest_heartbeat_age_seconds"),
                        "{{deployment}} {{component}} (newest)",
                    ),
                ],
                unit="s",
                description="Seconds since each component's heartbeat, per host and newest of any host.",
                width=10,
                steps=thresholds((None, "green"), (60, "red")),
                links=[runbook_link("AirflowSchedulerHeartbeatStale")],
            ),
            timeseries_panel(
                "Active DAG runs",
                [
                    query(
                        sum_by("deployment, state", sel("airflow_dag_runs_active")),
                        "{{deployment}} {{state}}",
                    )
                ],
                unit="short",
                description="DAG runs queued or running.",
                width=10,
                stacked=True,
            ),
            dag_table(
                "Longest running DAG runs",
                f"topk(20, {sel('airflow_dag_run_oldest_running_age_seconds')})",
                value="running for",
                unit="s",
                steps=thresholds((None, "green"), (21600, "orange")),
                description="Age of each DAG's oldest running run. Over 6 hours: AirflowDagRunTooLong.",
                width=24,
            ),
        ],
    )
    return to_json_model(board)
