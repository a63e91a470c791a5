"""Grafana dashboards for airflow-ops, generated with Grafana's own builders (grafana-foundation-sdk).

``DASHBOARDS`` maps each dashboard's short name to the function that builds its JSON model; the
committed file is ``grafana_dashboards/<name>.json``. Regenerate them all with
``python -m grafana_dashboards`` (``--check`` lists stale files and exits 1).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import dag_detail, maintenance, overview, scheduler, self_monitoring

DASHBOARDS_DIR = Path(__file__).resolve().parent

DASHBOARDS: dict[str, Callable[[], dict[str, Any]]] = {
    "overview": overview.build,
    "dag-detail": dag_detail.build,
    "scheduler": scheduler.build,
    "maintenance": maintenance.build,
    "self-monitoring": self_monitoring.build,
}


def output_path(name: str) -> Path:
    """Where the dashboard ``name`` is committed."""
    return DASHBOARDS_DIR / f"{name}.json"


def render(model: dict[str, Any]) -> str:
    """The committed text of a dashboard: the builder's key order, 2-space indent, final newline."""
    return json.dumps(model, indent=2, ensure_ascii=False) + "\n"
