"""The alert engine inside ``airflow-ops serve``: each poll it evaluates the rules over the samples
just rendered and hands the alerts to the dispatcher; a background thread flushes due groups and
delivers the outbox.

Only the replica holding the store's leadership lock evaluates and notifies; the others serve
``/metrics`` and take over (restoring alert state, ``for`` timers and the notification log from the
store) on the first poll after the leader is gone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..airflow.failures import failure_context
from ..airflow.rest import RestApiSource
from ..airflow.source import SourceError
from ..config import Config, mask
from ..exposition import Family
from ..snapshot import AlertingState, DagInfo, Snapshot
from ..store import OpsStore
from .dispatcher import Dispatcher, IntegrationInfo
from .evaluator import Evaluator
from .model import Alert, AlertState, Notification, SampleReader
from .outbox import OutboxWorker
from .receivers import Integration, build_integrations
from .rules import Rule, load_rule_files

log = logging.getLogger(__name__)

TICK_SECONDS = 0.25
DAG_ID = "dag_id"
DEPLOYMENT = "deployment"
FAILURE_METRICS = frozenset({"airflow_dag_failing_seconds", "airflow_task_failing_streak"})


class AlertEngine:
    def __init__(
        self,
        config: Config,
        store: OpsStore,
        *,
        base_dir: Path | None = None,
        clock: Callable[[], float] = time.time,
        external_url: str = "",
    ) -> None:
        assert config.alerting is not None
        self._config = config
        self._alerting = config.alerting
        self._store = store
        self._clock = clock
        self.rules: list[Rule] = load_rule_files(self._alerting.rule_files, base_dir)
        self._samples = SampleReader(_metric_names(self.rules))
        self.external_url = self._alerting.external_url or external_url
        self._integrations: list[Integration] = [
            i for receiver in self._alerting.receivers for i in build_integrations(receiver)
        ]
        self._infos = {
            r.name: [
                IntegrationInfo(i.key, r.name, i.send_resolved)
                for i in self._integrations
                if i.receiver == r.name
            ]
            for r in self._alerting.receivers
        }
        self._leadership = store.leadership("alerting")
        self._leader = False
        self._evaluator = Evaluator(self.rules)
        self._dispatcher = self._new_dispatcher()
        self.outbox = OutboxWorker(store, self._integrations, clock)
        self._apis: dict[str, RestApiSource] = {}
        # (deployment, dag_id, alert active since) -> context: fetched once per failure episode.
        self._context_cache: dict[tuple[str, str, float], dict[str, Any] | None] = {}
        # Notifications of these alerts carry the failed tasks and log tails: the rules that read
        # DAG or task failures, whatever they are named.
        self._failure_alerts = {r.name for r in self.rules if r.expr.metric in FAILURE_METRICS}
        self._current: list[Alert] = []
        # Last known facts per (deployment, dag_id): kept when a poll of the DB fails, so alert
        # labels (and so their identity for dedup) do not flap with the DB's availability.
        self._dags: dict[tuple[str, str], DagInfo] = {}
        self._enriched: dict[int, tuple[Alert, DagInfo | None, Alert]] = {}
        self._routed_labels: dict[int, tuple[dict[str, str], DagInfo | None, dict[str, str]]] = {}
        self._source: dict[int, Alert] = {}  # routed labels (by identity) -> the evaluator's alert
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _new_dispatcher(self) -> Dispatcher:
        return Dispatcher(self._alerting, self._infos, self._store, self.external_url)

    # ------------------------------------------------------------------ per poll

    @property
    def leader(self) -> bool:
        return self._leader

    def evaluate(self, families: Sequence[Family], snapshots: Sequence[Snapshot]) -> list[Alert]:
        """Evaluate the rules over one poll's render. Returns the current alerts (all states)."""
        with self._lock:
            now = self._clock()
            if not self._check_leadership():
                self._current = []
                return []
            alerts = self._evaluator.evaluate(self._samples.read(families), now)
            upserts, removed = self._evaluator.changed()
            if upserts or removed:
                self._store.save_alerts(upserts, removed)
            for snap in snapshots:
                if snap.db is not None:
                    self._dags.update({(snap.deployment, d.dag_id): d for d in snap.db.dags})
            routed = self._with_dag_labels(alerts)
            paused = {key for key in map(_dag_key, routed) if key in self._dags and self._dags[key].paused}
            self._dispatcher.update(routed, now, silences=self._store.silence_list(now), paused_dags=paused)
            self._current = routed
            return routed

    def _with_dag_labels(self, alerts: Sequence[Alert]) -> list[Alert]:
        """Alerts about a DAG gain its ``owner`` and ``dag_tags`` labels for routing. Done on the
        few alerts rather than the many samples. An alert the evaluator did not change keeps the
        very same routed object, and one whose value moved keeps its routed label dict: the
        dispatcher relies on both to stay cheap."""
        routed_of: dict[int, tuple[Alert, DagInfo | None, Alert]] = {}
        labels_of: dict[int, tuple[dict[str, str], DagInfo | None, dict[str, str]]] = {}
        source: dict[int, Alert] = {}
        out = []
        for a in alerts:
            facts = self._dags.get(_dag_key(a))
            hit = self._enriched.get(id(a))
            if hit is not None and hit[0] is a and hit[1] == facts:
                routed = hit[2]
            else:
                known = self._routed_labels.get(id(a.labels))
                if known is not None and known[0] is a.labels and known[1] == facts:
                    labels = known[2]
                else:
                    extra = _dag_labels(a.labels, facts)
                    labels = {**a.labels, **extra} if extra else a.labels
                routed = a if labels is a.labels else _relabelled(a, labels)
            routed_of[id(a)] = (a, facts, routed)
            labels_of[id(a.labels)] = (a.labels, facts, routed.labels)
            source[id(routed.labels)] = a
            out.append(routed)
        self._enriched, self._routed_labels, self._source = routed_of, labels_of, source
        return out

    def _refreshed(self, routed: Alert) -> Alert:
        """``routed`` as of the last evaluation: current value, annotations rendered for it (see
        Evaluator.fresh)."""
        src = self._source.get(id(routed.labels))
        fresh = self._evaluator.fresh(src.fingerprint) if src is not None else None
        if fresh is None or fresh is src:
            return routed
        return replace(
            routed, annotations=fresh.annotations, value=fresh.value, last_seen_at=fresh.last_seen_at
        )

    def _check_leadership(self) -> bool:
        held = self._leadership.try_acquire()
        if held and not self._leader:
            # Take over where the last leader left: alert state (for timers) and a fresh
            # dispatcher whose groups are rebuilt from it; the store's nflog prevents duplicates.
            restored = self._store.load_alerts()
            self._evaluator = Evaluator(self.rules)
            self._evaluator.restore(restored)
            self._dispatcher = self._new_dispatcher()
            log.info("alerting: this replica leads (restored %d alert(s))", len(restored))
        elif self._leader and not held:
            log.warning("alerting: leadership lost; another replica evaluates and notifies")
        self._leader = held
        return held

    # ------------------------------------------------------------------ background

    def tick(self) -> None:
        """Flush due groups and deliver due notifications (leader only)."""
        with self._lock:
            if not self._leader:
                return
            wanted = self._contexts_wanted(self._dispatcher.due_firing(self._clock()))
        # REST calls to Airflow, outside the lock: a slow API never holds up evaluation or views.
        for deployment, dag_id, since in wanted:
            self._fetch_failure_context(deployment, dag_id, since)
        with self._lock:
            if self._leader:  # the time after those calls: what is logged as sent is sent now
                self._dispatcher.flush(self._clock(), enrich=self._enrich)
        self.outbox.deliver_due()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="alert-engine", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(TICK_SECONDS):
            try:
                self.tick()
            except Exception:  # keep notifying whatever one round hit
                log.exception("alerting: delivery round failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
        self._leadership.release()
        for api in self._apis.values():
            api.close()

    # ------------------------------------------------------------------ views

    def alerts(self) -> list[dict[str, Any]]:
        """Current alerts with why each is (not) notified, for the API and ``alerts list``."""
        now = self._clock()
        with self._lock:
            current = [self._refreshed(a) for a in self._current]
            return [
                {**a.to_json(), "fingerprint": a.fingerprint, **self._dispatcher.status(a, now)}
                for a in current
            ]

    def state_for(self, deployment: str) -> AlertingState:
        """Self-metrics of alerting for one deployment."""
        counts = {state.value: 0 for state in AlertState}
        for a in self._current:
            if a.labels.get(DEPLOYMENT) == deployment:
                counts[a.state.value] += 1
        stats = self.outbox.stats
        return AlertingState(
            leader=self._leader,
            alerts=counts,
            notifications={
                (receiver, outcome): n
                for (dep, receiver, outcome), n in stats.outcomes.items()
                if dep == deployment
            },
            latency={
                receiver: h.freeze() for (dep, receiver), h in stats.latency.items() if dep == deployment
            },
        )

    # ------------------------------------------------------------------ failure context

    def _enrich(self, n: Notification) -> Notification:
        """Render the annotations for the current values, and add the failed tasks and their log
        tails to notifications about failing DAGs."""
        with self._lock:
            alerts = tuple(self._refreshed(a) for a in n.alerts)
        if any(new is not old for new, old in zip(alerts, n.alerts, strict=True)):
            n = replace(n, alerts=alerts)
        context: dict[str, Any] = dict(n.context)
        for a in n.firing:
            key = self._context_key(a)
            ctx = self._context_cache.get(key) if key is not None else None
            if ctx is not None:
                context[a.fingerprint] = ctx
        return replace(n, context=context) if context != n.context else n

    def _context_key(self, a: Alert) -> tuple[str, str, float] | None:
        """Which failure episode a notification about ``a`` should describe, if any: alerts of the
        rules that read DAG or task failures, about a DAG of a deployment with an API."""
        dag_id, deployment = a.labels.get(DAG_ID), a.labels.get(DEPLOYMENT)
        if not dag_id or not deployment or a.name not in self._failure_alerts:
            return None
        dep = self._config.deployments.get(deployment)
        return (deployment, dag_id, a.active_at) if dep is not None and dep.api is not None else None

    def _contexts_wanted(self, alerts: Sequence[Alert]) -> set[tuple[str, str, float]]:
        keys = {self._context_key(a) for a in alerts}
        return {k for k in keys if k is not None and k not in self._context_cache}

    def _fetch_failure_context(self, deployment: str, dag_id: str, since: float) -> None:
        """Read the failed tasks and their log tails once per failure episode (a failed read is
        tried again at the group's next flush)."""
        dep = self._config.deployments[deployment]
        assert dep.api is not None  # see _context_key
        api = self._apis.get(deployment)
        if api is None:
            api = self._apis[deployment] = RestApiSource(deployment, dep.api)
        try:
            ctx = failure_context(
                api,
                dag_id,
                ui_url=dep.ui_url or dep.api.url,
                tail=self._alerting.log_tail_lines,
                mask=lambda t: mask(t, self._config),
            )
        except SourceError as e:
            log.warning("alerting: no failure details for %s/%s: %s", deployment, dag_id, e)
            return
        if len(self._context_cache) > 1000:
            self._context_cache.clear()
        self._context_cache[(deployment, dag_id, since)] = ctx


def _metric_names(rules: Sequence[Rule]) -> set[str] | None:
    """The series the rules read (None: a rule without a metric name reads every series)."""
    names = {r.expr.metric for r in rules}
    return None if None in names else {n for n in names if n is not None}


def _relabelled(a: Alert, labels: dict[str, str]) -> Alert:
    # Positional construction: dataclasses.replace costs twice as much, per alert per cycle.
    return Alert(
        labels,
        a.annotations,
        a.state,
        a.value,
        a.active_at,
        a.fired_at,
        a.resolved_at,
        a.last_seen_at,
        a.generator_url,
        a.keep_firing_since,
    )


def _dag_key(alert: Alert) -> tuple[str, str]:
    return (alert.labels.get(DEPLOYMENT, ""), alert.labels.get(DAG_ID, ""))


def _dag_labels(labels: Mapping[str, str], dag: DagInfo | None) -> dict[str, str]:
    """``owner``, and ``dag_tags`` as ",a,b," so a matcher can say dag_tags=~".*,team-a,.*"."""
    if dag is None:
        return {}
    extra = {"owner": dag.owner} if "owner" not in labels else {}
    if dag.tags and "dag_tags" not in labels:
        extra["dag_tags"] = "," + ",".join(dag.tags) + ","
    return extra
