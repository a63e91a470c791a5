"""The ``backup:`` config section: defaults, keys from env/files, and errors that name the key
without ever repeating a secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydantic import ValidationError

from airflow_ops.config.backup import BackupConfig, ExportMode, RetentionPolicy

KEY = Fernet.generate_key().decode()
OTHER_KEY = Fernet.generate_key().decode()


def _errors(data: dict, environ: dict | None = None) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as info:
        BackupConfig.model_validate(data, context={"environ": environ or {}})
    return [(".".join(str(p) for p in e["loc"]), e["msg"]) for e in info.value.errors()]


def test_defaults() -> None:
    config = BackupConfig.model_validate({"dir": "/var/backups/airflow"})
    assert config.dir == Path("/var/backups/airflow")
    assert config.export is ExportMode.NONE and config.export_key is None
    assert config.retention == RetentionPolicy(
        keep_last=3, daily=7, weekly=4, monthly=6, stale_after=6 * 3600
    )
    # verify's scratch database goes on the deployment's own server by default.
    assert (
        config.scratch_dsn_for("postgresql+psycopg2://airflow:pw@db.internal:5433/airflow")
        == "user=airflow password=pw dbname=postgres host=db.internal port=5433"
    )


def test_full_section_with_keys_from_env_and_file(tmp_path: Path) -> None:
    key_file = tmp_path / "export.key"
    key_file.write_text(KEY + "\n")
    config = BackupConfig.model_validate(
        {
            "dir": str(tmp_path),
            "retention": {"keep_last": 2, "daily": 0, "weekly": 8, "monthly": 12, "stale_after": "2h"},
            "export": "encrypted",
            "export_key_file": str(key_file),
            "airflow_fernet_key_env": "AIRFLOW__CORE__FERNET_KEY",
            "scratch_dsn": "postgresql://ops@scratch:5432/postgres",
            "pg_bin_dir": "/usr/lib/postgresql/16/bin",
        },
        context={"environ": {"AIRFLOW__CORE__FERNET_KEY": f"{OTHER_KEY},{KEY}"}},
    )
    assert config.export is ExportMode.ENCRYPTED
    assert config.export_key is not None and config.export_key.value == KEY
    assert config.airflow_fernet_key is not None and config.airflow_fernet_key.value == f"{OTHER_KEY},{KEY}"
    assert config.retention.stale_after == 7200 and config.retention.weekly == 8
    assert (
        config.scratch_dsn_for("postgresql://airflow@db/airflow") == "postgresql://ops@scratch:5432/postgres"
    )
    assert KEY not in repr(config) and OTHER_KEY not in repr(config)


@pytest.mark.parametrize(
    ("data", "key", "message"),
    [
        ({}, "dir", "Field required"),
        ({"dir": "/b", "export": "plaintext"}, "export", "'none', 'without-secrets' or 'encrypted'"),
        ({"dir": "/b", "export": "encrypted"}, "", "export 'encrypted' needs export_key"),
        ({"dir": "/b", "export_key": KEY}, "", "export_key is only used with export 'encrypted'"),
        ({"dir": "/b", "retention": {"daily": -1}}, "retention.daily", "greater than or equal to 0"),
        ({"dir": "/b", "retention": {"keep_last": 0, "daily": 0, "weekly": 0, "monthly": 0}}, "retention",
         "keeps no backup"),
        ({"dir": "/b", "retention": {"stale_after": "soon"}}, "retention.stale_after", "is not a duration"),
        ({"dir": "/b", "retention": {"keep": 3}}, "retention.keep", "Extra inputs are not permitted"),
        ({"dir": "/b", "scratch_dsn": "mysql://u:p@h/db"}, "scratch_dsn", "only PostgreSQL"),
        ({"dir": "/b", "airflow_fernet_key_env": "NOPE"}, "",
         "airflow_fernet_key_env: environment variable NOPE is not set"),
    ],
)  # fmt: skip
def test_errors_name_the_key(data: dict, key: str, message: str) -> None:
    errors = _errors(data)
    assert any(loc == key and message in msg for loc, msg in errors), errors


@pytest.mark.parametrize("field", ["export_key", "airflow_fernet_key"])
def test_a_bad_fernet_key_is_named_but_never_shown(field: str) -> None:
    not_a_key = "hunter2-is-not-a-fernet-key"
    data = {"dir": "/b", field: not_a_key}
    if field == "export_key":
        data["export"] = "encrypted"
    with pytest.raises(ValidationError) as info:
        BackupConfig.model_validate(data)
    text = str(info.value)
    assert field in text and "is not a Fernet key" in text
    assert not_a_key not in text
    # Rotation lists are checked key by key.
    with pytest.raises(ValidationError, match="key 2 of 2") as info:
        BackupConfig.model_validate({"dir": "/b", "airflow_fernet_key": f"{KEY},{not_a_key}"})
    assert not_a_key not in str(info.value) and KEY not in str(info.value)
