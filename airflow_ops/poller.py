"""Polls every source of one deployment and assembles a Snapshot.

Sources run concurrently so a slow or unreachable one (bounded by its own timeouts) never holds
the others back; a failing source only blanks its own part of the snapshot and shows in
``airflow_ops_up{source}`` — the next poll tries it again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .airflow.source import Source, SourceError
from .config import Config, DeploymentConfig, MetricsConfig, mask
from .snapshot import HistogramAccumulator, Snapshot, SourceStatus

log = logging.getLogger(__name__)

POLL_DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def build_sources(name: str, deployment: DeploymentConfig, metrics: MetricsConfig) -> list[Source[Any]]:
    """The sources a deployment's config asks for (imported lazily: each pulls in its client)."""
    sources: list[Source[Any]] = []
    if deployment.database is not None:
        from .airflow.metadb import MetadataDbSource

        sources.append(MetadataDbSource(name, deployment.database, metrics))
    if deployment.api is not None:
        from .airflow.rest import RestApiSource

        sources.append(RestApiSource(name, deployment.api))
    if deployment.broker is not None:
        from .airflow.broker import BrokerSource

        sources.append(BrokerSource(name, deployment.broker))
    return sources


class DeploymentPoller:
    def __init__(self, name: str, sources: Sequence[Source[Any]], config: Config | None = None) -> None:
        self.name = name
        self.sources = list(sources)
        self._config = config
        self._durations = {s.name: HistogramAccumulator(POLL_DURATION_BUCKETS) for s in self.sources}
        self._errors: dict[tuple[str, str], int] = {}
        self._was_up: dict[str, bool] = {}
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(self.sources)), thread_name_prefix=name)

    @classmethod
    def from_config(cls, name: str, config: Config) -> DeploymentPoller:
        return cls(name, build_sources(name, config.deployments[name], config.metrics), config)

    def poll(self) -> Snapshot:
        futures = {s.name: self._pool.submit(self._poll_one, s) for s in self.sources}
        parts: dict[str, Any] = {}
        statuses: dict[str, SourceStatus] = {}
        for name, fut in futures.items():
            statuses[name], parts[name] = fut.result()
        return Snapshot(
            deployment=self.name,
            taken_at=time.time(),
            sources=statuses,
            poll_durations={n: acc.freeze() for n, acc in self._durations.items()},
            poll_errors=dict(self._errors),
            db=parts.get("metadb"),
            api=parts.get("api"),
            broker=parts.get("broker"),
        )

    def _poll_one(self, source: Source[Any]) -> tuple[SourceStatus, Any]:
        started = time.monotonic()
        part, reason, message = None, None, None
        try:
            part = source.poll(time.time())
        except SourceError as e:
            reason, message = e.reason, str(e)
        except Exception as e:  # a bug in a source must not stop the service; it shows as an error
            reason, message = "internal", f"{type(e).__name__}: {e}"
            log.debug("source %s/%s crashed", self.name, source.name, exc_info=True)
        elapsed = time.monotonic() - started
        self._durations[source.name].observe(elapsed)
        if message is not None and self._config is not None:
            message = mask(message, self._config)
        up = reason is None
        if reason is not None:
            self._errors[(source.name, reason)] = self._errors.get((source.name, reason), 0) + 1
        self._log_transition(source.name, up, reason, message)
        return SourceStatus(source.name, up, elapsed, reason, message), part

    def _log_transition(self, source: str, up: bool, reason: str | None, message: str | None) -> None:
        # Log changes of state, not every failed poll: an outage is one line, its end another.
        was = self._was_up.get(source)
        self._was_up[source] = up
        if up and was is False:
            log.info("deployment %s: source %s recovered", self.name, source)
        elif not up and was is not False:
            log.warning("deployment %s: source %s is down (%s): %s", self.name, source, reason, message)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for s in self.sources:
            try:
                s.close()
            except Exception:  # closing is best effort
                log.debug("closing %s failed", s.name, exc_info=True)
