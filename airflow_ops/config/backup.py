"""The ``backup:`` section: where backups live, how many to keep, what to export, and the keys.

Both keys are :class:`Secret` (inline, ``<key>_env`` or ``<key>_file``) and are checked to be
Fernet keys without ever repeating them in an error.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from .base import Duration, Secret, _Model


class ExportMode(str, Enum):
    """What a backup exports of pools, variables and connections besides the dump."""

    NONE = "none"
    # Passwords, connection extras and variable values are left out.
    WITHOUT_SECRETS = "without-secrets"
    # Those values are re-encrypted with the user's export key (Fernet).
    ENCRYPTED = "encrypted"


class RetentionPolicy(_Model):
    """Which good backups prune keeps: the union of the newest ``keep_last`` and the newest backup
    of each of the last ``daily`` days / ``weekly`` ISO weeks / ``monthly`` months that have one.
    The newest verified backup is always kept on top of these."""

    keep_last: int = Field(default=3, ge=0)
    daily: int = Field(default=7, ge=0)
    weekly: int = Field(default=4, ge=0)
    monthly: int = Field(default=6, ge=0)
    # The temporary directory of an interrupted create is removed once no process holds it and
    # it is this old (the age guards file systems where the lock cannot be seen, e.g. NFS).
    stale_after: Duration = 6 * 3600.0

    @model_validator(mode="after")
    def _keeps_something(self) -> RetentionPolicy:
        if not (self.keep_last or self.daily or self.weekly or self.monthly):
            raise ValueError("keeps no backup: set one of keep_last, daily, weekly or monthly above 0")
        return self


class BackupConfig(_Model):
    dir: Path
    retention: RetentionPolicy = RetentionPolicy()
    export: ExportMode = ExportMode.NONE
    # Encrypts exported secrets (export: encrypted); a Fernet key, e.g. from
    # `python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"`.
    export_key: Secret | None = None
    # Airflow's [core] fernet_key (comma-separated when rotating): verify decrypts a stored
    # connection with it, and an encrypted export needs it to read the stored secrets.
    airflow_fernet_key: Secret | None = None
    # Server where verify creates (and drops) its scratch database; default: the deployment's
    # server, database "postgres".
    scratch_dsn: Secret | None = None
    # Directory holding pg_dump/pg_restore; default: the best match found for the server version.
    pg_bin_dir: Path | None = None

    @field_validator("export_key", "airflow_fernet_key")
    @classmethod
    def _fernet_keys(cls, v: Secret | None) -> Secret | None:
        from ..maintenance.backup_crypto import fernet_from_keys  # the one key parser

        if v is not None:
            fernet_from_keys(v.value)
        return v

    @field_validator("scratch_dsn")
    @classmethod
    def _scratch_dsn(cls, v: Secret | None) -> Secret | None:
        from . import sqlalchemy_to_libpq  # late: this module is imported by the package itself

        return None if v is None else Secret(sqlalchemy_to_libpq(v.value))

    @model_validator(mode="after")
    def _export_key_matches_mode(self) -> BackupConfig:
        if self.export is ExportMode.ENCRYPTED and self.export_key is None:
            raise ValueError("export 'encrypted' needs export_key (a Fernet key)")
        if self.export is not ExportMode.ENCRYPTED and self.export_key is not None:
            raise ValueError(
                f"export_key is only used with export 'encrypted' (export is {self.export.value!r})"
            )
        return self

    def scratch_dsn_for(self, deployment_dsn: str) -> str:
        """The DSN verify creates its scratch database from."""
        from ..maintenance.backup_pg import dsn_with_database

        return self.scratch_dsn.value if self.scratch_dsn else dsn_with_database(deployment_dsn, "postgres")
