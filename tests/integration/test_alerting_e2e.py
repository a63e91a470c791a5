"""Alerting end to end on a real Airflow 3 (and the heartbeat case on Airflow 2): a failing DAG,
the real service evaluating test-sized rules, the real slack_sdk against a loopback Slack, a real
aiosmtpd. Each test owns one DAG (``alert_probe_<name>``, tests/dags/alert_probes.py) and its own
service and store, and counts exactly what arrives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from scrape import Scraper
from slack_server import SlackServer
from smtp_server import Mailbox, smtp_server

from airflow_ops.config import load_config
from airflow_ops.devstack.database import create_database, drop_database
from airflow_ops.devstack.ports import free_port
from airflow_ops.service import OpsService

pytestmark = pytest.mark.airflow

REPO = Path(__file__).resolve().parents[2]
CHANNEL = "#alerts"

RULES = """
groups:
- name: e2e
  rules:
  - alert: DagFailing
    expr: airflow_dag_failing_seconds{dag_id="%(dag)s"} > 0
    labels: {severity: critical}
    annotations:
      summary: "DAG {{ $labels.dag_id }} is failing"
      description: "Failing for {{ $value | humanizeDuration }}."
      runbook_url: "https://runbooks.example/DagFailing.md"
"""


def write_config(
    tmp_path: Path,
    stack: Any,
    dag: str,
    *,
    slack: SlackServer | None = None,
    smtp_port: int | None = None,
    store: str | None = None,
    repeat: str = "1h",
    rules: str = RULES,
    port: int = 0,
    routes: list[dict[str, Any]] | None = None,
    receivers: list[dict[str, Any]] | None = None,
) -> Path:
    (tmp_path / "rules.yaml").write_text(rules % {"dag": dag})
    oncall: dict[str, Any] = {"name": "oncall"}
    if slack is not None:
        oncall["slack_configs"] = [
            {"token": slack.token, "channel": CHANNEL, "api_url": slack.api_url, "timeout": "5s"}
        ]
    if smtp_port is not None:
        oncall["email_configs"] = [
            {
                "to": ["oncall@example.com"],
                "from": "airflow-ops@example.com",
                "smarthost": f"127.0.0.1:{smtp_port}",
                "tls": "none",
                "timeout": "5s",
            }
        ]
    config = {
        "store": store or f"sqlite:///{tmp_path / 'ops.db'}",
        "service": {"listen": "127.0.0.1", "port": port, "poll_interval": "1s"},
        "deployments": {
            "local": {
                "database": {"dsn": stack.db_dsn},
                "api": {"url": stack.api_url, "username": stack.username, "password": stack.password},
            }
        },
        "alerting": {
            "rule_files": ["rules.yaml"],
            "route": {
                "receiver": "oncall",
                "group_by": ["alertname", "deployment", "dag_id"],
                "group_wait": "1s",
                "group_interval": "2s",
                "repeat_interval": repeat,
                "routes": routes or [],
            },
            "receivers": [oncall, *(receivers or [])],
        },
    }
    path = tmp_path / "airflow-ops.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class Serve:
    """`airflow-ops serve` in-process (fast) for most tests."""

    def __init__(self, config_path: Path) -> None:
        self.service = OpsService(load_config(config_path, environ={}))
        self.service.start()
        self.scrape = Scraper(self.service.url)
        self.scrape.wait("airflow_ops_up", lambda v: v == 1, source="metadb", timeout=60)

    def api(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.service.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read() or b"null")

    def stop(self) -> None:
        self.service.stop()


@pytest.fixture
def serve() -> Iterator[Any]:
    started: list[Serve] = []

    def start(config_path: Path) -> Serve:
        s = Serve(config_path)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def fail_run(stack: Any, dag: str) -> str:
    run_id = f"fail_{uuid.uuid4().hex[:8]}"
    stack.trigger(dag, run_id, {"fail": True})
    assert stack.wait_for_run(dag, run_id) == "failed"
    return run_id


def ok_run(stack: Any, dag: str) -> None:
    run_id = f"ok_{uuid.uuid4().hex[:8]}"
    stack.trigger(dag, run_id, {})
    assert stack.wait_for_run(dag, run_id) == "success"


def wait_mail(box: Mailbox, n: int, timeout: float = 60) -> list[Any]:
    deadline = time.monotonic() + timeout
    while len(box.messages) < n:
        assert time.monotonic() < deadline, f"expected {n} email(s), got {len(box.messages)}"
        time.sleep(0.2)
    return box.messages


def now_of(slack: SlackServer, msg: Any) -> Any:
    """The server's current version of a message (the server hands out copies)."""
    return next(m for m in slack.messages() if m.ts == msg.ts)


