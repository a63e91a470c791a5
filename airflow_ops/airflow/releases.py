"""Which Airflow release a metadata database's schema is.

Airflow records no release number in its database; its alembic revision is the exact schema
version. The release is read from Airflow's own map of migration heads (``_REVISION_HEADS_MAP``
in ``airflow/utils/db.py`` of 2.11.2 and 3.3.2): the release that introduced that revision. Later
releases without migrations share it (2.11.x runs on the schema of 2.10.3), so a backup manifest
records the revision as the fact and the release as "this schema's release".
"""

from __future__ import annotations

from typing import Any

# alembic head -> Airflow release that introduced it (Airflow's _REVISION_HEADS_MAP, 2.x and 3.x
# merged; 3.x's copy lost some 2.x heads, so 2.x entries come from 2.11.2).
_RELEASE_BY_REVISION: dict[str, str] = {
    "e959f08ac86c": "2.0.0",
    "82b7c48c147f": "2.0.1",
    "2e42bb497a22": "2.0.2",
    "a13f7613ad25": "2.1.0",
    "97cdd93827b8": "2.1.3",
    "ccde3e26fe78": "2.1.4",
    "7b2661a43ba3": "2.2.0",
    "be2bfac3da23": "2.2.3",
    "587bdf053233": "2.2.4",
    "b1b348e02d07": "2.3.0",
    "1de7bc13c950": "2.3.1",
    "3c94c427fdf6": "2.3.2",
    "f5fcbda3e651": "2.3.3",
    "ecb43d2a1842": "2.4.0",
    "b0d31815b5a6": "2.4.2",
    "e07f49787c9d": "2.4.3",
    "290244fb8b83": "2.5.0",
    "98ae134e6fff": "2.6.0",
    "c804e5c76e3e": "2.6.2",
    "4bc4d934e2bc": "2.6.2",
    "405de8318b3a": "2.7.0",
    "10b52ebd31f7": "2.8.0",
    "88344c1d9134": "2.8.1",
    "1949afb29106": "2.9.0",
    "686269002441": "2.9.2",
    "22ed7efa9da2": "2.10.0",
    "5f2621c13b39": "2.10.3",
    "29ce7909c52b": "3.0.0",
    "fe199e1abd77": "3.0.3",
    "cc92b33c6709": "3.1.0",
    "509b94a1042d": "3.1.8",
    "1d6611b6ab7c": "3.2.0",
    "d2f4e1b3c5a7": "3.3.0",
}


def airflow_release(revision: str | None) -> str | None:
    """The Airflow release whose schema is ``revision`` (None for a revision between releases)."""
    return _RELEASE_BY_REVISION.get(revision or "")


def release_text(revision: str | None) -> str:
    """'Airflow 3.3.0' or 'unknown release', for messages."""
    release = airflow_release(revision)
    return f"Airflow {release}" if release else "unknown release"


def release_note(revision: str | None) -> str:
    release = airflow_release(revision)
    if release is None:
        return f"alembic revision {revision} is not the schema of a known Airflow release"
    return (
        f"alembic revision {revision} is the schema of Airflow {release}"
        " and of later releases up to the next migration"
    )


def read_alembic_revision(cur: Any) -> str | None:
    """The database's alembic revision, or None when it has no ``alembic_version`` table."""
    cur.execute("SELECT to_regclass('alembic_version') IS NOT NULL")
    if not cur.fetchone()[0]:
        return None
    cur.execute("SELECT version_num FROM alembic_version ORDER BY 1")
    revisions = [str(r) for (r,) in cur.fetchall()]
    return ",".join(revisions) or None
