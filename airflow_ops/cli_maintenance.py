"""`airflow-ops backup|db|logs|maintenance …`: maintenance of a deployed Airflow from the shell.

Every command works the same way: it plans, prints the plan, and acts only with ``--yes`` (or an
interactive "yes" on a TTY); ``--dry-run`` stops after the plan. Long work draws progress on a TTY;
``--json`` prints ``{"plan": …, "result": …}`` instead of text. Every run, a dry one included,
leaves an audit record in the ops store (``airflow-ops maintenance runs``), and the exit status is
1 if any part failed. The logic is in ``airflow_ops.maintenance``; this module only wires it up.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn

import click

from .config import Config, DeploymentConfig, mask
from .maintenance.audit import Trigger
from .maintenance.report import Progress, Report
from .maintenance.runner import guarded, run_audited
from .maintenance.tasks import Target

json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
yes_option = click.option("--yes", "-y", is_flag=True, help="Act without asking.")
dry_run_option = click.option("--dry-run", is_flag=True, help="Print the plan and change nothing.")
deployment_option = click.option(
    "--deployment", "-d", help="Which configured deployment (default: the only one)."
)


@dataclass
class Session:
    """One command's context: the config, the chosen deployment, the output mode."""

    config: Config
    name: str
    deployment: DeploymentConfig
    as_json: bool
    extra_secrets: list[str] = field(default_factory=list)  # secrets given on the command line

    @property
    def target(self) -> Target:
        return Target(self.name, self.deployment)

    def progress(self) -> TtyProgress:
        return TtyProgress(self.name, enabled=not self.as_json)

    def mask(self, text: str) -> str:
        return mask(text, self.config, extra=self.extra_secrets)

    def act(
        self,
        *,
        task: str,
        plan: Callable[[], tuple[Report, Callable[[Progress], Report] | None]],
        yes: bool,
        dry_run: bool = False,
        confirm: str = "Go ahead?",
    ) -> NoReturn:
        """Plan, print the plan, take ``--yes`` or ask, act, print the outcome; exit 1 on failure.

        ``plan`` returns the plan's Report and the function that carries it out (None when there
        is nothing to do)."""
        execute: Callable[[Progress], Report] | None = None

        def planned() -> Report:
            nonlocal execute
            report, execute = plan()
            return report

        plan_report = guarded(planned, task, planned=True, mask=self.mask)
        self.show(plan_report)
        acting = plan_report.ok and execute is not None and not dry_run
        if acting and not yes:
            acting = self._confirmed(confirm)
            if not acting:
                self._note("nothing done: rerun with --yes to act on this plan")
        with open_store(self.config, self.mask) as store:
            if not acting:
                run_audited(store, lambda: plan_report, deployment=self.name, task=task,
                            action=plan_report.action, planned=True, mask=self.mask)  # fmt: skip
                self.finish(plan_report, None)
            assert execute is not None
            run = execute
            progress = TtyProgress(plan_report.action, enabled=not self.as_json)
            result = run_audited(
                store,
                lambda: run(progress),
                deployment=self.name,
                task=task,
                action=plan_report.action,
                planned=False,
                trigger=Trigger.CLI,
                mask=self.mask,
            )
            progress.close()
        self.show(result)
        self.finish(plan_report, result)

    def once(self, *, task: str, fn: Callable[[], Report]) -> NoReturn:
        """A command that changes nothing in the deployment (list, stats, verify): run it
        audited and print what it found."""
        with open_store(self.config, self.mask) as store:
            report = run_audited(store, fn, deployment=self.name, task=task, action=task,
                                 planned=False, mask=self.mask)  # fmt: skip
        self.show(report)
        self.finish(None, report)

    def show(self, report: Report) -> None:
        if self.as_json:
            return
        head = "PLAN" if report.planned else "DONE" if report.ok else "FAILED"
        click.echo(self.mask(f"{head}: {report.summary}"))
        for line in report.lines:
            click.echo(self.mask(f"  {line}"))
        for error in report.errors:
            click.secho(self.mask(f"  error: {error}"), fg="red", err=True)

    def finish(self, plan: Report | None, result: Report | None) -> NoReturn:
        """Print the JSON document (text was shown as it came) and exit by the outcome."""
        if self.as_json:
            doc = {"deployment": self.name, "plan": plan.as_dict() if plan else None}
            doc["result"] = result.as_dict() if result else None
            click.echo(self.mask(json.dumps(doc, indent=2, default=str)))
        final = result or plan
        sys.exit(0 if final is None or final.ok else 1)

    def _confirmed(self, question: str) -> bool:
        if self.as_json or not sys.stdin.isatty():
            return False
        return click.confirm(question, default=False, err=True)

    def _note(self, text: str) -> None:
        if not self.as_json:
            click.echo(text, err=True)


