"""The contract between the delivery worker and an integration: one attempt per call, and a
:class:`DeliveryError` that says whether trying again makes sense and when.

Integrations never sleep or retry themselves: the worker owns scheduling (outbox, backoff,
``Retry-After``, per-destination pacing), so a crash never loses a retry that lived in a loop.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from typing import Any, Protocol

from ..model import Notification


class DeliveryError(Exception):
    """A failed attempt. ``retry_after`` is the server's own wait (429 ``Retry-After``);
    ``permanent`` means retrying the same request cannot succeed (bad config, 4xx).

    The message is shown to operators and stored in the outbox: it never contains a secret.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, permanent: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.permanent = permanent


class Integration(Protocol):
    """One destination of a receiver (one entry of its ``*_configs``)."""

    key: str  # f"{receiver}/slack[0]", "…/email[1]", "…/webhook[0]", "…/alertmanager[0]"
    receiver: str
    send_resolved: bool
    min_interval: float  # seconds between two sends to the same ``rate_key``
    rate_key: str  # destination identity for pacing (never a secret)

    def send(self, n: Notification, memo: dict[str, Any] | None) -> dict[str, Any] | None:
        """Deliver ``n`` once. ``memo`` is what the previous send of this (key, group) returned;
        the return value replaces it (None: nothing to remember). Raises :class:`DeliveryError`."""
        ...


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with every secret replaced — a last guard for server and library error texts."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def header(headers: Mapping[str, str] | None, name: str) -> str | None:
    """A header value looked up case-insensitively (servers and libraries disagree on case)."""
    for k, v in (headers or {}).items():
        if k.lower() == name.lower():
            return v if isinstance(v, str) else str(v)
    return None


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP-date (RFC 9110); None if absent or bad."""
    if value is None or not value.strip():
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def http_error(what: str, status: int, *, retry_after: str | None = None, detail: str = "") -> DeliveryError:
    """The error for an HTTP answer other than success: 429 waits, 5xx retries, other 4xx are permanent."""
    detail = " ".join(detail.split())[:200]
    text = f"{what}: HTTP {status}" + (f": {detail}" if detail else "")
    if status == 429:
        return DeliveryError(text, retry_after=retry_after_seconds(retry_after))
    if status >= 500 or status in (408, 425):
        return DeliveryError(text)
    return DeliveryError(text, permanent=True)


def connection_error(what: str, err: BaseException) -> DeliveryError:
    """A retryable error for a network failure, phrased without the URL (it may hold a secret)."""
    reason = getattr(err, "reason", None) or err
    text = str(reason) or type(reason).__name__
    return DeliveryError(f"{what}: cannot connect: {text}")
