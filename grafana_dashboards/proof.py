"""The proof that the Grafana dashboards work: on a real Airflow 3 watched by `airflow-ops serve` and
scraped by a real Prometheus (which also evaluates alert_rules/), every panel query of every
dashboard returns data; then the PNG previews are drawn from those same results.

    python -m grafana_dashboards.proof --out docs/dashboards   # `make dashboard-previews`

starts the demo's Airflow 3 (example DAGs on short schedules) with the probe DAG
(tests/dags/dashboards_probe.py), drives it, runs the maintenance commands, waits until no panel is
empty and renders every dashboard. tests/integration/test_dashboards_proof.py runs the same
:func:`prove` against the test session's stack.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from airflow_ops.config import load_config
from airflow_ops.devstack.demo import SHIPPED_RULES, ConsoleReceiver, demo_stack
from airflow_ops.devstack.prometheus import PrometheusServer
from airflow_ops.devstack.stack import AirflowStack, ApiError
from airflow_ops.service import OpsService

from . import DASHBOARDS
from .previews import PrometheusQueryError, dashboard_variables, query, render
from .queries import panel_queries, substitute

REPO_ROOT = Path(__file__).resolve().parent.parent
PROBE_DAG = "dashboards_probe"
PROBE_FILE = REPO_ROOT / "tests" / "dags" / f"{PROBE_DAG}.py"
RULE_FILES = sorted(SHIPPED_RULES.glob("*.yaml"))
REDIS_URL = "redis://127.0.0.1:6379/0"
# Grafana's built-ins for the check: Prometheus scrapes every second, so 2m windows hold plenty.
RATE_INTERVAL, RANGE = "2m", "1h"
_POLL = 2.0

log = logging.getLogger(__name__)


class ProofError(RuntimeError):
    """The deployment could not be driven (a maintenance command failed, a run never started…)."""


def dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard of the registry, by name."""
    return {name: build() for name, build in DASHBOARDS.items()}


# ---------------------------------------------------------------- the probe DAG


