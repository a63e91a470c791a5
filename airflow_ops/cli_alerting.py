"""`airflow-ops alerts …` and `airflow-ops silence …`: thin commands over the rule loader, the ops
store and the receivers."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from .config import Config

json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def _alerting(config: Config) -> Any:
    if config.alerting is None:
        raise click.ClickException("no alerting section in the config (see README: Alerting)")
    return config.alerting


def _store(config: Config) -> Any:
    from .store import StoreError, open_store

    _alerting(config)
    try:
        return open_store(config.store.value)
    except StoreError as e:
        raise click.ClickException(f"cannot open the ops store: {e}") from None


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def register(main: click.Group, load: Any, config_option: Any) -> None:
    """Add the alerting command groups to the main CLI (``load`` turns --config into a Config)."""

    @main.group()
    def alerts() -> None:
        """Alert rules, current alerts, and receiver tests."""

    @alerts.command("check")
    @click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
    def alerts_check(files: tuple[str, ...]) -> None:
        """Validate rule files for the built-in evaluator (and Prometheus); promtool test files
        (with a top-level `tests:`) are run through the built-in evaluator."""
        from .alerts.promtool_tests import run_test_file
        from .alerts.rules import RuleError, load_rule_files

        failed = False
        for f in files:
            path = Path(f)
            try:
                is_test = "tests" in (_yaml_keys(path))
            except OSError as e:
                click.echo(f"{f}: cannot read: {e.strerror}", err=True)
                failed = True
                continue
            if is_test:
                problems = run_test_file(path)
                for p in problems:
                    click.echo(p, err=True)  # each already starts with the file's path
                failed |= bool(problems)
                if not problems:
                    click.echo(f"{f}: tests pass")
                continue
            try:
                rules = load_rule_files([f])
            except RuleError as e:
                click.echo(str(e), err=True)
                failed = True
                continue
            click.echo(f"{f}: {len(rules)} rule(s) OK")
        sys.exit(1 if failed else 0)

    @alerts.command("list")
    @config_option
    @json_option
    def alerts_list(config_path: str | None, as_json: bool) -> None:
        """The current alerts, as the evaluating replica last stored them."""
        from .alerts.silences import stored_alerts

        config = load(config_path)
        with _store(config) as store:
            rows = stored_alerts(store, time.time())
        if as_json:
            click.echo(json.dumps(rows, indent=2))
            return
        if not rows:
            click.echo("no alerts")
        for r in rows:
            labels = ", ".join(f"{k}={v}" for k, v in sorted(r["labels"].items()) if k != "alertname")
            note = f" (silenced by {', '.join(r['silenced_by'])})" if r["silenced_by"] else ""
            click.echo(
                f"{r['state']:9} {r['labels'].get('alertname', '?'):32} since {_when(r['active_at'])}  "
                f"{labels}{note}"
            )

    @alerts.command("test")
    @config_option
    @click.argument("receiver")
    def alerts_test(config_path: str | None, receiver: str) -> None:
        """Send a test notification through every integration of RECEIVER."""
        from .alerts.model import Alert, AlertState, Notification
        from .alerts.receivers import DeliveryError, build_integrations

        config = load(config_path)
        receivers = {r.name: r for r in _alerting(config).receivers}
        if receiver not in receivers:
            raise click.BadParameter(
                f"no receiver {receiver!r}; configured: {', '.join(sorted(receivers)) or 'none'}",
                param_hint="RECEIVER",
            )
        now = time.time()
        alert = Alert(
            labels={"alertname": "AirflowOpsTest", "severity": "info", "deployment": "test"},
            annotations={
                "summary": "Test notification from airflow-ops",
                "description": f"Sent by `airflow-ops alerts test {receiver}`; nothing is wrong.",
            },
            state=AlertState.FIRING,
            value=1.0,
            active_at=now,
            fired_at=now,
        )
        n = Notification(
            receiver=receiver,
            group_key=f"test:{now}",
            group_labels={"alertname": "AirflowOpsTest"},
            alerts=(alert,),
            created_at=now,
            external_url=_alerting(config).external_url or "",
        )
        try:
            integrations = build_integrations(receivers[receiver])
        except ValueError as e:  # a non-http(s) URL; the message names the integration, not the URL
            raise click.ClickException(str(e)) from None
        failed = False
        for integration in integrations:
            try:
                integration.send(n, None)
                click.echo(f"{integration.key}: sent")
            except DeliveryError as e:
                failed = True
                click.echo(f"{integration.key}: FAILED: {e}", err=True)
        sys.exit(1 if failed else 0)

    @main.group()
    def silence() -> None:
        """Silence alerts for a while (stored in the ops store, obeyed by the running service)."""

    @silence.command("add")
    @config_option
    @click.argument("matchers", nargs=-1, required=True)
    @click.option("--duration", default="2h", show_default=True, help="How long, e.g. 30m, 2h, 1d.")
    @click.option("--comment", required=True, help="Why (shown in listings).")
    @click.option("--author", default=None, help="Who (default: $USER).")
    @json_option
    def silence_add(
        config_path: str | None,
        matchers: tuple[str, ...],
        duration: str,
        comment: str,
        author: str | None,
        as_json: bool,
    ) -> None:
        """Add a silence: MATCHERS like 'alertname="DagFailing"' 'dag_id=~"etl_.*"'."""
        import os

        from .alerts.matchers import format_matchers
        from .alerts.silences import SilenceError, new_silence, silence_json

        try:
            draft = new_silence(
                matchers, duration, comment, author or os.environ.get("USER", "unknown"), time.time()
            )
        except SilenceError as e:
            key, _, reason = str(e).partition(": ")
            hint = {"matchers": "MATCHERS", "duration": "--duration", "comment": "--comment"}.get(key, key)
            raise click.BadParameter(reason, param_hint=hint) from None
        config = load(config_path)
        with _store(config) as store:
            s = store.silence_add(draft)
        if as_json:
            click.echo(json.dumps(silence_json(s)))
        else:
            click.echo(f"{s.id} silences {format_matchers(s.matchers)} until {_when(s.ends_at)}")

    @silence.command("list")
    @config_option
    @click.option("--all", "include_expired", is_flag=True, help="Include expired silences.")
    @json_option
    def silence_list(config_path: str | None, include_expired: bool, as_json: bool) -> None:
        """List active silences."""
        from .alerts.matchers import format_matchers
        from .alerts.silences import silence_json

        config = load(config_path)
        with _store(config) as store:
            found = store.silence_list(time.time(), include_expired=include_expired)
        if as_json:
            click.echo(json.dumps([silence_json(s) for s in found], indent=2))
            return
        if not found:
            click.echo("no silences")
        for s in found:
            click.echo(
                f"{s.id}  until {_when(s.ends_at)}  {format_matchers(s.matchers)}  "
                f"by {s.created_by}: {s.comment}"
            )

    @silence.command("expire")
    @config_option
    @click.argument("silence_id")
    def silence_expire(config_path: str | None, silence_id: str) -> None:
        """End a silence now."""
        from .store import StoreError

        config = load(config_path)
        with _store(config) as store:
            try:
                s = store.silence_expire(silence_id, time.time())
            except StoreError as e:
                raise click.ClickException(str(e)) from None
        click.echo(f"{s.id} expired")


def _yaml_keys(path: Path) -> set[str]:
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return set()  # the rule loader reports it with the line
    return set(doc) if isinstance(doc, dict) else set()