def resolved(slack: SlackServer, msg: Any, timeout: float = 60) -> Any:
    """Wait until ``msg`` was edited (the firing message turned into the resolved one)."""
    slack.wait_until(
        lambda: now_of(slack, msg).updated_at is not None, timeout=timeout, what="resolved update"
    )
    return now_of(slack, msg)


def html_of(msg: Any) -> str:
    return msg.get_body(preferencelist=("html",)).get_content()


# ------------------------------------------------------------------ Airflow 3


def test_a_failing_dag_notifies_once_reminds_once_and_recovers_once(
    airflow3: Any, serve: Any, tmp_path: Path
) -> None:
    dag = "alert_probe_notify"
    repeat = 20.0
    with SlackServer() as slack, smtp_server() as (smtp_port, box):
        ops = serve(write_config(tmp_path, airflow3, dag, slack=slack, smtp_port=smtp_port, repeat="20s"))
        fail_run(airflow3, dag)
        [first] = slack.wait_for(1, timeout=90, channel=CHANNEL)
        [mail] = wait_mail(box, 1)
        text = first.all_text()
        # What on-call needs without opening Airflow: the DAG, the failed task, its error, links.
        assert dag in text and "extract" in text
        assert "alert probe failed on request" in text
        assert "https://runbooks.example/DagFailing.md" in json.dumps(first.payload)
        assert "hunter2" not in json.dumps(first.payload)  # the log line with a credential is masked
        assert first.payload.get("text")  # mobile clients show only the top-level text
        assert "[FIRING:1]" in mail["Subject"] and dag in mail["Subject"]
        html = html_of(mail)
        assert "<b>&boom</b>" not in html and "&lt;b&gt;&amp;boom&lt;/b&gt;" in html
        assert "hunter2" not in html
        # It keeps failing: more polls (and group flushes) send nothing new.
        ops.scrape.wait_polls(5)
        assert len(slack.messages(CHANNEL)) == 1 and len(box.messages) == 1
        # After repeat_interval, one reminder on each integration.
        [_, reminder] = slack.wait_for(2, timeout=repeat + 30, channel=CHANNEL)
        assert reminder.received_at - first.received_at >= repeat - 1
        wait_mail(box, 2)
        # A successful run: exactly one recovery (Slack turns the last message into it).
        ok_run(airflow3, dag)
        reminder = resolved(slack, reminder)
        [*_, resolved_mail] = wait_mail(box, 3)
        assert "[RESOLVED]" in resolved_mail["Subject"]
        assert "resolved" in reminder.all_text().lower()
        ops.scrape.wait_polls(5)
        assert len(slack.messages(CHANNEL)) == 2 and len(box.messages) == 3
        assert len(now_of(slack, reminder).edits) == 1 and now_of(slack, first).updated_at is None
        assert slack.rate_limited == 0
        assert (
            ops.scrape.value("airflow_ops_notifications_total", receiver="oncall", outcome="delivered") == 6
        )
        assert ops.scrape.value("airflow_ops_alerting_leader") == 1


def test_a_silence_suppresses_until_it_is_expired(airflow3: Any, serve: Any, tmp_path: Path) -> None:
    dag = "alert_probe_silence"
    with SlackServer() as slack:
        ops = serve(write_config(tmp_path, airflow3, dag, slack=slack))
        silence = ops.api(
            "POST",
            "/api/silences",
            {"matchers": [f'dag_id="{dag}"'], "duration": "1h", "comment": "maintenance", "created_by": "t"},
        )
        assert silence["id"]
        fail_run(airflow3, dag)

        def firing() -> list[dict[str, Any]]:
            return [a for a in ops.api("GET", "/api/alerts") if a["state"] == "firing"]

        deadline = time.monotonic() + 60
        while not firing():
            assert time.monotonic() < deadline, "the alert never fired"
            time.sleep(0.5)
        assert firing()[0]["silenced_by"] == [silence["id"]]
        ops.scrape.wait_polls(5)
        assert slack.messages() == []
        ops.api("DELETE", f"/api/silences/{silence['id']}")
        [msg] = slack.wait_for(1, timeout=30, channel=CHANNEL)
        assert dag in msg.all_text()


