"""The companion's durable state: alert state, notification log, outbox, receiver memos, silences.

Written once for both backends. Every public method is one transaction and is safe to call from
several threads (the backend serializes them on its connection).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from ..alerts.model import Alert, Matcher, NflogEntry, OutboxItem, Silence
from ..maintenance.audit import MaintenanceRun, RunStatus, TaskSummary, Trigger
from .backend import Backend, Leadership, StoreError, T, Tx
from .schema import migrate

# Delivered outbox items, resolved nflog entries, ended silences and idle memos are kept this
# long for history, then pruned.
RETENTION_S = 7 * 86400.0
# Keys per statement in nflog_get_many (well under SQLite's bound-parameter limit).
_CHUNK = 400
# Delivery errors can be whole HTTP bodies; keep what helps diagnose.
_MAX_ERROR_CHARS = 4000

_OUTBOX_COLUMNS = (
    "receiver",
    "integration",
    "group_key",
    "payload",
    "created_at",
    "attempts",
    "next_attempt_at",
    "last_error",
)
_SILENCE_COLUMNS = ("id", "matchers", "starts_at", "ends_at", "created_by", "comment", "expired_at")
_SELECT_SILENCES = f"SELECT {', '.join(_SILENCE_COLUMNS)} FROM ops_silence"
_MEMO_KEY = ("integration", "group_key")
_AUDIT_START = ("deployment", "task", "action", "trigger", "planned", "started_at", "status", "actor")
_AUDIT_FIGURES = ("rows_deleted", "files_deleted", "bytes_freed", "bytes_written")
_AUDIT_COLUMNS = ("id", *_AUDIT_START[:6], "finished_at", "status", "actor", "report")


class OpsStore:
    """Open with ``open_store(url)``; the schema is created or migrated on open."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._leaderships: list[Leadership] = []
        try:
            migrate(backend)
        except BaseException:
            backend.close()
            raise

    # --- alert state -------------------------------------------------------------------------

    def load_alerts(self) -> list[Alert]:
        rows = self._read(lambda tx: tx.query("SELECT alert FROM ops_alert ORDER BY fingerprint"))
        return [Alert.from_json(json.loads(text)) for (text,) in rows]

    def save_alerts(self, upserts: Sequence[Alert], removed: Sequence[str]) -> None:
        """Store ``upserts`` (keyed by fingerprint; the last of duplicates wins) and delete the
        ``removed`` fingerprints, in one transaction. A fingerprint in both is removed."""
        rows = {a.fingerprint: (a.fingerprint, json.dumps(a.to_json())) for a in upserts}
        gone = list(dict.fromkeys(removed))

        def write(tx: Tx) -> None:
            if rows:
                tx.upsert("ops_alert", ("fingerprint", "alert"), ("fingerprint",), list(rows.values()))
            if gone:
                tx.delete_keys("ops_alert", "fingerprint", gone)

        self._write(write)

    # --- notification log --------------------------------------------------------------------

    def nflog_get(self, receiver: str, group_key: str) -> NflogEntry | None:
        return self.nflog_get_many([(receiver, group_key)]).get((receiver, group_key))

    def nflog_get_many(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], NflogEntry]:
        wanted = list(dict.fromkeys(keys))

        def read(tx: Tx) -> list[tuple[Any, ...]]:
            rows: list[tuple[Any, ...]] = []
            for i in range(0, len(wanted), _CHUNK):
                chunk = wanted[i : i + _CHUNK]
                marks = ", ".join(["(?, ?)"] * len(chunk))
                rows += tx.query(
                    "SELECT receiver, group_key, firing, resolved, sent_at FROM ops_nflog "
                    f"WHERE (receiver, group_key) IN (VALUES {marks})",
                    [part for key in chunk for part in key],
                )
            return rows

        entries = (_nflog_from_row(row) for row in self._read(read)) if wanted else ()
        return {(e.receiver, e.group_key): e for e in entries}

    def record_notifications(self, entries: Sequence[NflogEntry], items: Sequence[OutboxItem]) -> list[int]:
        """Log ``entries`` (replacing earlier ones for the same receiver and group) and queue
        ``items`` in one transaction: a crash never leaves a notification logged but not queued,
        or queued but not logged. Returns the new outbox ids in the order of ``items``."""
        nflog_rows = {(e.receiver, e.group_key): _nflog_row(e) for e in entries}
        item_rows = [_outbox_row(item) for item in items]

        def write(tx: Tx) -> list[int]:
            if nflog_rows:
                tx.upsert(
                    "ops_nflog",
                    ("receiver", "group_key", "firing", "resolved", "sent_at"),
                    ("receiver", "group_key"),
                    list(nflog_rows.values()),
                )
            return [tx.insert_returning_id("ops_outbox", _OUTBOX_COLUMNS, row) for row in item_rows]

        return self._write(write)

    # --- outbox ------------------------------------------------------------------------------

    def outbox_due(self, now: float, limit: int = 100) -> list[OutboxItem]:
        """Undelivered items whose next attempt is due, oldest (first queued) first."""
        rows = self._read(
            lambda tx: tx.query(
                f"SELECT id, {', '.join(_OUTBOX_COLUMNS)} FROM ops_outbox "
                "WHERE delivered_at IS NULL AND next_attempt_at <= ? ORDER BY id LIMIT ?",
                (now, limit),
            )
        )
        return [OutboxItem(*row) for row in rows]

    def outbox_delivered(self, item_id: int, at: float) -> None:
        self._update_item(item_id, "UPDATE ops_outbox SET delivered_at = ? WHERE id = ?", (at, item_id))

    def outbox_failed(self, item_id: int, error: str, next_attempt_at: float) -> None:
        """Count a failed attempt and keep the item for another at ``next_attempt_at``."""
        self._update_item(
            item_id,
            "UPDATE ops_outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? WHERE id = ?",
            (error[:_MAX_ERROR_CHARS], next_attempt_at, item_id),
        )

    def _update_item(self, item_id: int, sql: str, params: tuple[Any, ...]) -> None:
        if not self._write(lambda tx: tx.execute(sql, params)):
            raise StoreError(f"no outbox item with id {item_id}")

    def outbox_waiting(self, now: float) -> dict[tuple[str, str], int]:
        """Per (integration, group_key), the first undelivered item that is not due yet (waiting
        out a backoff): it holds the later items of its group back."""
        rows = self._read(
            lambda tx: tx.query(
                "SELECT integration, group_key, MIN(id) FROM ops_outbox "
                "WHERE delivered_at IS NULL AND next_attempt_at > ? GROUP BY integration, group_key",
                (now,),
            )
        )
        return {(integration, group_key): int(first) for integration, group_key, first in rows}

    def outbox_pending_count(self) -> int:
        return int(self._scalar("SELECT COUNT(*) FROM ops_outbox WHERE delivered_at IS NULL"))

    def outbox_next_due(self) -> float | None:
        """When the earliest undelivered item is due (None if nothing is waiting)."""
        return self._scalar("SELECT MIN(next_attempt_at) FROM ops_outbox WHERE delivered_at IS NULL")

    # --- receiver memos ----------------------------------------------------------------------

    def memo_get(self, integration: str, group_key: str) -> dict[str, Any] | None:
        rows = self._read(
            lambda tx: tx.query(
                "SELECT memo FROM ops_memo WHERE integration = ? AND group_key = ?", (integration, group_key)
            )
        )
        return json.loads(rows[0][0]) if rows else None

    def memo_put(self, integration: str, group_key: str, memo: dict[str, Any]) -> None:
        """Remember ``memo`` (e.g. the Slack message ts to update) for an integration's group,
        replacing the previous one."""
        row = (integration, group_key, json.dumps(memo, sort_keys=True), time.time())
        self._write(
            lambda tx: tx.upsert(
                "ops_memo", ("integration", "group_key", "memo", "updated_at"), _MEMO_KEY, [row]
            )
        )

    # --- silences ----------------------------------------------------------------------------

    def silence_add(self, s: Silence) -> Silence:
        """Store ``s`` (replacing a silence with the same id); an empty id gets a new uuid4."""
        if not s.id:
            s = replace(s, id=str(uuid.uuid4()))
        row = _silence_row(s)
        self._write(lambda tx: tx.upsert("ops_silence", _SILENCE_COLUMNS, ("id",), [row]))
        return s

    def silence_get(self, silence_id: str) -> Silence | None:
        rows = self._read(lambda tx: tx.query(f"{_SELECT_SILENCES} WHERE id = ?", (silence_id,)))
        return _silence_from_row(rows[0]) if rows else None

    def silence_list(self, now: float, include_expired: bool = False) -> list[Silence]:
        """Silences not yet ended at ``now`` (active or pending), or all with include_expired;
        ordered by start time."""
        where = "" if include_expired else "WHERE ends_at > ? AND (expired_at IS NULL OR expired_at > ?)"
        rows = self._read(
            lambda tx: tx.query(
                f"{_SELECT_SILENCES} {where} ORDER BY starts_at, id",
                () if include_expired else (now, now),
            )
        )
        return [_silence_from_row(row) for row in rows]

    def silence_expire(self, silence_id: str, now: float) -> Silence:
        """End a silence at ``now``. One already ended is returned unchanged."""

        def write(tx: Tx) -> Silence:
            rows = tx.query(f"{_SELECT_SILENCES} WHERE id = ?", (silence_id,))
            if not rows:
                raise StoreError(f"no silence with id {silence_id}")
            s = _silence_from_row(rows[0])
            if s.ends_at <= now or (s.expired_at is not None and s.expired_at <= now):
                return s
            tx.execute("UPDATE ops_silence SET expired_at = ? WHERE id = ?", (now, silence_id))
            return replace(s, expired_at=now)

        return self._write(write)

    # --- housekeeping ------------------------------------------------------------------------

    def prune(self, now: float) -> int:
        """Drop history older than RETENTION_S: delivered outbox items, nflog entries whose last
        word was "all resolved", ended silences, and memos of groups no longer firing. Returns
        the number of rows removed."""
        cutoff = now - RETENTION_S

        def write(tx: Tx) -> int:
            return (
                tx.execute("DELETE FROM ops_outbox WHERE delivered_at < ?", (cutoff,))
                + tx.execute("DELETE FROM ops_nflog WHERE firing = '[]' AND sent_at < ?", (cutoff,))
                + tx.execute(
                    "DELETE FROM ops_silence WHERE ends_at < ? OR expired_at < ?",
                    (cutoff, cutoff),
                )
                + tx.execute(
                    "DELETE FROM ops_memo WHERE updated_at < ? AND NOT EXISTS (SELECT 1 FROM ops_nflog n "
                    "WHERE n.group_key = ops_memo.group_key AND n.firing <> '[]')",
                    (cutoff,),
                )
            )

        return self._write(write)

    # --- maintenance audit ---------------------------------------------------------------------

    def audit_start(
        self,
        *,
        deployment: str,
        task: str,
        action: str,
        trigger: Trigger,
        planned: bool,
        actor: str,
        now: float,
    ) -> int:
        """Record that a maintenance run starts; returns its id for :meth:`audit_finish`."""
        row = (deployment, task, action, trigger.value, int(planned), now, RunStatus.RUNNING.value, actor)
        return self._write(lambda tx: tx.insert_returning_id("ops_maintenance_run", _AUDIT_START, row))

    def audit_finish(self, run_id: int, status: RunStatus, report: dict[str, Any], now: float) -> None:
        figures = tuple(int(report.get(k) or 0) for k in _AUDIT_FIGURES)
        sql = (
            "UPDATE ops_maintenance_run SET finished_at = ?, status = ?, action = ?, report = ?, "
            + ", ".join(f"{k} = ?" for k in _AUDIT_FIGURES)
            + " WHERE id = ?"
        )
        action = str(report.get("action") or "")
        params = (now, status.value, action, json.dumps(report, default=str), *figures, run_id)
        if self._write(lambda tx: tx.execute(sql, params)) != 1:
            raise StoreError(f"no maintenance run with id {run_id}")

    def audit_runs(
        self, *, deployment: str | None = None, task: str | None = None, limit: int = 50
    ) -> list[MaintenanceRun]:
        """The newest runs first, optionally of one deployment and/or task."""
        where, params = [], []
        for column, value in (("deployment", deployment), ("task", task)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        sql = f"SELECT {', '.join(_AUDIT_COLUMNS)} FROM ops_maintenance_run"
        sql += (" WHERE " + " AND ".join(where)) if where else ""
        sql += " ORDER BY started_at DESC, id DESC LIMIT ?"
        rows = self._read(lambda tx: tx.query(sql, (*params, limit)))
        return [_run_from_row(r) for r in rows]

    def audit_summary(self) -> list[TaskSummary]:
        """Per deployment and task: the last real (not dry) run, the last success, and the
        figures summed over every finished run (monotonic: audit records are never pruned)."""
        sums = ", ".join(f"SUM({k}) AS {k}" for k in _AUDIT_FIGURES)
        sql = f"""
            SELECT r.deployment, r.task, r.started_at, r.status,
                   (SELECT MAX(s.finished_at) FROM ops_maintenance_run s
                     WHERE s.deployment = r.deployment AND s.task = r.task
                       AND s.status = 'success' AND s.planned = 0),
                   {", ".join(f"t.{k}" for k in _AUDIT_FIGURES)}
              FROM (SELECT MAX(id) AS last_id, {sums}
                      FROM ops_maintenance_run WHERE planned = 0 GROUP BY deployment, task) AS t
              JOIN ops_maintenance_run r ON r.id = t.last_id
             ORDER BY r.deployment, r.task"""
        rows = self._read(lambda tx: tx.query(sql))
        return [
            TaskSummary(dep, task, started, RunStatus(status), success, *(int(v or 0) for v in figures))
            for dep, task, started, status, success, *figures in rows
        ]

    # --- leadership and lifetime ---------------------------------------------------------------

    def leadership(self, name: str = "alerting") -> Leadership:
        """A handle on leadership ``name`` among the replicas sharing this store (released by
        ``close``)."""
        lead = self._backend.leadership(name)
        self._leaderships.append(lead)
        return lead

    def close(self) -> None:
        for lead in self._leaderships:
            lead.release()
        self._leaderships.clear()
        self._backend.close()

    def __enter__(self) -> OpsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _scalar(self, sql: str) -> Any:
        return self._read(lambda tx: tx.query(sql))[0][0]

    def _read(self, fn: Callable[[Tx], T]) -> T:
        return self._backend.run(fn, write=False)

    def _write(self, fn: Callable[[Tx], T]) -> T:
        return self._backend.run(fn, write=True)


def _nflog_row(e: NflogEntry) -> tuple[Any, ...]:
    return (e.receiver, e.group_key, json.dumps(sorted(e.firing)), json.dumps(sorted(e.resolved)), e.sent_at)


def _nflog_from_row(row: Sequence[Any]) -> NflogEntry:
    receiver, group_key, firing, resolved, sent_at = row
    firing_set, resolved_set = frozenset(json.loads(firing)), frozenset(json.loads(resolved))
    return NflogEntry(receiver, group_key, firing_set, resolved_set, sent_at)


def _outbox_row(item: OutboxItem) -> tuple[Any, ...]:
    return tuple(getattr(item, c) for c in _OUTBOX_COLUMNS)


def _silence_row(s: Silence) -> tuple[Any, ...]:
    matchers = json.dumps([[m.name, m.op, m.value] for m in s.matchers])
    return (s.id, matchers, s.starts_at, s.ends_at, s.created_by, s.comment, s.expired_at)


def _silence_from_row(row: Sequence[Any]) -> Silence:
    silence_id, matchers, starts_at, ends_at, created_by, comment, expired_at = row
    ms = tuple(Matcher(*m) for m in json.loads(matchers))
    return Silence(silence_id, ms, starts_at, ends_at, created_by, comment, expired_at)


def _run_from_row(row: Sequence[Any]) -> MaintenanceRun:
    run_id, dep, task, action, trigger, planned, started, finished, status, actor, report = row
    return MaintenanceRun(
        int(run_id),
        dep,
        task,
        action,
        Trigger(trigger),
        bool(planned),
        started,
        finished,
        RunStatus(status),
        actor,
        json.loads(report) if report else None,
    )
