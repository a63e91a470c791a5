"""Four parallel exports that share the one-slot pool ``single_slot`` (a rate-limited partner
SFTP), so three always wait in ``scheduled``/``queued`` (pool usage and queue-depth metrics).
The devstack creates the pool. Valid on Airflow 2.11 and 3.x."""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone

try:  # Airflow 3
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.operators.python import PythonOperator

FAST = os.environ.get("AIRFLOW_OPS_DEMO_FAST") == "1"


def _export(partner: str) -> None:
    for _ in range(30):
        time.sleep(2)
    print(f"exported feed to {partner}")


with DAG(
    dag_id="pool_limited",
    description="Push daily feeds to partners over a single SFTP connection",
    schedule="*/5 * * * *" if FAST else "@daily",
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    tags=["export"],
    default_args={"owner": "data-eng", "retries": 0, "pool": "single_slot"},
):
    for partner in ("acme", "globex", "initech", "umbrella"):
        PythonOperator(task_id=f"export_{partner}", python_callable=_export, op_args=[partner])
