"""The built-in evaluator: alerting rules over one cycle's samples, with Prometheus 2.42's
alerting-rule semantics (rules/alerting.go).

Per result series the alert's labels are the series' labels without ``__name__``, plus the
rule's templated labels (a label rendered empty is dropped), plus ``alertname``; annotations are
rendered with ``$labels`` (the series' labels) and ``$value``. A new series makes a PENDING alert
(``active_at`` = now) that fires once ``now - active_at >= for``. When the condition stops
holding, a pending alert is dropped and a firing one resolves, unless ``keep_firing_for`` keeps
it firing (counted, like Prometheus, from the first evaluation that missed it). Resolved alerts
are kept 15 minutes (Prometheus' resolvedRetention) so the recovery can be notified; a series
that comes back after resolution is a new alert.

Times are compared in whole milliseconds, as Prometheus does, so a ``for`` of 5m fires exactly
five minutes later even with epoch-second floats. Each cycle only what changed is reported
(:meth:`Evaluator.changed`): new alerts and state transitions, not a value that merely moved, so
the store writes little.

An alert whose state did not change is the very same object cycle after cycle: its ``value`` and
``last_seen_at`` are those of its last transition, and its ``$value`` annotations were rendered
then. :meth:`Evaluator.fresh` gives the alert as of the last evaluation, for what is shown or sent.
10,000 alerts that only age would otherwise cost 10,000 new objects (and as many cache misses
downstream) every cycle. What a restart needs is in every upsert: state,
active_at, fired_at, resolved_at (``last_seen_at`` moves every cycle and is not a reason to write).
The start of a ``keep_firing_for`` period is part of the alert (``keep_firing_since``), so it is
persisted like the rest and a restart does not extend the period.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from .expr import METRIC_NAME, SampleIndex
from .model import ALERTNAME, Alert, AlertState, Sample, fingerprint
from .rules import Rule
from .templating import Template

RESOLVED_RETENTION = 15 * 60.0
_RESOLVED_RETENTION_MS = round(RESOLVED_RETENTION * 1000)
_NOT_RENDERED = object()  # annotations not rendered by this process yet (e.g. restored from the store)


def _ms(t: float) -> int:
    return round(t * 1000)


@dataclass(slots=True)
class _Series:
    """What a result series means for one rule; cached per series between cycles."""

    labels: dict[str, str]  # the alert's labels
    fp: str
    template_labels: dict[str, str]  # $labels: the series' labels, __name__ included
    name: str  # the sample's series name
    source: Mapping[str, str]  # the sample's label dict (held, so its id() is not reused)
    key: tuple[str, tuple[tuple[str, str], ...]]  # (name, label items): the cache key by content


@dataclass(slots=True)
class _Entry:
    rule: int
    alert: Alert  # as of its last transition (value, last_seen_at, annotations)
    rendered_for: object  # the value the annotations were rendered with, or _NOT_RENDERED
    template_labels: dict[str, str] | None = None  # $labels, kept for rendering on demand
    restored: bool = False  # restored from the store and not yet claimed by an evaluation
    value: float = math.nan  # the value at the last evaluation that saw the series
    seen_at: float | None = None  # that evaluation's time


@dataclass(frozen=True, slots=True)
class _CompiledRule:
    rule: Rule
    for_ms: int
    keep_firing_for_ms: int
    value_annotations: tuple[tuple[str, Template], ...]  # the annotations that use $value


def _current(entry: _Entry) -> Alert:
    """The entry's alert with the value and time of the last evaluation that saw its series."""
    alert = entry.alert
    if alert.last_seen_at == entry.seen_at and (
        alert.value == entry.value or _both_nan(alert.value, entry.value)
    ):
        return alert
    return replace(alert, value=entry.value, last_seen_at=entry.seen_at)


def _both_nan(a: object, b: object) -> bool:
    return a != a and b != b  # NaN is the same value as NaN here (no re-render every cycle)