class Probe:
    """Drives ``dashboards_probe`` on a stack: scheduled runs, then a failed run and a held one that
    keep the DAG failing, running and overdue — the state every "now" panel (stat, table) needs."""

    def __init__(self, stack: AirflowStack) -> None:
        self.stack = stack
        self.fail_flag = Path(stack.home) / f"{PROBE_DAG}.fail"
        self.release_flag = Path(stack.home) / f"{PROBE_DAG}.release"

    def start(self) -> None:
        """Unpause: the scheduled runs begin, one a minute, succeeding."""
        self.set_failing(False)
        self.release_flag.unlink(missing_ok=True)
        self.stack.unpause(PROBE_DAG)

    def set_failing(self, failing: bool) -> None:
        """From now on, runs fail (scheduled ones too) or succeed."""
        if failing:
            self.fail_flag.touch()
        else:
            self.fail_flag.unlink(missing_ok=True)

    def fail_and_hold(self, hold: float, timeout: float = 300) -> None:
        """Once two scheduled runs have succeeded (a histogram's first observation is invisible to
        rate(): the schedule-delay quantiles need a second), a failed run, then one held running for
        up to ``hold`` seconds. One run at a time (max_active_runs=1), so nothing finishes between
        the two: the DAG stays failing with its failed task's streak, its oldest run keeps aging
        and, once the next minute passes, its next scheduled run is overdue."""
        deadline = time.monotonic() + timeout
        while sum(r["run_type"] == "scheduled" and r["state"] == "success" for r in self.runs()) < 2:
            if time.monotonic() > deadline:
                raise ProofError(f"{PROBE_DAG}: not two successful scheduled runs after {timeout:.0f}s")
            time.sleep(1)
        self.set_failing(True)
        failed = self.trigger("fail", {})
        # Triggered only once the failed run runs: queued, it might start first.
        self.wait_state(failed, ("running", "failed"), timeout)
        self.trigger("hold", {"hold": hold})

    def stop(self) -> None:
        """Pause, release a held run and end every unfinished run, so nothing of the probe stays live."""
        self.stack.api("PATCH", f"dags/{PROBE_DAG}?update_mask=is_paused", {"is_paused": True})
        self.release_flag.touch()
        for run in self.runs():
            if run["state"] not in ("success", "failed"):
                with contextlib.suppress(ApiError):  # it may just have finished
                    self.stack.api(
                        "PATCH", f"dags/{PROBE_DAG}/dagRuns/{run['dag_run_id']}", {"state": "success"}
                    )
        self.set_failing(False)

    def runs(self) -> list[dict[str, Any]]:
        return list(self.stack.api("GET", f"dags/{PROBE_DAG}/dagRuns?limit=100")["dag_runs"])

    def trigger(self, tag: str, conf: Mapping[str, Any]) -> str:
        run_id = f"dashboards_{tag}_{uuid.uuid4().hex[:8]}"
        self.stack.trigger(PROBE_DAG, run_id, conf)
        return run_id

    def wait_state(self, run_id: str, states: tuple[str, ...], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while (state := self.stack.run_state(PROBE_DAG, run_id)) not in states:
            if time.monotonic() > deadline:
                raise ProofError(
                    f"run {run_id} of {PROBE_DAG} is {state!r} after {timeout:.0f}s, not {states}"
                )
            time.sleep(0.5)
        return state


# ---------------------------------------------------------------- serve + Prometheus


def write_config(path: Path, stack: AirflowStack, deployment: str, webhook_url: str) -> Path:
    """The airflow-ops config of the proof: the stack's DB and API, Redis as the broker, the shipped
    alert rules notifying a webhook, maintenance with a backup dir beside the config and the stack's
    log folder. ``db clean`` is only run for the probe's audit-log rows (the override below): the
    stack may be shared with tests that rely on all their rows."""
    maintenance = {
        "backup": {"dir": str(path.parent / "backups")},
        "db_clean": {"dag_overrides": [{"dag_ids": [PROBE_DAG], "retention": {"log": "1s"}}]},
        "logs": {"folder": str(stack.logs_dir), "retention": "30d"},
        # Scheduled tasks have an overdue time; at these hours the service would run them itself.
        "schedules": {"backup": "0 2 * * *", "logs_clean": "0 4 * * *"},
    }
    config = {
        "store": f"sqlite:///{path.parent / 'ops.db'}",
        "service": {"listen": "127.0.0.1", "port": 0, "poll_interval": "1s"},
        "deployments": {
            deployment: {
                "database": {"dsn": stack.db_dsn},
                "api": {"url": stack.api_url, "username": stack.username, "password": stack.password},
                "broker": {"url": REDIS_URL, "queues": ["default"]},
                "maintenance": maintenance,
            }
        },
        "alerting": {
            "rule_files": [str(p) for p in RULE_FILES],
            "route": {
                "receiver": "webhook",
                "group_by": ["alertname", "deployment"],
                "group_wait": "1s",
                "group_interval": "5s",
                "repeat_interval": "1h",
            },
            "receivers": [{"name": "webhook", "webhook_configs": [{"url": webhook_url}]}],
        },
    }
    (path.parent / "backups").mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)  # it holds the stack's password
    return path


@dataclass(frozen=True)
class EmptyQuery:
    dashboard: str
    panel: str
    ref_id: str
    expr: str
    reason: str

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.panel} [{self.ref_id}]: {self.reason}: {self.expr}"


