"""airflow-ops itself: are its polls fast and succeeding, its series in budget, its alerts delivered."""

from __future__ import annotations

from typing import Any

from .panels import (
    add_row,
    increase,
    new_dashboard,
    quantile_queries,
    query,
    runbook_link,
    sel,
    sources_up_stat,
    standard_variables,
    stat_panel,
    sum_by,
    thresholds,
    timeseries_panel,
    to_json_model,
    value_map,
)

UID = "airflow-ops-self"


def build() -> dict[str, Any]:
    board = new_dashboard(
        UID,
        "airflow-ops itself",
        "The companion's own health: source polls, series budget, alert evaluation and notifications.",
        standard_variables(airflow_url=False),
    )
    add_row(
        board,
        "Polls",
        [
            sources_up_stat(),
            stat_panel(
                "Last poll age",
                [
                    query(
                        f"time() - {sel('airflow_ops_last_poll_timestamp_seconds')}",
                        "{{deployment}}",
                        instant=True,
                    )
                ],
                unit="s",
                description="Seconds since the last poll of the deployment finished: a few poll"
                " intervals at most, or the poll loop is stuck.",
                width=8,
                steps=thresholds((None, "green"), (120, "orange"), (600, "red")),
            ),
            stat_panel(
                "Series exported",
                [query(sel("airflow_ops_series"), "{{deployment}}", instant=True)],
                unit="short",
                description="Series in the last render of the deployment (bounded by metrics.series_budget).",
                width=8,
                colour_background=False,
            ),
            timeseries_panel(
                "Source up",
                [query(sel("airflow_ops_up"), "{{deployment}} {{source}}")],
                unit="none",
                description="1 if the last poll of the source succeeded.",
                width=8,
                max_value=1,
            ),
            timeseries_panel(
                "Poll duration",
                quantile_queries(
                    "airflow_ops_poll_duration_seconds",
                    by="deployment, source",
                    legend="{{deployment}} {{source}}",
                ),
                unit="s",
                width=8,
            ),
            timeseries_panel(
                "Poll errors",
                [
                    query(
                        increase("airflow_ops_poll_errors_total", by="deployment, source, reason"),
                        "{{deployment}} {{source}}: {{reason}}",
                    )
                ],
                unit="short",
                description="Failed polls by source and reason (connect, auth, timeout, query, http,"
                " protocol).",
                width=8,
                bars=True,
                stacked=True,
                links=[runbook_link("AirflowOpsSourceUnreachable")],
            ),
            timeseries_panel(
                "Last poll age",
                [
                    query(
                        f"time() - {sel('airflow_ops_last_poll_timestamp_seconds')}",
                        "{{deployment}} {{instance}}",
                    )
                ],
                unit="s",
                width=8,
            ),
            timeseries_panel(
                "Series",
                [query(sel("airflow_ops_series"), "{{deployment}}")],
                unit="short",
                width=8,
            ),
            timeseries_panel(
                "Series dropped by the budget",
                [query(increase("airflow_ops_series_dropped_total", by="deployment"), "{{deployment}}")],
                unit="short",
                description="Per-DAG series left out because the series budget was exceeded: raise"
                " metrics.series_budget or narrow metrics.dag_allow/dag_deny.",
                width=8,
                bars=True,
                steps=thresholds((None, "green"), (1, "red")),
            ),
        ],
    )
    add_row(
        board,
        "Alerting and notifications",
        [
            stat_panel(
                "Alerting leader",
                [query(sel("airflow_ops_alerting_leader"), "{{deployment}} {{instance}}", instant=True)],
                unit="none",
                description="Which replica holds the ops store's lock and evaluates and notifies"
                " (exactly one per ops store should read leader).",
                width=6,
                height=8,
                mappings=value_map({"1": ("leader", "green"), "0": ("standby", "blue")}),
            ),
            timeseries_panel(
                "Alerts by state",
                [query(sum_by("deployment, state", sel("airflow_ops_alerts")), "{{deployment}} {{state}}")],
                unit="short",
                description="Alerts of the built-in evaluator by state (pending, firing, resolved).",
                width=18,
                stacked=True,
            ),
            timeseries_panel(
                "Notifications",
                [
                    query(
                        increase("airflow_ops_notifications_total", by="receiver, outcome"),
                        "{{receiver}} {{outcome}}",
                    )
                ],
                unit="short",
                description="Notification attempts by receiver and outcome (delivered, failed,"
                " rate_limited, skipped).",
                bars=True,
                stacked=True,
            ),
            timeseries_panel(
                "Notification latency",
                quantile_queries(
                    "airflow_ops_notification_latency_seconds", by="receiver", legend="{{receiver}}"
                ),
                unit="s",
                description="Time from a notification being queued to its delivery.",
            ),
        ],
    )
    return to_json_model(board)
