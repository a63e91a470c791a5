"""Celery queue depth, read from the broker through kombu (Redis and RabbitMQ alike).

A passive ``queue_declare`` returns ``message_count`` on both transports without creating or
consuming anything. For Redis, kombu sums Celery's priority sub-lists (``queue``, ``queue\\x06\\x163``,
...), so the count is what a worker would still have to take.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import amqp.exceptions
import kombu
import redis.exceptions

from airflow_ops.airflow.source import SourceError
from airflow_ops.config import BrokerConfig
from airflow_ops.snapshot import BrokerState

log = logging.getLogger(__name__)

# Per-scheme socket options: kombu hands transport_options straight to the transport, whose
# option names differ (redis-py vs py-amqp). Without them a half-open broker blocks a read forever.
_TRANSPORT_OPTIONS: Mapping[str, Callable[[float], dict[str, Any]]] = {
    "redis": lambda t: {"socket_timeout": t, "socket_connect_timeout": t, "retry_on_timeout": False},
    "amqp": lambda t: {"read_timeout": t, "write_timeout": t},
}
_SCHEME_FAMILY = {"redis": "redis", "rediss": "redis", "amqp": "amqp", "amqps": "amqp", "pyamqp": "amqp"}


def redact_url(url: str) -> str:
    """The broker URL with its password replaced, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class BrokerSource:
    """Messages waiting per configured Celery queue. One connection is kept between polls and
    dropped on any error; the next poll reconnects."""

    name = "broker"

    def __init__(self, deployment: str, broker: BrokerConfig) -> None:
        self.deployment = deployment
        self._config = broker
        self._url = broker.url.value
        self._display_url = redact_url(self._url)
        self._family = _SCHEME_FAMILY[urlsplit(self._url).scheme]
        self._conn: kombu.Connection | None = None
        self._channel: Any = None

    def poll(self, now: float) -> BrokerState:
        try:
            return BrokerState(queues={q: self._depth(q) for q in self._config.queues})
        except SourceError:
            self.close()
            raise
        except Exception as e:
            self.close()
            raise self._error(e) from None

    def close(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None:
            try:
                conn.release()
            except Exception:  # closing a broken connection may fail again; nothing to do about it
                log.debug("broker %s: error while closing", self._display_url, exc_info=True)

    # ------------------------------------------------------------------ internals

    def _connection(self) -> kombu.Connection:
        if self._conn is None:
            timeout = self._config.timeout
            self._conn = kombu.Connection(
                self._url,
                connect_timeout=timeout,
                transport_options=_TRANSPORT_OPTIONS[self._family](timeout),
            )
        # max_retries=0: fail at once and let the poll loop retry; kombu's own retry sleeps 2 s.
        self._conn.ensure_connection(max_retries=0, reraise_as_library_errors=False)
        return self._conn

    def _depth(self, queue: str) -> int:
        conn = self._connection()
        if self._channel is None:
            self._channel = conn.channel()
        try:
            _, count, _ = self._channel.queue_declare(queue=queue, passive=True)
        except amqp.exceptions.NotFound:
            # RabbitMQ closes the channel on a 404; the connection stays usable.
            self._channel = None
            return 0
        except amqp.exceptions.ChannelError as e:
            # kombu's virtual transports (Redis) raise a plain ChannelError 404 for a missing key:
            # Redis deletes an empty list, so "missing" and "empty" are the same thing there.
            if getattr(e, "code", None) in (404, "404") or "NOT_FOUND" in str(e):
                return 0
            raise
        return int(count)

    def _error(self, e: Exception) -> SourceError:
        where = self._display_url
        if isinstance(e, amqp.exceptions.AccessRefused | redis.exceptions.AuthenticationError):
            reason, what = "auth", "authentication refused by"
        elif isinstance(e, socket.timeout | TimeoutError | redis.exceptions.TimeoutError):
            reason, what = "timeout", f"no answer within {self._config.timeout:g}s from"
        elif isinstance(
            e, ConnectionError | OSError | redis.exceptions.ConnectionError | amqp.exceptions.ConnectionError
        ):
            reason, what = "connect", "cannot connect to"
        else:
            reason, what = "protocol", "unexpected error from"
        detail = str(e) or type(e).__name__
        password = urlsplit(self._url).password
        if password:
            detail = detail.replace(password, "***")
        return SourceError(reason, f"{what} broker {where}: {detail}")
