"""The metric catalogue and the renderer: every family documented, labels right, budget enforced."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from airflow_ops.config import MetricsConfig
from airflow_ops.exposition import Encoder
from airflow_ops.metrics import CATALOGUE, SPECS, SnapshotRenderer, catalogue_markdown
from airflow_ops.service import Rendered
from airflow_ops.snapshot import (
    AlertingState,
    ApiState,
    BrokerState,
    ComponentHeartbeat,
    DagInfo,
    DagRunHealth,
    DbState,
    HistogramAccumulator,
    ImportErrorInfo,
    MaintenanceState,
    MaintenanceTaskState,
    PoolSlots,
    RunHistory,
    Snapshot,
    SourceStatus,
    TableStats,
    TaskInstanceGroup,
)

REPO = Path(__file__).resolve().parents[2]
NOW = 1_800_000_000.0


def _hist(*values: float) -> HistogramAccumulator:
    acc = HistogramAccumulator((1, 10, 100))
    for v in values:
        acc.observe(v)
    return acc


def full_snapshot(deployment: str = "prod", dags: int = 3) -> Snapshot:
    """A snapshot in which every part is filled, so every catalogue entry has samples."""
    dag_ids = [f"dag_{i:04d}" for i in range(dags)]
    return Snapshot(
        deployment=deployment,
        taken_at=NOW,
        sources={n: SourceStatus(n, True, 0.01) for n in ("metadb", "api", "broker")},
        poll_durations={"metadb": _hist(0.05).freeze()},
        poll_errors={("api", "timeout"): 2},
        db=DbState(
            schema_major=3,
            dags=[DagInfo(d, "data-eng", i == 1, False, True, NOW - 30) for i, d in enumerate(dag_ids)],
            dag_health=[DagRunHealth(d, "failed", NOW - 7200, NOW - 600, 0.7, NOW - 50) for d in dag_ids],
            runs_active={"running": 2},
            task_groups=[
                TaskInstanceGroup("scheduled", "single_slot", "default", 3, NOW - 120),
                TaskInstanceGroup("running", "single_slot", "default", 1),
            ],
            stale_heartbeat_task_instances=1,
            heartbeats=[ComponentHeartbeat("scheduler", "host-a", NOW - 4)],
            newest_heartbeats={"scheduler": NOW - 4, "triggerer": None},
            task_failing_streaks={(d, "flaky_task"): 2 for d in dag_ids},  # always per task: sparse
            tables=[TableStats("task_instance", 1000, 65536)],
            history=RunHistory(
                dag_runs_finished={(d, "success"): 2 for d in dag_ids},
                dag_run_duration={(d, "success"): _hist(3, 40).freeze() for d in dag_ids},
                dag_run_schedule_delay={d: _hist(2).freeze() for d in dag_ids},
                task_instances_finished={(d, "extract", "success"): 2 for d in dag_ids},
                task_duration={(d, "extract"): _hist(1.5).freeze() for d in dag_ids},
                task_queue_wait={("default_pool", "default"): _hist(0.5, 12).freeze()},
            ),
        ),
        api=ApiState(
            version="3.3.2",
            health={"scheduler": True, "triggerer": False},
            import_errors=[ImportErrorInfo("/dags/broken.py"), ImportErrorInfo("/dags/broken.py")],
            pools=[PoolSlots("single_slot", 1, 0, 1, 0, 3, 0), PoolSlots("unlimited", -1, -1, 0, 0, 5, 0)],
        ),
        broker=BrokerState({"default": 7}),
        alerting=AlertingState(
            True, {"firing": 1, "pending": 0}, {("oncall", "delivered"): 2}, {"oncall": _hist(0.4).freeze()}
        ),
        maintenance=MaintenanceState(
            tasks={
                "backup": MaintenanceTaskState("success", NOW - 3600, 0.0, bytes_written=10_000),
                "db_clean": MaintenanceTaskState("failed", None, 7200.0, rows_deleted=1500),
                "logs_clean": MaintenanceTaskState(
                    "success", NOW - 60, None, files_deleted=3, bytes_freed=4096
                ),
            },
            backup_age_seconds=3700.0,
            backup_size_bytes=10_000,
            backup_verified_age_seconds=math.inf,
            log_volume_free_bytes=5e9,
            log_volume_free_ratio=0.25,
        ),
    )


def render(snapshots: list[Snapshot], config: MetricsConfig | None = None) -> str:
    return render_with(SnapshotRenderer(config or MetricsConfig()), snapshots)


def render_with(renderer: SnapshotRenderer, snapshots: list[Snapshot]) -> str:
    """What the service serves for these snapshots (a fresh encoder: nothing carried over)."""
    families = renderer.families(snapshots)
    return Rendered(families, snapshots, Encoder().encode(families)).encode(openmetrics=False).decode()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    want = set(labels.items())
    hits = [v for (n, lab), v in samples(text).items() if n == name and want <= set(lab)]
    assert len(hits) == 1, f"{name}{labels}: {len(hits)} samples"
    return hits[0]


def test_every_catalogue_metric_is_rendered_with_deployment() -> None:
    text = render([full_snapshot()])
    names = {n for n, _ in samples(text)}
    for spec in CATALOGUE:
        base = {spec.name, spec.name + "_bucket", spec.name + "_total" if spec.type == "counter" else ""}
        assert names & base or spec.name in names, f"{spec.name} has no samples"
    assert all(dict(lab).get("deployment") == "prod" for _, lab in samples(text))


def test_values_derive_from_snapshot_times() -> None:
    text = render([full_snapshot()])
    assert value(text, "airflow_dag_failing_seconds", dag_id="dag_0000") == 600
    assert value(text, "airflow_dag_run_overdue_seconds", dag_id="dag_0000") == 30
    # A paused DAG is never "overdue".
    assert not [
        k
        for k in samples(text)
        if k[0] == "airflow_dag_run_overdue_seconds" and ("dag_id", "dag_0001") in k[1]
    ]
    assert value(text, "airflow_component_heartbeat_age_seconds", component="scheduler") == 4
    assert value(text, "airflow_task_queued_oldest_age_seconds", pool="single_slot") == 120
    assert value(text, "airflow_task_instances", state="queued", pool="single_slot") == 0
    assert value(text, "airflow_task_instances", state="scheduled", pool="single_slot") == 3
    assert value(text, "airflow_import_errors") == 1
    assert value(text, "airflow_pool_starving_tasks", pool="single_slot") == 3
    assert value(text, "airflow_pool_starving_tasks", pool="unlimited") == 0
    assert value(text, "airflow_dag_last_run_state", dag_id="dag_0002", state="failed") == 1
    assert value(text, "airflow_dag_last_run_state", dag_id="dag_0002", state="success") == 0
    assert value(text, "airflow_dags", state="paused") == 1
    assert value(text, "airflow_ops_poll_errors_total", source="api", reason="timeout") == 2
    assert value(text, "airflow_ops_maintenance_last_run_status", task="db_clean") == 0
    assert value(text, "airflow_ops_maintenance_last_run_status", task="backup") == 1
    assert value(text, "airflow_ops_maintenance_rows_deleted_total", task="db_clean") == 1500
    assert value(text, "airflow_ops_maintenance_overdue_seconds", task="db_clean") == 7200
    assert value(text, "airflow_ops_backup_verified_age_seconds") == math.inf
    assert value(text, "airflow_dag_run_duration_seconds_bucket", dag_id="dag_0000", le="10.0") == 1
    assert value(text, "airflow_dag_run_duration_seconds_bucket", dag_id="dag_0000", le="+Inf") == 2
    assert value(text, "airflow_dag_run_duration_seconds_sum", dag_id="dag_0000") == 43


def test_counters_exist_at_zero_before_their_first_event() -> None:
    """Prometheus' increase() needs a sample before the first event: a counter that appears at 1
    reads as no increase, so a source's first failure or a task's first cleanup would be lost."""
    text = render([full_snapshot()])
    for source in ("metadb", "api"):
        for reason in ("connect", "auth", "timeout", "query", "http", "protocol", "internal"):
            expected = 2 if (source, reason) == ("api", "timeout") else 0
            assert value(text, "airflow_ops_poll_errors_total", source=source, reason=reason) == expected
    for counter in ("rows_deleted", "files_deleted", "bytes_freed"):  # db_vacuum never ran
        assert value(text, f"airflow_ops_maintenance_{counter}_total", task="db_vacuum") == 0
    # Every live DAG has both run counters; none of these has failed yet.
    assert value(text, "airflow_dag_runs_finished_total", dag_id="dag_0000", state="failed") == 0
    assert value(text, "airflow_dag_runs_finished_total", dag_id="dag_0000", state="success") == 2
    # Only the counters: a task that never ran has no last status or last success.
    names = {(n, dict(lab).get("task")) for n, lab in samples(text)}
    assert ("airflow_ops_maintenance_last_run_status", "db_vacuum") not in names


def test_failed_source_blanks_only_its_part() -> None:
    snap = full_snapshot()
    snap = Snapshot(
        snap.deployment,
        snap.taken_at,
        {**snap.sources, "api": SourceStatus("api", False, 10, "timeout")},
        db=snap.db,
        api=None,
        broker=snap.broker,
    )
    text = render([snap])
    assert value(text, "airflow_ops_up", source="api") == 0
    assert value(text, "airflow_ops_up", source="metadb") == 1
    assert not [k for k in samples(text) if k[0] in ("airflow_pool_slots", "airflow_info")]
    assert value(text, "airflow_dags", state="active") == 2


def test_api_heartbeats_stand_in_only_without_a_metadata_db() -> None:
    snap = full_snapshot()
    api = ApiState("3.3.2", heartbeats=[ComponentHeartbeat("scheduler", "", NOW - 9)])
    with_db = Snapshot(snap.deployment, NOW, snap.sources, db=snap.db, api=api)
    assert value(render([with_db]), "airflow_component_heartbeat_age_seconds", component="scheduler") == 4
    db_down = Snapshot(snap.deployment, NOW, snap.sources, db=None, api=api)
    assert "airflow_component_heartbeat_age_seconds{" not in render([db_down])
    api_only = Snapshot(snap.deployment, NOW, {"api": SourceStatus("api", True, 0.1)}, api=api)
    assert value(render([api_only]), "airflow_component_heartbeat_age_seconds", component="scheduler") == 9


def test_task_labels_are_opt_in() -> None:
    assert 'task_id="extract"' not in render([full_snapshot()])
    text = render([full_snapshot()], MetricsConfig(task_labels=True))
    assert value(text, "airflow_task_instances_finished_total", dag_id="dag_0000", task_id="extract") == 2


def test_series_budget_drops_whole_dags_and_counts_them() -> None:
    snap = full_snapshot(dags=50)
    full = render([snap])
    total = value(full, "airflow_ops_series")
    renderer = SnapshotRenderer(MetricsConfig(series_budget=int(total) // 2))
    text = render_with(renderer, [snap])
    kept = {dict(lab)["dag_id"] for n, lab in samples(text) if "dag_id" in dict(lab)}
    # The first DAGs in dag_id order stay, complete; the rest are gone entirely.
    assert kept == {f"dag_{i:04d}" for i in range(len(kept))} and 0 < len(kept) < 50
    assert value(text, "airflow_dag_failing_seconds", dag_id="dag_0000") == 600
    assert value(text, "airflow_ops_series") <= total // 2
    dropped = value(text, "airflow_ops_series_dropped_total")
    assert dropped > 0
    # A counter: the next render adds to it.
    text2 = render_with(renderer, [snap])
    assert value(text2, "airflow_ops_series_dropped_total") == 2 * dropped


def test_series_budget_counts_every_series_and_lets_smaller_dags_after_a_big_one_in() -> None:
    snap = full_snapshot(dags=6)
    assert snap.db is not None
    history = snap.db.history
    # dag_0001 has twelve task-level histograms more than the others (task labels on).
    extra = {("dag_0001", f"task_{i:02d}"): _hist(2.0).freeze() for i in range(12)}
    history = replace(history, task_duration={**history.task_duration, **extra})
    snap = replace(snap, db=replace(snap.db, history=history))
    config = MetricsConfig(task_labels=True)
    full = samples(render([snap], config))
    per_dag = Counter(dict(labels)["dag_id"] for _, labels in full if "dag_id" in dict(labels))
    assert per_dag["dag_0001"] > 3 * per_dag["dag_0000"] and len(set(per_dag.values())) == 2
    late = 2  # airflow_ops_series and airflow_ops_series_dropped_total are outside the budget
    others = len(full) - late - sum(per_dag.values())
    # In dag_id order: room for dag_0000, then not for dag_0001, then for two more but not three.
    budget = others + sum(per_dag[d] for d in ("dag_0000", "dag_0002", "dag_0003", "dag_0004")) - 1
    config = MetricsConfig(task_labels=True, series_budget=budget)

    text = render([snap], config)

    kept = {dict(labels)["dag_id"] for _, labels in samples(text) if "dag_id" in dict(labels)}
    assert kept == {"dag_0000", "dag_0002", "dag_0003"}
    assert value(text, "airflow_ops_series") == len(samples(text))
    dropped = per_dag["dag_0001"] + per_dag["dag_0004"] + per_dag["dag_0005"]
    assert value(text, "airflow_ops_series_dropped_total") == dropped


def test_several_deployments_in_one_render() -> None:
    text = render([full_snapshot("prod"), full_snapshot("staging")])
    assert value(text, "airflow_executor_queue_depth", deployment="staging") == 7
    assert value(text, "airflow_executor_queue_depth", deployment="prod") == 7


def test_hostile_label_values_are_escaped() -> None:
    snap = full_snapshot()
    evil = 'x"} 1\nairflow_fake 1 #'
    snap = Snapshot(
        snap.deployment, snap.taken_at, snap.sources, api=ApiState("3", import_errors=[ImportErrorInfo(evil)])
    )
    text = render([snap])
    assert "\nairflow_fake" not in text
    assert value(text, "airflow_import_error_info", filename=evil) == 1


def test_readme_metric_table_is_generated_from_the_catalogue() -> None:
    readme = (REPO / "README.md").read_text()
    assert catalogue_markdown() in readme, "README's metric table is stale: run `airflow-ops catalogue`"


def test_metric_names_follow_conventions() -> None:
    for spec in CATALOGUE:
        assert re.fullmatch(r"airflow_(ops_)?[a-z_]+", spec.name)
        assert (spec.type == "counter") == spec.name.endswith("_total"), spec.name
        assert "deployment" not in spec.labels
    assert len(SPECS) == len(CATALOGUE)


def test_promtool_finds_no_problems_in_a_full_render(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: apt-get install prometheus (make test does it)")
    text = render([full_snapshot()])
    res = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip() == "" and res.stderr.strip() == ""
