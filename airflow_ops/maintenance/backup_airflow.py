"""What backups need to know about an Airflow metadata database besides its release
(``airflow_ops.airflow.releases``): which stored values Airflow encrypted with its Fernet key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from airflow_ops.maintenance.backup_crypto import InvalidToken, MultiFernet, decrypt


@dataclass(frozen=True)
class EncryptedValue:
    """A value Airflow stored encrypted with its Fernet key."""

    kind: str  # "connection" | "variable"
    name: str  # conn_id or variable key (not secret)
    field: str  # password | extra | val
    token: str

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name!r} ({self.field})"


_ENCRYPTED_SQL = """
SELECT 'connection', conn_id, 'password', password FROM connection
 WHERE is_encrypted AND coalesce(password, '') <> ''
UNION ALL
SELECT 'connection', conn_id, 'extra', extra FROM connection
 WHERE is_extra_encrypted AND coalesce(extra, '') <> ''
UNION ALL
SELECT 'variable', key, 'val', val FROM variable
 WHERE is_encrypted AND coalesce(val, '') <> ''
ORDER BY 1, 2, 3
"""


def encrypted_values(cur: Any) -> list[EncryptedValue]:
    cur.execute(_ENCRYPTED_SQL)
    return [EncryptedValue(*row) for row in cur.fetchall()]


def undecryptable(values: Sequence[EncryptedValue], fernet: MultiFernet) -> list[EncryptedValue]:
    """The values that no key of ``fernet`` decrypts."""
    failed = []
    for value in values:
        try:
            decrypt(fernet, value.token)
        except InvalidToken:
            failed.append(value)
    return failed
