"""exporters/systemd/ as the tests read it: the unit's [Service] settings and credentials, the env
example's assignments, and config.yaml with the unit's credentials materialized."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SYSTEMD = REPO / "exporters" / "systemd"
UNIT = SYSTEMD / "airflow-ops.service"
ENV_EXAMPLE = SYSTEMD / "airflow-ops.env.example"
CONFIG = SYSTEMD / "config.yaml"
CREDENTIALS_DIR = "/run/credentials/airflow-ops.service/"
# Commented-out assignments are examples too: they must be just as real.
_ASSIGNMENT = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$")


def service_settings(key: str) -> list[str]:
    """Every value of KEY= in the unit's [Service] section (keys like LoadCredential repeat)."""
    section, values = None, []
    for line in UNIT.read_text().splitlines():
        if line.startswith("["):
            section = line.strip()
        elif section == "[Service]" and line.startswith(f"{key}="):
            values.append(line.split("=", 1)[1])
    return values


def credentials() -> dict[str, str]:
    """LoadCredential=ID:PATH -> {ID: PATH}."""
    return dict(value.split(":", 1) for value in service_settings("LoadCredential"))


def env_example(commented: bool = True) -> dict[str, str]:
    """The assignments of the env example; ``commented=False``: only those systemd would set."""
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = _ASSIGNMENT.match(line)
        if m and (commented or not line.startswith("#")):
            out[m.group(1)] = m.group(2)
    return out


def materialize_config(tmp_path: Path, skip: str | None = None) -> Path:
    """config.yaml as the service sees it: each credential of the unit written where systemd
    puts it (moved under tmp_path), with a placeholder value of its kind."""
    creds = tmp_path / "credentials"
    creds.mkdir()
    for name in credentials():
        if name != skip:
            value = "postgresql://ops@127.0.0.1:1/airflow" if name.endswith("-dsn") else f"test-{name}"
            (creds / name).write_text(value + "\n")
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.read_text().replace(CREDENTIALS_DIR, f"{creds}/"))
    return path
