"""The ``logs:`` section of the config: log retention for ``airflow-ops logs clean``.

.. code-block:: yaml

    logs:
      folder: /opt/airflow/logs      # default: Airflow's [logging] base_log_folder
      retention: 30d                 # task logs
      dag_overrides:                 # exact dag_id, or "re:<regex>" (full match); exact wins,
        daily_etl: 90d               # then the first matching regex in file order
        "re:tmp_.*": 2d
      scheduler_retention: 7d        # default: retention
      processor_retention: 7d        # default: retention
      other_retention: null          # files not recognised as Airflow's: kept unless set
      require_db: true               # refuse to clean without the metadata DB (live-task protection)
      remove_empty_folders: true     # remove the folders the clean emptied

A retention shorter than an hour is refused: a bare number is seconds, and ``retention: 30``
meaning days would otherwise delete almost everything.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, field_validator

from .base import Duration, OptionalDuration, _Model

MIN_RETENTION = 3600.0
REGEX_PREFIX = "re:"


def _check_retention(seconds: float | None) -> float | None:
    if seconds is not None and seconds < MIN_RETENTION:
        raise ValueError("must be at least 1h (a bare number is seconds: write e.g. 30d)")
    return seconds


class LogsConfig(_Model):
    folder: str | None = None
    retention: Duration = 30 * 86400.0
    dag_overrides: dict[str, Duration] = Field(default_factory=dict)
    scheduler_retention: OptionalDuration = None
    processor_retention: OptionalDuration = None
    other_retention: OptionalDuration = None
    require_db: bool = True
    remove_empty_folders: bool = True
    # Live task instances (and live runs) read per clean; more is an error, never a partial read.
    live_limit: int = Field(default=100_000, ge=1)

    @field_validator("folder")
    @classmethod
    def _folder(cls, v: str | None) -> str | None:
        if v is not None and not Path(v).expanduser().is_absolute():
            raise ValueError("must be an absolute path")
        return v

    @field_validator("retention", "scheduler_retention", "processor_retention", "other_retention")
    @classmethod
    def _retention(cls, v: float | None) -> float | None:
        return _check_retention(v)

    @field_validator("dag_overrides")
    @classmethod
    def _overrides(cls, v: dict[str, float]) -> dict[str, float]:
        for key, seconds in v.items():
            if not key or key == REGEX_PREFIX:
                raise ValueError("an override needs a dag_id or re:<regex>")
            if key.startswith(REGEX_PREFIX):
                try:
                    re.compile(key[len(REGEX_PREFIX) :])
                except re.error as e:
                    raise ValueError(f"{key}: invalid regular expression: {e}") from None
            try:
                _check_retention(seconds)
            except ValueError as e:
                raise ValueError(f"{key}: {e}") from None
        return v
