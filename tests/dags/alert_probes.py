"""DAGs ``alert_probe_<name>`` for the alerting end-to-end tests: one per test, so each test owns
its DAG's failing state. ``{"fail": true}`` in the run's conf fails the task after logging a line
with a fake credential (the notification must show the error but mask that line)."""

from __future__ import annotations

from datetime import datetime, timezone

try:  # Airflow 3
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.operators.python import PythonOperator

PROBES = ("notify", "silence", "ratelimit", "smtp", "restart", "replicas", "team")


def _probe(dag_run=None, **_context) -> None:  # Airflow injects the run
    conf = (dag_run.conf if dag_run else None) or {}
    if conf.get("fail"):
        print("connecting to the warehouse with password=hunter2-not-real")
        raise RuntimeError("alert probe failed on request: <b>&boom</b>")
    print("alert probe succeeded")


for name in PROBES:
    with DAG(
        dag_id=f"alert_probe_{name}",
        schedule=None,
        start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
        catchup=False,
        is_paused_upon_creation=False,
        tags=["alert-probe", f"team-{name}"],
        default_args={"owner": f"owner-{name}", "retries": 0},
    ):
        PythonOperator(task_id="extract", python_callable=_probe)
