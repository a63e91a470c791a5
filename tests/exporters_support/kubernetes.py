"""exporters/kubernetes/ as the tests read it: one manifest per kind, the Deployment's container,
and the ConfigMap's config with the Secret materialized as a pod sees it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
K8S_DIR = REPO / "exporters" / "kubernetes"
# A recent release whose strict schemas kubernetes-validate bundles (strict: unknown fields fail).
K8S_VERSION = "1.35.0"
CORE_KINDS = {"ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget"}
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}


def _docs() -> dict[str, dict[str, Any]]:
    """kind -> the manifest; every file holds exactly one document."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S_DIR.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert len(docs) == 1, f"{path.name}: expected one manifest, found {len(docs)}"
        assert docs[0]["kind"] not in out, f"two manifests of kind {docs[0]['kind']}"
        out[docs[0]["kind"]] = docs[0]
    return out


DOCS = _docs()


def the_container() -> dict[str, Any]:
    (only,) = DOCS["Deployment"]["spec"]["template"]["spec"]["containers"]
    return only


def mount_of_volume(kind: str, name: str) -> dict[str, Any]:
    """The container's mount of the pod volume backed by the ConfigMap/Secret ``name``."""
    source_key = {"configMap": "name", "secret": "secretName"}[kind]
    volumes = DOCS["Deployment"]["spec"]["template"]["spec"]["volumes"]
    (volume,) = [v for v in volumes if v.get(kind, {}).get(source_key) == name]
    (mount,) = [m for m in the_container()["volumeMounts"] if m["name"] == volume["name"]]
    return mount


def materialize_config(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The ConfigMap's config.yaml as a pod sees it: the Secret's keys as files where the
    Deployment mounts them (moved under tmp_path) and the env the Deployment sets from it."""
    secret = DOCS["Secret"]
    values: dict[str, str] = secret["stringData"]
    mount = mount_of_volume("secret", secret["metadata"]["name"])["mountPath"]
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    for key, value in values.items():
        (secrets_dir / key).write_text(value)
    text = DOCS["ConfigMap"]["data"]["config.yaml"]
    assert f"{mount}/" in text, f"the config reads no file of the Secret mounted at {mount}"
    config_path = tmp_path / "config.yaml"
    config_path.write_text(text.replace(f"{mount}/", f"{secrets_dir}/"))
    env: dict[str, str] = {}
    for var in the_container().get("env", []):
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None:
            assert ref["name"] == secret["metadata"]["name"]
            env[var["name"]] = values[ref["key"]]
        else:
            env[var["name"]] = var["value"]
    return config_path, env
