"""`make demo`'s command: a real Airflow 3 watched by airflow-ops and Prometheus; Ctrl-C stops it all."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from scrape import Scraper

from airflow_ops.devstack.database import database_exists
from airflow_ops.devstack.ports import free_port

pytestmark = pytest.mark.airflow


def read_until(proc: subprocess.Popen[str], marker: str, out: str, timeout: float) -> str:
    """The demo's output so far, once it contains ``marker``."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while marker not in out:
        line = proc.stdout.readline()
        assert line or proc.poll() is None, f"demo exited early:\n{out}"
        assert time.monotonic() < deadline, f"no {marker!r} within {timeout}s:\n{out}"
        out += line
    return out


def test_demo_serves_real_airflow_and_stops_everything_on_ctrl_c() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_ops", "demo", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    out = ""
    try:
        out = read_until(proc, "Ctrl-C stops everything", out, timeout=300)
        scrape = Scraper(f"http://127.0.0.1:{port}")
        for source in ("metadb", "api"):
            scrape.wait("airflow_ops_up", lambda v: v == 1, source=source, timeout=60)
        assert scrape.value("airflow_info", version="3.3.2") == 1
        # The example DAGs are unpaused in the demo, so they are active and running.
        assert (scrape.value("airflow_dags", state="active") or 0) >= 6
        prom = re.search(r"Prometheus\s+(http://127\.0\.0\.1:\d+)", out)
        assert prom, out
        query = prom.group(1) + "/api/v1/query?query=airflow_ops_up"
        deadline = time.monotonic() + 60
        while True:
            with urllib.request.urlopen(query, timeout=5) as r:
                if json.load(r)["data"]["result"]:
                    break
            assert time.monotonic() < deadline, "Prometheus never scraped airflow-ops"
            time.sleep(1)
        db = re.search(r"instances/(demo-[0-9a-f]+)/", out)
        assert db, out
        # The shipped rules are evaluated: the always-firing Watchdog reaches the console receiver.
        scrape.wait("airflow_ops_alerting_leader", lambda v: v == 1, timeout=60)
        out = read_until(proc, "[alert] FIRING AirflowOpsWatchdog", out, timeout=90)
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=120)
    assert code == 0
    assert not database_exists("airflow_ops_" + db.group(1).replace("-", "_"))
