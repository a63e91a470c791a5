"""A DAG whose only task always fails (a permanently broken job). Valid on Airflow 2.11 and 3.x."""

from __future__ import annotations

import os
from datetime import datetime, timezone

try:  # Airflow 3
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.operators.python import PythonOperator

FAST = os.environ.get("AIRFLOW_OPS_DEMO_FAST") == "1"


def _report() -> None:
    raise ValueError("upstream table analytics.daily_revenue does not exist")


with DAG(
    dag_id="always_failing",
    description="Revenue report against a table that was dropped",
    schedule="*/2 * * * *" if FAST else "@hourly",
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    tags=["reporting"],
    default_args={"owner": "analytics", "retries": 0},
):
    PythonOperator(task_id="build_report", python_callable=_report)