def test_slack_429_with_retry_after_is_honoured_and_delivers_once(
    airflow3: Any, serve: Any, tmp_path: Path
) -> None:
    dag = "alert_probe_ratelimit"
    with SlackServer() as slack:
        slack.script(1, status=429, retry_after=3)
        serve(write_config(tmp_path, airflow3, dag, slack=slack))
        fail_run(airflow3, dag)
        slack.wait_until(lambda: slack.rate_limited == 1, timeout=90, what="the 429")
        limited_at = time.time()
        [msg] = slack.wait_for(1, timeout=30, channel=CHANNEL)
        assert msg.received_at - limited_at >= 2.5  # waited out Retry-After: 3
        time.sleep(3)  # nothing else is on its way: no duplicate after the retry
        assert len(slack.messages()) == 1 and slack.rate_limited == 1


def test_smtp_down_then_up_delivers_once(airflow3: Any, serve: Any, tmp_path: Path) -> None:
    dag = "alert_probe_smtp"
    port = free_port()
    ops = serve(write_config(tmp_path, airflow3, dag, smtp_port=port))
    fail_run(airflow3, dag)
    ops.scrape.wait(
        "airflow_ops_notifications_total",
        lambda v: (v or 0) >= 1,
        receiver="oncall",
        outcome="failed",
        timeout=90,
    )
    with smtp_server(port) as (_, box):
        [mail] = wait_mail(box, 1, timeout=120)  # backoff after the failures: 5 s, 10 s, …
        assert dag in mail["Subject"]
        ops.scrape.wait_polls(5)
        assert len(box.messages) == 1


def _serve_process(config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "airflow_ops", "serve", "--config", str(config)],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        cwd=config.parent,
        env={k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
        start_new_session=True,
    )


