"""`airflow-ops serve` watching a real Airflow 3 and a real Airflow 2: what an operator relies on.

Each test isolates itself by run_id and measures deltas, since counters start at the service's
start and the stacks are shared by the whole session."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from loopback_proxy import LoopbackProxy
from psycopg2 import sql
from scrape import Scraper

from airflow_ops.config import (
    ApiConfig,
    BasicAuthConfig,
    Config,
    DatabaseConfig,
    DeploymentConfig,
    MetricsConfig,
    Secret,
    ServiceConfig,
)
from airflow_ops.devstack.prometheus import PrometheusServer
from airflow_ops.service import OpsService

pytestmark = pytest.mark.airflow

PROBE = "ops_probe"


def stack_config(stack: Any, **service: Any) -> Config:
    return Config(
        service=ServiceConfig(port=0, poll_interval=1.0, **service),
        metrics=MetricsConfig(stale_heartbeat_threshold=120),
        deployments={
            "local": DeploymentConfig(
                database=DatabaseConfig(dsn=Secret(stack.db_dsn)),
                api=ApiConfig(url=stack.api_url, username=stack.username, password=Secret(stack.password)),
            )
        },
    )


@pytest.fixture(scope="module")
def ops(airflow_stack: Any) -> Iterator[tuple[OpsService, Scraper]]:
    service = OpsService(stack_config(airflow_stack))
    service.start()
    scraper = Scraper(service.url)
    scraper.wait("airflow_ops_up", lambda v: v == 1, source="metadb", timeout=60)
    yield service, scraper
    service.stop()


def run_id(tag: str) -> str:
    return f"ops_{tag}_{uuid.uuid4().hex[:8]}"


def test_each_finished_run_and_try_is_counted_exactly_once(airflow_stack: Any, ops: Any) -> None:
    _, scrape = ops
    before = {
        s: scrape.value("airflow_dag_runs_finished_total", dag_id=PROBE, state=s) or 0.0
        for s in ("success", "failed")
    }
    tries_before = scrape.value("airflow_task_instances_finished_total", dag_id=PROBE, state="success") or 0.0
    etl_before = scrape.value("airflow_dag_runs_finished_total", dag_id="daily_etl", state="success") or 0.0
    etl_tasks_before = (
        scrape.value("airflow_task_instances_finished_total", dag_id="daily_etl", state="success") or 0.0
    )
    runs = [(run_id("ok"), {}), (run_id("ok"), {}), (run_id("bad"), {"fail": True})]
    for rid, conf in runs:
        airflow_stack.trigger(PROBE, rid, conf)
    # And one run of a real example DAG: extract -> transform -> load.
    airflow_stack.unpause("daily_etl")
    etl_run = run_id("etl")
    airflow_stack.trigger("daily_etl", etl_run, {})
    states = [airflow_stack.wait_for_run(PROBE, rid) for rid, _ in runs]
    assert states == ["success", "success", "failed"]
    assert airflow_stack.wait_for_run("daily_etl", etl_run) == "success"

    scrape.wait(
        "airflow_dag_runs_finished_total", lambda v: v == before["success"] + 2, dag_id=PROBE, state="success"
    )
    scrape.wait(
        "airflow_dag_runs_finished_total", lambda v: v == before["failed"] + 1, dag_id=PROBE, state="failed"
    )
    # Many more polls later, nothing is counted twice.
    scrape.wait_polls(5)
    assert (
        scrape.value("airflow_dag_runs_finished_total", dag_id=PROBE, state="success")
        == before["success"] + 2
    )
    assert (
        scrape.value("airflow_dag_runs_finished_total", dag_id=PROBE, state="failed") == before["failed"] + 1
    )
    assert (
        scrape.value("airflow_task_instances_finished_total", dag_id=PROBE, state="success")
        == tries_before + 2
    )
    # Unpausing may also have started the DAG's scheduled run: let every run of it finish first.
    deadline = time.monotonic() + 300
    while any(
        r["state"] not in ("success", "failed")
        for r in airflow_stack.api("GET", "dags/daily_etl/dagRuns")["dag_runs"]
    ):
        assert time.monotonic() < deadline, "daily_etl runs did not finish"
        time.sleep(1)
    scrape.wait_polls(3)
    etl_runs = scrape.value("airflow_dag_runs_finished_total", dag_id="daily_etl", state="success") or 0.0
    etl_tasks = (
        scrape.value("airflow_task_instances_finished_total", dag_id="daily_etl", state="success") or 0.0
    )
    assert etl_runs - etl_before >= 1 and etl_tasks - etl_tasks_before == 3 * (etl_runs - etl_before)
    # The duration histogram saw the same runs.
    count = scrape.value("airflow_dag_run_duration_seconds_count", dag_id=PROBE, state="success")
    assert count is not None and count >= 2


def test_failing_dag_shows_failing_time_until_a_success(airflow_stack: Any, ops: Any) -> None:
    _, scrape = ops
    bad = run_id("fail")
    airflow_stack.trigger(PROBE, bad, {"fail": True})
    assert airflow_stack.wait_for_run(PROBE, bad) == "failed"
    scrape.wait("airflow_dag_last_run_state", lambda v: v == 1, dag_id=PROBE, state="failed")
    first = scrape.wait("airflow_dag_failing_seconds", lambda v: v is not None and v > 0, dag_id=PROBE)
    scrape.wait_polls(3)
    later = scrape.value("airflow_dag_failing_seconds", dag_id=PROBE)
    assert later is not None and first is not None and later > first, "failing time must keep growing"
    ratio = scrape.value("airflow_dag_success_ratio", dag_id=PROBE)
    assert ratio is not None and 0 <= ratio < 1

    good = run_id("recover")
    airflow_stack.trigger(PROBE, good, {})
    assert airflow_stack.wait_for_run(PROBE, good) == "success"
    scrape.wait("airflow_dag_failing_seconds", lambda v: v == 0, dag_id=PROBE)
    assert scrape.value("airflow_dag_last_run_state", dag_id=PROBE, state="success") == 1
    last_success = scrape.value("airflow_dag_last_success_timestamp_seconds", dag_id=PROBE)
    assert last_success is not None and last_success > 0


def test_pool_limited_dag_makes_tasks_wait(airflow_stack: Any, ops: Any) -> None:
    _, scrape = ops
    # Example DAGs start paused, and a paused DAG's runs never start.
    airflow_stack.unpause("pool_limited")
    airflow_stack.trigger("pool_limited", run_id("pool"), {})
    scrape.wait(
        "airflow_task_instances", lambda v: v is not None and v >= 1, state="scheduled", pool="single_slot"
    )
    age = scrape.wait(
        "airflow_task_queued_oldest_age_seconds", lambda v: v is not None and v > 1, pool="single_slot"
    )
    scrape.wait_polls(2)
    assert (scrape.value("airflow_task_queued_oldest_age_seconds", pool="single_slot") or 0) > (age or 0)
    scrape.wait("airflow_pool_starving_tasks", lambda v: v is not None and v >= 1, pool="single_slot")
    assert scrape.value("airflow_pool_slots", pool="single_slot", state="total") == 1


def test_broken_dag_file_is_reported_per_file(ops: Any) -> None:
    _, scrape = ops
    scrape.wait("airflow_import_errors", lambda v: v is not None and v >= 1)
    files = [
        dict(lab)["filename"]
        for (name, lab), v in scrape.samples().items()
        if name == "airflow_import_error_info" and v == 1
    ]
    assert any(f.endswith("broken_dag.py") for f in files), files


def test_dags_owners_and_versions_are_exported(airflow_stack: Any, ops: Any) -> None:
    _, scrape = ops
    assert (scrape.value("airflow_dags", state="active") or 0) + (
        scrape.value("airflow_dags", state="paused") or 0
    ) >= 7
    assert scrape.value("airflow_dag_paused", dag_id="daily_etl") is not None
    info = [dict(lab)["version"] for (n, lab) in scrape.samples() if n == "airflow_info"]
    assert info == [airflow_stack.version]
    assert (scrape.value("airflow_metadb_table_bytes", table="dag_run") or 0) > 0


def test_promtool_and_a_real_prometheus_accept_the_output(airflow_stack: Any, tmp_path: Path) -> None:
    config = stack_config(
        airflow_stack, basic_auth=BasicAuthConfig(username="prom", password=Secret("pw-123"))
    )
    service = OpsService(config)
    service.start()
    try:
        scrape = Scraper(service.url, basic_auth=("prom", "pw-123"))
        scrape.wait("airflow_ops_up", lambda v: v == 1, source="api", timeout=60)
        assert Scraper(service.url).get("/metrics")[0] == 401, "metrics must require the configured auth"
        assert (
            Scraper(service.url).get("/healthz")[0] == 200 and Scraper(service.url).get("/readyz")[0] == 200
        )
        status, _, body = scrape.get("/metrics")
        assert status == 200
        res = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True)
        assert res.returncode == 0 and not res.stdout.strip(), res.stdout + res.stderr
        status, headers, om = scrape.get("/metrics", accept="application/openmetrics-text; version=1.0.0")
        assert status == 200 and om.endswith(b"# EOF\n")
        assert headers["Content-Type"].startswith("application/openmetrics-text")

        with PrometheusServer(
            tmp_path / "prom", [f"127.0.0.1:{service.port}"], basic_auth=("prom", "pw-123")
        ) as prom:
            prom.wait_for('up{job="airflow-ops"}', lambda r: bool(r) and r[0]["value"][1] == "1")
            result = prom.wait_for(
                'airflow_ops_up{deployment="local"}',
                lambda r: len(r) == 2 and all(x["value"][1] == "1" for x in r),
            )
            assert {r["metric"]["source"] for r in result} == {"metadb", "api"}
            assert prom.query('count(airflow_dag_paused{deployment="local"})')[0]["value"][1] != "0"
    finally:
        service.stop()


@pytest.fixture
def ops_role(airflow_stack: Any) -> Iterator[tuple[str, str]]:
    """A read-only login role for airflow-ops on the stack's DB, as an operator would create."""
    role = f"ops_ro_{uuid.uuid4().hex[:8]}"
    conn = psycopg2.connect(airflow_stack.db_dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        cur.execute(sql.SQL("GRANT pg_read_all_data, pg_read_all_stats TO {}").format(sql.Identifier(role)))
    yield role, airflow_stack.db_dsn.replace("postgres@", f"{role}@", 1)
    with conn.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
        cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
    conn.close()


def test_sources_go_down_and_recover_while_serving(airflow_stack: Any, ops_role: tuple[str, str]) -> None:
    role, dsn = ops_role
    host, port = airflow_stack.api_url.split("//", 1)[1].split(":")
    with LoopbackProxy(host, int(port)) as proxy:
        config = Config(
            service=ServiceConfig(port=0, poll_interval=1.0),
            deployments={
                "local": DeploymentConfig(
                    database=DatabaseConfig(dsn=Secret(dsn)),
                    api=ApiConfig(
                        url=proxy.url("http"),
                        username=airflow_stack.username,
                        password=Secret(airflow_stack.password),
                    ),
                )
            },
        )
        service = OpsService(config)
        service.start()
        admin = psycopg2.connect(airflow_stack.db_dsn)
        admin.autocommit = True
        try:
            scrape = Scraper(service.url)
            scrape.wait("airflow_ops_up", lambda v: v == 1, source="metadb", timeout=60)
            scrape.wait("airflow_ops_up", lambda v: v == 1, source="api", timeout=60)

            # The DB refuses the role: metadb goes down, the API part keeps being exported.
            with admin.cursor() as cur:
                cur.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(role)))
                cur.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,)
                )
            scrape.wait("airflow_ops_up", lambda v: v == 0, source="metadb", timeout=60)
            assert scrape.value("airflow_ops_up", source="api") == 1
            assert scrape.value("airflow_dags", state="active") is None, (
                "no stale DB data while the DB is down"
            )
            errors = scrape.values("airflow_ops_poll_errors_total", source="metadb")
            assert sum(errors) >= 1

            # The API stops answering.
            proxy.stop()
            scrape.wait("airflow_ops_up", lambda v: v == 0, source="api", timeout=60)
            assert scrape.get("/healthz")[0] == 200, "the service itself keeps serving"

            # Both come back; the service recovers by itself.
            with admin.cursor() as cur:
                cur.execute(sql.SQL("ALTER ROLE {} LOGIN").format(sql.Identifier(role)))
            proxy.start()
            scrape.wait("airflow_ops_up", lambda v: v == 1, source="metadb", timeout=60)
            scrape.wait("airflow_ops_up", lambda v: v == 1, source="api", timeout=60)
            assert scrape.value("airflow_dags", state="active") is not None
        finally:
            service.stop()
            admin.close()