class ObservedDeployment:
    """`airflow-ops serve` (in-process) watching ``stack``, and a real Prometheus scraping it every
    second with alert_rules/ loaded (so ``ALERTS`` exists)."""

    def __init__(
        self, stack: AirflowStack, workdir: Path, webhook_url: str, deployment: str = "local"
    ) -> None:
        self.stack = stack
        self.workdir = Path(workdir)
        self.deployment = deployment
        self.config_path = write_config(self.workdir / "airflow-ops.yaml", stack, deployment, webhook_url)
        self.service: OpsService | None = None
        self.prometheus: PrometheusServer | None = None
        self.started_at = 0.0

    def __enter__(self) -> ObservedDeployment:
        try:
            self.service = OpsService(load_config(self.config_path, environ={}))
            self.service.start()
            self.prometheus = PrometheusServer(
                self.workdir / "prometheus",
                [f"127.0.0.1:{self.service.port}"],
                scrape_interval="1s",
                rule_files=RULE_FILES,
                evaluation_interval="1s",
            ).start()
        except BaseException:
            self.stop()
            raise
        self.started_at = time.time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.prometheus is not None:
            self.prometheus.stop()
        if self.service is not None:
            self.service.stop()

    @property
    def prometheus_url(self) -> str:
        assert self.prometheus is not None, "not started"
        return self.prometheus.url

    def run_maintenance(self, again: bool = False) -> None:
        """Through the CLI, with the service's config and ops store (so the service exports each
        run): back up and verify, clean the probe's audit log and old logs. ``again``: the two
        cleanups a second time, so their counters move (the first run of a task after the service
        starts creates its series, which increase() cannot see), and a listing of the backups on a
        volume that is not mounted, which fails: AirflowOpsMaintenanceFailed fires, in Prometheus
        and in the service (the firing-alerts panels leave out Watchdog). An old log of the probe, as
        months of history leave, gives ``logs clean`` something to free each time."""
        old = self.stack.logs_dir / f"dag_id={PROBE_DAG}" / f"run_id=manual__2020_{uuid.uuid4().hex[:8]}"
        (old / "task_id=ok").mkdir(parents=True)
        (old / "task_id=ok" / "attempt=1.log").write_text("dashboards_probe: a log from 2020\n" * 64)
        os.utime(old / "task_id=ok" / "attempt=1.log", (1_580_000_000, 1_580_000_000))
        commands: list[tuple[tuple[str, ...], int]] = [
            (("db", "clean", "--yes", "--dag-id", PROBE_DAG, "--table", "log"), 0),
            (("logs", "clean", "--yes"), 0),
        ]
        if again:
            commands.append((("backup", "list", "--dir", str(self.workdir / "unmounted")), 1))
        else:
            commands = [(("backup", "create", "--yes"), 0), (("backup", "verify"), 0), *commands]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_OPS")}
        for args, exit_code in commands:
            cmd = [sys.executable, "-m", "airflow_ops", *args, "--config", str(self.config_path)]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
            if done.returncode != exit_code:
                raise ProofError(
                    f"`airflow-ops {' '.join(args)}` exited {done.returncode}, not {exit_code}:\n"
                    f"{done.stdout}{done.stderr}"
                )

    def wait_for_series(self, expr: str, timeout: float = 60) -> None:
        """Poll until Prometheus has a sample of ``expr`` (its scrapes have caught up)."""
        assert self.prometheus is not None, "not started"
        try:
            self.prometheus.wait_for(expr, bool, timeout=timeout)
        except AssertionError:
            raise ProofError(f"Prometheus has no {expr} after {timeout:.0f}s") from None

    def variables(self, dashboard: Mapping[str, Any], step: float, span: str = RANGE) -> dict[str, str]:
        given = {
            "datasource": "prometheus",
            "deployment": self.deployment,
            "dag_id": PROBE_DAG,
            "airflow_url": self.stack.api_url,
            "__rate_interval": RATE_INTERVAL,
            "__interval": f"{step:g}s",
            "__range": span,
        }
        return dashboard_variables(dashboard, given, self.prometheus_url)

    def empty_queries(self, boards: Mapping[str, dict[str, Any]]) -> list[EmptyQuery]:
        """Every panel query (instant ones at now, range ones over the proof so far, every second,
        so a state that lasted a few scrapes counts) that returns nothing — or, for a quantile, no
        finite value."""
        end = time.time()
        start = min(self.started_at, end - 1)
        empty = []
        for board in boards.values():
            variables = self.variables(board, step=1.0)
            for q in panel_queries(board):
                expr = substitute(q.expr, variables)
                try:
                    series = query(
                        self.prometheus_url, expr, instant=q.kind == "instant", start=start, end=end, step=1.0
                    )
                except PrometheusQueryError as exc:
                    empty.append(EmptyQuery(q.dashboard, q.panel, q.ref_id, expr, f"query failed ({exc})"))
                    continue
                values = [v for s in series for v in s.values]
                if not values:
                    empty.append(EmptyQuery(q.dashboard, q.panel, q.ref_id, expr, "no data"))
                elif "histogram_quantile" in expr and not any(math.isfinite(v) for v in values):
                    empty.append(EmptyQuery(q.dashboard, q.panel, q.ref_id, expr, "no finite quantile"))
        return empty

    def wait_for_data(self, boards: Mapping[str, dict[str, Any]], timeout: float) -> list[EmptyQuery]:
        """Poll until every panel query has data; the queries still empty at the deadline."""
        started = time.monotonic()
        seen: list[EmptyQuery] | None = None
        while True:
            empty = self.empty_queries(boards)
            if empty != seen:  # progress, for a slow or failing proof
                log.info("after %.0fs, %d panel queries without data", time.monotonic() - started, len(empty))
                for item in empty:
                    log.info("  %s", item)
                seen = empty
            if not empty or time.monotonic() - started > timeout:
                return empty
            time.sleep(_POLL)

    def render(self, boards: Mapping[str, dict[str, Any]], out: Path) -> list[Path]:
        """One PNG per dashboard over everything Prometheus holds so far (about 300 points)."""
        end = time.time()
        start = min(self.started_at, end - 60)
        step = max(1.0, round((end - start) / 300))
        span = f"{end - start:.0f}s"
        paths = []
        for name, board in boards.items():
            variables = self.variables(board, step, span)
            paths += render(board, self.prometheus_url, variables, out, start, end, step, name=name)
        return paths


