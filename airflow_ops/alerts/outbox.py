"""Delivers what the dispatcher queued in the ops store's outbox: once each, in order per group,
paced per destination, and retried until delivered.

A notification is never dropped: a failed attempt (Slack 429 with ``Retry-After``, a 5xx, SMTP
down) is rescheduled in the store, so it survives restarts; the wait doubles up to
``MAX_BACKOFF`` and a 429's ``Retry-After`` pauses the whole destination, not just the item.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from ..snapshot import HistogramAccumulator
from ..store import OpsStore
from .model import Notification, OutboxItem
from .receivers import DeliveryError, Integration

log = logging.getLogger(__name__)

FIRST_BACKOFF = 5.0
MAX_BACKOFF = 600.0
# An integration that no longer exists in the config keeps its items: they are retried this
# rarely, in case the config comes back, and show in the pending count meanwhile.
ORPHAN_RETRY = 3600.0
LATENCY_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


def backoff(attempts: int) -> float:
    """Seconds before attempt ``attempts + 1`` after ``attempts`` failures."""
    return min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** max(0, attempts - 1))


@dataclass
class DeliveryStats:
    """What the service exports about delivery (``airflow_ops_notifications_total`` etc.)."""

    outcomes: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (deployment, receiver, outcome)
    latency: dict[tuple[str, str], HistogramAccumulator] = field(default_factory=dict)

    def count(self, deployment: str, receiver: str, outcome: str) -> None:
        key = (deployment, receiver, outcome)
        self.outcomes[key] = self.outcomes.get(key, 0) + 1

    def observe(self, deployment: str, receiver: str, seconds: float) -> None:
        hist = self.latency.get((deployment, receiver))
        if hist is None:
            hist = self.latency[(deployment, receiver)] = HistogramAccumulator(LATENCY_BUCKETS)
        hist.observe(seconds)


class OutboxWorker:
    def __init__(
        self,
        store: OpsStore,
        integrations: Iterable[Integration],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._integrations: Mapping[str, Integration] = {i.key: i for i in integrations}
        self._clock = clock
        # rate_key -> earliest next send (pacing and 429 pauses)
        self._not_before: dict[str, float] = {}
        self.stats = DeliveryStats()
        self._lock = threading.Lock()

    def deliver_due(self) -> int:
        """Attempt every due item once (respecting pacing); returns how many were delivered."""
        with self._lock:
            delivered = 0
            now = self._clock()
            due = self._store.outbox_due(now, limit=200)
            if not due:
                return 0
            # An earlier item of the same (integration, group) that is not delivered yet holds the
            # later ones back: a "resolved" must never overtake its "firing". That earlier item
            # may be waiting out a backoff (not due, so not in ``due``): look in the store, not in
            # memory, so the order also holds after a restart or a change of leader.
            held = self._store.outbox_waiting(now)
            blocked: set[tuple[str, str]] = set()
            for item in due:
                key = (item.integration, item.group_key)
                if key in blocked or held.get(key, item.id) < item.id:
                    continue
                if self._attempt(item):
                    delivered += 1
                else:
                    blocked.add(key)
            return delivered

    def _attempt(self, item: OutboxItem) -> bool:
        integration = self._integrations.get(item.integration)
        now = self._clock()
        notification = Notification.from_json(item.payload)
        deployment = notification.common_labels.get("deployment", "")
        if integration is None:
            self._store.outbox_failed(
                item.id, f"integration {item.integration} is not configured any more", now + ORPHAN_RETRY
            )
            return False
        if not integration.send_resolved and not notification.firing:
            # Logged in the nflog (so dedup stays right) but not wanted by this destination.
            self._store.outbox_delivered(item.id, now)
            self.stats.count(deployment, item.receiver, "skipped")
            return True
        not_before = self._not_before.get(integration.rate_key, 0.0)
        if now < not_before:
            return False  # paced: stays due, tried again on the next round
        memo = self._store.memo_get(item.integration, item.group_key)
        try:
            new_memo = integration.send(notification, memo)
        except DeliveryError as e:
            attempts = item.attempts + 1
            wait = e.retry_after if e.retry_after is not None else backoff(attempts)
            if e.retry_after is not None:
                self._not_before[integration.rate_key] = now + wait
            self._store.outbox_failed(item.id, str(e), now + wait)
            outcome = "rate_limited" if e.retry_after is not None else "failed"
            self.stats.count(deployment, item.receiver, outcome)
            log.warning(
                "notification to %s failed (attempt %d, retry in %.0fs%s): %s",
                item.integration,
                attempts,
                wait,
                ", check the receiver's config" if e.permanent else "",
                e,
            )
            return False
        except Exception as e:  # a bug in an integration must not stop delivery of the others
            self._store.outbox_failed(item.id, f"{type(e).__name__}", now + backoff(item.attempts + 1))
            self.stats.count(deployment, item.receiver, "failed")
            log.exception("notification to %s raised unexpectedly", item.integration)
            return False
        done = self._clock()
        if integration.min_interval:
            self._not_before[integration.rate_key] = done + integration.min_interval
        if new_memo is not None or memo:
            # None after a memo means "forget it" (e.g. the resolved Slack message is final).
            self._store.memo_put(item.integration, item.group_key, new_memo or {})
        self._store.outbox_delivered(item.id, done)
        self.stats.count(deployment, item.receiver, "delivered")
        self.stats.observe(deployment, item.receiver, max(0.0, done - item.created_at))
        log.info(
            "notified %s: %s %s (%d alert(s))",
            item.integration,
            notification.status,
            item.group_key,
            len(notification.alerts),
        )
        return True
