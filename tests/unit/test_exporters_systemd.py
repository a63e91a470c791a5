"""exporters/systemd/: the unit's command line through the real click CLI, its config through the
real loader with the unit's credentials materialized, and every variable of the env example
read (and validated) by the real config loader.

systemd-analyze verify/security and systemd-sysusers run in tests/integration/test_exporters.py.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from airflow_ops.cli import main as cli
from airflow_ops.config import CONFIG_ENV, ConfigError, load_config
from tests.exporters_support.systemd import (
    CONFIG,
    REPO,
    credentials,
    env_example,
    materialize_config,
    service_settings,
)

PROMETHEUS_YML = REPO / "exporters" / "prometheus" / "prometheus.yml"


# ---------------------------------------------------------------- the unit


def test_execstart_is_a_serve_command_line_the_cli_accepts() -> None:
    (exec_start,) = service_settings("ExecStart")
    binary, command, *args = shlex.split(exec_start)
    assert Path(binary).name == "airflow-ops" and Path(binary).is_absolute()
    assert command in cli.commands
    ctx = cli.commands[command].make_context(command, args)  # raises on an unknown option
    assert command == "serve" and ctx.params["config_path"] == "/etc/airflow-ops/config.yaml"


def test_unit_keeps_the_hardening_the_brief_asks_for() -> None:
    # systemd-analyze security rates the whole unit (integration test); these are the musts.
    for key, value in {
        "User": "airflow-ops",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "Restart": "on-failure",
        "StateDirectory": "airflow-ops",
    }.items():
        assert service_settings(key) == [value], key
    assert service_settings("EnvironmentFile") == ["-/etc/airflow-ops/airflow-ops.env"]


def test_ops_store_and_backups_are_writable_under_protect_system_strict() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    state_dir = "/var/lib/" + service_settings("StateDirectory")[0]
    assert config["store"] == f"sqlite:///{state_dir}/ops.db"
    writable = {p.lstrip("-") for v in service_settings("ReadWritePaths") for p in v.split()}
    (deployment,) = config["deployments"].values()
    assert deployment["maintenance"]["backup"]["dir"] in writable
    assert deployment["maintenance"]["logs"]["folder"] in writable


# ---------------------------------------------------------------- config and credentials


def test_config_loads_with_the_unit_credentials(tmp_path: Path) -> None:
    config = load_config(materialize_config(tmp_path), environ={})
    auth = config.service.basic_auth
    assert auth is not None and auth.password.value == "test-metrics-password"
    (deployment,) = config.deployments.values()
    assert deployment.database is not None and deployment.database.dsn.value.endswith("127.0.0.1:1/airflow")
    assert config.alerting is not None


@pytest.mark.parametrize("name", sorted(credentials()))
def test_every_credential_is_read_by_the_config(tmp_path: Path, name: str) -> None:
    path = materialize_config(tmp_path, skip=name)
    with pytest.raises(ConfigError, match=re.escape(f"cannot read {tmp_path / 'credentials' / name}")):
        load_config(path, environ={})


def test_credentials_come_from_root_only_files() -> None:
    for name, source in credentials().items():
        assert source == f"/etc/airflow-ops/credentials/{name}"


def test_prometheus_scrapes_with_the_service_user_and_port(tmp_path: Path) -> None:
    config = load_config(materialize_config(tmp_path), environ={})
    (job,) = yaml.safe_load(PROMETHEUS_YML.read_text())["scrape_configs"]
    assert config.service.basic_auth is not None
    assert job["basic_auth"]["username"] == config.service.basic_auth.username
    assert job["static_configs"][0]["targets"] == [f"localhost:{config.service.port}"]


# ---------------------------------------------------------------- the env example


def test_env_example_loads_with_the_config(tmp_path: Path) -> None:
    env = env_example()
    assert env, "the env example sets nothing"
    config = load_config(materialize_config(tmp_path), environ=env)
    assert config.service.port == int(env["AIRFLOW_OPS__SERVICE__PORT"])
    assert config.service.listen == env["AIRFLOW_OPS__SERVICE__LISTEN"]


@pytest.mark.parametrize("name", sorted(env_example()))
def test_every_env_example_variable_is_read_by_the_config(tmp_path: Path, name: str) -> None:
    # A name the loader ignored would accept any value; a read one is validated, and the error
    # names the variable. A mapping is no valid scalar; a missing file is no valid config file.
    config_path = materialize_config(tmp_path)
    env = env_example()
    if name == CONFIG_ENV:
        assert load_config(environ={**env, name: str(config_path)}).service.port == 9112
        env[name] = str(tmp_path / "missing.yaml")
        with pytest.raises(ConfigError, match=re.escape("missing.yaml")):
            load_config(environ=env)
        return
    env[name] = "{not: a scalar}"
    with pytest.raises(ConfigError, match=f"environment variable {name}") as err:
        load_config(config_path, environ=env)
    assert "unknown key" not in str(err.value)


def test_env_example_holds_no_secret() -> None:
    for name in env_example():
        assert not re.search(r"PASSWORD|TOKEN|SECRET|DSN|KEY", name), name
