"""The webhook receiver (Alertmanager's webhook JSON) against a loopback HTTP server, and
forwarding to a real Alertmanager (``prometheus-alertmanager``) read back through its API."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from webhook_sink import WebhookSink

from airflow_ops.alerts.model import Alert, AlertState, Notification
from airflow_ops.alerts.receivers import DeliveryError, build_integrations
from airflow_ops.alerts.receivers.alertmanager import AlertmanagerIntegration
from airflow_ops.alerts.receivers.webhook import ZERO_TIME, WebhookIntegration
from airflow_ops.config.alerting import ReceiverConfig
from airflow_ops.devstack.ports import free_port

HOOK_SECRET = "hook-path-Secret-42"
TOKEN = "bearer-Secret-99"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"


@pytest.fixture
def hook() -> Iterator[WebhookSink]:
    server = WebhookSink(f"/hooks/{HOOK_SECRET}")
    yield server
    server.close()


def webhook(url: str, **cfg: Any) -> WebhookIntegration:
    receiver = ReceiverConfig.model_validate({"name": "ops", "webhook_configs": [{"url": url, **cfg}]})
    [one] = build_integrations(receiver)
    assert isinstance(one, WebhookIntegration)
    return one


def alert(dag_id: str, state: AlertState = AlertState.FIRING) -> Alert:
    now = time.time()
    return Alert(
        labels={"alertname": "DagFailing", "deployment": "prod", "dag_id": dag_id, "severity": "critical"},
        annotations={"summary": f"DAG {dag_id} has failed for an hour"},
        state=state,
        value=3700,
        active_at=now - 4000,
        fired_at=now - 3700,
        resolved_at=now - 5 if state is AlertState.RESOLVED else None,
        generator_url="http://airflow-ops.example:9000/alerts",
    )


def notification(*alerts: Alert) -> Notification:
    return Notification(
        receiver="ops",
        group_key='{}:{alertname="DagFailing"}',
        group_labels={"alertname": "DagFailing"},
        alerts=alerts,
        created_at=time.time(),
        external_url="http://airflow-ops.example:9000",
    )


def test_webhook_posts_alertmanager_json_with_bearer_token(hook: WebhookSink) -> None:
    send = webhook(hook.url, bearer_token=TOKEN, max_alerts=2)
    assert send.key == "ops/webhook[0]" and HOOK_SECRET not in send.rate_key
    assert send.send(notification(alert("a"), alert("b"), alert("c", AlertState.RESOLVED)), None) is None
    [(path, headers, body)] = hook.received
    assert path == f"/hooks/{HOOK_SECRET}" and headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["Content-Type"] == "application/json"
    assert body["version"] == "4" and body["receiver"] == "ops" and body["status"] == "firing"
    assert body["groupKey"] == '{}:{alertname="DagFailing"}' and body["truncatedAlerts"] == 1
    assert body["commonLabels"] == {"alertname": "DagFailing", "deployment": "prod", "severity": "critical"}
    assert [a["labels"]["dag_id"] for a in body["alerts"]] == ["a", "b"]
    assert (
        body["alerts"][0]["endsAt"] == ZERO_TIME and body["externalURL"] == "http://airflow-ops.example:9000"
    )


def test_webhook_failures_are_classified_and_never_show_url_or_token(hook: WebhookSink) -> None:
    send = webhook(hook.url, bearer_token=TOKEN)
    cases = [
        (429, "7", False, 7.0),
        (503, None, False, None),
        (400, None, True, None),
        (401, None, True, None),
    ]
    for status, retry_after_header, permanent, retry_after in cases:
        hook.fail(status, retry_after=retry_after_header)
        with pytest.raises(DeliveryError) as err:
            send.send(notification(alert("a")), None)
        assert (err.value.permanent, err.value.retry_after) == (permanent, retry_after), status
        assert f"HTTP {status}" in str(err.value)
        assert HOOK_SECRET not in str(err.value) and TOKEN not in str(err.value)
    down = webhook(f"http://127.0.0.1:{free_port()}/hooks/{HOOK_SECRET}")
    with pytest.raises(DeliveryError) as err:
        down.send(notification(alert("a")), None)
    assert not err.value.permanent and HOOK_SECRET not in str(err.value)
    assert hook.received == []


def test_a_url_that_is_not_http_is_refused_by_the_config_without_showing_it() -> None:
    with pytest.raises(ValueError) as err:
        webhook(f"ftp://example.com/{HOOK_SECRET}")
    assert "webhook_configs.0.url" in str(err.value) and HOOK_SECRET not in str(err.value)


# --- forwarding to a real Alertmanager ---


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not shutil.which(ALERTMANAGER):
        pytest.fail(
            f"{ALERTMANAGER} is missing: apt-get install prometheus-alertmanager (scripts/system-deps.sh)",
            pytrace=False,
        )
    d = tmp_path_factory.mktemp("alertmanager")
    config = d / "alertmanager.yml"
    config.write_text('route:\n  receiver: "null"\nreceivers:\n  - name: "null"\n')
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (d / "alertmanager.log").open("wb")
    proc = subprocess.Popen(
        [ALERTMANAGER, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
         "--cluster.listen-address=", f"--storage.path={d / 'data'}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        _wait_ready(url, proc, d / "alertmanager.log")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"alertmanager exited ({proc.returncode}):\n{log.read_text()}", pytrace=False)
        try:
            with urllib.request.urlopen(url + "/-/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)  # not listening yet
    pytest.fail(f"alertmanager not ready within {timeout}s:\n{log.read_text()}", pytrace=False)


def _active(url: str) -> dict[str, dict[str, Any]]:
    with urllib.request.urlopen(url + "/api/v2/alerts", timeout=5) as r:
        return {a["labels"]["dag_id"]: a for a in json.load(r)}


def test_forwarded_alerts_fire_and_resolve_in_alertmanager(alertmanager: str) -> None:
    [forward] = build_integrations(
        ReceiverConfig.model_validate({"name": "ops", "alertmanager_configs": [{"url": alertmanager}]})
    )
    assert isinstance(forward, AlertmanagerIntegration) and forward.send_resolved
    forward.send(notification(alert("fwd_a"), alert("fwd_b")), None)
    active = _active(alertmanager)
    assert set(active) == {"fwd_a", "fwd_b"}
    got = active["fwd_a"]
    assert got["status"]["state"] == "active"
    assert got["labels"] == {
        "alertname": "DagFailing",
        "deployment": "prod",
        "dag_id": "fwd_a",
        "severity": "critical",
    }
    assert got["annotations"] == {"summary": "DAG fwd_a has failed for an hour"}
    assert got["generatorURL"] == "http://airflow-ops.example:9000/alerts"
    forward.send(notification(alert("fwd_a", AlertState.RESOLVED)), None)
    assert set(_active(alertmanager)) == {"fwd_b"}  # resolved by its endsAt, the other still fires


def test_alertmanager_rejecting_alerts_is_permanent(alertmanager: str) -> None:
    [forward] = build_integrations(
        ReceiverConfig.model_validate({"name": "ops", "alertmanager_configs": [{"url": alertmanager}]})
    )
    bad = alert("x")
    bad.labels = {}  # Alertmanager refuses an alert without labels
    with pytest.raises(DeliveryError) as err:
        forward.send(notification(bad), None)
    assert err.value.permanent and "HTTP 400" in str(err.value)