def _scraper_when_up(port: int, proc: subprocess.Popen[bytes], log: Path) -> Scraper:
    scrape = Scraper(f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, f"serve exited: {log.read_text()[-3000:]}"
        try:
            if scrape.get("/readyz")[0] == 200:
                return scrape
        except OSError:
            pass
        assert time.monotonic() < deadline, f"serve did not become ready: {log.read_text()[-3000:]}"
        time.sleep(0.3)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def test_killed_between_firing_and_sending_delivers_after_restart_once(airflow3: Any, tmp_path: Path) -> None:
    dag = "alert_probe_restart"
    with SlackServer() as slack:
        slack.script(1000, status=503)  # Slack is down: the firing notification waits in the outbox
        port = free_port()
        config = write_config(tmp_path, airflow3, dag, slack=slack, port=port)
        log = tmp_path / "serve.log"
        first = _serve_process(config, log)
        try:
            _scraper_when_up(port, first, log)
            fail_run(airflow3, dag)
            slack.wait_until(lambda: slack.requests >= 1, timeout=90, what="a delivery attempt")
        finally:
            _kill(first)
        slack.clear_script()
        second = _serve_process(config, log)
        try:
            scrape = _scraper_when_up(port, second, log)
            [msg] = slack.wait_for(1, timeout=60, channel=CHANNEL)
            assert dag in msg.all_text()
            scrape.wait_polls(5)
            assert len(slack.messages()) == 1
            scrape.wait(
                "airflow_ops_notifications_total", lambda v: v == 1, receiver="oncall", outcome="delivered"
            )
        finally:
            _kill(second)
        # Killed again mid-incident, after the delivery: no second "firing" before repeat_interval,
        # and the recovery still comes.
        third = _serve_process(config, log)
        try:
            scrape = _scraper_when_up(port, third, log)
            scrape.wait_polls(5)
            assert len(slack.messages()) == 1
            ok_run(airflow3, dag)
            resolved(slack, msg)
            scrape.wait_polls(3)
            assert len(slack.messages()) == 1 and len(now_of(slack, msg).edits) == 1
        finally:
            _kill(third)


def test_two_replicas_on_postgresql_leader_killed_mid_incident(airflow3: Any, tmp_path: Path) -> None:
    dag = "alert_probe_replicas"
    name = f"aops_store_{uuid.uuid4().hex[:8]}"
    dsn = create_database(name)
    procs: dict[int, subprocess.Popen[bytes]] = {}
    try:
        with SlackServer() as slack:
            scrapers = {}
            for i in (1, 2):
                port = free_port()
                d = tmp_path / f"replica{i}"
                d.mkdir()
                config = write_config(d, airflow3, dag, slack=slack, store=dsn, port=port)
                log = d / "serve.log"
                procs[port] = _serve_process(config, log)
                scrapers[port] = _scraper_when_up(port, procs[port], log)

            def leaders() -> list[int]:
                return [p for p, s in scrapers.items() if s.value("airflow_ops_alerting_leader") == 1]

            deadline = time.monotonic() + 30
            while len(leaders()) != 1:
                assert time.monotonic() < deadline, f"expected one leader, got {leaders()}"
                time.sleep(0.5)
            [leader] = leaders()
            [standby] = [p for p in scrapers if p != leader]
            assert scrapers[standby].value("airflow_ops_alerting_leader") == 0  # both serve /metrics

            fail_run(airflow3, dag)
            [msg] = slack.wait_for(1, timeout=90, channel=CHANNEL)
            # Mid-incident, once the leader recorded the delivery (a kill in the instant between
            # Slack accepting and that record gives a duplicate, never a loss, as Alertmanager).
            scrapers[leader].wait(
                "airflow_ops_notifications_total",
                lambda v: v == 1,
                receiver="oncall",
                outcome="delivered",
                timeout=15,
            )
            _kill(procs[leader])
            # The standby takes over within a poll or two and does not repeat the firing message.
            scrapers[standby].wait("airflow_ops_alerting_leader", lambda v: v == 1, timeout=15)
            scrapers[standby].wait_polls(5)
            assert len(slack.messages()) == 1
            ok_run(airflow3, dag)
            msg = resolved(slack, msg)
            scrapers[standby].wait_polls(5)
            assert len(slack.messages()) == 1 and len(now_of(slack, msg).edits) == 1
    finally:
        for proc in procs.values():
            _kill(proc)
        drop_database(name)


def test_owner_and_tags_route_a_dag_to_its_team(airflow3: Any, serve: Any, tmp_path: Path) -> None:
    dag = "alert_probe_team"
    with SlackServer() as slack:
        team = {
            "name": "team",
            "slack_configs": [{"token": slack.token, "channel": "#team", "api_url": slack.api_url}],
        }
        route = {"matchers": ['dag_tags=~".*,team-team,.*"', 'owner="owner-team"'], "receiver": "team"}
        ops = serve(write_config(tmp_path, airflow3, dag, slack=slack, routes=[route], receivers=[team]))
        fail_run(airflow3, dag)
        [msg] = slack.wait_for(1, timeout=90, channel="#team")
        assert dag in msg.all_text()
        ops.scrape.wait_polls(3)
        assert slack.messages(CHANNEL) == []
        [alert] = [a for a in ops.api("GET", "/api/alerts") if a["state"] == "firing"]
        assert alert["labels"]["owner"] == "owner-team"
        assert alert["receivers"] == ["team"]


# ------------------------------------------------------------------ Airflow 2: heartbeats

HEARTBEAT_RULES = """
groups:
- name: e2e-heartbeat
  rules:
  - alert: SchedulerDown
    expr: airflow_component_newest_heartbeat_age_seconds{component="scheduler"} > 20
    labels: {severity: critical}
    annotations:
      summary: "No scheduler heartbeat in {{ $labels.deployment }}%(dag)s"
      description: "Newest scheduler heartbeat is {{ $value | humanizeDuration }} old."
      runbook_url: "https://runbooks.example/SchedulerDown.md"
"""


def test_a_dead_scheduler_alerts_and_recovers_on_airflow2(airflow2: Any, serve: Any, tmp_path: Path) -> None:
    with SlackServer() as slack:
        ops = serve(write_config(tmp_path, airflow2, "", slack=slack, rules=HEARTBEAT_RULES))
        ops.scrape.wait_polls(3)
        assert slack.messages() == []  # a healthy scheduler heartbeats every few seconds
        airflow2.stop_component("scheduler")
        try:
            [msg] = slack.wait_for(1, timeout=120, channel=CHANNEL)
            assert "SchedulerDown" in msg.all_text()
        finally:
            airflow2.start_component("scheduler")
        resolved(slack, msg, timeout=120)
        assert len(slack.messages()) == 1
