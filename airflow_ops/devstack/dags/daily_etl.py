"""Nightly warehouse load: extract → transform → load. Valid on Airflow 2.11 and 3.x."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone

try:  # Airflow 3: the Task SDK and the standard provider
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.operators.python import PythonOperator

# The demo wants runs every few minutes; real deployments run this nightly.
FAST = os.environ.get("AIRFLOW_OPS_DEMO_FAST") == "1"


def _step(name: str, seconds: float) -> None:
    print(f"{name}: working for {seconds}s")
    time.sleep(seconds)


with DAG(
    dag_id="daily_etl",
    description="Extract orders from the shop DB, transform, load into the warehouse",
    schedule="*/2 * * * *" if FAST else "@daily",
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    tags=["etl", "warehouse"],
    default_args={"owner": "data-eng", "retries": 1, "retry_delay": timedelta(minutes=1)},
):
    extract = PythonOperator(task_id="extract", python_callable=_step, op_args=["extract", 2])
    transform = PythonOperator(task_id="transform", python_callable=_step, op_args=["transform", 2])
    load = PythonOperator(task_id="load", python_callable=_step, op_args=["load", 1])
    extract >> transform >> load
