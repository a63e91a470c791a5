"""`airflow-ops demo`: a real local Airflow 3 with the example DAGs on short schedules, watched by
`airflow-ops serve`, scraped by a local Prometheus when one is installed. Ctrl-C stops it all."""

from __future__ import annotations

import json
import shutil
import signal
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..config import (
    AlertingConfig,
    ApiConfig,
    Config,
    DatabaseConfig,
    DeploymentConfig,
    Secret,
    ServiceConfig,
)
from ..service import OpsService
from .install import AIRFLOW3
from .prometheus import PrometheusServer

if TYPE_CHECKING:
    from .stack import AirflowStack

SHIPPED_RULES = Path(__file__).resolve().parents[2] / "alert_rules"


def demo_config(stack: Any, port: int, poll_interval: float, webhook_url: str | None = None) -> Config:
    """The config airflow-ops would be given for this stack: its DB and its REST API, and — with a
    webhook to send to — the shipped alert rules (notifications print on the console)."""
    alerting = None
    if webhook_url and SHIPPED_RULES.is_dir():
        alerting = AlertingConfig.model_validate(
            {
                "rule_files": [str(SHIPPED_RULES / "*.yaml")],
                "route": {"receiver": "console", "group_wait": "10s", "group_interval": "1m"},
                "receivers": [{"name": "console", "webhook_configs": [{"url": webhook_url}]}],
            }
        )
    return Config(
        store=Secret(f"sqlite:///{Path(stack.home) / 'airflow-ops.db'}"),
        service=ServiceConfig(port=port, poll_interval=poll_interval),
        deployments={
            "demo": DeploymentConfig(
                database=DatabaseConfig(dsn=Secret(stack.db_dsn)),
                api=ApiConfig(url=stack.api_url, username=stack.username, password=Secret(stack.password)),
            )
        },
        alerting=alerting,
    )


class ConsoleReceiver:
    """A loopback webhook that prints each notification it gets (Alertmanager's webhook JSON)."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.end_headers()
                try:
                    doc = json.loads(body)
                except ValueError:
                    return
                for alert in doc.get("alerts", []):
                    labels = alert.get("labels", {})
                    where = " ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "alertname")
                    summary = alert.get("annotations", {}).get("summary", "")
                    status = str(alert.get("status", "?")).upper()
                    click.echo(f"[alert] {status} {labels.get('alertname')} {where}")
                    click.echo(f"        {summary}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/alerts"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def demo_stack(name: str = "demo", extra_dags_dirs: Sequence[Path] = ()) -> AirflowStack:
    """The demo's Airflow 3, not started: the example DAGs on short schedules, unpaused at creation
    (plus the DAG files in ``extra_dags_dirs``, e.g. the dashboards proof's probe)."""
    from .stack import EXAMPLE_DAGS_DIR, AirflowStack

    return AirflowStack(
        AIRFLOW3,
        name=name,
        dags_dirs=[EXAMPLE_DAGS_DIR, *extra_dags_dirs],
        extra_env={"AIRFLOW_OPS_DEMO_FAST": "1"},
        unpause_on_create=True,
    )


def run_demo(port: int = 9112, poll_interval: float = 10.0) -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    click.echo(f"starting Airflow {AIRFLOW3} with the example DAGs (first run installs it: a few minutes)…")
    stack = demo_stack()
    service: OpsService | None = None
    prometheus: PrometheusServer | None = None
    console = ConsoleReceiver()
    try:
        stack.start()
        service = OpsService(demo_config(stack, port, poll_interval, console.url))
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
        if service.alerting is not None:
            click.echo(f"alerts           {service.url}/api/alerts   (notifications print here)")
        click.echo("\nThe example DAGs run every few minutes; Ctrl-C stops everything.")
        stop.wait()
    finally:
        click.echo("stopping…")
        if prometheus:
            prometheus.stop()
        if service:
            service.stop()
        console.stop()
        stack.stop(drop_db=True)
