"""A long backfill-style task that keeps running ~10 minutes (long-running tasks, SLA/duration
alerts, killing a busy scheduler). Valid on Airflow 2.11 and 3.x."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone

try:  # Airflow 3
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.operators.python import PythonOperator

FAST = os.environ.get("AIRFLOW_OPS_DEMO_FAST") == "1"
DURATION_SECONDS = 600


def _crunch() -> None:
    # Small sleeps so the task reacts promptly to being killed or marked failed.
    deadline = time.monotonic() + DURATION_SECONDS
    while time.monotonic() < deadline:
        time.sleep(2)


with DAG(
    dag_id="slow_dag",
    description="Recompute customer lifetime value over the full history",
    schedule="*/5 * * * *" if FAST else "@daily",
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    tags=["analytics"],
    default_args={"owner": "analytics", "retries": 0, "execution_timeout": timedelta(minutes=30)},
):
    PythonOperator(task_id="crunch", python_callable=_crunch)