def prove(
    observed: ObservedDeployment,
    probe: Probe,
    boards: Mapping[str, dict[str, Any]],
    timeout: float,
    history: float = 0.0,
    hold: float = 600.0,
) -> list[EmptyQuery]:
    """Drive the deployment until every panel of ``boards`` has data (or ``timeout`` passes after
    the driving): the probe's scheduled runs, the maintenance commands, ``history`` seconds of the
    probe flipping between failing and succeeding every 2 minutes (for fuller previews), a failed
    and a held run, and the cleanups again. Returns the queries still empty."""
    log.info("unpausing %s; running the maintenance commands", PROBE_DAG)
    probe.start()
    observed.run_maintenance()
    flips = time.monotonic()
    while time.monotonic() - flips < history:
        probe.set_failing(int((time.monotonic() - flips) // 120) % 2 == 1)
        time.sleep(_POLL)
    log.info("%s: a failed run, then a held one", PROBE_DAG)
    probe.fail_and_hold(hold)
    # Counters and histograms appear with their first event, which increase() and rate() cannot
    # see: once Prometheus holds those first values, a second round moves them (the failing
    # listing's alert is a second notification).
    observed.wait_for_series('airflow_ops_maintenance_files_deleted_total{task="logs_clean"}')
    observed.wait_for_series("airflow_ops_notification_latency_seconds_count")
    observed.run_maintenance(again=True)
    log.info("waiting for every panel query to return data")
    return observed.wait_for_data(boards, timeout)


# ---------------------------------------------------------------- `make dashboard-previews`


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m grafana_dashboards.proof", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--out", type=Path, default=REPO_ROOT / "docs" / "dashboards", help="where the PNGs go"
    )
    parser.add_argument(
        "--minutes", type=float, default=8.0, help="history to let accumulate before rendering"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for every panel's data")
    parser.add_argument(
        "--allow-empty", action="store_true", help="render even if some panels stayed empty (No data)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    boards = dashboards()
    with tempfile.TemporaryDirectory(prefix="dashboards-proof-") as tmp:
        probe_dir = Path(tmp) / "dags"
        probe_dir.mkdir()
        (probe_dir / PROBE_FILE.name).symlink_to(PROBE_FILE)
        stack = demo_stack("dashboards-proof", [probe_dir])
        console = ConsoleReceiver()
        log.info("starting Airflow 3 with the example DAGs and the probe (the first run installs it)…")
        try:
            stack.start()
            with ObservedDeployment(stack, Path(tmp) / "ops", console.url) as observed:
                log.info("Prometheus at %s; driving the deployment…", observed.prometheus_url)
                history = max(0.0, args.minutes * 60 - 120)  # the held run's 2 minutes come on top
                empty = prove(observed, Probe(stack), boards, args.timeout, history, hold=args.timeout + 600)
                if empty:
                    print("panels without data:\n  " + "\n  ".join(map(str, empty)), file=sys.stderr)
                    if not args.allow_empty:
                        return 1
                for path in observed.render(boards, args.out):
                    print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")
        finally:
            console.stop()
            stack.stop(drop_db=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