def open_store(config: Config, masker: Callable[[str], str]) -> Any:
    """The ops store (for the audit record), or a clear error."""
    from .store import StoreError
    from .store import open_store as _open

    try:
        return _open(config.store.value)
    except StoreError as e:
        raise click.ClickException(masker(f"cannot open the ops store (for the audit record): {e}")) from None


def session(config: Config, deployment: str | None, as_json: bool) -> Session:
    """The deployment a command acts on: named, or the only one configured."""
    names = list(config.deployments)
    if deployment is None:
        if len(names) != 1:
            choice = ", ".join(names) or "none configured"
            raise click.UsageError(f"--deployment is needed: the config has {choice}")
        deployment = names[0]
    if deployment not in config.deployments:
        raise click.BadParameter(
            f"{deployment!r} is not a configured deployment ({', '.join(names) or 'none'})",
            param_hint="--deployment",
        )
    return Session(config, deployment, config.deployments[deployment], as_json)


class TtyProgress:
    """Progress on stderr, redrawn at most 5 times a second, only on a terminal."""

    def __init__(self, label: str, *, enabled: bool = True) -> None:
        self.label = label
        self.enabled = enabled and sys.stderr.isatty()
        self._drawn_at = 0.0
        self._drawn = False

    def __call__(self, done: int, total: int | None, unit: str) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._drawn_at < 0.2:
            return
        self._drawn_at, self._drawn = now, True
        if total:
            text = f"{self.label}: {done:,}/{total:,} {unit} ({100 * done / total:.0f}%)"
        else:
            text = f"{self.label}: {done:,} {unit}"
        click.echo("\r" + text.ljust(72), err=True, nl=False)

    def close(self) -> None:
        if self._drawn:
            click.echo("", err=True)


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def register(main: click.Group, load: Callable[[str | None], Config], config_option: Any) -> None:
    """Add the maintenance command groups to the `airflow-ops` group."""
    from .cli_backup import backup_group
    from .cli_db import db_group
    from .cli_logs import logs_group

    main.add_command(backup_group(load, config_option))
    main.add_command(db_group(load, config_option))
    main.add_command(logs_group(load, config_option))
    main.add_command(_maintenance_group(load, config_option))


def _maintenance_group(load: Callable[[str | None], Config], config_option: Any) -> click.Group:
    @click.group("maintenance")
    def group() -> None:
        """The audit of maintenance runs."""

    @group.command("runs")
    @config_option
    @click.option("--deployment", "-d", help="Only this deployment.")
    @click.option("--task", help="Only this task (backup, backup_verify, db_clean, logs_clean, …).")
    @click.option("--limit", type=click.IntRange(1, 10_000), default=30, show_default=True)
    @json_option
    def runs(
        config_path: str | None, deployment: str | None, task: str | None, limit: int, as_json: bool
    ) -> None:
        """The newest maintenance runs (dry runs included), newest first."""
        config = load(config_path)
        with open_store(config, lambda text: mask(text, config)) as store:
            found = store.audit_runs(deployment=deployment, task=task, limit=limit)
        if as_json:
            click.echo(json.dumps([r.to_json() for r in found], indent=2, default=str))
            return
        for r in found:
            summary = (r.report or {}).get("summary", "")
            dry = " (dry run)" if r.planned else ""
            click.echo(
                f"{when(r.started_at)}  {r.deployment:<12} {r.task:<14} {r.status.value:<8} "
                f"{r.trigger.value:<8} {r.actor}{dry}  {summary}"
            )

    return group


def path_option(name: str, dest: str, help_: str) -> Callable[[Any], Any]:
    return click.option(name, dest, type=click.Path(file_okay=False, path_type=Path), help=help_)