class Evaluator:
    """Evaluates alerting rules cycle by cycle and keeps their alerts' state."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self._rules = [
            _CompiledRule(
                r,
                _ms(r.for_seconds),
                _ms(r.keep_firing_for_seconds),
                tuple((k, t) for k, t in r.annotations.items() if t.uses_value),
            )
            for r in rules
        ]
        self._entries: dict[str, _Entry] = {}
        # Per rule, last cycle's series by the id() of the sample's label dict (the service's
        # SampleReader hands out the same dict while a series lives), and by content.
        self._by_id: list[dict[int, _Series]] = [{} for _ in rules]
        self._by_key: list[dict[tuple[str, tuple[tuple[str, str], ...]], _Series]] = [{} for _ in rules]
        self._upserted: dict[str, Alert] = {}
        self._removed: set[str] = set()
        self.last_errors: list[str] = []

    @property
    def rules(self) -> list[Rule]:
        return [c.rule for c in self._rules]

    def evaluate(self, samples: Sequence[Sample], now: float) -> list[Alert]:
        """Evaluate every rule over the cycle's samples at ``now`` (epoch seconds); returns the
        alerts (pending, firing, and resolved ones still retained). The returned objects are
        never modified afterwards: a changed alert is a new object."""
        self._upserted, self._removed, self.last_errors = {}, set(), []
        index = SampleIndex(samples)
        now_ms = _ms(now)
        claimed: dict[str, int] = {}
        failed: set[int] = set()
        entries_get, claimed_get = self._entries.get, claimed.get
        for i, compiled in enumerate(self._rules):
            batch = self._results(i, compiled.rule, index)
            if batch is None:
                failed.add(i)
                continue
            for series, value in batch:
                entry = entries_get(series.fp)
                other = claimed_get(series.fp)
                if other is None and entry is not None and entry.rule != i and not entry.restored:
                    other = entry.rule if entry.alert.state is not AlertState.RESOLVED else None
                if other is not None:
                    self._error(compiled.rule, f"makes the same alert labels as rule {self._describe(other)}")
                    continue
                claimed[series.fp] = i
                self._present(i, compiled, series, value, entry, now, now_ms)
        for fp, entry in list(self._entries.items()):
            if fp not in claimed and entry.rule not in failed:
                self._absent(fp, entry, now, now_ms)
        return [e.alert for e in self._entries.values()]

    def _results(self, i: int, rule: Rule, index: SampleIndex) -> list[tuple[_Series, float]] | None:
        by_id_get = self._by_id[i].get
        by_key = self._by_key[i]
        fresh: dict[int, _Series] = {}
        batch: list[tuple[_Series, float]] = []
        missed = False  # a series not among last cycle's (by label dict)
        for sample in rule.expr.evaluate(index):
            labels = sample.labels
            series = by_id_get(id(labels))
            if series is None or series.name != sample.name:  # held dicts: an id hit is this dict
                missed = True
                key = (sample.name, tuple(labels.items()))
                series = by_key.get(key)
                if series is None:
                    series = by_key[key] = self._identify(rule, sample, key)
                elif series.source is not labels:
                    series = by_key[key] = _Series(
                        series.labels, series.fp, series.template_labels, sample.name, labels, key
                    )
            fresh[id(labels)] = series
            batch.append((series, sample.value))
        # Last cycle's series had distinct fingerprints (or the rule failed and cached nothing by
        # id): only a batch with other series can have a clash.
        if missed and len({series.fp for series, _ in batch}) != len(batch):
            # Prometheus fails the whole rule for this cycle and keeps its alerts as they were.
            self._error(rule, "several result series have the same labels once the rule's labels apply")
            return None
        self._by_id[i] = fresh  # only last cycle's series stay cached
        if len(by_key) > 2 * len(batch) + 1000:
            self._by_key[i] = {s.key: s for s, _ in batch}
        return batch

    @staticmethod
    def _identify(rule: Rule, sample: Sample, key: tuple[str, tuple[tuple[str, str], ...]]) -> _Series:
        # Prometheus has no empty-valued labels: an empty value is an absent label.
        template_labels = {k: v for k, v in sample.labels.items() if v and k != METRIC_NAME}
        labels = dict(template_labels)
        template_labels[METRIC_NAME] = sample.name
        for key, template in rule.labels.items():
            value = template.render(template_labels, 0.0)  # label templates cannot use $value
            if value:
                labels[key] = value
            else:
                labels.pop(key, None)
        labels[ALERTNAME] = rule.name
        labels = dict(sorted(labels.items()))
        return _Series(labels, fingerprint(labels), template_labels, sample.name, sample.labels, key)

    def _present(
        self,
        i: int,
        compiled: _CompiledRule,
        series: _Series,
        value: float,
        entry: _Entry | None,
        now: float,
        now_ms: int,
    ) -> None:
        rule = compiled.rule
        if entry is None or entry.alert.state is AlertState.RESOLVED:
            annotations = {k: t.render(series.template_labels, value) for k, t in rule.annotations.items()}
            firing = compiled.for_ms <= 0
            alert = Alert(
                labels=series.labels,
                annotations=annotations,
                state=AlertState.FIRING if firing else AlertState.PENDING,
                value=value,
                active_at=now,
                fired_at=now if firing else None,
                last_seen_at=now,
            )
            self._entries[series.fp] = _Entry(i, alert, value, series.template_labels, False, value, now)
            self._upserted[series.fp] = alert
            return
        entry.value, entry.seen_at = value, now
        entry.template_labels = series.template_labels
        old = entry.alert
        state, fired_at = old.state, old.fired_at
        if state is AlertState.PENDING and now_ms - _ms(old.active_at) >= compiled.for_ms:
            state, fired_at = AlertState.FIRING, now
        elif old.keep_firing_since is None and entry.rendered_for is not _NOT_RENDERED and not entry.restored:
            return  # only the value moved: the alert stays the same object (see ``fresh``)
        entry.rule, entry.restored = i, False
        annotations = old.annotations
        if entry.rendered_for is _NOT_RENDERED or state is not old.state:
            annotations = {k: t.render(series.template_labels, value) for k, t in rule.annotations.items()}
            entry.rendered_for = value
        # Persisted: transitions and timers, what a restart relies on. Not annotation text: it is
        # rendered again on the first evaluation after a restore, and an age shown with $value
        # would otherwise rewrite every alert on every poll. The series being back ends a
        # keep_firing_for period in progress, which must be forgotten.
        changed = old.keep_firing_since is not None or state is not old.state
        if annotations == old.annotations:
            annotations = old.annotations
        entry.alert = Alert(
            old.labels, annotations, state, value, old.active_at, fired_at, None, now, old.generator_url
        )
        if changed:
            self._upserted[series.fp] = entry.alert

    def _absent(self, fp: str, entry: _Entry, now: float, now_ms: int) -> None:
        alert = entry.alert
        if alert.state is AlertState.PENDING:
            self._drop(fp)
        elif alert.state is AlertState.RESOLVED:
            if alert.resolved_at is None or now_ms - _ms(alert.resolved_at) > _RESOLVED_RETENTION_MS:
                self._drop(fp)
        else:
            keep_ms = self._rules[entry.rule].keep_firing_for_ms
            if keep_ms > 0:
                if alert.keep_firing_since is None:
                    alert = entry.alert = replace(_current(entry), keep_firing_since=now)
                    self._upserted[fp] = alert
                if now_ms - _ms(alert.keep_firing_since) < keep_ms:
                    return
            entry.alert = replace(
                _current(entry), state=AlertState.RESOLVED, resolved_at=now, keep_firing_since=None
            )
            self._upserted[fp] = entry.alert

    def fresh(self, fp: str) -> Alert | None:
        """The alert of fingerprint ``fp`` as of the last evaluation: its current value and
        last_seen_at, and annotations rendered for that value (``evaluate`` renders them when an
        alert starts or changes state, not when only its value moves). None if the evaluator
        holds no such alert."""
        entry = self._entries.get(fp)
        if entry is None:
            return None
        alert = _current(entry)
        values = self._rules[entry.rule].value_annotations
        if (
            values
            and entry.template_labels is not None
            and alert.value != entry.rendered_for
            and not _both_nan(alert.value, entry.rendered_for)
        ):
            annotations = dict(alert.annotations)
            for key, template in values:
                annotations[key] = template.render(entry.template_labels, alert.value)
            alert = replace(alert, annotations=annotations)
            entry.rendered_for = alert.value
        entry.alert = alert
        return alert

    def _drop(self, fp: str) -> None:
        del self._entries[fp]
        self._removed.add(fp)

    def _describe(self, i: int) -> str:
        rule = self._rules[i].rule
        return f"{rule.name} ({rule.location})"

    def _error(self, rule: Rule, reason: str) -> None:
        self.last_errors.append(f"rule {rule.name} ({rule.location}): {reason}")

    def changed(self) -> tuple[list[Alert], list[str]]:
        """What the last evaluation changed: (alerts to upsert, fingerprints to delete).

        Upserted are new alerts and state or timer changes (fired_at, resolved_at,
        keep_firing_since); value and annotation-text changes are not, as the persisted form only
        needs what a restart relies on and annotations are rendered anew after a restore."""
        return list(self._upserted.values()), sorted(self._removed)

    def state(self) -> list[Alert]:
        """Every alert held (pending, firing, resolved within retention), for the store."""
        return [e.alert for e in self._entries.values()]

    def restore(self, alerts: Iterable[Alert]) -> None:
        """Take over alerts from the store (replacing any state held), so ``for`` timers and
        firing alerts survive a restart. Alerts of rules that no longer exist are dropped."""
        self._entries.clear()
        self._by_id = [{} for _ in self._rules]
        self._by_key = [{} for _ in self._rules]
        self._upserted, self._removed = {}, set()
        for alert in alerts:
            owner = self._owner(alert)
            if owner is not None:
                self._entries[alert.fingerprint] = _Entry(
                    owner, alert, _NOT_RENDERED, None, True, alert.value, alert.last_seen_at
                )

    def _owner(self, alert: Alert) -> int | None:
        """The rule that made this alert: same name, and its fixed labels agree."""
        name = alert.labels.get(ALERTNAME)
        for i, compiled in enumerate(self._rules):
            rule = compiled.rule
            fixed = rule.static_labels.items()
            if rule.name == name and all(alert.labels.get(k) == v for k, v in fixed if v):
                return i
        return None
