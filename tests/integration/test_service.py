"""The HTTP side of `airflow-ops serve` over databases migrated by the real Airflow 2 and 3:
TLS, bearer auth, readiness, JSON without secrets, several deployments in one service."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from scrape import Scraper

from airflow_ops.config import (
    Config,
    DatabaseConfig,
    DeploymentConfig,
    Secret,
    ServiceConfig,
    TlsConfig,
)
from airflow_ops.devstack.database import create_database, drop_database, migrated_template
from airflow_ops.devstack.install import AIRFLOW2, AIRFLOW3
from airflow_ops.service import OpsService


@pytest.fixture(scope="module")
def databases() -> Iterator[dict[str, str]]:
    """One database per Airflow major, cloned from the schema the real Airflow migrated."""
    names = {v: f"ops_svc_{v.replace('.', '')}_{uuid.uuid4().hex[:6]}" for v in (AIRFLOW3, AIRFLOW2)}
    dsns = {v: create_database(n, template=migrated_template(v)) for v, n in names.items()}
    yield dsns
    for n in names.values():
        drop_database(n)


def _config(dsns: dict[str, str], password: str = "db-Secret-123", **service: object) -> Config:
    deployments = {
        f"af{v[0]}": DeploymentConfig(
            database=DatabaseConfig(dsn=Secret(dsn.replace("postgres@", f"postgres:{password}@")))
        )
        for v, dsn in dsns.items()
    }
    return Config(service=ServiceConfig(port=0, poll_interval=0.5, **service), deployments=deployments)


def test_two_deployments_of_both_majors_in_one_service(databases: dict[str, str]) -> None:
    service = OpsService(_config(databases, bearer_token=Secret("tok-abc")))
    service.start()
    try:
        anon = Scraper(service.url)
        assert anon.get("/metrics")[0] == 401
        status, headers, _ = anon.get("/api/snapshot")
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        req = urllib.request.Request(service.url + "/metrics", headers={"Authorization": "Bearer wrong"})
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(req, timeout=5)

        scrape = Scraper(service.url, bearer="tok-abc")
        for dep in ("af3", "af2"):
            scrape.wait("airflow_ops_up", lambda v: v == 1, deployment=dep, source="metadb", timeout=60)
        status, _, body = scrape.get("/api/snapshot")
        snaps = json.loads(body)
        assert status == 200 and {s["deployment"] for s in snaps} == {"af3", "af2"}
        assert {s["deployment"]: s["db"]["schema_major"] for s in snaps} == {"af3": 3, "af2": 2}
        text = json.dumps(snaps) + scrape.get("/metrics")[2].decode()
        assert "db-Secret-123" not in text and "tok-abc" not in text
    finally:
        service.stop()


def test_ready_only_after_first_poll_and_tls(
    databases: dict[str, str], self_signed: tuple[Path, Path]
) -> None:
    cert, key = self_signed
    service = OpsService(_config(databases, tls=TlsConfig(cert_file=str(cert), key_file=str(key))))
    assert not service.ready
    service.start()
    try:
        assert service.url.startswith("https://")
        ctx = ssl.create_default_context(cafile=str(cert))
        ready = False
        for _ in range(200):
            try:
                with urllib.request.urlopen(service.url + "/readyz", context=ctx, timeout=5) as r:
                    ready = r.status == 200
                    break
            except urllib.error.HTTPError as e:
                assert e.code == 503  # not ready before the first poll
            service.stop_event.wait(0.1)
        assert ready
        with urllib.request.urlopen(service.url + "/metrics", context=ctx, timeout=5) as r:
            assert b'airflow_ops_up{deployment="af3",source="metadb"} 1.0' in r.read()
        # Plain HTTP to the TLS port does not get metrics.
        with pytest.raises(OSError):
            urllib.request.urlopen(service.url.replace("https", "http") + "/metrics", timeout=5)
    finally:
        service.stop()
