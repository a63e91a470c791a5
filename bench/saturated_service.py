"""The service's worst case for memory: every poll renders a snapshot in which every DAG has
every per-DAG series (as after it has watched each DAG finish runs in both states, which takes
a real deployment a day, not the minute a benchmark runs).

``bench.bench_poll`` starts this as a subprocess: a real ``OpsService`` (HTTP server, poll loop,
renderer) whose only poller returns a pickled ``DbState`` taken from the benchmark database,
so the process holds what ``airflow-ops serve`` holds apart from the DB connection.

    python -m bench.saturated_service STATE.pickle PORT
"""

from __future__ import annotations

import pickle
import signal
import sys
import threading
import time
from pathlib import Path

from airflow_ops.config import Config, DatabaseConfig, DeploymentConfig, Secret, ServiceConfig
from airflow_ops.service import OpsService
from airflow_ops.snapshot import DbState, Snapshot, SourceStatus


class _StatePoller:
    """Stands in for DeploymentPoller: the same (saturated) DB state at every poll."""

    name = "bench"

    def __init__(self, state: DbState) -> None:
        self._state = state

    def poll(self) -> Snapshot:
        return Snapshot(
            deployment=self.name,
            taken_at=time.time(),
            sources={"metadb": SourceStatus("metadb", True, 0.01)},
            db=self._state,
        )

    def close(self) -> None:
        pass


def main(argv: list[str]) -> int:
    state_path, port = Path(argv[0]), int(argv[1])
    with state_path.open("rb") as f:
        state: DbState = pickle.load(f)
    config = Config(
        service=ServiceConfig(listen="127.0.0.1", port=port, poll_interval=1.0),
        # Never connected to: the poller above replaces the configured sources.
        deployments={"bench": DeploymentConfig(database=DatabaseConfig(dsn=Secret("postgresql://unused/x")))},
    )
    service = OpsService(config, pollers=[_StatePoller(state)])  # type: ignore[list-item]
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    service.start()
    try:
        done.wait()
    finally:
        service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
