"""What every maintenance action reports, planned or done.

One shape for all actions, so that the CLI prints them, the ops store audits them and the service
exports them the same way. Nothing in a report may hold a secret: it is printed and stored as is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

# progress(done, total, unit): total is None when unknown (a streamed tree); unit names what is
# counted ("rows", "files", "bytes"). Called often; the CLI rate-limits what it draws.
Progress = Callable[[int, int | None, str], None]


def no_progress(done: int, total: int | None, unit: str) -> None:
    """The progress callback for callers that draw nothing."""


@dataclass
class Report:
    """A plan (``planned=True``: nothing changed) or the outcome of carrying it out."""

    action: str  # "backup.create", "backup.verify", "db.clean", "logs.clean", ...
    planned: bool
    ok: bool
    summary: str  # one line for a human
    lines: list[str] = field(default_factory=list)  # the detail a human reads under the summary
    data: dict[str, Any] = field(default_factory=dict)  # JSON-able detail for --json and the audit
    errors: list[str] = field(default_factory=list)  # every part that failed, located
    # Figures the service exports as metrics (0 when the action has none of them).
    rows_deleted: int = 0
    files_deleted: int = 0
    bytes_freed: int = 0
    bytes_written: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
