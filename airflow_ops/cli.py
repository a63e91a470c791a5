"""The `airflow-ops` command line: parse, call, print (text or --json). No logic lives here."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import click

from .cli_alerting import register as register_alerting
from .cli_maintenance import register as register_maintenance
from .config import Config, ConfigError, load_config, mask


class _MaskSecrets(logging.Filter):
    """Last line of defence: no configured secret reaches a log line, even inside a library error."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = mask(record.getMessage(), self.config)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = mask(logging.Formatter().formatException(record.exc_info), self.config)
            record.exc_info = None
        return True


def _setup_logging(config: Config, level: str | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_MaskSecrets(config))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or config.log_level)


def _load(config_path: str | None) -> Config:
    try:
        return load_config(config_path)
    except ConfigError as e:
        raise click.ClickException(f"invalid configuration:\n{e}") from None


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="AIRFLOW_OPS_CONFIG",
    help="YAML config file (default: $AIRFLOW_OPS_CONFIG, else Airflow's own environment).",
)


@click.group()
@click.version_option(package_name="airflow-ops")
def main() -> None:
    """Operations and observability companion for Apache Airflow 2 and 3."""


@main.command()
@config_option
@click.option("--listen", help="Address to bind (default 127.0.0.1).")
@click.option("--port", type=int, help="Port to bind (default 9112).")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))
def serve(config_path: str | None, listen: str | None, port: int | None, log_level: str | None) -> None:
    """Poll Airflow and serve /metrics, /healthz and /readyz until SIGTERM."""
    from .service import OpsService
    from .store import StoreError

    config = _load(config_path)
    overrides = {k: v for k, v in {"listen": listen, "port": port}.items() if v is not None}
    if overrides:
        config = config.model_copy(update={"service": config.service.model_copy(update=overrides)})
    _setup_logging(config, log_level)
    try:
        service = OpsService(config)
    except (ConfigError, StoreError) as e:  # rule files, ops store
        raise click.ClickException(str(e)) from None
    try:
        service.run_until_signalled()
    except OSError as e:
        raise click.ClickException(
            f"cannot serve on {config.service.listen}:{config.service.port}: {e}"
        ) from None


@main.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def check(config_path: str | None, as_json: bool) -> None:
    """Validate the config and reach every source; exit 1 if anything is wrong."""
    from .poller import DeploymentPoller

    config = _load(config_path)
    _setup_logging(config, "ERROR")
    report: dict[str, Any] = {}
    ok = True
    for name in config.deployments:
        poller = DeploymentPoller.from_config(name, config)
        try:
            snap = poller.poll()
        finally:
            poller.close()
        entries = {}
        for source, status in snap.sources.items():
            entry: dict[str, Any] = {"ok": status.up, "seconds": round(status.duration_seconds, 3)}
            if not status.up:
                ok = False
                entry.update(reason=status.error_reason, error=status.error_message)
            entries[source] = entry
        if snap.db is not None:
            entries["metadb"]["airflow_schema"] = f"{snap.db.schema_major}.x"
            entries["metadb"]["dags"] = len(snap.db.dags)
        if snap.api is not None:
            entries["api"]["airflow_version"] = snap.api.version
            entries["api"]["health"] = dict(snap.api.health)
        if snap.broker is not None:
            entries["broker"]["queues"] = dict(snap.broker.queues)
        report[name] = entries
    if as_json:
        click.echo(json.dumps({"ok": ok, "deployments": report}, indent=2))
    else:
        for name, entries in report.items():
            click.echo(f"deployment {name}:")
            for source, entry in entries.items():
                details = ", ".join(f"{k}={v}" for k, v in entry.items() if k not in ("ok",))
                click.echo(f"  {source:8} {'ok  ' if entry['ok'] else 'FAIL'} {details}")
    sys.exit(0 if ok else 1)


@main.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the snapshot as JSON.")
@click.option(
    "--openmetrics", is_flag=True, help="Print metrics in OpenMetrics format instead of Prometheus text."
)
def snapshot(config_path: str | None, as_json: bool, openmetrics: bool) -> None:
    """Poll once and print the result (Prometheus text by default) — for cron and debugging."""
    from .service import OpsService
    from .snapshot import to_jsonable

    config = _load(config_path)
    _setup_logging(config, "WARNING")
    service = OpsService(config, with_alerting=False)  # a one-off poll must not act on alerts
    try:
        rendered = service.poll_once()
    finally:
        service.stop()
    if as_json:
        click.echo(json.dumps([to_jsonable(s) for s in rendered.snapshots], indent=2))
    else:
        click.echo(rendered.encode(openmetrics).decode(), nl=False)
    down = [f"{s.deployment}/{n}" for s in rendered.snapshots for n, st in s.sources.items() if not st.up]
    if down:
        click.echo(f"sources down: {', '.join(down)}", err=True)
        sys.exit(1)


@main.command()
@click.option("--port", type=int, default=9112, show_default=True, help="Port for airflow-ops serve.")
def demo(port: int) -> None:
    """Start a local Airflow 3 with example DAGs, watched by airflow-ops (and Prometheus)."""
    from .devstack.demo import run_demo

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_demo(port=port)


@main.command()
def catalogue() -> None:
    """Print the metric catalogue as a Markdown table (the README's table is this output)."""
    from .metrics import catalogue_markdown

    click.echo(catalogue_markdown())


register_alerting(main, _load, config_option)
register_maintenance(main, _load, config_option)


if __name__ == "__main__":  # pragma: no cover
    main()
