"""The alerting HTTP API (/api/alerts, /api/silences) of a running `airflow-ops serve`, over real
HTTP, with basic auth on and the ops store on SQLite and on PostgreSQL.

The service polls a deployment whose API is a closed port: its sources fail, the service still
serves and evaluates the shipped rules (the watchdog fires, "source unreachable" is pending).
"""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from scrape import Scraper

from airflow_ops.config import load_config
from airflow_ops.devstack.database import create_database, drop_database
from airflow_ops.devstack.ports import free_port
from airflow_ops.service import OpsService

REPO = Path(__file__).resolve().parents[2]
USER, PASSWORD = "ops", "api-Password-7"
AUTH = (USER, PASSWORD)


class Api:
    """JSON over HTTP to the service, with or without credentials."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        auth: tuple[str, str] | None = AUTH,
    ) -> tuple[int, Any, dict[str, str]]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if auth is not None:
            req.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                status, headers, text = resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as e:
            status, headers, text = e.code, dict(e.headers), e.read()
        is_json = headers.get("Content-Type", "").startswith("application/json")
        return status, json.loads(text) if is_json else text.decode(), headers

    def ok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        got, doc, _ = self.call(method, path, body)
        assert got == status, f"{method} {path} answered {got}: {doc}"
        return doc

    def wait(self, path: str, condition: Callable[[Any], bool], timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            doc = self.ok("GET", path)
            if condition(doc):
                return doc
            assert time.monotonic() < deadline, f"GET {path} never met the condition; last: {doc}"
            time.sleep(0.2)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    tmp = tmp_path_factory.mktemp(f"http_api_{request.param}")
    db_name = f"aops_http_api_{os.getpid()}"
    store = create_database(db_name) if request.param == "postgresql" else f"sqlite:///{tmp / 'ops.db'}"
    config = {
        "store": store,
        "service": {
            "listen": "127.0.0.1",
            "port": 0,
            "poll_interval": "1s",
            "basic_auth": {"username": USER, "password": PASSWORD},
        },
        "deployments": {"prod": {"api": {"url": f"http://127.0.0.1:{free_port()}", "timeout": "2s"}}},
        "alerting": {
            "rule_files": [str(REPO / "alert_rules" / "*.yaml")],
            # A receiver without integrations: nothing to deliver, routing still shows it.
            "route": {"receiver": "oncall", "group_wait": "1h"},
            "receivers": [{"name": "oncall"}],
        },
    }
    path = tmp / "airflow-ops.yaml"
    path.write_text(yaml.safe_dump(config))
    service = OpsService(load_config(path, environ={}))
    service.start()
    try:
        yield Api(service.url)
    finally:
        service.stop()
        if request.param == "postgresql":
            drop_database(db_name)


def new_silence(**overrides: Any) -> dict[str, Any]:
    return {
        "matchers": ['dag_id="etl"', 'alertname=~"AirflowDag.*"'],
        "duration": "2h",
        "comment": "planned maintenance",
        "created_by": "alice",
        **overrides,
    }


def ids(silences: list[dict[str, Any]]) -> set[str]:
    return {s["id"] for s in silences}


def test_a_silence_is_created_listed_and_expired(api: Api) -> None:
    before = time.time()
    created = api.ok("POST", "/api/silences", new_silence(), status=201)
    assert created["id"]
    assert created["matchers"] == ['dag_id="etl"', 'alertname=~"AirflowDag.*"']
    assert created["comment"] == "planned maintenance" and created["created_by"] == "alice"
    assert created["ends_at"] - created["starts_at"] == pytest.approx(2 * 3600)
    assert before <= created["starts_at"] <= time.time() and created["expired_at"] is None
    [listed] = [s for s in api.ok("GET", "/api/silences") if s["id"] == created["id"]]
    assert listed == created

    expired = api.ok("DELETE", f"/api/silences/{created['id']}")
    assert expired["id"] == created["id"] and expired["expired_at"] is not None
    assert created["id"] not in ids(api.ok("GET", "/api/silences"))
    [kept] = [s for s in api.ok("GET", "/api/silences?all=1") if s["id"] == created["id"]]
    assert kept["expired_at"] == expired["expired_at"]
    # Expiring again changes nothing; an unknown id is a 404 that names it.
    assert api.ok("DELETE", f"/api/silences/{created['id']}")["expired_at"] == expired["expired_at"]
    status, doc, _ = api.call("DELETE", "/api/silences/no-such-silence")
    assert status == 404 and "no-such-silence" in doc["error"]


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (b"{not json", "body"),
        (b'["a list"]', "body"),
        (json.dumps(new_silence(endsAt="tomorrow")).encode(), "endsAt"),
        (json.dumps(new_silence(matchers='dag_id="etl"')).encode(), "matchers"),
        (json.dumps(new_silence(matchers=[])).encode(), "matchers"),
        (json.dumps(new_silence(matchers=["dag_id=etl"])).encode(), "matchers"),
        (json.dumps(new_silence(matchers=['dag_id=~"("'])).encode(), "matchers"),
        (json.dumps(new_silence(matchers=['dag_id!="etl"'])).encode(), "matchers"),  # silences everything
        (json.dumps(new_silence(duration="a while")).encode(), "duration"),
        (json.dumps(new_silence(duration="0s")).encode(), "duration"),
        (json.dumps({k: v for k, v in new_silence().items() if k != "comment"}).encode(), "comment"),
        (json.dumps(new_silence(comment="   ")).encode(), "comment"),
    ],
)
def test_a_bad_silence_is_refused_naming_the_key(api: Api, body: bytes, key: str) -> None:
    before = ids(api.ok("GET", "/api/silences?all=1"))
    status, doc, _ = api.call("POST", "/api/silences", raw=body)
    assert status == 400, doc
    assert doc["error"].startswith(f"{key}: ")
    assert ids(api.ok("GET", "/api/silences?all=1")) == before  # nothing stored


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/alerts", None),
        ("GET", "/api/silences", None),
        ("GET", "/api/silences?all=1", None),
        ("POST", "/api/silences", new_silence(comment="sneaky")),
        ("DELETE", "/api/silences/any-id", None),
    ],
)
@pytest.mark.parametrize(
    "auth", [None, (USER, "wrong"), ("someone", PASSWORD)], ids=["none", "bad-pw", "bad-user"]
)
def test_every_alerting_endpoint_needs_credentials(
    api: Api, method: str, path: str, body: Any, auth: tuple[str, str] | None
) -> None:
    status, doc, headers = api.call(method, path, body, auth=auth)
    assert status == 401, doc
    assert headers.get("WWW-Authenticate", "").startswith("Basic")
    assert "sneaky" not in json.dumps(api.ok("GET", "/api/silences?all=1"))


def test_alerts_on_the_leader_list_state_routing_and_silences(api: Api) -> None:
    assert Scraper(api.base_url, basic_auth=AUTH).wait("airflow_ops_alerting_leader", lambda v: v == 1) == 1

    def named(alerts: list[dict[str, Any]], name: str) -> dict[str, Any]:
        [found] = [a for a in alerts if a["labels"]["alertname"] == name]
        return found

    alerts = api.wait("/api/alerts", lambda doc: any(a["state"] == "firing" for a in doc))
    assert isinstance(alerts, list)
    watchdog = named(alerts, "AirflowOpsWatchdog")  # fires as long as the service evaluates
    assert watchdog["state"] == "firing" and watchdog["labels"]["deployment"] == "prod"
    assert watchdog["receivers"] == ["oncall"] and watchdog["silenced_by"] == []
    assert watchdog["annotations"]["runbook_url"].endswith("runbooks/AirflowOpsWatchdog.md")
    # The API source is down: "source unreachable" waits out its `for: 5m`.
    unreachable = named(alerts, "AirflowOpsSourceUnreachable")
    assert unreachable["state"] == "pending" and unreachable["labels"]["source"] == "api"

    silence = api.ok(
        "POST",
        "/api/silences",
        new_silence(matchers=['alertname="AirflowOpsWatchdog"', 'deployment="prod"']),
        status=201,
    )
    # Obeyed from the next evaluation on.
    alerts = api.wait(
        "/api/alerts", lambda doc: named(doc, "AirflowOpsWatchdog")["silenced_by"] == [silence["id"]]
    )
    assert named(alerts, "AirflowOpsSourceUnreachable")["silenced_by"] == []
    api.ok("DELETE", f"/api/silences/{silence['id']}")
    api.wait("/api/alerts", lambda doc: named(doc, "AirflowOpsWatchdog")["silenced_by"] == [])


def test_unsupported_methods_and_paths(api: Api) -> None:
    status, doc, _ = api.call("DELETE", "/api/silences")
    assert status == 405 and "DELETE" in doc["error"]
    status, doc, _ = api.call("POST", "/api/alerts", {})
    assert status == 405
    status, _, _ = api.call("POST", "/api/nothing-here", {})
    assert status == 404
