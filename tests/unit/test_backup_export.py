"""The export document: without-secrets leaves every secret out; encrypted re-encrypts them with
the export key, reading values Airflow stored encrypted through Airflow's key."""

from __future__ import annotations

import json

import pytest
from cryptography.fernet import Fernet, InvalidToken

from airflow_ops.config.backup import ExportMode
from airflow_ops.maintenance.backup_crypto import fernet_from_keys
from airflow_ops.maintenance.backup_errors import BackupError
from airflow_ops.maintenance.backup_export import build_export

AIRFLOW_KEY = Fernet.generate_key()
EXPORT_KEY = Fernet.generate_key()


def _rows() -> dict:
    af = Fernet(AIRFLOW_KEY)
    return {
        "pools": [{"id": 1, "pool": "default_pool", "slots": 128, "description": "Default pool"}],
        "variables": [
            {"id": 1, "key": "api_token", "val": af.encrypt(b"var-secret").decode(), "is_encrypted": True},
            {"id": 2, "key": "plain", "val": "plain-secret", "is_encrypted": False},
        ],
        "connections": [
            {
                "id": 7,
                "conn_id": "warehouse",
                "conn_type": "postgres",
                "login": "etl",
                "password": af.encrypt(b"conn-secret").decode(),
                "is_encrypted": True,
                "extra": af.encrypt(b'{"token": "extra-secret"}').decode(),
                "is_extra_encrypted": True,
            },
            {"id": 8, "conn_id": "nopw", "conn_type": "http", "login": None, "password": None,
             "is_encrypted": False, "extra": None, "is_extra_encrypted": False},
        ],
    }  # fmt: skip


SECRETS = ("var-secret", "plain-secret", "conn-secret", "extra-secret")


def test_without_secrets_leaves_them_out() -> None:
    export = build_export(_rows(), ExportMode.WITHOUT_SECRETS)
    text = json.dumps(export.document)
    assert not any(s in text for s in SECRETS)
    assert export.counts == {"pools": 1, "variables": 2, "connections": 2} and export.secrets == 4
    conn = export.document["connections"][0]
    assert conn == {
        "conn_id": "warehouse",
        "conn_type": "postgres",
        "login": "etl",
        "password": None,
        "extra": None,
    }
    assert export.document["secrets"] == "without-secrets"
    assert "id" not in export.document["pools"][0]


def test_encrypted_needs_only_the_export_key_to_read() -> None:
    export = build_export(
        _rows(),
        ExportMode.ENCRYPTED,
        export_fernet=fernet_from_keys(EXPORT_KEY.decode()),
        airflow_fernet=fernet_from_keys(f"{Fernet.generate_key().decode()},{AIRFLOW_KEY.decode()}"),
    )
    text = json.dumps(export.document)
    assert not any(s in text for s in SECRETS)
    reader = Fernet(EXPORT_KEY)
    conn = export.document["connections"][0]
    assert reader.decrypt(conn["password"].encode()) == b"conn-secret"
    assert json.loads(reader.decrypt(conn["extra"].encode())) == {"token": "extra-secret"}
    values = {v["key"]: reader.decrypt(v["val"].encode()).decode() for v in export.document["variables"]}
    assert values == {"api_token": "var-secret", "plain": "plain-secret"}
    for wrong in (Fernet(Fernet.generate_key()), Fernet(AIRFLOW_KEY)):
        with pytest.raises(InvalidToken):
            wrong.decrypt(conn["password"].encode())


def test_encrypted_without_or_with_the_wrong_airflow_key_names_the_row() -> None:
    export_fernet = fernet_from_keys(EXPORT_KEY.decode())
    with pytest.raises(
        BackupError, match=r"variable 'api_token' \(val\) is stored encrypted.*airflow_fernet_key"
    ):
        build_export(_rows(), ExportMode.ENCRYPTED, export_fernet=export_fernet)
    with pytest.raises(BackupError, match=r"does not decrypt with the given Airflow Fernet key") as info:
        build_export(
            _rows(),
            ExportMode.ENCRYPTED,
            export_fernet=export_fernet,
            airflow_fernet=fernet_from_keys(Fernet.generate_key().decode()),
        )
    assert not any(s in str(info.value) for s in SECRETS)