def test_cli_check_snapshot_and_serve_sigterm(airflow_stack: Any, tmp_path: Path) -> None:
    env = {
        **os.environ,
        # Zero-config: the same settings Airflow itself runs with.
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_stack.db_dsn,
        "AIRFLOW__API__BASE_URL": airflow_stack.api_url,
        "AIRFLOW_OPS_API_USERNAME": airflow_stack.username,
        "AIRFLOW_OPS_API_PASSWORD": airflow_stack.password,
        "AIRFLOW_HOME": str(tmp_path),
    }
    env.pop("AIRFLOW_OPS_CONFIG", None)
    cli = [sys.executable, "-m", "airflow_ops"]
    res = subprocess.run([*cli, "check", "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f'"airflow_version": "{airflow_stack.version}"' in res.stdout

    bad = {**env, "AIRFLOW_OPS_API_PASSWORD": "wrong-Pa55word"}
    res = subprocess.run([*cli, "check"], env=bad, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "FAIL" in res.stdout
    assert "wrong-Pa55word" not in res.stdout + res.stderr

    res = subprocess.run([*cli, "snapshot"], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and 'airflow_ops_up{deployment="default",source="metadb"} 1.0' in res.stdout

    port_env = {**env, "AIRFLOW_OPS__SERVICE__PORT": "0", "AIRFLOW_OPS__SERVICE__POLL_INTERVAL": "1s"}
    proc = subprocess.Popen([*cli, "serve"], env=port_env, stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        while "serving on" not in line:
            line = proc.stderr.readline() if proc.stderr else ""
            assert line or proc.poll() is None, "serve exited early"
        url = line.rsplit("serving on ", 1)[1].strip()
        Scraper(url).wait("airflow_ops_up", lambda v: v == 1, source="metadb", timeout=60)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_killed_scheduler_ages_its_heartbeat_and_turns_unhealthy(airflow_stack: Any, ops: Any) -> None:
    """Last in this module: it takes the scheduler away, then restores it."""
    _, scrape = ops
    scrape.wait("airflow_component_healthy", lambda v: v == 1, component="scheduler", timeout=120)
    airflow_stack.stop_component("scheduler", signal.SIGKILL)
    try:
        scrape.wait("airflow_component_healthy", lambda v: v == 0, component="scheduler", timeout=180)
        ages = scrape.values("airflow_component_heartbeat_age_seconds", component="scheduler")
        assert ages and min(ages) > 20
        scrape.wait_polls(2)
        assert min(scrape.values("airflow_component_heartbeat_age_seconds", component="scheduler")) > min(
            ages
        )
    finally:
        airflow_stack.start_component("scheduler")
    scrape.wait("airflow_component_healthy", lambda v: v == 1, component="scheduler", timeout=180)
    assert min(scrape.values("airflow_component_heartbeat_age_seconds", component="scheduler")) < 30


def test_api_only_deployment_reports_component_heartbeats(airflow_stack: Any) -> None:
    """Managed Airflow often gives no access to the metadata DB: the health endpoint stands in."""
    config = Config(
        service=ServiceConfig(port=0, poll_interval=1.0),
        deployments={
            "managed": DeploymentConfig(
                api=ApiConfig(
                    url=airflow_stack.api_url,
                    username=airflow_stack.username,
                    password=Secret(airflow_stack.password),
                )
            )
        },
    )
    service = OpsService(config)
    service.start()
    try:
        scrape = Scraper(service.url)
        age = scrape.wait(
            "airflow_component_heartbeat_age_seconds",
            lambda v: v is not None,
            component="scheduler",
            timeout=60,
        )
        assert age is not None and 0 <= age < 60
        assert scrape.value("airflow_ops_up", source="metadb") is None
        assert scrape.value("airflow_dags", state="active") is None
    finally:
        service.stop()
