"""Reads a running airflow-ops over real HTTP, the way Prometheus does, and waits on conditions."""

from __future__ import annotations

import base64
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Scraper:
    def __init__(
        self, base_url: str, basic_auth: tuple[str, str] | None = None, bearer: str | None = None
    ) -> None:
        self.base_url = base_url
        self.basic_auth = basic_auth
        self.bearer = bearer

    def get(self, path: str, accept: str | None = None) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.base_url + path)
        if self.basic_auth:
            token = base64.b64encode(":".join(self.basic_auth).encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        if self.bearer:
            req.add_header("Authorization", f"Bearer {self.bearer}")
        if accept:
            req.add_header("Accept", accept)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def samples(self) -> Samples:
        status, _, body = self.get("/metrics")
        out: Samples = {}
        if status == 503:  # no poll has completed yet: nothing to read
            return out
        assert status == 200, f"/metrics answered {status}: {body[:200]!r}"
        for fam in text_string_to_metric_families(body.decode()):
            for s in fam.samples:
                out[(s.name, frozenset(s.labels.items()))] = s.value
        return out

    def values(self, name: str, **labels: str) -> list[float]:
        want = set(labels.items())
        return [v for (n, lab), v in self.samples().items() if n == name and want <= set(lab)]

    def value(self, name: str, **labels: str) -> float | None:
        """The single sample matching name and labels, None when absent."""
        found = self.values(name, **labels)
        assert len(found) <= 1, f"{name}{labels} matches {len(found)} series"
        return found[0] if found else None

    def wait(
        self, name: str, predicate: Callable[[float | None], bool], timeout: float = 180, **labels: str
    ) -> float | None:
        deadline = time.monotonic() + timeout
        last: float | None = None
        while time.monotonic() < deadline:
            last = self.value(name, **labels)
            if predicate(last):
                return last
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout}s waiting on {name}{labels}; last value {last}")

    def wait_polls(self, n: int, timeout: float = 120) -> None:
        """Wait until the service has completed n more polls."""
        start = self.value("airflow_ops_last_poll_timestamp_seconds") or 0.0
        seen = {start}
        deadline = time.monotonic() + timeout
        while len(seen) <= n:
            if time.monotonic() > deadline:
                raise AssertionError(f"service completed only {len(seen) - 1} of {n} polls")
            seen.add(self.value("airflow_ops_last_poll_timestamp_seconds") or 0.0)
            time.sleep(0.2)
