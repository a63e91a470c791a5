"""The companion's own durable state (see ``ops_store.OpsStore``): an SQLite file for one
replica, or PostgreSQL so that replicas share state and elect one leader."""

from __future__ import annotations

from .backend import Leadership, StoreError
from .ops_store import OpsStore

__all__ = ["Leadership", "OpsStore", "StoreError", "open_store"]

_SQLITE_PREFIX = "sqlite:///"


def open_store(url: str) -> OpsStore:
    """Open (creating or migrating the schema) the store at ``url``:

    - ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``, ``sqlite:///:memory:``
      (SQLAlchemy's spelling);
    - ``postgresql://user:password@host:port/db?sslmode=…`` (or ``postgres://``), any libpq URI.
    """
    url = str.__str__(url)  # a config Secret arrives as a str subclass
    if url.startswith(_SQLITE_PREFIX) or url == "sqlite://":
        from .sqlite import MEMORY, SqliteBackend

        path = url[len(_SQLITE_PREFIX) :] or MEMORY
        if "?" in path:
            raise StoreError(f"sqlite store URL {url!r}: query parameters are not supported")
        return OpsStore(SqliteBackend(path))
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresBackend

        return OpsStore(PostgresBackend(url))
    scheme = url.split(":", 1)[0] if ":" in url else url[:20]
    raise StoreError(
        f"unsupported ops store URL scheme {scheme!r}: use sqlite:///path.db or postgresql://user@host/db"
    )
