"""The building blocks every config section uses: the strict frozen model, secrets that never
show themselves, durations, and the error type."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationInfo, model_validator


class ConfigError(Exception):
    """A configuration problem, already phrased for the operator (file, key, reason)."""


class Secret(str):
    """A str that never shows itself in repr, logs or tracebacks."""

    def __repr__(self) -> str:
        return "Secret('***')"

    @property
    def value(self) -> str:
        return str.__str__(self)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_after_validator_function(
            cls, core_schema.str_schema(), serialization=core_schema.to_string_ser_schema()
        )


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(value: Any) -> float:
    """'30s', '5m', '1h', '250ms' or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m or 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise ValueError(f"{value!r} is not a duration (use e.g. 30s, 5m, 1h)")
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def _parse_optional_duration(value: Any) -> float | None:
    return None if value is None else parse_duration(value)


# Every duration field in the config: seconds, written as 30s / 5m / 1h / 250ms or a plain number.
Duration = Annotated[float, BeforeValidator(parse_duration)]
# The same for fields where None means "unset" (e.g. route timings that inherit from the parent).
OptionalDuration = Annotated[float | None, BeforeValidator(_parse_optional_duration)]


class _Model(BaseModel):
    # Inputs stay out of error texts: a rejected value may be a secret.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    @model_validator(mode="before")
    @classmethod
    def _resolve_secret_sources(cls, data: Any, info: ValidationInfo) -> Any:
        environ = (info.context or {}).get("environ", os.environ)
        if not isinstance(data, Mapping):
            return data
        out = dict(data)
        for key in list(out):
            for suffix in ("_env", "_file"):
                base = key[: -len(suffix)] if key.endswith(suffix) else None
                if base is None or base not in cls.model_fields:
                    continue
                if out.get(base) is not None:
                    raise ValueError(f"give either {base} or {key}, not both")
                ref = out.pop(key)
                if suffix == "_env":
                    if ref not in environ:
                        raise ValueError(f"{key}: environment variable {ref} is not set")
                    out[base] = environ[ref]
                else:
                    try:
                        out[base] = Path(ref).read_text().strip()
                    except OSError as e:
                        raise ValueError(f"{key}: cannot read {ref}: {e.strerror}") from None
        return out
