"""Fernet, the scheme Airflow encrypts connections and variables with, for backups.

Airflow's ``[core] fernet_key`` may hold several comma-separated keys while keys are rotated;
values decrypt with any of them and are encrypted with the first, so both keys here (Airflow's and
the user's export key) are read the same way, into a ``MultiFernet``.
"""

from __future__ import annotations

import binascii

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from airflow_ops.config.base import Secret
from airflow_ops.maintenance.backup_errors import BackupError

__all__ = ["InvalidToken", "Key", "MultiFernet", "decrypt", "encrypt", "fernet_from_keys", "fernet_option"]


def fernet_from_keys(keys: str) -> MultiFernet:
    """``key1[,key2...]`` -> MultiFernet. ValueError (never showing a key) if one is not a Fernet key."""
    parts = [part.strip() for part in keys.split(",")]
    if not any(parts):
        raise ValueError("is empty; expected a Fernet key (32 url-safe base64-encoded bytes)")
    fernets = []
    for n, part in enumerate(parts, start=1):
        try:
            fernets.append(Fernet(part.encode()))
        except (ValueError, binascii.Error):
            which = f"key {n} of {len(parts)}" if len(parts) > 1 else "it"
            raise ValueError(
                f"is not a Fernet key: {which} must be 32 url-safe base64-encoded bytes"
            ) from None
    return MultiFernet(fernets)


def encrypt(fernet: MultiFernet, text: str) -> str:
    return fernet.encrypt(text.encode()).decode()


def decrypt(fernet: MultiFernet, token: str) -> str:
    """Plain text of a Fernet token; InvalidToken when no key fits (or the token is damaged)."""
    return fernet.decrypt(token.encode()).decode()


# A key as callers hold it: plain text, a config Secret, or none.
Key = str | Secret | None


def fernet_option(key: Key, name: str) -> MultiFernet | None:
    """MultiFernet of an optional key; BackupError naming the argument if it is not a Fernet key."""
    if not key:
        return None
    text = key.value if isinstance(key, Secret) else str(key)
    try:
        return fernet_from_keys(text)
    except ValueError as e:
        raise BackupError(f"{name} {e}") from None
