"""DAG ``dashboards_probe`` for the Grafana dashboards proof (tests/integration/test_dashboards_proof.py
and ``python -m grafana_dashboards.proof``). Every minute, so scheduled runs give schedule-delay and
overdue data; created paused, so it only runs while the proof unpauses it. One run at a time: a
held run keeps the next scheduled ones from starting, as a DAG that cannot keep up does.

``ok`` finishes at once. ``maybe_fail`` fails while the file ``$AIRFLOW_HOME/dashboards_probe.fail``
exists (scheduled runs too), unless the run's conf says ``{"fail": false}`` (or ``true``); with
``{"hold": N}`` it first waits up to N seconds, until ``$AIRFLOW_HOME/dashboards_probe.release``
exists. Valid on Airflow 2.11 and 3.x.
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


def _flag(name: str) -> str:
    return os.path.join(os.environ.get("AIRFLOW_HOME", "."), f"dashboards_probe.{name}")


def _ok() -> None:
    print("dashboards_probe: ok")


def _maybe_fail(dag_run=None, **_context) -> None:  # Airflow injects the run
    conf = (dag_run.conf if dag_run else None) or {}
    deadline = time.monotonic() + float(conf.get("hold", 0))
    while time.monotonic() < deadline and not os.path.exists(_flag("release")):
        time.sleep(1)
    if conf.get("fail", os.path.exists(_flag("fail"))):
        raise RuntimeError("dashboards_probe failed on request")
    print("dashboards_probe: maybe_fail succeeded")


with DAG(
    dag_id="dashboards_probe",
    description="Probe for the Grafana dashboards proof",
    schedule="* * * * *",
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    is_paused_upon_creation=True,
    max_active_runs=1,
    tags=["test"],
    default_args={"owner": "airflow-ops", "retries": 0},
):
    PythonOperator(task_id="ok", python_callable=_ok)
    PythonOperator(task_id="maybe_fail", python_callable=_maybe_fail)
