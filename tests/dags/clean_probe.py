"""DAG ``clean_probe``: runs that ``db clean`` tests age and clean. Its task returns a value, so
every run leaves an XCom (and rendered fields, a log row) for the cleanup to take with it.
Unpaused at creation so a triggered run starts without an extra API call."""

from __future__ import annotations

from datetime import datetime, timezone

try:  # Airflow 3
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.operators.python import PythonOperator


def _produce(**_context) -> dict:
    return {"produced": True}


with DAG(
    dag_id="clean_probe",
    schedule=None,
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    is_paused_upon_creation=False,
    tags=["test"],
    default_args={"owner": "airflow-ops", "retries": 0},
):
    PythonOperator(task_id="produce", python_callable=_produce)
