"""The contract every source of Airflow state follows."""

from __future__ import annotations

from typing import Protocol, TypeVar

T_co = TypeVar("T_co", covariant=True)


# Every reason a failed poll is counted under (SourceError.reason, plus "internal" for a bug): the
# counter exists at 0 for each from the first render, so increase() sees a source's first failure.
POLL_ERROR_REASONS = ("connect", "auth", "timeout", "query", "http", "protocol", "internal")


class SourceError(Exception):
    """A source could not be read. ``reason`` is a short label-safe category for
    ``airflow_ops_poll_errors_total{reason}``: connect, auth, timeout, query, http, protocol.
    The message must never contain a secret."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Source(Protocol[T_co]):
    """Reads one part of a deployment's state. ``poll`` raises SourceError on failure and must
    recover by itself on a later call (reconnect, re-authenticate); it never blocks longer than
    its configured timeouts."""

    name: str

    def poll(self, now: float) -> T_co: ...

    def close(self) -> None: ...
