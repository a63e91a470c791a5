"""Session fixtures for the real local Airflow stacks (``airflow_ops.devstack``).

One stack per Airflow version per test session, started on first use and stopped (database
dropped) at the end. A missing real part fails the fixture loudly with how to get it: these tests
exist to run against real Airflow, so they never skip.

``--parallel-stacks`` (or ``AIRFLOW_OPS_PARALLEL_STACKS=1``) starts both versions concurrently
the first time either is requested; worth it when a run uses both.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from airflow_ops.devstack.database import DatabaseError
from airflow_ops.devstack.install import AIRFLOW2, AIRFLOW3, AirflowInstallError
from airflow_ops.devstack.stack import EXAMPLE_DAGS_DIR, AirflowStack, StackError

TEST_DAGS_DIR = Path(__file__).resolve().parent / "dags"

_HOW_TO_GET_IT = {
    DatabaseError: (
        "The Airflow stacks need PostgreSQL at $AIRFLOW_OPS_TEST_PG_ADMIN (default "
        "postgresql://postgres@127.0.0.1:5432/postgres) with a user that may create databases, "
        "e.g. `apt-get install postgresql && service postgresql start` (trust auth on loopback)."
    ),
    AirflowInstallError: (
        "The first use installs apache-airflow into $AIRFLOW_OPS_STACK_DIR (default "
        "<repo>/.stack/venvs) with pip: it needs PyPI. Rerun the command above to see pip's error."
    ),
    StackError: "Airflow itself did not come up: the component logs above say why.",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--parallel-stacks",
        action="store_true",
        default=False,
        help="start the Airflow 2 and 3 devstacks concurrently on first use",
    )


class _StackPool:
    """Starts each version's stack at most once per session, optionally both at once."""

    def __init__(self, parallel: bool) -> None:
        self.parallel = parallel
        self.lock = threading.Lock()
        self.futures: dict[str, Future[AirflowStack]] = {}
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="devstack")

    def get(self, version: str) -> AirflowStack:
        with self.lock:
            wanted = [AIRFLOW3, AIRFLOW2] if self.parallel else [version]
            for v in wanted:
                if v not in self.futures:
                    self.futures[v] = self.executor.submit(_start_stack, v)
        return self.futures[version].result()

    def close(self) -> None:
        for future in self.futures.values():
            exc = future.exception()
            if exc is None:
                future.result().stop(drop_db=True)
        self.executor.shutdown()


def _start_stack(version: str) -> AirflowStack:
    stack = AirflowStack(version, f"pytest-af{version.split('.')[0]}", [EXAMPLE_DAGS_DIR, TEST_DAGS_DIR])
    return stack.start()


@pytest.fixture(scope="session")
def _stack_pool(request: pytest.FixtureRequest) -> Iterator[_StackPool]:
    parallel = request.config.getoption("--parallel-stacks") or os.environ.get(
        "AIRFLOW_OPS_PARALLEL_STACKS"
    ) in ("1", "true", "yes")
    pool = _StackPool(parallel)
    yield pool
    pool.close()


def _get_stack(pool: _StackPool, version: str) -> AirflowStack:
    try:
        return pool.get(version)
    except Exception as exc:
        hint = next((text for kind, text in _HOW_TO_GET_IT.items() if isinstance(exc, kind)), "")
        pytest.fail(f"cannot start the real Airflow {version} stack: {exc}\n\n{hint}", pytrace=False)


@pytest.fixture(scope="session")
def airflow3(_stack_pool: _StackPool) -> AirflowStack:
    """A running Airflow 3 stack (api-server, scheduler, dag-processor, triggerer)."""
    return _get_stack(_stack_pool, AIRFLOW3)


@pytest.fixture(scope="session")
def airflow2(_stack_pool: _StackPool) -> AirflowStack:
    """A running Airflow 2 stack (webserver, scheduler, triggerer)."""
    return _get_stack(_stack_pool, AIRFLOW2)


@pytest.fixture(scope="session", params=["af3", "af2"])
def airflow_stack(request: pytest.FixtureRequest) -> AirflowStack:
    """Each test using this runs once against Airflow 3 and once against Airflow 2."""
    return request.getfixturevalue("airflow3" if request.param == "af3" else "airflow2")


@pytest.fixture(scope="session")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1, made with the openssl CLI, for TLS tests."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key
