"""The optional JSON export of pools, variables and connections that goes with a backup.

Rows are exported with every column Airflow has (so 2.x and 3.x need no code of their own), less
the surrogate ``id`` and Airflow's ``is_encrypted`` flags: what the secret fields hold is stated
once, at the top of the document. Secret fields are connection ``password`` and ``extra`` (extras
often carry tokens) and variable ``val``:

- ``without-secrets``: they are null;
- ``encrypted``: each is a Fernet token made with the user's export key, of the plain value
  (read through Airflow's Fernet key where Airflow stored it encrypted).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from airflow_ops.config.backup import ExportMode
from airflow_ops.maintenance.backup_crypto import InvalidToken, MultiFernet, decrypt, encrypt
from airflow_ops.maintenance.backup_errors import BackupError

EXPORT_FORMAT = "airflow-ops-export/1"

# kind -> (table, sort column, {secret field: Airflow's "stored encrypted" flag column})
_TABLES: dict[str, tuple[str, str, dict[str, str]]] = {
    "pools": ("slot_pool", "pool", {}),
    "variables": ("variable", "key", {"val": "is_encrypted"}),
    "connections": ("connection", "conn_id", {"password": "is_encrypted", "extra": "is_extra_encrypted"}),
}
_NAME_COLUMN = {"variables": "key", "connections": "conn_id"}

MODE_TEXT = {
    ExportMode.NONE: "no export of pools, variables and connections",
    ExportMode.WITHOUT_SECRETS: (
        "pools, variables and connections exported WITHOUT secrets "
        "(connection passwords and extras, variable values left out)"
    ),
    ExportMode.ENCRYPTED: (
        "pools, variables and connections exported with their secrets ENCRYPTED with your export key (Fernet)"
    ),
}


@dataclass(frozen=True)
class Export:
    document: dict[str, Any]
    counts: dict[str, int]  # pools / variables / connections
    secrets: int  # secret values encrypted (encrypted) or left out (without-secrets)


def read_rows(cur: Any) -> dict[str, list[dict[str, Any]]]:
    """kind -> rows (column -> value), straight from Airflow's tables."""
    rows = {}
    for kind, (table, order, _) in _TABLES.items():
        cur.execute(f"SELECT * FROM {table} ORDER BY {order}")  # names are constants above
        columns = [c.name for c in cur.description]
        rows[kind] = [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]
    return rows


def build_export(
    rows: dict[str, list[dict[str, Any]]],
    mode: ExportMode,
    *,
    export_fernet: MultiFernet | None = None,
    airflow_fernet: MultiFernet | None = None,
) -> Export:
    """The export document of ``rows``. BackupError (naming the row, never a value) when a value
    Airflow stored encrypted cannot be read: no or the wrong Airflow Fernet key."""
    if mode is ExportMode.ENCRYPTED and export_fernet is None:
        raise BackupError("export 'encrypted' needs an export key (export_key)")
    secrets = 0
    document: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "secrets": mode.value,
        "secret_fields": {kind: sorted(fields) for kind, (_, _, fields) in _TABLES.items() if fields},
        "note": MODE_TEXT[mode],
    }
    counts = {}
    for kind, (_, _, fields) in _TABLES.items():
        out = []
        for source in rows[kind]:
            row = {k: v for k, v in source.items() if k != "id" and k not in fields.values()}
            for field, flag in fields.items():
                value = source.get(field)
                if value is None or value == "":
                    continue
                secrets += 1
                if mode is ExportMode.WITHOUT_SECRETS:
                    row[field] = None
                    continue
                if source.get(flag):
                    value = _airflow_plain(value, airflow_fernet, kind, source[_NAME_COLUMN[kind]], field)
                row[field] = encrypt(export_fernet, value)  # type: ignore[arg-type]
            out.append(row)
        document[kind] = out
        counts[kind] = len(out)
    return Export(document, counts, secrets)


def _airflow_plain(token: str, fernet: MultiFernet | None, kind: str, name: str, field: str) -> str:
    what = f"{kind[:-1]} {name!r} ({field})"
    if fernet is None:
        raise BackupError(
            f"{what} is stored encrypted with Airflow's Fernet key: give it (airflow_fernet_key) "
            "to re-encrypt the secrets with the export key, or export without-secrets"
        )
    try:
        return decrypt(fernet, token)
    except InvalidToken:
        raise BackupError(
            f"{what} does not decrypt with the given Airflow Fernet key (airflow_fernet_key): "
            "is it the [core] fernet_key of this deployment?"
        ) from None
