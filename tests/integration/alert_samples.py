"""Sample alerts for the receiver and outbox tests: one DagFailing alert about a DAG."""

from __future__ import annotations

import time

from airflow_ops.alerts.model import Alert, AlertState


def alert(dag_id: str = "etl", state: AlertState = AlertState.FIRING, *, now: float | None = None) -> Alert:
    """A critical DagFailing alert for ``dag_id`` in deployment "prod", firing for about an hour
    before ``now`` (the current time unless given); a resolved one resolved at ``now``."""
    now = time.time() if now is None else now
    return Alert(
        labels={"alertname": "DagFailing", "deployment": "prod", "dag_id": dag_id, "severity": "critical"},
        annotations={
            "summary": f"DAG {dag_id} has failed for an hour",
            "runbook_url": "https://rb.example/x",
        },
        state=state,
        value=3700,
        active_at=now - 4000,
        fired_at=now - 3700,
        resolved_at=now if state is AlertState.RESOLVED else None,
    )
