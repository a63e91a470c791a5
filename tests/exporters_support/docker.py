"""exporters/Dockerfile and exporters/docker-compose.yml as the tests read them: the Dockerfile's
instructions (dockerfile-parse), and the compose service's config with its secrets materialized."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from dockerfile_parse import DockerfileParser

REPO = Path(__file__).resolve().parents[2]
EXPORTERS = REPO / "exporters"
DOCKERFILE = EXPORTERS / "Dockerfile"
COMPOSE_FILE = EXPORTERS / "docker-compose.yml"
COMPOSE_ENV_EXAMPLE = EXPORTERS / "docker" / "compose.env.example"
RUN_SECRETS = "/run/secrets/"


def instructions() -> list[dict[str, Any]]:
    return [i for i in DockerfileParser(str(DOCKERFILE)).structure if i["instruction"] != "COMMENT"]


def last(name: str) -> str:
    """The value of the last NAME instruction (the one in force in the final image)."""
    values = [i["value"] for i in instructions() if i["instruction"] == name]
    assert values, f"the Dockerfile has no {name}"
    return values[-1]


def healthcheck_argv() -> list[str]:
    """The exec-form command of HEALTHCHECK, without its --options."""
    words = last("HEALTHCHECK").split(None)
    while words[0].startswith("--"):
        words.pop(0)
    assert words[0] == "CMD", "HEALTHCHECK must run a command"
    rest = last("HEALTHCHECK").split("CMD", 1)[1].strip()
    argv = json.loads(rest)  # exec form: no shell in between
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    return argv


def env_file(path: Path) -> dict[str, str]:
    """KEY=value lines of an env file (comments and blank lines skipped)."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=value: {line!r}"
            out[key.strip()] = value
    return out


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def volume_mounts(service: dict[str, Any]) -> dict[str, str]:
    """container path -> host path (relative to exporters/) of the short-syntax bind mounts."""
    out = {}
    for spec in service.get("volumes", []):
        source, target, *_ = spec.split(":")
        if source.startswith((".", "/")):
            out[target] = source
    return out


def materialize_compose_config(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The airflow-ops service's config as its container sees it: every compose secret written
    from compose.env.example (moved from /run/secrets/ to tmp_path), env from the image's ENV."""
    service = compose()["services"]["airflow-ops"]
    mounts = volume_mounts(service)
    config_source = EXPORTERS / mounts["/etc/airflow-ops/config.yaml"]
    values = env_file(COMPOSE_ENV_EXAMPLE)
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    for name in service["secrets"]:
        (secrets_dir / name).write_text(values[compose()["secrets"][name]["environment"]])
    config_path = tmp_path / "config.yaml"
    config_path.write_text(config_source.read_text().replace(RUN_SECRETS, f"{secrets_dir}/"))
    return config_path, dict(DockerfileParser(str(DOCKERFILE)).envs)
