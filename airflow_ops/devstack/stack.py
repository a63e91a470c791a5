"""A real, local Apache Airflow deployment (2.x or 3.x) for the tests and the demo.

Each ``AirflowStack`` gets its own database (cloned from a migrated template), its own
AIRFLOW_HOME under ``<stack dir>/instances/``, and free loopback ports, so several stacks, from
several engineers, can run side by side. Every component runs in its own session/process group
and carries a marker in its environment; ``stop()`` terminates the groups and then sweeps any
marked process left (Airflow runs each task in a process group of its own, so killing a
component's group alone would orphan running tasks).

Authentication:
- Airflow 3: SimpleAuthManager (the default; the FAB provider is not part of
  ``apache-airflow[postgres]`` 3.x). The user comes from ``[core] simple_auth_manager_users`` and
  its password from the JSON file ``[core] simple_auth_manager_passwords_file``, which the stack
  writes before start, so no CLI call is needed. The API wants a JWT from ``POST /auth/token``.
- Airflow 2: FAB, user made with ``airflow users create``; the API accepts basic auth.
"""

from __future__ import annotations

import atexit
import base64
import collections
import contextlib
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import string
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from airflow_ops.devstack.database import create_database, drop_database, dsn_for, migrated_template
from airflow_ops.devstack.install import ensure_airflow, major_version, stack_dir
from airflow_ops.devstack.ports import free_ports

EXAMPLE_DAGS_DIR = Path(__file__).resolve().parent / "dags"

# Environment marker carried by every process of an instance (inherited by task processes).
_MARKER_ENV = "AIRFLOW_OPS_DEVSTACK_INSTANCE"
_COMPONENTS = {
    3: ("api-server", "scheduler", "dag-processor", "triggerer"),
    2: ("webserver", "scheduler", "triggerer"),
}
# The health document names components differently from the CLI.
_HEALTH_KEYS = {
    3: ("metadatabase", "scheduler", "triggerer", "dag_processor"),
    2: ("metadatabase", "scheduler", "triggerer"),
}
_TERMINAL_RUN_STATES = frozenset({"success", "failed"})
_STOP_GRACE_SECONDS = 20.0
_POLL_SECONDS = 0.5
_HTTP_TIMEOUT = 30.0
_KEEP_STOPPED_SECONDS = 24 * 3600


class StackError(RuntimeError):
    """The local Airflow stack could not be started or did not behave."""


class ApiError(StackError):
    """The Airflow REST API answered with an HTTP error."""

    def __init__(self, method: str, url: str, status: int, body: str) -> None:
        super().__init__(f"{method} {url} -> HTTP {status}: {body[:2000]}")
        self.status = status
        self.body = body


# What a server that is still starting (or just died) can answer with.
_NOT_UP = (OSError, http.client.HTTPException, StackError, ValueError)


