"""exporters/kubernetes/: the core manifests against Kubernetes' own schemas (kubernetes-validate,
offline), the Prometheus Operator resources against what they point at, the ConfigMap's config
through the real config loader with the Secret's files and env, and the generated PrometheusRule.

What needs a real tool or a running service (kubectl kustomize, promtool, two real replicas
answering the probes) is in tests/integration/test_exporters.py.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import kubernetes_validate
import pytest
import yaml

from airflow_ops.cli import main as cli
from airflow_ops.config import ConfigError, load_config
from tests.exporters_support.kubernetes import (
    CORE_KINDS,
    DOCS,
    K8S_DIR,
    K8S_VERSION,
    OPERATOR_KINDS,
    REPO,
    materialize_config,
    mount_of_volume,
    the_container,
)

RULES_DIR = REPO / "alert_rules"


def _generator() -> ModuleType:
    # exporters/ is not an installed package: load the generator from its file.
    spec = importlib.util.spec_from_file_location("exporters_k8s_generate", K8S_DIR / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- schemas


def test_the_expected_manifests_are_there() -> None:
    assert set(DOCS) == CORE_KINDS | OPERATOR_KINDS


@pytest.mark.parametrize("kind", sorted(CORE_KINDS))
def test_core_manifest_is_valid_for_kubernetes(kind: str) -> None:
    # Raises kubernetes_validate.ValidationError with the offending path on a schema violation.
    kubernetes_validate.validate(DOCS[kind], K8S_VERSION, strict=True)


def test_the_strict_schema_catches_an_unknown_field() -> None:
    # The check above has teeth: a misspelt field of the Deployment is refused.
    bad = yaml.safe_load(yaml.safe_dump(DOCS["Deployment"]))
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_kustomization_lists_exactly_the_manifests_present() -> None:
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    present = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == present


# ---------------------------------------------------------------- wiring


def test_deployment_runs_two_hardened_replicas() -> None:
    dep = DOCS["Deployment"]
    pod = dep["spec"]["template"]["spec"]
    container = the_container()
    assert dep["spec"]["replicas"] == 2
    assert (
        dep["spec"]["selector"]["matchLabels"].items()
        <= dep["spec"]["template"]["metadata"]["labels"].items()
    )
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
    ctx = container["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True and ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]
    pdb = DOCS["PodDisruptionBudget"]["spec"]
    assert pdb["minAvailable"] == 1 and pdb["selector"] == dep["spec"]["selector"]


def test_service_targets_the_container_metrics_port() -> None:
    svc = DOCS["Service"]["spec"]
    labels = DOCS["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert svc["selector"].items() <= labels.items()
    ports = {p["name"]: p for p in the_container()["ports"]}
    (svc_port,) = svc["ports"]
    assert svc_port["targetPort"] in ports
    assert svc_port["port"] == ports[svc_port["targetPort"]]["containerPort"]


def test_probes_ask_the_service_routes_on_the_metrics_port() -> None:
    container = the_container()
    names = {p["name"] for p in container["ports"]}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] in names


def test_servicemonitor_scrapes_the_service_with_the_secret_credentials() -> None:
    sm = DOCS["ServiceMonitor"]
    svc = DOCS["Service"]
    secret = DOCS["Secret"]
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in svc["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    for part in ("username", "password"):
        ref = endpoint["basicAuth"][part]
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]


def test_container_args_are_a_serve_command_line_the_cli_accepts() -> None:
    args = the_container()["args"]
    assert args[0] in cli.commands, f"{args[0]!r} is not an airflow-ops command"
    ctx = cli.commands[args[0]].make_context(args[0], list(args[1:]))  # raises on unknown options
    assert args[0] == "serve"
    config_mount = mount_of_volume("configMap", DOCS["ConfigMap"]["metadata"]["name"])
    assert ctx.params["config_path"] == config_mount["mountPath"]
    assert config_mount["subPath"] in DOCS["ConfigMap"]["data"]


# ---------------------------------------------------------------- the config


def test_configmap_config_loads_with_the_secret(tmp_path: Path) -> None:
    config_path, env = materialize_config(tmp_path)
    config = load_config(config_path, environ=env)
    values = DOCS["Secret"]["stringData"]
    # Two replicas share state only through PostgreSQL (SQLite would be one file per pod).
    assert config.store.value == values["store-dsn"]
    assert config.store.value.startswith("postgresql://")
    assert config.service.listen == "0.0.0.0"
    assert config.service.port == the_container()["ports"][0]["containerPort"]
    auth = config.service.basic_auth
    assert auth is not None
    assert (auth.username, auth.password.value) == (values["metrics-username"], values["metrics-password"])
    assert config.alerting is not None
    slack = config.alerting.receivers[0].slack_configs[0]
    assert slack.token is not None and slack.token.value == values["slack-bot-token"]
    (deployment,) = config.deployments.values()
    assert deployment.database is not None and deployment.database.dsn.value == values["airflow-db-dsn"]


@pytest.mark.parametrize("key", sorted(DOCS["Secret"]["stringData"]))
def test_every_secret_key_is_read_by_the_config(tmp_path: Path, key: str) -> None:
    # Without this key (its file, or the env var set from it) the real loader fails, naming it.
    config_path, env = materialize_config(tmp_path)
    from_env = [
        v["name"] for v in the_container().get("env", [])
        if v.get("valueFrom", {}).get("secretKeyRef", {}).get("key") == key
    ]  # fmt: skip
    if from_env:
        del env[from_env[0]]
        missing = from_env[0]
    else:
        (tmp_path / "secrets" / key).unlink()
        missing = str(tmp_path / "secrets" / key)
    with pytest.raises(ConfigError, match=re.escape(missing)):
        load_config(config_path, environ=env)


# ---------------------------------------------------------------- PrometheusRule


def test_prometheusrule_is_the_generated_output() -> None:
    assert (K8S_DIR / "prometheusrule.yaml").read_text() == _generator().render(RULES_DIR)


def test_prometheusrule_groups_are_the_alert_rules() -> None:
    rule = DOCS["PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    shipped = [g for p in sorted(RULES_DIR.glob("*.yaml")) for g in yaml.safe_load(p.read_text())["groups"]]
    assert rule["spec"]["groups"] == shipped
    assert sum(len(g["rules"]) for g in shipped) > 0


def test_generator_refuses_duplicate_group_names(tmp_path: Path) -> None:
    for name in ("a.yaml", "b.yaml"):
        (tmp_path / name).write_text("groups:\n  - name: same\n    rules: []\n")
    with pytest.raises(ValueError, match="same"):
        _generator().render(tmp_path)
