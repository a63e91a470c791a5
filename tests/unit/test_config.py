"""Config loading: YAML + env overrides + Airflow's env, located errors, secrets never shown."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from airflow_ops.config import ConfigError, Secret, load_config, mask, parse_duration


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "airflow-ops.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_full_file_with_secrets_from_env_and_file(tmp_path: Path) -> None:
    pw_file = tmp_path / "pw"
    pw_file.write_text("s3cret-file\n")
    path = _write(
        tmp_path,
        f"""
        service:
          port: 9200
          poll_interval: 15s
        metrics:
          dag_deny: "tmp_.*"
          success_ratio_runs: 20
        deployments:
          prod:
            database:
              dsn_env: PROD_DSN
              statement_timeout: 2500ms
            api:
              url: https://airflow.example.com/api/v2/
              username: ops
              password_file: {pw_file}
          staging:
            api:
              url: http://127.0.0.1:8080
        """,
    )
    config = load_config(path, {"PROD_DSN": "postgresql+psycopg2://airflow:dbpw@db:5432/airflow"})
    prod = config.deployments["prod"]
    assert config.service.port == 9200 and config.service.poll_interval == 15
    assert prod.database is not None and prod.database.statement_timeout == 2.5
    # SQLAlchemy URLs from airflow.cfg are accepted and turned into libpq URIs.
    assert prod.database.dsn.value == "postgresql://airflow:dbpw@db:5432/airflow"
    assert prod.api is not None and prod.api.url == "https://airflow.example.com"
    assert prod.api.password is not None and prod.api.password.value == "s3cret-file"
    assert not config.metrics.dag_filter()("tmp_x") and config.metrics.dag_filter()("etl")
    assert set(config.deployments) == {"prod", "staging"}
    # Secrets never show in reprs, and mask() removes them (and the password inside a DSN) from text.
    dumped = repr(config)
    assert "dbpw" not in dumped and "s3cret-file" not in dumped
    assert (
        mask("failed: dbpw / s3cret-file / postgresql://airflow:dbpw@db:5432/airflow", config).count("***")
        == 3
    )


def test_env_overrides_nested_keys(tmp_path: Path) -> None:
    path = _write(tmp_path, "deployments:\n  prod:\n    api:\n      url: http://a:8080\n")
    config = load_config(
        path, {"AIRFLOW_OPS__SERVICE__PORT": "9300", "AIRFLOW_OPS__DEPLOYMENTS__PROD__API__USERNAME": "bob"}
    )
    assert config.service.port == 9300
    assert config.deployments["prod"].api is not None and config.deployments["prod"].api.username == "bob"


def test_zero_config_next_to_airflow(tmp_path: Path) -> None:
    home = tmp_path / "airflow"
    home.mkdir()
    (home / "airflow.cfg").write_text(
        "[database]\nsql_alchemy_conn = postgresql+psycopg2://a:b@h/airflow\n[api]\nbase_url = http://h:8080\n"
    )
    config = load_config(None, {"AIRFLOW_HOME": str(home), "AIRFLOW_OPS_API_PASSWORD": "pw"})
    dep = config.deployments["default"]
    assert dep.database is not None and dep.database.dsn.value == "postgresql://a:b@h/airflow"
    assert dep.api is not None and dep.api.url == "http://h:8080" and dep.api.password == Secret("pw")
    # The env var wins over airflow.cfg, as in Airflow itself.
    config = load_config(
        None, {"AIRFLOW_HOME": str(home), "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://x@y/z"}
    )
    assert config.deployments["default"].database.dsn.value == "postgresql://x@y/z"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "deployments:\n  prod:\n    api:\n      url: ftp://x\n",
            ":4: deployments.prod.api.url: 'ftp://x' is not",
        ),
        ("deployments:\n  prod:\n    databse: {}\n", ":3: deployments.prod.databse: unknown key"),
        ("service:\n  poll_interval: soon\n", ":2: service.poll_interval: 'soon' is not a duration"),
        ("metrics:\n  dag_allow: '(['\n", ":2: metrics.dag_allow: invalid regular expression"),
        (
            "deployments:\n  prod: {}\n",
            "deployments.prod: a deployment needs at least one of database or api",
        ),
        (
            "deployments:\n  p:\n    database:\n      dsn: mysql://x/y\n",
            ":4: deployments.p.database.dsn: only PostgreSQL metadata databases are supported",
        ),
        ("deployments:\n  prod:\n    api: {url: 'http://a', password_env: NOPE}\n", "NOPE is not set"),
        ("deployments: [\n", ":2: not valid YAML"),
        ("- a\n- b\n", "the top level must be a mapping"),
    ],
)
def test_bad_config_names_file_line_key_and_reason(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path, {})
    assert str(path) in str(err.value)
    assert expected in str(err.value)


def test_bad_env_override_names_the_variable(tmp_path: Path) -> None:
    path = _write(tmp_path, "deployments:\n  prod:\n    api:\n      url: http://a:8080\n")
    with pytest.raises(ConfigError, match=r"environment variable AIRFLOW_OPS__SERVICE__PORT: service\.port"):
        load_config(path, {"AIRFLOW_OPS__SERVICE__PORT": "many"})


def test_no_deployment_at_all_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"):
        load_config(None, {"AIRFLOW_HOME": str(tmp_path)})


def test_secret_in_error_is_not_echoed(tmp_path: Path) -> None:
    path = _write(tmp_path, "deployments:\n  p:\n    database:\n      dsn: 'oracle://u:topsecret@h/db'\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, {})
    assert "topsecret" not in str(err.value)


@pytest.mark.parametrize(
    ("value", "seconds"), [("250ms", 0.25), ("30s", 30), ("5m", 300), ("1h", 3600), ("2d", 172800), (7, 7)]
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


def test_the_readme_config_examples_load(tmp_path: Path) -> None:
    """The YAML examples of the README (exporter and alerting together; maintenance on its own)
    are valid config, as written."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", readme, re.S)
    assert len(blocks) == 3
    text = "\n".join(blocks[:2])
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name in ("metrics-password", "airflow-db-dsn", "smtp"):
        (secrets / name).write_text("postgresql://ops:pw@db/airflow" if name.endswith("dsn") else "s3cret")
    config_file = tmp_path / "airflow-ops.yaml"
    config_file.write_text(text.replace("/run/secrets/", f"{secrets}/"))
    environ = {
        "AIRFLOW_OPS_PROD_PASSWORD": "pw",
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
        "SLACK_BOT_TOKEN": "xoxb-1",
        "DATA_TEAM_WEBHOOK": "https://hooks.example.com/x",
    }
    config = load_config(config_file, environ)
    assert config.alerting is not None
    assert [r.name for r in config.alerting.receivers] == ["oncall", "data-team"]
    assert config.alerting.route.routes[0].receiver == "data-team"

    key = tmp_path / "backup-export-key"
    key.write_text("kVx1V1qXW0q0m5s2iRjv6m1v9l4oE4r1c3m2yJ8wQ5s=")
    config_file.write_text(blocks[2].replace("/run/secrets/backup-export-key", str(key)))
    environ = {
        "AIRFLOW_DB_DSN": "postgresql://ops:pw@db/airflow",
        "AIRFLOW__CORE__FERNET_KEY": key.read_text(),
    }
    maintenance = load_config(config_file, environ).deployments["prod"].maintenance
    assert maintenance is not None and maintenance.backup is not None
    assert str(maintenance.backup.dir) == "/var/backups/airflow" and maintenance.backup.retention.weekly == 4


def test_alerting_config_errors_name_the_key_and_line(tmp_path: Path) -> None:
    config_file = tmp_path / "c.yaml"
    config_file.write_text(
        textwrap.dedent(
            """\
            deployments:
              prod: {api: {url: "http://airflow:8080"}}
            alerting:
              rule_files: [rules.yaml]
              route:
                receiver: oncall
                routes:
                  - {matchers: ['dag_id=~"etl_(.*"'], receiver: team}
              receivers:
                - name: oncall
                  slack_configs: [{channel: "#x"}]
            """
        )
    )
    with pytest.raises(ConfigError) as err:
        load_config(config_file, {})
    text = str(err.value)
    assert "c.yaml:8: alerting.route.routes.0.matchers: matcher 'dag_id=~\"etl_(.*\"': invalid" in text
    assert "c.yaml:11: alerting.receivers.0.slack_configs.0: give exactly one of webhook_url or token" in text
