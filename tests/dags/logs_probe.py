"""DAG ``logs_probe`` for the log-retention tests (``tests/integration/test_logs_clean.py``).

``first`` finishes at once; then ``mapped`` (two map indexes: the ``map_index=N`` layout) and
``hold``. With ``{"flag": "<path>"}`` in the run's conf, ``hold`` logs one line and then waits,
silently (its log's mtime must stay where a test puts it), until that file exists — at most
``max_wait`` seconds (default 600) — so a test can clean logs beside a task that is really running.
"""

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


def _first() -> None:
    print("logs_probe: first done")


def _mapped(index: int) -> None:
    print(f"logs_probe: mapped {index}")


def _hold(dag_run=None, **_context) -> None:  # Airflow injects the run
    conf = (dag_run.conf if dag_run else None) or {}
    flag = conf.get("flag")
    if not flag:
        return
    print(f"logs_probe: holding until {flag} exists", flush=True)
    deadline = time.monotonic() + float(conf.get("max_wait", 600))
    while not os.path.exists(flag):
        if time.monotonic() > deadline:
            raise RuntimeError("logs_probe: the flag file never appeared")
        time.sleep(0.2)
    print("logs_probe: released")


with DAG(
    dag_id="logs_probe",
    schedule=None,
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    is_paused_upon_creation=False,
    tags=["test"],
    default_args={"owner": "airflow-ops", "retries": 0},
):
    first = PythonOperator(task_id="first", python_callable=_first)
    mapped = PythonOperator.partial(task_id="mapped", python_callable=_mapped).expand(op_args=[[0], [1]])
    hold = PythonOperator(task_id="hold", python_callable=_hold)
    first >> [mapped, hold]
