"""Weekly model retraining: train → validate → deploy. Valid on Airflow 2.11 and 3.x."""

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


def _train() -> dict[str, float]:
    time.sleep(3)
    return {"auc": 0.91}


def _validate(ti=None) -> None:  # Airflow injects the task instance
    metrics = ti.xcom_pull(task_ids="train") if ti else None
    print(f"validating model metrics {metrics}")
    time.sleep(1)


def _deploy() -> None:
    print("promoting model to production")
    time.sleep(1)


with DAG(
    dag_id="weekly_ml_pipeline",
    description="Retrain the churn model, validate it against the holdout set, deploy it",
    schedule="*/5 * * * *" if FAST else "@weekly",
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    tags=["ml"],
    default_args={"owner": "ml-team", "retries": 1, "retry_delay": timedelta(minutes=5)},
):
    train = PythonOperator(task_id="train", python_callable=_train)
    validate = PythonOperator(task_id="validate", python_callable=_validate)
    deploy = PythonOperator(task_id="deploy", python_callable=_deploy)
    train >> validate >> deploy