class AirflowStack:
    """A running Airflow deployment: database, AIRFLOW_HOME, and component processes.

    Use as a context manager or call ``start()``/``stop()``. Dag files are symlinked from
    ``dags_dirs`` into the instance's dags folder; tests may add more files to ``dags_dir``.
    """

    def __init__(
        self,
        version: str,
        name: str,
        dags_dirs: Iterable[Path],
        extra_env: Mapping[str, str] | None = None,
        executor: str = "LocalExecutor",
        unpause_on_create: bool = False,
        database: str | None = None,
        fernet_key: str | None = None,
    ) -> None:
        self.version = version
        self.major = major_version(version)
        self.name = name
        self.dags_dirs = [Path(d).resolve() for d in dags_dirs]
        self.extra_env = dict(extra_env or {})
        self.executor = executor
        self.unpause_on_create = unpause_on_create
        # An existing database (e.g. a restored backup) to run on instead of a fresh clone of the
        # migrated template; the stack never drops a database it did not create.
        self.existing_database = database
        # Fixed per instance so that connections and variables are stored encrypted; a stack on a
        # restored database needs the key of the stack that wrote it.
        self.fernet_key = fernet_key or base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
        self.username = "admin"
        # Letters and digits only: it goes into argv (a leading "-" reads as an option), basic
        # auth headers and URLs.
        self.password = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(20))
        self.instance_id = f"{_slug(name)}-{secrets.token_hex(3)}"
        # PostgreSQL identifiers are limited to 63 bytes.
        self.db_name = database or f"airflow_ops_{self.instance_id.replace('-', '_')}"[:63]
        self.home = stack_dir() / "instances" / self.instance_id
        self.logs_dir = self.home / "logs"
        self.dags_dir = self.home / "dags"
        self.component_logs_dir = self.home / "components"
        self.venv: Path | None = None
        self.api_port = 0
        self._env: dict[str, str] | None = None
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._db_created = False
        self._token: str | None = None
        self._atexit_registered = False
        # Session ids of every component ever started (= the leaders' pids): task processes
        # leave their component's process group but not its session.
        self._sessions: set[int] = set()
        self.start_seconds: float | None = None

    # ----------------------------------------------------------------- properties

    @property
    def api_url(self) -> str:
        """Base URL of the API/web server, without ``/api/vN``."""
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def api_version(self) -> str:
        return "v2" if self.major >= 3 else "v1"

    @property
    def db_dsn(self) -> str:
        """libpq URI of this instance's metadata database."""
        return dsn_for(self.db_name)

    @property
    def env(self) -> dict[str, str]:
        """The full environment for airflow CLI calls against this instance."""
        if self._env is None:
            raise StackError("stack not started: call start() first")
        return dict(self._env)

    @property
    def components(self) -> tuple[str, ...]:
        return _COMPONENTS[self.major]

    # ----------------------------------------------------------------- lifecycle

    def __enter__(self) -> AirflowStack:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop(drop_db=True)

    def start(self, timeout: float = 300.0) -> AirflowStack:
        """Create the database and AIRFLOW_HOME, start every component, and return once the API
        reports healthy and every dag file is parsed (as a DAG or as an import error)."""
        if self._procs:
            raise StackError(f"stack {self.instance_id} already started")
        started = time.monotonic()
        reap_orphans()
        self.venv = ensure_airflow(self.version)
        template = None if self.existing_database else migrated_template(self.version)
        self._write_home()
        if not self._atexit_registered:
            # A crashed test run or demo must not leave processes or a database behind.
            atexit.register(self.stop, drop_db=True)
            self._atexit_registered = True
        if template is not None:
            create_database(self.db_name, template=template)
            self._db_created = True
        try:
            self._env = self._build_env()
            if self.major == 2:
                # FAB's CLI, before the webserver starts, so the two never race on FAB's tables.
                self.airflow(
                    "users", "create", "--username", self.username, f"--password={self.password}",
                    "--role", "Admin", "--firstname", "Airflow", "--lastname", "Ops",
                    "--email", "admin@example.invalid",
                )  # fmt: skip
            for component in self.components:
                self.start_component(component)
            self.wait_until_healthy(timeout=max(1.0, timeout - (time.monotonic() - started)))
            self._ensure_pool("single_slot", 1)
            self.wait_for_dag_files(timeout=max(1.0, timeout - (time.monotonic() - started)))
        except BaseException:
            self.stop(drop_db=True)
            raise
        self.start_seconds = time.monotonic() - started
        return self

    def stop(self, drop_db: bool = False) -> None:
        """Stop every component (SIGTERM to each process group, SIGKILL after ~20 s), then kill
        any process of this instance still alive. Idempotent. The database is kept (for a
        post-mortem; dropping it is then the caller's job) unless ``drop_db``; the instance
        directory with all logs is kept for a day."""
        self._stop_components(list(self._procs), signal.SIGTERM)
        _kill_pids(self.processes())
        if drop_db and self._db_created:
            drop_database(self.db_name)
            self._db_created = False
        with contextlib.suppress(FileNotFoundError):
            (self.home / "owner.json").unlink()

    def start_component(self, component: str) -> None:
        """Start one component (e.g. after ``stop_component``) in its own process group."""
        if component not in self.components:
            raise ValueError(f"unknown component {component!r} for Airflow {self.major}: {self.components}")
        proc = self._procs.get(component)
        if proc is not None and proc.poll() is None:
            raise StackError(f"{component} is already running (pid {proc.pid})")
        cmd = [str(self._venv / "bin" / "airflow"), component]
        if component == "api-server":
            cmd += ["--host", "127.0.0.1", "--port", str(self.api_port), "--workers", "1"]
        elif component == "webserver":
            cmd += ["--hostname", "127.0.0.1", "--port", str(self.api_port), "--workers", "2"]
        self.component_logs_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.component_logs_dir / f"{component}.log"
        with open(log_path, "ab") as log:
            log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(cmd)}\n".encode())
            log.flush()
            # start_new_session = setsid(): the component and its children form one group.
            self._procs[component] = subprocess.Popen(
                cmd,
                env=self.env,
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._sessions.add(self._procs[component].pid)
        self._write_owner()

    def stop_component(self, component: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send ``sig`` to the component's process group and wait for the group to exit
        (SIGKILL after ~20 s). SIGKILL by default: a crash, as tests of failure detection want."""
        self._stop_components([component], sig)

    def _stop_components(self, components: list[str], sig: signal.Signals) -> None:
        # Signal all groups first, then wait: stopping a stack costs one grace period, not four.
        procs = [proc for proc in (self._procs.pop(c, None) for c in components) if proc is not None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)  # session leader: its pid is the group id
        deadline = time.monotonic() + _STOP_GRACE_SECONDS
        alive = procs
        while alive and time.monotonic() < deadline:
            for proc in alive:
                proc.poll()  # reap the leader, or it stays a zombie member of its group
            alive = [proc for proc in alive if _group_alive(proc.pid)]
            if alive:
                time.sleep(0.1)
        for proc in alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)

    # ----------------------------------------------------------------- airflow CLI and API

    def airflow(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the airflow CLI of this stack's venv with the stack's environment."""
        cmd = [str(self._venv / "bin" / "airflow"), *args]
        proc = subprocess.run(cmd, env=self.env, cwd=self.home, capture_output=True, text=True, check=False)
        if check and proc.returncode != 0:
            shown = " ".join(cmd).replace(self.password, "***")
            raise StackError(
                f"`{shown}` failed with exit code {proc.returncode}:\n{_tail(proc.stdout + proc.stderr)}"
            )
        return proc

    def api(self, method: str, path: str, json: Any = None) -> dict[str, Any]:
        """Authenticated call to ``/api/vN/<path>``; returns the decoded JSON body ({} if empty)."""
        url = f"{self.api_url}/api/{self.api_version}/{path.lstrip('/')}"
        for attempt in range(2):
            try:
                return _http_json(method, url, json, self._auth_headers())
            except ApiError as exc:
                # Airflow 3 tokens expire; fetch a new one once.
                if exc.status == 401 and self.major >= 3 and attempt == 0:
                    self._token = None
                    continue
                raise
        raise AssertionError("unreachable")

    def health(self) -> dict[str, Any]:
        """The unauthenticated health document of the API."""
        path = "monitor/health" if self.major >= 3 else "health"
        return _http_json("GET", f"{self.api_url}/api/{self.api_version}/{path}", None, {})

    def is_healthy(self) -> bool:
        try:
            doc = self.health()
        except _NOT_UP:
            return False
        return all((doc.get(key) or {}).get("status") == "healthy" for key in _HEALTH_KEYS[self.major])

    def unpause(self, dag_id: str) -> None:
        self.api("PATCH", f"dags/{dag_id}?update_mask=is_paused", {"is_paused": False})

    def trigger(self, dag_id: str, run_id: str, conf: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Trigger a run through the REST API. A paused DAG's run stays queued until unpaused."""
        body: dict[str, Any] = {"dag_run_id": run_id, "conf": dict(conf or {})}
        if self.major >= 3:
            body["logical_date"] = None  # required in the v2 body; null = a run without one
        return self.api("POST", f"dags/{dag_id}/dagRuns", body)

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}")["state"])

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300) -> str:
        """Poll until the run reaches success or failed; return that state."""
        deadline = time.monotonic() + timeout
        state = "unknown"
        while time.monotonic() < deadline:
            state = self.run_state(dag_id, run_id)
            if state in _TERMINAL_RUN_STATES:
                return state
            time.sleep(_POLL_SECONDS)
        raise StackError(f"run {dag_id}/{run_id} still {state!r} after {timeout:.0f}s\n{self.log_tails()}")

    def wait_until_healthy(self, timeout: float = 120.0) -> None:
        """Poll the health endpoint until every started component reports healthy."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_components_alive()
            if self.is_healthy():
                return
            time.sleep(_POLL_SECONDS)
        try:
            last = json.dumps(self.health())
        except _NOT_UP as exc:
            last = repr(exc)
        raise StackError(
            f"Airflow {self.version} stack {self.instance_id} not healthy after {timeout:.0f}s "
            f"(last health: {last})\n{self.log_tails()}"
        )

    def wait_for_dag_files(self, timeout: float = 120.0) -> None:
        """Poll the API until every file in the dags folder that Airflow would parse shows up,
        as the file of a DAG or of an import error."""
        deadline = time.monotonic() + timeout
        missing: set[str] = set()
        while time.monotonic() < deadline:
            self._check_components_alive()
            missing = self._expected_dag_files() - self._parsed_files()
            if not missing:
                return
            time.sleep(_POLL_SECONDS)
        raise StackError(f"dag files not parsed after {timeout:.0f}s: {sorted(missing)}\n{self.log_tails()}")

    def dag_ids(self) -> list[str]:
        return sorted(dag["dag_id"] for dag in self._paged("dags", "dags"))

    def import_errors(self) -> list[dict[str, Any]]:
        return self._paged("importErrors", "import_errors")

    def processes(self) -> list[int]:
        """Pids of every live process of this instance: components, their workers, and tasks."""
        return _instance_pids(self.instance_id, self._sessions, self.home)

    def log_tails(self, lines: int = 30) -> str:
        """The last lines of every component's log, for error messages."""
        parts = []
        for log in sorted(self.component_logs_dir.glob("*.log")):
            parts.append(
                f"--- {log} (last {lines} lines) ---\n{_tail(log.read_text(errors='replace'), lines)}"
            )
        return "\n".join(parts)

    # ----------------------------------------------------------------- internals

    @property
    def _venv(self) -> Path:
        if self.venv is None:
            raise StackError("stack not started: call start() first")
        return self.venv

    def _write_home(self) -> None:
        self.dags_dir.mkdir(parents=True)
        self.logs_dir.mkdir()
        self.component_logs_dir.mkdir()
        seen: dict[str, Path] = {}
        for source in self.dags_dirs:
            if not source.is_dir():
                raise StackError(f"dags dir {source} does not exist")
            for entry in sorted(source.iterdir()):
                if entry.name.startswith((".", "__pycache__")):
                    continue
                if entry.name in seen:
                    raise StackError(f"{entry.name} is in both {seen[entry.name]} and {source}")
                seen[entry.name] = source
                # Symlinks: edits to the source files are picked up by the running stack.
                (self.dags_dir / entry.name).symlink_to(entry)
        if self.major >= 3:
            # SimpleAuthManager reads passwords from this file and only generates missing ones.
            (self.home / "passwords.json").write_text(json.dumps({self.username: self.password}))
        self._write_owner()

    def _write_owner(self) -> None:
        # What reap_orphans() needs to clean up after this process if it dies without stop().
        owner = {
            "pid": os.getpid(),
            "start": _proc_start_time(os.getpid()),
            "db": None if self.existing_database else self.db_name,
            "sessions": sorted(self._sessions),
        }
        tmp = self.home / "owner.json.tmp"
        tmp.write_text(json.dumps(owner))
        tmp.replace(self.home / "owner.json")

    def _build_env(self) -> dict[str, str]:
        # Nothing of the caller's Airflow configuration may leak into the instance.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("AIRFLOW__") and k not in ("AIRFLOW_HOME", "AIRFLOW_CONFIG", "VIRTUAL_ENV")
        }
        self.api_port, worker_log_port, trigger_log_port = free_ports(3)
        secret = secrets.token_urlsafe(32)
        env.update(
            {
                _MARKER_ENV: self.instance_id,
                "PATH": f"{self._venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
                "VIRTUAL_ENV": str(self._venv),
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.db_dsn,
                "AIRFLOW__CORE__EXECUTOR": self.executor,
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_dir),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__FERNET_KEY": self.fernet_key,
                # The default (32) starts that many worker processes on a 2-core machine.
                "AIRFLOW__CORE__PARALLELISM": "4",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": str(not self.unpause_on_create),
                "AIRFLOW__SCHEDULER__CATCHUP_BY_DEFAULT": "False",
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.logs_dir),
                # The defaults (8793/8794) collide between instances on one machine.
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(worker_log_port),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(trigger_log_port),
            }
        )
        if self.major >= 3:
            env.update(
                {
                    "AIRFLOW__API__HOST": "127.0.0.1",
                    "AIRFLOW__API__PORT": str(self.api_port),
                    # Workers reach the execution API through this; it must be the real port.
                    "AIRFLOW__API__BASE_URL": self.api_url,
                    # Tokens are signed by one component and checked by another: one shared secret.
                    "AIRFLOW__API_AUTH__JWT_SECRET": secret,
                    "AIRFLOW__API__SECRET_KEY": secret,
                    "AIRFLOW__API__WORKERS": "1",
                    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{self.username}:admin",
                    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.home / "passwords.json"),
                    # New files are listed every refresh_interval; changed ones re-parsed after
                    # min_file_process_interval. Defaults (300 s / 30 s) make tests wait.
                    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
                    "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                }
            )
        else:
            env.update(
                {
                    "AIRFLOW__WEBSERVER__WEB_SERVER_HOST": "127.0.0.1",
                    "AIRFLOW__WEBSERVER__WEB_SERVER_PORT": str(self.api_port),
                    "AIRFLOW__WEBSERVER__BASE_URL": self.api_url,
                    "AIRFLOW__WEBSERVER__SECRET_KEY": secret,
                    "AIRFLOW__WEBSERVER__WORKERS": "2",
                    "AIRFLOW__API__AUTH_BACKENDS": (
                        "airflow.api.auth.backend.basic_auth,airflow.api.auth.backend.session"
                    ),
                    "AIRFLOW__SCHEDULER__DAG_DIR_LIST_INTERVAL": "5",
                    "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "5",
                    "AIRFLOW__SCHEDULER__PARSING_PROCESSES": "1",
                }
            )
        env.update(self.extra_env)
        return env

    def _auth_headers(self) -> dict[str, str]:
        if self.major >= 3:
            if self._token is None:
                doc = _http_json(
                    "POST",
                    f"{self.api_url}/auth/token",
                    {"username": self.username, "password": self.password},
                    {},
                )
                self._token = str(doc["access_token"])
            return {"Authorization": f"Bearer {self._token}"}
        basic = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {basic}"}

    def _ensure_pool(self, name: str, slots: int) -> None:
        try:
            self.api("POST", "pools", {"name": name, "slots": slots, "description": "devstack"})
        except ApiError as exc:
            if exc.status != 409:  # already there
                raise

    def _paged(self, path: str, key: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            sep = "&" if "?" in path else "?"
            page = self.api("GET", f"{path}{sep}limit=100&offset={len(items)}")
            batch = page.get(key) or []
            items.extend(batch)
            if not batch or len(items) >= int(page.get("total_entries", 0)):
                return items

    def _expected_dag_files(self) -> set[str]:
        # Airflow only parses .py files whose text contains both "airflow" and "dag".
        names = set()
        for path in self.dags_dir.rglob("*.py"):
            with contextlib.suppress(OSError):
                text = path.read_bytes().lower()
                if b"airflow" in text and b"dag" in text:
                    names.add(path.name)
        return names

    def _parsed_files(self) -> set[str]:
        files = {Path(dag.get("fileloc") or "").name for dag in self._paged("dags", "dags")}
        files |= {Path(err.get("filename") or "").name for err in self.import_errors()}
        return files

    def _check_components_alive(self) -> None:
        for component, proc in self._procs.items():
            if proc.poll() is not None:
                raise StackError(
                    f"{component} of stack {self.instance_id} exited with code {proc.returncode}\n"
                    f"{self.log_tails()}"
                )


def reap_orphans() -> list[str]:
    """Clean up instances whose owning process died without stopping them (a crashed or killed
    test run): kill their processes and drop their databases. Returns the reaped instance ids.
    Also deletes stopped instance directories older than a day (their logs are kept that long
    for post-mortems)."""
    instances = stack_dir() / "instances"
    for home in instances.glob("*"):
        with contextlib.suppress(OSError):
            if (
                not (home / "owner.json").exists()
                and time.time() - home.stat().st_mtime > _KEEP_STOPPED_SECONDS
            ):
                shutil.rmtree(home, ignore_errors=True)
    reaped = []
    for owner_file in instances.glob("*/owner.json"):
        try:
            owner = json.loads(owner_file.read_text())
        except (OSError, ValueError):
            continue
        if _proc_start_time(int(owner["pid"])) == owner.get("start"):
            continue  # its owner is alive (maybe another engineer's session)
        instance_id = owner_file.parent.name
        _kill_pids(_instance_pids(instance_id, set(owner.get("sessions", [])), owner_file.parent))
        if owner.get("db"):
            with contextlib.suppress(Exception):
                drop_database(str(owner["db"]))
        owner_file.unlink(missing_ok=True)
        reaped.append(instance_id)
    return reaped


def _http_json(method: str, url: str, body: Any, headers: Mapping[str, str]) -> dict[str, Any]:
    data = None
    all_headers = {"Accept": "application/json", **headers}
    if body is not None:
        data = json.dumps(body).encode()
        all_headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=all_headers)
    try:
        with urllib.request.urlopen(request, timeout=_HTTP_TIMEOUT) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        raise ApiError(method, url, exc.code, exc.read().decode(errors="replace")) from None
    return json.loads(raw) if raw.strip() else {}


