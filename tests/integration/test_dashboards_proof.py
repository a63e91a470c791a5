"""The Grafana dashboards work: on the real Airflow 3 of the test session, watched by `airflow-ops serve`
(metadata DB, REST API, the local Redis as broker, the shipped alert rules notifying a loopback
webhook, maintenance run through the CLI) and scraped by a real Prometheus evaluating the same rules,
every panel query of every dashboard returns data, and the previews render from those results.

The driving is grafana_dashboards.proof's, shared with `make dashboard-previews`. The probe DAG
(tests/dags/dashboards_probe.py) is only unpaused for this test, and paused with nothing live after.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from webhook_sink import WebhookSink

from grafana_dashboards.proof import ObservedDeployment, Probe, dashboards, prove

pytestmark = pytest.mark.airflow

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def observed(airflow3: Any, tmp_path: Path) -> Iterator[tuple[ObservedDeployment, Probe, WebhookSink]]:
    sink = WebhookSink()
    probe = Probe(airflow3)
    try:
        with ObservedDeployment(airflow3, tmp_path / "ops", sink.url) as deployment:
            yield deployment, probe, sink
    finally:
        probe.stop()
        sink.close()


def test_every_panel_of_every_dashboard_has_data_and_renders(
    observed: tuple[ObservedDeployment, Probe, WebhookSink], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="grafana_dashboards.proof")  # progress, shown on failure
    deployment, probe, sink = observed
    boards = dashboards()
    empty = prove(deployment, probe, boards, timeout=180)
    paths = deployment.render(boards, tmp_path / "previews")  # first: they show what a failure left empty
    assert not empty, f"{len(empty)} panel queries stayed empty:\n" + "\n".join(map(str, empty))
    alerts = {body["commonLabels"].get("alertname") for body in sink.bodies}
    assert {"AirflowOpsWatchdog", "AirflowOpsMaintenanceFailed"} <= alerts, alerts

    assert sorted(p.stem for p in paths) == sorted(boards)
    for path in paths:
        data = path.read_bytes()
        assert data[:8] == PNG_SIGNATURE, path
        width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
        assert width == 1600 and 600 <= height <= 4000, (path, width, height)
        assert 10_000 < len(data) < 400_000, (path, len(data))
