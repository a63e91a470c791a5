"""`airflow-ops demo`: a real local Airflow 3 with the example DAGs on short schedules, watched by
`airflow-ops serve`, scraped by a local Prometheus when one is installed. Ctrl-C stops it all."""

from __future__ import annotations

import shutil
import signal
import threading
from pathlib import Path
from typing import Any

import click

from ..config import ApiConfig, Config, DatabaseConfig, DeploymentConfig, Secret, ServiceConfig
from ..service import OpsService
from .install import AIRFLOW3
from .prometheus import PrometheusServer


def demo_config(stack: Any, port: int, poll_interval: float) -> Config:
    """The config airflow-ops would be given for this stack: its DB and its REST API."""
    return Config(
        service=ServiceConfig(port=port, poll_interval=poll_interval),
        deployments={
            "demo": DeploymentConfig(
                database=DatabaseConfig(dsn=Secret(stack.db_dsn)),
                api=ApiConfig(url=stack.api_url, username=stack.username, password=Secret(stack.password)),
            )
        },
    )


def run_demo(port: int = 9112, poll_interval: float = 10.0) -> None:
    from .stack import EXAMPLE_DAGS_DIR, AirflowStack

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    click.echo(f"starting Airflow {AIRFLOW3} with the example DAGs (first run installs it: a few minutes)…")
    stack = AirflowStack(
        AIRFLOW3,
        name="demo",
        dags_dirs=[EXAMPLE_DAGS_DIR],
        extra_env={"AIRFLOW_OPS_DEMO_FAST": "1"},
        unpause_on_create=True,
    )
    service: OpsService | None = None
    prometheus: PrometheusServer | None = None
    try:
        stack.start()
        service = OpsService(demo_config(stack, port, poll_interval))
        service.start()
        if shutil.which("prometheus"):
            prometheus = PrometheusServer(Path(stack.home) / "prometheus", [f"127.0.0.1:{service.port}"])
            prometheus.start()
        login = Path(stack.home) / "demo-login.txt"
        login.write_text(f"username: {stack.username}\npassword: {stack.password}\n")
        login.chmod(0o600)
        click.echo(f"\nAirflow UI/API   {stack.api_url}   (login in {login})")
        click.echo(f"airflow-ops      {service.url}/metrics   {service.url}/api/snapshot")
        if prometheus:
            click.echo(f"Prometheus       {prometheus.url}/graph?g0.expr=airflow_dag_failing_seconds")
        else:
            click.echo("Prometheus       not installed (apt-get install prometheus to get one here)")
        click.echo("\nThe example DAGs run every few minutes; Ctrl-C stops everything.")
        stop.wait()
    finally:
        click.echo("stopping…")
        if prometheus:
            prometheus.stop()
        if service:
            service.stop()
        stack.stop(drop_db=True)
