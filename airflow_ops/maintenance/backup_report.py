"""Small pieces the backup actions share in their reports."""

from __future__ import annotations

from airflow_ops.alerts.templating import humanize1024
from airflow_ops.maintenance.report import Report


def size_text(n: int) -> str:
    """1234567 -> '1.177MiB' (Prometheus' humanize1024, as the alert texts write sizes)."""
    return f"{humanize1024(n)}B"


def failed_report(action: str, summary: str, errors: list[str], lines: list[str] | None = None) -> Report:
    return Report(action=action, planned=False, ok=False, summary=summary, lines=lines or [], errors=errors)
