"""DAG ``ops_probe``: tests drive success or failure on demand through the run's conf:
``{"fail": true}`` makes the task fail, ``{"sleep": N}`` makes it run N seconds first.
Unpaused at creation so a triggered run starts without an extra API call."""

from __future__ import annotations

import time
from datetime import datetime, timezone

try:  # Airflow 3
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.operators.python import PythonOperator


def _probe(dag_run=None, **_context) -> None:  # Airflow injects the run
    conf = (dag_run.conf if dag_run else None) or {}
    time.sleep(float(conf.get("sleep", 0)))
    if conf.get("fail"):
        raise RuntimeError("ops_probe failed on request (conf fail=true)")
    print("ops_probe succeeded")


with DAG(
    dag_id="ops_probe",
    schedule=None,
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    is_paused_upon_creation=False,
    tags=["test"],
    default_args={"owner": "airflow-ops", "retries": 0},
):
    PythonOperator(task_id="probe", python_callable=_probe)
