"""A DAG file that fails to import, as after a provider was removed: Airflow records an import
error for it (the file mentions airflow and dag, so the parser does look at it)."""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.providers.acme_warehouse.operators.sync import WarehouseSyncOperator

try:  # Airflow 3
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG

with DAG(
    dag_id="broken_dag",
    schedule="@daily",
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    default_args={"owner": "data-eng"},
):
    WarehouseSyncOperator(task_id="sync")
