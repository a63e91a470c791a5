"""The ``db_clean`` config section: retention of Airflow's metadata tables, and how to batch.

    db_clean:
      retention:            # per table; a table not listed keeps the default of its Airflow version
        dag_run: 90d        # (task instances, XComs, … go with their runs)
        log: 30d
        xcom: 14d           # shorter than the runs': XComs of finished, unkept runs
        import_error: null  # never
      keep_last_runs: 1     # per DAG, manual runs not counted; the newest run is always kept
      dag_overrides:
        - pattern: "reporting_.*"
          retention: {dag_run: 400d}
          keep_last_runs: 5
      batch_size: 1000
      throttle: 100ms
      lock_timeout: 2s
      statement_timeout: 10s
      workers: 1            # connections deleting disjoint batches at once
      archive_dir: /var/backups/airflow-db-clean

Table names are checked against every table ``db clean`` knows (Airflow 2 and 3); per-DAG
retentions only for tables that have a dag_id.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from airflow_ops.maintenance.db_tables import KNOWN_TABLES

from .base import Duration, OptionalDuration, _Model

if TYPE_CHECKING:
    from airflow_ops.maintenance.db_clean import CleanPolicy


def _known_tables(retention: dict[str, Any], *, per_dag: bool) -> dict[str, Any]:
    for table in retention:
        if table not in KNOWN_TABLES:
            raise ValueError(f"unknown table {table!r} (known: {', '.join(sorted(KNOWN_TABLES))})")
        if per_dag and not KNOWN_TABLES[table]:
            raise ValueError(f"table {table!r} has no dag_id: it cannot have a per-DAG retention")
    return retention


def _regex(pattern: str | None) -> str | None:
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
    return pattern


class DagOverrideConfig(_Model):
    """Retention for some DAGs: listed dag_ids and/or a regex matched against the whole dag_id.
    The first override that matches a DAG (and sets a value) wins."""

    dag_ids: tuple[str, ...] = ()
    pattern: str | None = None
    retention: dict[str, OptionalDuration] = Field(default_factory=dict)
    keep_last_runs: int | None = Field(default=None, ge=0)

    @field_validator("retention")
    @classmethod
    def _tables(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _known_tables(v, per_dag=True)

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, v: str | None) -> str | None:
        return _regex(v)

    @model_validator(mode="after")
    def _selects_dags(self) -> DagOverrideConfig:
        if not self.dag_ids and self.pattern is None:
            raise ValueError("an override needs dag_ids or a pattern")
        return self


class DbCleanConfig(_Model):
    retention: dict[str, OptionalDuration] = Field(default_factory=dict)
    tables: tuple[str, ...] | None = None  # only these tables
    keep_last_runs: int = Field(default=1, ge=0)
    dag_overrides: tuple[DagOverrideConfig, ...] = ()
    batch_size: int = Field(default=1000, ge=1, le=100_000)
    throttle: Duration = 0.0
    lock_timeout: Duration = 2.0
    statement_timeout: Duration = 10.0
    target_statement_time: Duration = 0.5
    lock_retries: int = Field(default=3, ge=0, le=100)
    # auto: set-based cascades where the role may set session_replication_role, else FK triggers.
    cascades: Literal["auto", "set_based", "triggers"] = "auto"
    # Connections deleting disjoint batches at once; each one more is that much more database load.
    workers: int = Field(default=1, ge=1, le=16)
    archive_dir: Path | None = None

    @field_validator("retention")
    @classmethod
    def _tables(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _known_tables(v, per_dag=False)

    @field_validator("tables")
    @classmethod
    def _table_list(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is not None:
            _known_tables(dict.fromkeys(v), per_dag=False)
        return v

    @field_validator("lock_timeout", "statement_timeout", "target_statement_time")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be more than 0")
        return v

    def to_policy(
        self, *, only_dag_ids: tuple[str, ...] | None = None, only_dag_pattern: str | None = None
    ) -> CleanPolicy:
        """The :class:`~airflow_ops.maintenance.db_clean.CleanPolicy` of this config, optionally
        restricted to some DAGs (e.g. from ``--dag-id`` options)."""
        # Imported here: db_clean reads the metadata DB through modules that import the config.
        from airflow_ops.maintenance.db_clean import CleanPolicy, DagOverride

        return CleanPolicy(
            retention=dict(self.retention),
            tables=self.tables,
            keep_last_runs=self.keep_last_runs,
            dag_overrides=tuple(
                DagOverride(o.dag_ids, o.pattern, dict(o.retention), o.keep_last_runs)
                for o in self.dag_overrides
            ),
            only_dag_ids=only_dag_ids,
            only_dag_pattern=only_dag_pattern,
            batch_size=self.batch_size,
            throttle=self.throttle,
            lock_timeout=self.lock_timeout,
            statement_timeout=self.statement_timeout,
            target_statement_seconds=self.target_statement_time,
            lock_retries=self.lock_retries,
            cascades=self.cascades,
            workers=self.workers,
        )
