"""Hourly ingest from partner APIs in parallel branches. The payments API is "down": that branch
fails after two quick retries, so every run fails (exercises retries, up_for_retry and failure
alerts). Valid on Airflow 2.11 and 3.x."""

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


def _ingest(source: str) -> int:
    time.sleep(1)
    print(f"ingested 100 records from {source}")
    return 100


def _ingest_payments() -> None:
    time.sleep(1)
    raise ConnectionError("payments API: 503 Service Unavailable")


def _merge() -> None:
    print("merging ingested batches")


with DAG(
    dag_id="api_ingest",
    description="Pull orders, customers and payments from partner APIs",
    schedule="*/3 * * * *" if FAST else "@hourly",
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    tags=["ingest", "api"],
    default_args={"owner": "data-eng", "retries": 2, "retry_delay": timedelta(seconds=3)},
):
    branches = [
        PythonOperator(task_id=f"ingest_{source}", python_callable=_ingest, op_args=[source])
        for source in ("orders", "customers")
    ]
    branches.append(PythonOperator(task_id="ingest_payments", python_callable=_ingest_payments))
    merge = PythonOperator(task_id="merge", python_callable=_merge)
    branches >> merge