def _group_alive(pgid: int) -> bool:
    """True while any non-zombie process is in the group."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            # fields[0] is the state, fields[2] the process group.
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def _instance_pids(instance_id: str, sessions: set[int], home: Path) -> list[int]:
    """Live processes in one of the instance's sessions, or carrying its environment marker.

    The marker alone is not enough: processes that set their title (setproctitle, used by all
    Airflow components) overwrite the memory /proc/<pid>/environ shows, and forked children
    inherit that. A session match is confirmed by the marker, the cwd, or an Airflow command
    line, so a recycled pid that leads an unrelated session is never touched.
    """
    needle = f"{_MARKER_ENV}={instance_id}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            if fields[0] == "Z":
                continue
            marked = needle in (proc / "environ").read_bytes().split(b"\0")
            if not marked and int(fields[3]) in sessions:
                cmdline = (proc / "cmdline").read_bytes()
                cwd = Path(os.readlink(proc / "cwd"))
                marked = b"airflow" in cmdline or b"gunicorn" in cmdline or cwd.is_relative_to(home)
        except (OSError, IndexError, ValueError):
            continue
        if marked:
            pids.append(int(proc.name))
    return pids


def _kill_pids(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _proc_start_time(pid: int) -> str | None:
    """Start time of a process (clock ticks since boot), to tell a live owner from a reused pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:30] or "stack"


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(collections.deque(text.splitlines(), maxlen=lines))


if __name__ == "__main__":  # pragma: no cover - manual smoke run: python -m airflow_ops.devstack.stack 3.3.2
    version = sys.argv[1] if len(sys.argv) > 1 else "3.3.2"
    with AirflowStack(version, "smoke", [EXAMPLE_DAGS_DIR]) as stack:
        print(f"{stack.api_url} healthy in {stack.start_seconds:.1f}s; dags: {stack.dag_ids()}")
