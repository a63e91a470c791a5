"""`airflow-ops alerts …` and `airflow-ops silence …` through click's runner, with a real config
file, a real SQLite ops store, the real slack_sdk against a loopback Slack and a real aiosmtpd.

Nothing here polls Airflow: the config's deployment points at a closed port, which the alerting
commands never touch."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from slack_server import SlackServer
from smtp_server import smtp_server

from airflow_ops.alerts.model import Alert, AlertState
from airflow_ops.cli import main
from airflow_ops.devstack.ports import free_port
from airflow_ops.store import open_store

REPO = Path(__file__).resolve().parents[2]
SHIPPED_RULES = sorted((REPO / "alert_rules").glob("*.yaml"))
PROMTOOL_TESTS = sorted((REPO / "alert_rules" / "tests").glob("*.yaml"))
FAILING_TESTS = REPO / "tests" / "fixtures" / "rules" / "failing_test.yaml"
SECRETS = ("xoxb-Secret-Token-1", "Hook-Secret-2", "Smtp-Password-3", "Url-Secret-4", "Bearer-Secret-5")


def write_config(
    tmp_path: Path, receivers: list[dict[str, Any]] | None = None, alerting: bool = True
) -> Path:
    config: dict[str, Any] = {
        # Nothing polls in these commands: a closed port is fine.
        "deployments": {"prod": {"api": {"url": f"http://127.0.0.1:{free_port()}"}}},
    }
    if alerting:
        receivers = receivers or [{"name": "oncall"}]
        config["store"] = f"sqlite:///{tmp_path / 'ops.db'}"
        config["alerting"] = {
            "rule_files": [str(p) for p in SHIPPED_RULES],
            "route": {"receiver": receivers[0]["name"]},
            "receivers": receivers,
        }
    path = tmp_path / "airflow-ops.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run(*args: str | Path) -> Result:
    # No AIRFLOW_OPS_CONFIG from the caller's environment: each test names its own file.
    return CliRunner().invoke(main, [str(a) for a in args], env={"AIRFLOW_OPS_CONFIG": None})


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path)


def add_silence(config: Path, *matchers: str, comment: str = "planned maintenance") -> str:
    result = run("silence", "add", "--config", config, *matchers, "--comment", comment, "--duration", "1h")
    assert result.exit_code == 0, result.output
    silence_id = result.stdout.split()[0]
    assert f"{silence_id} silences" in result.stdout
    return silence_id


def listed(config: Path, *flags: str) -> list[dict[str, Any]]:
    result = run("silence", "list", "--config", config, "--json", *flags)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# ------------------------------------------------------------------ silences


def test_silence_add_list_and_expire(config: Path) -> None:
    first = add_silence(config, 'dag_id="etl"', 'alertname=~"AirflowDag.*"')
    second = add_silence(config, 'deployment="prod"', comment="db upgrade")

    text = run("silence", "list", "--config", config)
    assert text.exit_code == 0
    lines = text.stdout.splitlines()
    assert len(lines) == 2
    [line] = [ln for ln in lines if ln.startswith(first)]
    assert 'alertname=~"AirflowDag.*"' in line and 'dag_id="etl"' in line and "planned maintenance" in line
    assert {s["id"]: s["matchers"] for s in listed(config)} == {
        first: ['dag_id="etl"', 'alertname=~"AirflowDag.*"'],  # as given
        second: ['deployment="prod"'],
    }

    expired = run("silence", "expire", "--config", config, first)
    assert expired.exit_code == 0 and first in expired.stdout
    assert [s["id"] for s in listed(config)] == [second]
    assert first not in run("silence", "list", "--config", config).stdout
    everything = {s["id"]: s for s in listed(config, "--all")}
    assert everything[first]["expired_at"] is not None and everything[second]["expired_at"] is None
    assert everything[first]["expired_at"] <= time.time()


def test_silence_add_json_echoes_the_silence(config: Path) -> None:
    result = run("silence", "add", "--config", config, 'dag_id="etl"', "--comment", "x", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["matchers"] == ['dag_id="etl"'] and doc["comment"] == "x"
    assert doc["ends_at"] - doc["starts_at"] == pytest.approx(2 * 3600)  # the documented default
    assert [s["id"] for s in listed(config)] == [doc["id"]]


@pytest.mark.parametrize(
    ("args", "named", "reason"),
    [
        (["dag_id=etl", "--comment", "x"], "MATCHERS", 'name="value"'),
        (['dag_id=~"("', "--comment", "x"], "MATCHERS", "regular expression"),
        (['dag_id="etl"', "--comment", "x", "--duration", "soon"], "--duration", "not a duration"),
        (['dag_id="etl"', "--comment", "x", "--duration", "0s"], "--duration", "longer than 0"),
        (['dag_id="etl"'], "--comment", "Missing option"),
        (['dag_id="etl"', "--comment", "  "], "--comment", "say why"),
        # Matchers that accept a missing label (the empty string) would silence every alert.
        (['alertname=~".*"', "--comment", "x"], "MATCHERS", "empty string"),
        (['dag_id!="etl"', "--comment", "x"], "MATCHERS", "empty string"),
        (['dag_id=""', 'severity=~"critical|"', "--comment", "x"], "MATCHERS", "empty string"),
    ],
)
def test_silence_add_refuses_bad_arguments(config: Path, args: list[str], named: str, reason: str) -> None:
    result = run("silence", "add", "--config", config, *args)
    assert result.exit_code == 2, result.output
    assert named in result.stderr and reason in result.stderr
    assert "Traceback" not in result.output
    assert listed(config) == []  # nothing stored


def test_silence_expire_unknown_id_names_it(config: Path) -> None:
    result = run("silence", "expire", "--config", config, "no-such-silence")
    assert result.exit_code == 1
    assert "no-such-silence" in result.stderr and "Traceback" not in result.output


# ------------------------------------------------------------------ alerts check


def test_alerts_check_accepts_the_shipped_rules() -> None:
    result = run("alerts", "check", *SHIPPED_RULES)
    assert result.exit_code == 0, result.output
    for path in SHIPPED_RULES:
        count = sum(len(g["rules"]) for g in yaml.safe_load(path.read_text())["groups"])
        assert f"{path}: {count} rule(s) OK" in result.stdout


def test_alerts_check_locates_what_is_wrong_in_a_broken_rule_file(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("groups:\n  - name: fine\n    rules:\n      - alert: Up\n        expr: up > 0\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "groups:\n"
        "  - name: dag-rules\n"
        "    rules:\n"
        "      - alert: Fine\n"
        "        expr: airflow_dag_failing_seconds > 3600\n"
        "      - alert: UsesRate\n"
        "        expr: rate(airflow_dag_failing_seconds[5m]) > 1\n"
    )
    result = run("alerts", "check", good, bad)
    assert result.exit_code == 1
    assert f"{good}: 1 rule(s) OK" in result.stdout
    [problem] = result.stderr.splitlines()
    assert problem.startswith(f"{bad}:7: ")
    assert "group dag-rules" in problem and "rule UsesRate" in problem and "not supported" in problem

    unreadable = run("alerts", "check", tmp_path / "missing.yaml")
    assert unreadable.exit_code == 1 and "missing.yaml: cannot read" in unreadable.stderr
    not_yaml = tmp_path / "broken.yaml"
    not_yaml.write_text("groups: [\n")
    broken = run("alerts", "check", not_yaml)
    assert broken.exit_code == 1 and f"{not_yaml}:2: invalid YAML" in broken.stderr


def test_alerts_check_runs_promtool_test_files_through_the_built_in_evaluator() -> None:
    result = run("alerts", "check", *PROMTOOL_TESTS)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"{p}: tests pass" for p in PROMTOOL_TESTS]

    failing = run("alerts", "check", FAILING_TESTS)
    assert failing.exit_code == 1 and "tests pass" not in failing.stdout
    assert "expects firing one interval before `for` has elapsed" in failing.stderr
    assert "expects an upper-case SI prefix" in failing.stderr


# ------------------------------------------------------------------ alerts list


def test_alerts_list_shows_state_name_labels_and_silences(config: Path, tmp_path: Path) -> None:
    assert run("alerts", "list", "--config", config).stdout.strip() == "no alerts"
    now = time.time()

    def alert(name: str, dag_id: str, state: AlertState) -> Alert:
        labels = {"alertname": name, "deployment": "prod", "dag_id": dag_id, "severity": "critical"}
        return Alert(labels, {"summary": "s"}, state, 4000.0, active_at=now - 600, fired_at=now - 60)

    with open_store(f"sqlite:///{tmp_path / 'ops.db'}") as store:
        store.save_alerts(
            [
                alert("AirflowDagFailing", "etl_daily", AlertState.FIRING),
                alert("AirflowDagRunTooLong", "reports", AlertState.PENDING),
            ],
            [],
        )
    silence_id = add_silence(config, 'dag_id="etl_daily"')

    result = run("alerts", "list", "--config", config)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    [firing] = [ln for ln in lines if "AirflowDagFailing" in ln]
    [pending] = [ln for ln in lines if "AirflowDagRunTooLong" in ln]
    assert firing.startswith("firing") and pending.startswith("pending")
    assert "dag_id=etl_daily" in firing and "deployment=prod" in firing and "severity=critical" in firing
    assert f"silenced by {silence_id}" in firing and "silenced" not in pending

    as_json = run("alerts", "list", "--config", config, "--json")
    rows = {r["labels"]["alertname"]: r for r in json.loads(as_json.stdout)}
    assert rows["AirflowDagFailing"]["silenced_by"] == [silence_id]
    assert (
        rows["AirflowDagRunTooLong"]["state"] == "pending"
        and rows["AirflowDagRunTooLong"]["silenced_by"] == []
    )


# ------------------------------------------------------------------ alerts test


def test_alerts_test_sends_one_message_per_integration(tmp_path: Path) -> None:
    with SlackServer() as slack, smtp_server() as (smtp_port, mailbox):
        receiver = {
            "name": "oncall",
            "slack_configs": [{"token": slack.token, "channel": "#alerts", "api_url": slack.api_url}],
            "email_configs": [
                {
                    "to": ["oncall@example.com"],
                    "from": "ops@example.com",
                    "smarthost": f"127.0.0.1:{smtp_port}",
                    "tls": "none",
                }
            ],
        }
        config = write_config(tmp_path, [receiver])
        result = run("alerts", "test", "--config", config, "oncall")
        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines() == ["oncall/slack[0]: sent", "oncall/email[0]: sent"]
        [msg] = slack.messages("#alerts")
        assert "AirflowOpsTest" in msg.all_text() and "Test notification" in msg.all_text()
        [mail] = mailbox.messages
        assert "AirflowOpsTest" in mail["Subject"]


def test_alerts_test_reports_failures_without_secrets(tmp_path: Path) -> None:
    closed = free_port()
    token, hook_path, password, url_path, bearer = SECRETS
    receiver = {
        "name": "down",
        "slack_configs": [
            {
                "token": token,
                "channel": "#alerts",
                "api_url": f"http://127.0.0.1:{closed}/api/",
                "timeout": "2s",
            },
            {"webhook_url": f"http://127.0.0.1:{closed}/services/T0/B0/{hook_path}", "timeout": "2s"},
        ],
        "email_configs": [
            {
                "to": ["oncall@example.com"],
                "from": "ops@example.com",
                "smarthost": f"127.0.0.1:{closed}",
                "auth_username": "ops",
                "auth_password": password,
                "timeout": "2s",
            }
        ],
        "webhook_configs": [
            {"url": f"http://127.0.0.1:{closed}/hooks/{url_path}", "bearer_token": bearer, "timeout": "2s"}
        ],
    }
    config = write_config(tmp_path, [receiver])
    assert all(s in config.read_text() for s in SECRETS)

    result = run("alerts", "test", "--config", config, "down")
    assert result.exit_code == 1
    failed = result.stderr.splitlines()
    assert [line.split(": FAILED: ")[0] for line in failed] == [
        "down/slack[0]",
        "down/slack[1]",
        "down/email[0]",
        "down/webhook[0]",
    ]
    assert all("cannot connect" in line or "refused" in line.lower() for line in failed)
    assert not [s for s in SECRETS if s in result.output]


def test_alerts_test_unknown_receiver_names_the_configured_ones(tmp_path: Path) -> None:
    config = write_config(tmp_path, [{"name": "oncall"}, {"name": "team-data"}])
    result = run("alerts", "test", "--config", config, "nobody")
    assert result.exit_code == 2
    assert (
        "'nobody'" in result.stderr and "oncall, team-data" in result.stderr and "RECEIVER" in result.stderr
    )


def test_alerts_test_a_non_http_url_is_a_clear_error(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, [{"name": "oncall", "webhook_configs": [{"url": "ftp://x/Url-Secret-4"}]}]
    )
    result = run("alerts", "test", "--config", config, "oncall")
    assert result.exit_code == 1
    assert "alerting.receivers.0.webhook_configs.0.url: must be an absolute http" in result.stderr
    assert "Traceback" not in result.output and "Url-Secret-4" not in result.output


# ------------------------------------------------------------------ config problems


@pytest.mark.parametrize(
    "command",
    [
        ["alerts", "list"],
        ["alerts", "test", "oncall"],
        ["silence", "list"],
        ["silence", "add", 'dag_id="etl"', "--comment", "x"],
        ["silence", "expire", "some-id"],
    ],
)
def test_a_config_without_alerting_is_a_clear_error(tmp_path: Path, command: list[str]) -> None:
    config = write_config(tmp_path, alerting=False)
    result = run(*command[:2], "--config", config, *command[2:])
    assert result.exit_code == 1
    assert "no alerting section in the config" in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "airflow-ops.db").exists()
