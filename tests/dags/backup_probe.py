"""DAG ``backup_probe``: runs for the backup tests to find again in a restored database.
``{"fail": true}`` in the run's conf makes its task fail, so runs differ in state too.
Unpaused at creation so a triggered run starts without an extra API call."""

from __future__ import annotations

from datetime import datetime, timezone

try:  # Airflow 3
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.operators.python import PythonOperator


def _probe(dag_run=None, **_context) -> None:  # Airflow injects the run
    if ((dag_run.conf if dag_run else None) or {}).get("fail"):
        raise RuntimeError("backup_probe failed on request (conf fail=true)")
    print("backup_probe succeeded")


with DAG(
    dag_id="backup_probe",
    schedule=None,
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    is_paused_upon_creation=False,
    tags=["test"],
    default_args={"owner": "airflow-ops", "retries": 0},
):
    PythonOperator(task_id="probe", python_callable=_probe)
