"""What on-call needs to see of a DAG failure without opening Airflow: the failed tasks of the
DAG's latest failed run and the last lines of each failed try's log, read through the REST API
(both generations), with links into the UI."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from airflow_ops.airflow.rest import RestApiSource

# Lines that look like credentials are blanked even when Airflow's own masker missed them
# (a secret printed by a task that was never registered as one).
_SECRET_LINE = re.compile(
    r"(?i)\b(password|passwd|pwd|secret|token|api[_-]?key|authorization|access[_-]?key)\b(\s*[=:]\s*|\s+)(\S+)"
)
MAX_FAILED_TASKS = 5
MAX_LINE_CHARS = 500


def _seg(value: str) -> str:
    return quote(value, safe="")


def scrub(text: str, mask: Callable[[str], str] = lambda t: t) -> str:
    """Mask configured secrets and anything shaped like ``password=…``/``token: …``."""
    return _SECRET_LINE.sub(lambda m: f"{m.group(1)}{m.group(2)}***", mask(text))


def _v1_text(content: str) -> str:
    """Airflow 2 puts the repr of ``[(host, text), …]`` in ``content``; plain text otherwise."""
    if content.startswith("[("):
        try:
            parts = ast.literal_eval(content)  # literals only: nothing is executed
        except (ValueError, SyntaxError):
            return content
        if isinstance(parts, list) and all(isinstance(p, tuple) and len(p) == 2 for p in parts):
            return "\n".join(str(text) for _, text in parts)
    return content


def log_lines(doc: dict[str, Any]) -> list[str]:
    """The lines of a log response: v1 gives text, v2 structured records (or plain strings)."""
    content = doc.get("content")
    if isinstance(content, str):
        return _v1_text(content).splitlines()
    lines: list[str] = []
    for record in content if isinstance(content, list) else []:
        if isinstance(record, str):
            lines.extend(record.splitlines())
            continue
        if not isinstance(record, dict):
            continue
        event = str(record.get("event", ""))
        level = str(record.get("level", "")).upper()
        lines.append(f"{level} {event}".strip() if level else event)
        for detail in record.get("error_detail") or []:
            if isinstance(detail, dict) and detail.get("exc_type"):
                lines.append(f"{detail['exc_type']}: {detail.get('exc_value', '')}")
    return lines


def failure_context(
    api: RestApiSource,
    dag_id: str,
    *,
    ui_url: str,
    tail: int,
    mask: Callable[[str], str] = lambda t: t,
) -> dict[str, Any] | None:
    """Context of the DAG's latest failed run, or None if it has none. Raises SourceError when the
    API cannot be read (the caller sends the notification without it)."""
    flavor = api.flavor()
    dag = _seg(dag_id)
    runs = (
        api.get_json(
            f"/dags/{dag}/dagRuns", [("state", "failed"), ("order_by", "-end_date"), ("limit", 1)]
        ).get("dag_runs")
        or []
    )
    if not runs:
        return None
    run_id = str(runs[0].get("dag_run_id") or runs[0].get("run_id") or "")
    tis = api.get_pages(f"/dags/{dag}/dagRuns/{_seg(run_id)}/taskInstances", "task_instances")
    failed = [ti for ti in tis if isinstance(ti, dict) and ti.get("state") == "failed"]
    base = ui_url.rstrip("/")
    tasks = []
    for ti in sorted(failed, key=lambda t: str(t.get("end_date") or ""))[:MAX_FAILED_TASKS]:
        task_id = str(ti.get("task_id", ""))
        try_number = int(ti.get("try_number") or 1)
        query: list[tuple[str, Any]] = [("full_content", "true")]
        map_index = ti.get("map_index")
        if isinstance(map_index, int) and map_index >= 0:
            query.append(("map_index", map_index))
        try:
            doc = api.get_json(
                f"/dags/{dag}/dagRuns/{_seg(run_id)}/taskInstances/{_seg(task_id)}/logs/{try_number}", query
            )
            lines = [line[:MAX_LINE_CHARS] for line in log_lines(doc) if line.strip()][-tail:] if tail else []
        except Exception as e:  # a missing log must not hide which task failed
            lines = [f"(log not available: {type(e).__name__})"]
        tasks.append(
            {
                "task_id": task_id,
                "try_number": try_number,
                "log_tail": scrub("\n".join(lines), mask),
                "log_url": base
                + flavor.ui_task_log_path.format(
                    dag_id=dag, run_id=_seg(run_id), task_id=_seg(task_id), try_number=try_number
                ),
            }
        )
    return {
        "dag_id": dag_id,
        "run_id": run_id,
        "failed_tasks": tasks,
        "failed_task_count": len(failed),
        "dag_url": base + flavor.ui_dag_path.format(dag_id=dag),
    }
