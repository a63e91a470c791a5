"""From the evaluator's alerts to queued notifications, with Alertmanager's semantics
(``dispatch/dispatch.go`` and the notify pipeline of ``notify/notify.go``).

- **Aggregation groups**: each alert goes to the routes it matches; on each route it joins the
  group of its ``group_by`` labels. A group is created when its first alert arrives, flushes first
  at creation + ``group_wait``, then every ``group_interval``, and is dropped once empty. After a
  flush its resolved alerts leave it (they have been dealt with), as in Alertmanager.
- **Muting** (Alertmanager's mute stages): at flush, silenced, inhibited and paused-DAG alerts are
  left out before dedup; a group with nothing left is not considered at all.
- **Dedup** (``DedupStage.needsUpdate``), per integration against the persisted notification log:
  notify on the first firing, on new firing alerts, when all alerts resolved, on newly resolved
  alerts if the integration sends resolved ones, and when ``repeat_interval`` elapsed.
- **Delivery** is someone else's job: a flush writes its notification-log entries and outbox items
  in one store call, so a crash can neither lose a decided notification nor send it twice.

The clock is the ``now`` passed in; nothing here sleeps or starts threads. After a restart the
groups are rebuilt from the persisted alerts and the persisted log prevents duplicates.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Protocol

from ..config.alerting import AlertingConfig
from .inhibition import Inhibitor
from .model import Alert, AlertState, NflogEntry, Notification, OutboxItem, Silence, fingerprint
from .routing import Route, build_route_tree

DAG_ID = "dag_id"
DEPLOYMENT = "deployment"


@dataclass(frozen=True)
class IntegrationInfo:
    """One notifier of a receiver (e.g. its first Slack config). ``key`` names it in the
    notification log and the outbox, so it must be unique across all receivers."""

    key: str
    receiver: str
    send_resolved: bool


class NotifyStore(Protocol):
    def nflog_get_many(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], NflogEntry]: ...

    def record_notifications(
        self, entries: Sequence[NflogEntry], items: Sequence[OutboxItem]
    ) -> list[int]: ...


class NotifyReason(Enum):
    """Why the dedup stage lets a notification through (Alertmanager's NotifyReason)."""

    DO_NOT_NOTIFY = "do_not_notify"
    FIRST_NOTIFICATION = "first_notification"
    NEW_ALERTS_IN_GROUP = "new_alerts_in_group"
    ALL_ALERTS_RESOLVED = "all_alerts_resolved"
    NEW_RESOLVED_ALERTS = "new_resolved_alerts"
    REPEAT_INTERVAL_ELAPSED = "repeat_interval_elapsed"


def needs_update(
    entry: NflogEntry | None,
    firing: frozenset[str],
    resolved: frozenset[str],
    *,
    send_resolved: bool,
    repeat_interval: float,
    now: float,
) -> NotifyReason:
    """Alertmanager's ``DedupStage.needsUpdate``: compare a group's current (unmuted) firing and
    resolved fingerprints with what this integration was last told."""
    if entry is None:
        # Never notified: only firing alerts are worth a first message.
        return NotifyReason.FIRST_NOTIFICATION if firing else NotifyReason.DO_NOT_NOTIFY
    if not firing <= entry.firing:
        # After an all-resolved entry, a new firing is a first notification again.
        return NotifyReason.FIRST_NOTIFICATION if not entry.firing else NotifyReason.NEW_ALERTS_IN_GROUP
    if not firing:
        # Regardless of send_resolved, so the log forgets the firing alerts. If the receiver was
        # never told about any firing alert (fired and resolved within an interval), stay quiet.
        return NotifyReason.ALL_ALERTS_RESOLVED if entry.firing else NotifyReason.DO_NOT_NOTIFY
    if send_resolved and not resolved <= entry.resolved:
        return NotifyReason.NEW_RESOLVED_ALERTS
    if entry.sent_at < now - repeat_interval:
        return NotifyReason.REPEAT_INTERVAL_ELAPSED
    return NotifyReason.DO_NOT_NOTIFY


@dataclass(eq=False)
class _Group:
    route: Route
    key: str
    labels: dict[str, str]
    next_at: float
    alerts: dict[str, Alert] = field(default_factory=dict)  # by fingerprint
    alive: bool = True


@dataclass(frozen=True)
class _Mutes:
    """What mutes one alert (Alertmanager's mute stages), apart from the silences' time windows."""

    paused: bool  # its DAG is paused in its deployment
    inhibited_by: list[str]
    silences: list[Silence]  # whose matchers match, active or not

    def mute(self, route: Route, now: float) -> bool:
        return (
            (self.paused and route.mute_paused_dags)
            or bool(self.inhibited_by)
            or any(s.active(now) for s in self.silences)
        )


class _Routed:
    """What is known about one label set once and for all: its fingerprint, routes and groups."""

    __slots__ = ("fp", "group_keys", "group_labels", "groups", "routes", "source")

    def __init__(self, fp: str, routes: list[Route], source: bool) -> None:
        self.fp = fp
        self.routes = routes
        self.source = source  # matches some inhibit rule's source matchers
        self.group_labels: list[dict[str, str]] = []
        self.group_keys: list[str] = []
        self.groups: list[_Group | None] = [None] * len(routes)  # its live groups (see _regroup)


class Dispatcher:
    def __init__(
        self,
        config: AlertingConfig,
        integrations: Mapping[str, Sequence[IntegrationInfo]],
        store: NotifyStore,
        external_url: str = "",
    ) -> None:
        keys = [i.key for infos in integrations.values() for i in infos]
        if len(keys) != len(set(keys)):
            raise ValueError(f"integration keys must be unique across receivers: {sorted(keys)}")
        for name, infos in integrations.items():
            if any(i.receiver != name for i in infos):
                raise ValueError(f"integrations listed under receiver {name!r} name another receiver")
        self.route = build_route_tree(config)
        self._integrations = integrations
        self._store = store
        self._external_url = external_url
        self._inhibitor = Inhibitor(config.inhibit_rules)
        self._inhibitor_stale = False
        self._groups: dict[tuple[int, str], _Group] = {}
        # Routing is a function of the labels, cached twice: by the labels dict itself, the fast path
        # when the evaluator hands the same dicts again (labels are an alert's identity, never
        # changed in place), and by label items when the dicts are new.
        self._by_dict: dict[int, tuple[Mapping[str, str], _Routed]] = {}
        self._by_items: dict[tuple[tuple[str, str], ...], _Routed] = {}
        self._present: dict[str, _Routed] = {}  # fingerprints of the alerts in the last update
        self._sources: dict[str, Alert] = {}  # firing alerts that may inhibit others
        self._retired: dict[str, float | None] = {}  # resolved alerts already flushed -> resolved_at
        self._silences: tuple[Silence, ...] = ()
        self._paused: frozenset[tuple[str, str]] = frozenset()
        # Why each alert is muted, by fingerprint; dropped whenever silences, paused DAGs or
        # inhibiting alerts change. Only the silences' time windows are checked at each flush.
        self._mutes: dict[str, _Mutes | None] = {}
        # The notification log as read from and written to the store (None: no entry). This
        # dispatcher is the only writer while its replica leads (a new leader makes a new
        # dispatcher), so the store is read once per group, not at every flush of every group.
        self._nflog: dict[tuple[str, str], NflogEntry | None] = {}

    # -- intake ---------------------------------------------------------------------------------

    def update(
        self,
        alerts: Sequence[Alert],
        now: float,
        *,
        silences: Sequence[Silence] = (),
        paused_dags: Collection[tuple[str, str]] = (),
    ) -> None:
        """Take the evaluator's current alerts (all of them; pending ones are ignored) and the current
        silences and paused DAGs (``(deployment, dag_id)``)."""
        silences, paused = tuple(silences), frozenset(paused_dags)
        if silences != self._silences or paused != self._paused:
            self._silences, self._paused = silences, paused
            self._mutes = {}
        by_dict = self._by_dict
        retired, new_retired = self._retired, {}
        present: dict[str, _Routed] = {}
        sources: dict[str, Alert] = {}
        firing_state, resolved_state = AlertState.FIRING, AlertState.RESOLVED
        for alert in alerts:
            state = alert.state
            if state is not firing_state and state is not resolved_state:
                continue
            labels = alert.labels
            hit = by_dict.get(id(labels))
            if hit is None or hit[0] is not labels:  # the cached dict is held, so its id is not reused
                hit = by_dict[id(labels)] = (labels, self._routing(labels))
            routed = hit[1]
            fp = routed.fp
            if state is resolved_state:
                if fp in retired and retired[fp] == alert.resolved_at:
                    new_retired[fp] = alert.resolved_at  # already flushed: do not regroup it
                    continue
            elif routed.source:
                sources[fp] = alert
            present[fp] = routed
            for group in routed.groups:
                if group is None or not group.alive:  # not made yet, or dropped since: (re)make them
                    self._regroup(routed, now)
                    break
                group.alerts[fp] = alert
            else:
                continue
            for group in routed.groups:
                if group is not None:  # always, after _regroup
                    group.alerts[fp] = alert
        # An alert the evaluator no longer reports is resolved, as in Alertmanager when an alert
        # stops being re-sent: its receivers still get the recovery.
        for fp in self._present.keys() - present.keys():
            for group in self._present[fp].groups:
                if group is None or not group.alive:
                    continue
                alert = group.alerts.get(fp)
                if alert is not None and alert.state is firing_state:
                    group.alerts[fp] = replace(alert, state=resolved_state, resolved_at=now)
        self._retired, self._present = new_retired, present
        # The caches outlive the alerts they were made for: trim them once they outgrow the alerts.
        limit = 2 * len(present) + 1000
        if len(by_dict) > limit:  # every id of this cycle's labels maps to its own dict (see above)
            self._by_dict = {id(a.labels): by_dict[id(a.labels)] for a in alerts if id(a.labels) in by_dict}
        if len(self._by_items) > limit:
            self._by_items = {k: r for k, r in self._by_items.items() if r.fp in present}
        if len(self._mutes) > limit:
            self._mutes = {fp: m for fp, m in self._mutes.items() if fp in present}
        # Labels are identities, so the inhibition index only changes with the set of sources.
        if sources.keys() != self._sources.keys():
            self._sources, self._inhibitor_stale = sources, True
            self._mutes = {}

    def _routing(self, labels: Mapping[str, str]) -> _Routed:
        key = tuple(labels.items())
        routed = self._by_items.get(key)
        if routed is None:
            routed = self._by_items[key] = self._route(labels)
        return routed

    def _route(self, labels: Mapping[str, str]) -> _Routed:
        routes = self.route.match(labels)
        routed = _Routed(fingerprint(labels), routes, self._inhibitor.is_source(labels))
        for route in routes:
            group_labels = route.group_labels(labels)
            routed.group_labels.append(group_labels)
            routed.group_keys.append(route.group_key(group_labels))
        return routed

    def _regroup(self, routed: _Routed, now: float) -> None:
        """Point ``routed`` at its live groups, creating those that do not exist (yet or any more)."""
        for i, route in enumerate(routed.routes):
            current = routed.groups[i]
            if current is not None and current.alive:
                continue
            key = routed.group_keys[i]
            group = self._groups.get((route.index, key))
            if group is None:
                group = _Group(route, key, routed.group_labels[i], next_at=now + route.group_wait)
                self._groups[(route.index, key)] = group
            routed.groups[i] = group

    # -- flushing -------------------------------------------------------------------------------

    def next_flush_at(self) -> float | None:
        return min((g.next_at for g in self._groups.values()), default=None)

    def due_firing(self, now: float) -> list[Alert]:
        """The firing alerts of the groups a flush at ``now`` would look at."""
        firing = AlertState.FIRING
        return [
            a
            for g in self._groups.values()
            if g.next_at <= now
            for a in g.alerts.values()
            if a.state is firing
        ]

    def flush(
        self, now: float, enrich: Callable[[Notification], Notification] | None = None
    ) -> list[Notification]:
        """Flush every group that is due: decide per integration, enrich what will be sent, and
        queue it (outbox items + notification-log entries) in one store call."""
        due = [g for g in self._groups.values() if g.next_at <= now]
        if not due:
            return []
        pending: list[tuple[_Group, dict[str, Alert], frozenset[str], Sequence[IntegrationInfo]]] = []
        for group in due:
            nxt = group.next_at + group.route.group_interval
            group.next_at = nxt if nxt > now else now + group.route.group_interval
            integrations = self._integrations.get(group.route.receiver, ())
            if not integrations:
                continue
            # Alertmanager's mute stages, then its dedup stage on what is left.
            unmuted: dict[str, Alert] = {}
            firing: list[str] = []
            for fp, alert in group.alerts.items():
                mutes = self._mutes[fp] if fp in self._mutes else self._mutes_of(fp, alert.labels)
                if mutes is not None and mutes.mute(group.route, now):
                    continue
                unmuted[fp] = alert
                if alert.state is AlertState.FIRING:
                    firing.append(fp)
            if unmuted:
                pending.append((group, unmuted, frozenset(firing), integrations))
        log = self._nflog_for([(i.key, g.key) for g, _, _, infos in pending for i in infos])

        entries: list[NflogEntry] = []
        notifications: list[tuple[IntegrationInfo, Notification]] = []
        for group, unmuted, firing, integrations in pending:
            resolved = frozenset(unmuted.keys() - firing)
            for info in integrations:
                reason = needs_update(
                    log.get((info.key, group.key)),
                    firing,
                    resolved,
                    send_resolved=info.send_resolved,
                    repeat_interval=group.route.repeat_interval,
                    now=now,
                )
                if reason is NotifyReason.DO_NOT_NOTIFY:
                    continue
                entries.append(NflogEntry(info.key, group.key, firing, resolved, now))
                if not firing and not info.send_resolved:
                    continue  # logged as told, so the next firing counts as new; nothing to say
                shown = unmuted.values() if info.send_resolved else (unmuted[fp] for fp in firing)
                notifications.append((info, self._notification(group, shown, now, reason)))

        if enrich is not None:
            notifications = [(info, enrich(n)) for info, n in notifications]
        items = [
            OutboxItem(
                id=0,
                receiver=info.receiver,
                integration=info.key,
                group_key=n.group_key,
                payload=n.to_json(),
                created_at=now,
                next_attempt_at=now,
            )
            for info, n in notifications
        ]
        if entries:
            self._store.record_notifications(entries, items)
            log.update(((e.receiver, e.group_key), e) for e in entries)
        self._retire_resolved(due)
        return [n for _, n in notifications]

    def _nflog_for(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], NflogEntry | None]:
        """The notification log, with the entries of ``keys`` read from the store if not known yet."""
        log = self._nflog
        missing = [k for k in keys if k not in log]
        if missing:
            found = self._store.nflog_get_many(missing)
            log.update((k, found.get(k)) for k in missing)
        if len(log) > 2 * len(self._groups) * max(1, len(self._integrations)) + 1000:
            live = {g.key for g in self._groups.values()}
            self._nflog = {k: e for k, e in log.items() if k[1] in live}
            log = self._nflog
        return log

    def _notification(
        self, group: _Group, alerts: Iterable[Alert], now: float, reason: NotifyReason
    ) -> Notification:
        return Notification(
            receiver=group.route.receiver,
            group_key=group.key,
            group_labels=dict(group.labels),
            alerts=tuple(sorted(alerts, key=lambda a: sorted(a.labels.items()))),
            created_at=now,
            external_url=self._external_url,
            reminder=reason is NotifyReason.REPEAT_INTERVAL_ELAPSED,
        )

    def _retire_resolved(self, flushed: list[_Group]) -> None:
        """Resolved alerts leave a group once it flushed (Alertmanager deletes them after notify);
        remembering their resolved_at keeps later updates from regrouping them. Empty groups go."""
        for group in flushed:
            done = [fp for fp, a in group.alerts.items() if a.state is AlertState.RESOLVED]
            for fp in done:
                self._retired[fp] = group.alerts.pop(fp).resolved_at
            if not group.alerts:
                group.alive = False
                del self._groups[(group.route.index, group.key)]

    # -- muting ---------------------------------------------------------------------------------

    def _inhibitor_now(self) -> Inhibitor:
        if self._inhibitor_stale:
            self._inhibitor.set_alerts(self._sources)
            self._inhibitor_stale = False
        return self._inhibitor

    def _mutes_of(self, fp: str, labels: Mapping[str, str]) -> _Mutes | None:
        """What may mute the alert (None: nothing), computed once per change of silences, paused
        DAGs or inhibiting alerts."""
        if fp not in self._mutes:
            mutes = _Mutes(
                paused=self._paused_dag(labels),
                inhibited_by=self._inhibitor_now().inhibited_by(labels, fp),
                silences=[s for s in self._silences if s.matches_labels(labels)],
            )
            self._mutes[fp] = mutes if mutes.paused or mutes.inhibited_by or mutes.silences else None
        return self._mutes[fp]

    def _paused_dag(self, labels: Mapping[str, str]) -> bool:
        dag_id = labels.get(DAG_ID)
        return dag_id is not None and (labels.get(DEPLOYMENT, ""), dag_id) in self._paused

    def status(self, alert: Alert, now: float) -> dict[str, Any]:
        """Why an alert is (not) notified: the silences and alerts muting it, whether it is muted for
        a paused DAG, and the receivers it routes to."""
        routed = self._routing(alert.labels)
        mutes = self._mutes_of(routed.fp, alert.labels) or _Mutes(False, [], [])
        return {
            "silenced_by": [s.id for s in mutes.silences if s.active(now)],
            "inhibited_by": list(mutes.inhibited_by),
            "muted_paused": mutes.paused and any(r.mute_paused_dags for r in routed.routes),
            "receivers": list(dict.fromkeys(r.receiver for r in routed.routes)),
        }
