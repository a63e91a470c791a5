"""A real Prometheus on loopback that scrapes airflow-ops: for the integration tests and the demo."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from .ports import free_port


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        raise RuntimeError("prometheus is not installed: apt-get install prometheus (`make test` does it)")
    return path


class PrometheusServer:
    def __init__(
        self,
        workdir: Path,
        targets: list[str],
        scrape_interval: str = "2s",
        basic_auth: tuple[str, str] | None = None,
        rule_files: list[Path] | None = None,
        evaluation_interval: str | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.targets = targets
        self.scrape_interval = scrape_interval
        self.basic_auth = basic_auth
        # Alerting/recording rule files (e.g. alert_rules/*.yaml): Prometheus then exports ALERTS.
        self.rule_files = [Path(p).resolve() for p in rule_files or []]
        self.evaluation_interval = evaluation_interval or scrape_interval
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict[str, Any]:
        job: dict[str, Any] = {
            "job_name": "airflow-ops",
            "scrape_interval": self.scrape_interval,
            "static_configs": [{"targets": self.targets}],
        }
        if self.basic_auth:
            pw_file = self.workdir / "scrape-password"
            pw_file.write_text(self.basic_auth[1])
            pw_file.chmod(0o600)
            job["basic_auth"] = {"username": self.basic_auth[0], "password_file": str(pw_file)}
        config: dict[str, Any] = {
            "global": {"scrape_interval": self.scrape_interval},
            "scrape_configs": [job],
        }
        if self.rule_files:
            config["global"]["evaluation_interval"] = self.evaluation_interval
            config["rule_files"] = [str(p) for p in self.rule_files]
        return config

    def start(self, timeout: float = 60) -> PrometheusServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = self.workdir / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(self.config()))
        self.port = free_port()
        log = open(self.workdir / "prometheus.log", "wb")  # noqa: SIM115 - owned by the child process
        self._proc = subprocess.Popen(
            [
                prometheus_binary(),
                f"--config.file={cfg}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1d",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = (self.workdir / "prometheus.log").read_text()[-2000:]
                raise RuntimeError(f"prometheus exited: {tail}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("prometheus did not become ready")

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        if body.get("status") != "success":
            raise RuntimeError(f"query {expr!r} failed: {body}")
        return list(body["data"]["result"])

    def wait_for(
        self, expr: str, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 60
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = self.query(expr)
            if predicate(result):
                return result
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting on {expr!r}; last result: {result}")

    def targets_health(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=10) as r:
            return list(json.load(r)["data"]["activeTargets"])

    def stop(self) -> None:
        if self._proc is None:
            return
        try:
            os.killpg(self._proc.pid, signal.SIGTERM)
            self._proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        except ProcessLookupError:
            pass
        self._proc = None

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
