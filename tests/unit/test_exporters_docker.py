"""exporters/Dockerfile and exporters/docker-compose.yml, checked without a Docker engine (none runs
here, so the image build itself is not tested): the Dockerfile through dockerfile-parse, its
command line through the real click CLI, its port against the config's default, and the compose
service's config through the real config loader with the compose secrets materialized.

The HEALTHCHECK command is run for real against a running service in
tests/integration/test_exporters.py.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml
from dockerfile_parse import DockerfileParser

from airflow_ops.cli import main as cli
from airflow_ops.config import ConfigError, ServiceConfig, load_config
from tests.exporters_support.docker import (
    COMPOSE_ENV_EXAMPLE,
    DOCKERFILE,
    EXPORTERS,
    REPO,
    compose,
    env_file,
    healthcheck_argv,
    instructions,
    last,
    materialize_compose_config,
    volume_mounts,
)

PROMETHEUS_YML = EXPORTERS / "prometheus" / "prometheus.yml"


# ---------------------------------------------------------------- Dockerfile


def test_multi_stage_build_on_python_slim() -> None:
    froms = [i["value"].split() for i in instructions() if i["instruction"] == "FROM"]
    assert len(froms) >= 2, "the wheel is built in a stage of its own"
    assert all(f[0] == "python:3.11-slim" for f in froms)
    assert froms[0][1:] == ["AS", "build"]
    copies_from_build = [
        i for i in instructions() if i["instruction"] == "COPY" and "--from=build" in i["value"]
    ]
    assert copies_from_build, "the runtime stage takes the wheel from the build stage"


def test_every_copy_source_exists_and_is_in_the_build_context() -> None:
    ignore = [
        line.strip() for line in (EXPORTERS / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]  # fmt: skip
    assert ignore[0] == "*", "the ignore file lists what the build may see, nothing else"
    allowed = [p[1:] for p in ignore if p.startswith("!")]
    sources = []
    for inst in instructions():
        if inst["instruction"] in ("COPY", "ADD") and "--from=" not in inst["value"]:
            *srcs, _dest = shlex.split(inst["value"])
            sources += srcs
    assert sources
    for src in sources:
        matches = list(REPO.glob(src))
        assert matches, f"COPY source {src!r} matches nothing in the repository"
        top = Path(src).parts[0]
        assert any(fnmatch.fnmatch(top, pattern) for pattern in allowed), (
            f"{src} is excluded from the context"
        )


def test_runs_as_a_numeric_non_root_user() -> None:
    user, _, group = last("USER").partition(":")
    assert user.isdigit() and int(user) != 0, "numeric, so that Kubernetes' runAsNonRoot can check it"
    assert not group or int(group) != 0


def test_exposes_the_default_service_port() -> None:
    assert last("EXPOSE").split() == [str(ServiceConfig().port)]


def test_listens_on_every_interface_through_the_config_env() -> None:
    # The env override the real loader applies (a config file's service.listen is overridden).
    envs = DockerfileParser(str(DOCKERFILE)).envs
    assert envs["AIRFLOW_OPS__SERVICE__LISTEN"] == "0.0.0.0"


def test_entrypoint_and_cmd_are_a_command_line_the_cli_accepts() -> None:
    entrypoint = json.loads(last("ENTRYPOINT"))
    cmd = json.loads(last("CMD"))
    assert entrypoint == ["airflow-ops"]
    assert cmd[0] in cli.commands
    ctx = cli.commands[cmd[0]].make_context(cmd[0], cmd[1:])  # raises on an unknown option
    assert cmd[0] == "serve" and ctx.params["config_path"] == "/etc/airflow-ops/config.yaml"


def test_healthcheck_is_python_on_healthz_in_exec_form() -> None:
    argv = healthcheck_argv()
    assert argv[:2] == ["python", "-c"]
    assert "/healthz" in argv[2] and "AIRFLOW_OPS__SERVICE__PORT" in argv[2]
    compile(argv[2], "HEALTHCHECK", "exec")


def test_alert_rules_land_where_the_configs_read_them() -> None:
    (copy,) = [
        i["value"] for i in instructions() if i["instruction"] == "COPY" and "alert_rules" in i["value"]
    ]
    dest = shlex.split(copy)[-1]
    configmap = yaml.safe_load((EXPORTERS / "kubernetes" / "configmap.yaml").read_text())
    for text in (configmap["data"]["config.yaml"], (EXPORTERS / "docker" / "config.yaml").read_text()):
        (rule_glob,) = yaml.safe_load(text)["alerting"]["rule_files"]
        assert rule_glob == dest.rstrip("/") + "/*.yaml"


# ---------------------------------------------------------------- docker-compose.yml


def test_compose_builds_this_dockerfile_and_runs_its_cmd() -> None:
    service = compose()["services"]["airflow-ops"]
    assert (EXPORTERS / service["build"]["context"] / service["build"]["dockerfile"]).resolve() == DOCKERFILE
    assert service["command"] == json.loads(last("CMD"))


def test_compose_mounts_the_config_where_the_cmd_reads_it() -> None:
    service = compose()["services"]["airflow-ops"]
    ctx = cli.commands["serve"].make_context("serve", service["command"][1:])
    mounts = volume_mounts(service)
    assert ctx.params["config_path"] in mounts
    assert (EXPORTERS / mounts[ctx.params["config_path"]]).is_file()


def test_compose_healthcheck_and_port_match_the_dockerfile() -> None:
    service = compose()["services"]["airflow-ops"]
    assert service["healthcheck"]["test"] == ["CMD", *healthcheck_argv()]
    published = [p.rsplit(":", 1)[1] for p in service["ports"]]
    assert last("EXPOSE") in published


def test_compose_joins_the_airflow_network() -> None:
    doc = compose()
    service = doc["services"]["airflow-ops"]
    (network,) = service["networks"]
    assert doc["networks"][network]["external"] is True
    assert "AIRFLOW_NETWORK" in env_file(COMPOSE_ENV_EXAMPLE)


def test_compose_secrets_come_from_the_env_example() -> None:
    doc = compose()
    example = env_file(COMPOSE_ENV_EXAMPLE)
    assert set(doc["services"]["airflow-ops"]["secrets"]) <= set(doc["secrets"])
    for name, secret in doc["secrets"].items():
        assert secret["environment"] in example, (
            f"secret {name}: {secret['environment']} is not in the example"
        )


@pytest.mark.parametrize("name", compose()["services"]["airflow-ops"]["secrets"])
def test_every_compose_secret_is_read_by_the_config(tmp_path: Path, name: str) -> None:
    # The service is given no secret it does not need: without this one the loader fails.
    config_path, env = materialize_compose_config(tmp_path)
    (tmp_path / "secrets" / name).unlink()
    with pytest.raises(ConfigError, match=re.escape(f"cannot read {tmp_path / 'secrets' / name}")):
        load_config(config_path, environ=env)


def test_compose_config_loads_with_the_secrets(tmp_path: Path) -> None:
    config_path, env = materialize_compose_config(tmp_path)
    config = load_config(config_path, environ=env)
    example = env_file(COMPOSE_ENV_EXAMPLE)
    assert config.service.listen == "0.0.0.0"  # from the image's ENV
    assert config.service.port == int(last("EXPOSE"))
    auth = config.service.basic_auth
    assert auth is not None and auth.password.value == example["METRICS_PASSWORD"]
    (deployment,) = config.deployments.values()
    assert deployment.database is not None and deployment.database.dsn.value == example["AIRFLOW_DB_DSN"]


def test_compose_prometheus_uses_the_shipped_scrape_config() -> None:
    service = compose()["services"]["prometheus"]
    prom = yaml.safe_load(PROMETHEUS_YML.read_text())
    mounts = volume_mounts(service)
    config_dir = "/etc/prometheus"
    assert (EXPORTERS / mounts[f"{config_dir}/prometheus.yml"]).resolve() == PROMETHEUS_YML
    # Relative paths of prometheus.yml resolve from its directory.
    (rule_glob,) = prom["rule_files"]
    rules_mount = f"{config_dir}/{Path(rule_glob).parent}"
    assert (EXPORTERS / mounts[rules_mount]).resolve() == REPO / "alert_rules"
    (job,) = prom["scrape_configs"]
    (secret,) = service["secrets"]
    assert secret["target"] == f"{config_dir}/{job['basic_auth']['password_file']}"
    assert secret["source"] in compose()["services"]["airflow-ops"]["secrets"]
    # Sharing the airflow-ops container's network makes localhost:<port> the service.
    assert service["network_mode"] == "service:airflow-ops"
    assert job["static_configs"][0]["targets"] == [f"localhost:{last('EXPOSE')}"]


def test_scrape_user_is_the_service_user(tmp_path: Path) -> None:
    config_path, env = materialize_compose_config(tmp_path)
    auth = load_config(config_path, environ=env).service.basic_auth
    (job,) = yaml.safe_load(PROMETHEUS_YML.read_text())["scrape_configs"]
    assert auth is not None and job["basic_auth"]["username"] == auth.username


@pytest.mark.parametrize("name", ["METRICS_PASSWORD", "AIRFLOW_API_PASSWORD"])
def test_env_example_holds_placeholders_not_secrets(name: str) -> None:
    assert "CHANGE-ME" in env_file(COMPOSE_ENV_EXAMPLE)[name]
