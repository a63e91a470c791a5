"""The values the alerting pipeline passes along: samples in, alerts, notifications out.

Everything here is plain data with a JSON form, because alert state, the notification log and
the outbox live in the ops store and must survive a restart unchanged.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, fields
from enum import Enum
from functools import cached_property
from typing import Any, NamedTuple

from ..exposition import DEPLOYMENT, Family
from ..snapshot import Histogram

ALERTNAME = "alertname"


def fingerprint(labels: Mapping[str, str]) -> str:
    """A stable identity for a label set (the same in every process and across restarts)."""
    blob = "\x1e".join(f"{k}\x1f{labels[k]}" for k in sorted(labels))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Sample(NamedTuple):
    """One series' value at an instant; ``name`` is the series name (``x_total``, ``x_count``…).
    A tuple, not a dataclass: a poll reads thousands and construction cost adds up."""

    name: str
    labels: Mapping[str, str]
    value: float


def samples_of(families: Iterable[Family], names: AbstractSet[str] | None = None) -> list[Sample]:
    """The instant vector Prometheus would scrape from these families (histograms as their
    ``_bucket``/``_count``/``_sum`` series, counters as ``_total``); only the series named in
    ``names`` when given (rules read a few metrics; expanding every histogram would dominate)."""
    return SampleReader(names).read(families)


class SampleReader:
    """``samples_of`` across polls: a row whose value did not change gives back the very same
    Sample objects, and a changed one reuses its label dict, so a steady poll costs little."""

    def __init__(self, names: AbstractSet[str] | None = None) -> None:
        self._names = names
        # (family, deployment) -> label values -> (value, its samples)
        self._rows: dict[tuple[str, str], dict[tuple[str, ...], tuple[object, list[Sample]]]] = {}

    def read(self, families: Iterable[Family]) -> list[Sample]:
        out: list[Sample] = []
        rows_now: dict[tuple[str, str], dict[tuple[str, ...], tuple[object, list[Sample]]]] = {}
        for fam in families:
            if self._names is not None and self._names.isdisjoint(series_names(fam.name)):
                continue
            name = fam.name + "_total" if fam.type == "counter" else fam.name
            for deployment, rows in fam.groups:
                before = self._rows.get((fam.name, deployment), {})
                now = rows_now[(fam.name, deployment)] = {}
                for values, value in rows:
                    hit = before.get(values)
                    if hit is not None and hit[0] == value:
                        samples = hit[1]
                    elif isinstance(value, Histogram):
                        labels = dict(zip(fam.labels, values, strict=True))
                        labels[DEPLOYMENT] = deployment
                        samples = _histogram_samples(fam.name, labels, value)
                    else:
                        if hit is not None:
                            labels = hit[1][0].labels
                        else:
                            labels = dict(zip(fam.labels, values, strict=True))
                            labels[DEPLOYMENT] = deployment
                        samples = [Sample(name, labels, float(value))]
                    now[values] = (value, samples)
                    out.extend(samples)
        self._rows = rows_now
        return out


def _histogram_samples(name: str, labels: dict[str, str], value: Histogram) -> list[Sample]:
    out = []
    cumulative = 0
    for bound, count in zip((*value.bounds, float("inf")), value.counts, strict=True):
        cumulative += count
        le = "+Inf" if bound == float("inf") else _go_float(bound)
        out.append(Sample(name + "_bucket", {**labels, "le": le}, float(cumulative)))
    out.append(Sample(name + "_count", labels, float(value.count)))
    out.append(Sample(name + "_sum", labels, value.total))
    return out


def series_names(family: str) -> tuple[str, ...]:
    """Every series name a family of this name can expose (gauge, counter or histogram)."""
    return (family, family + "_total", family + "_bucket", family + "_count", family + "_sum")


def _go_float(v: float) -> str:
    from prometheus_client.utils import floatToGoString

    return floatToGoString(v)


class AlertState(str, Enum):
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass
class Alert:
    """One alert instance of a rule (Prometheus semantics).

    ``labels`` is the full identity: the series' labels without ``__name__``, plus the rule's
    labels, plus ``alertname``. Times are epoch seconds.
    """

    labels: dict[str, str]
    annotations: dict[str, str]
    state: AlertState
    value: float
    active_at: float  # when the condition was first seen true (pending since)
    fired_at: float | None = None
    resolved_at: float | None = None
    last_seen_at: float | None = None  # last evaluation where the condition held
    generator_url: str = ""
    # First evaluation that missed a firing alert's series: keep_firing_for counts from here.
    keep_firing_since: float | None = None

    @property
    def name(self) -> str:
        return self.labels[ALERTNAME]

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.labels)

    def to_json(self) -> dict[str, Any]:
        # Not dataclasses.asdict: its deep copy was half the cost of persisting 10k alerts.
        return {
            **vars(self),
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "state": self.state.value,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Alert:
        return cls(**{**d, "state": AlertState(d["state"])})


@dataclass(frozen=True)
class Notification:
    """What one receiver is told about one alert group at one flush.

    ``status`` is ``firing`` if any alert in it is firing, else ``resolved``. ``context`` carries
    extra facts gathered at flush time (e.g. the failed tasks and their log tail for a DAG
    failure), keyed by alert fingerprint.
    """

    receiver: str
    group_key: str
    group_labels: dict[str, str]
    alerts: tuple[Alert, ...]
    created_at: float
    external_url: str = ""
    reminder: bool = False  # sent because repeat_interval elapsed, nothing changed
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return "firing" if self.firing else "resolved"

    @property
    def firing(self) -> list[Alert]:
        return [a for a in self.alerts if a.state is AlertState.FIRING]

    @property
    def resolved(self) -> list[Alert]:
        return [a for a in self.alerts if a.state is AlertState.RESOLVED]

    @property
    def common_labels(self) -> dict[str, str]:
        return _common(a.labels for a in self.alerts)

    @property
    def common_annotations(self) -> dict[str, str]:
        return _common(a.annotations for a in self.alerts)

    def to_json(self) -> str:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["alerts"] = [a.to_json() for a in self.alerts]
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Notification:
        d = json.loads(text)
        d["alerts"] = tuple(Alert.from_json(a) for a in d["alerts"])
        return cls(**d)


def _common(maps: Iterable[Mapping[str, str]]) -> dict[str, str]:
    it = iter(maps)
    first = next(it, None)
    if first is None:
        return {}
    common = dict(first)
    for m in it:
        common = {k: v for k, v in common.items() if m.get(k) == v}
    return common


@dataclass(frozen=True)
class NflogEntry:
    """The notification log: what a receiver was last told about a group (Alertmanager's nflog)."""

    receiver: str
    group_key: str
    firing: frozenset[str]  # fingerprints
    resolved: frozenset[str]
    sent_at: float


@dataclass(frozen=True)
class Matcher:
    """``name op value`` with op one of = != =~ !~ (regexes are fully anchored)."""

    name: str
    op: str
    value: str

    @cached_property
    def regex(self) -> re.Pattern[str]:
        """The compiled pattern of a ``=~``/``!~`` matcher (compiled once per matcher)."""
        return re.compile(self.value)

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Alertmanager semantics: a missing label is the empty string; regexes match the whole value."""
        v = labels.get(self.name, "")
        op = self.op
        if op == "=":
            return v == self.value
        if op == "!=":
            return v != self.value
        if op == "=~":
            return self.regex.fullmatch(v) is not None
        if op == "!~":
            return self.regex.fullmatch(v) is None
        raise ValueError(f"unknown matcher op {op!r}")


@dataclass(frozen=True)
class Silence:
    id: str
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    created_by: str
    comment: str
    expired_at: float | None = None  # set when expired by hand before ends_at

    def active(self, now: float) -> bool:
        end = self.ends_at if self.expired_at is None else min(self.ends_at, self.expired_at)
        return self.starts_at <= now < end

    def matches_labels(self, labels: Mapping[str, str]) -> bool:
        """Every matcher holds, whatever the time. A silence without matchers silences nothing
        (Alertmanager refuses to create one)."""
        return bool(self.matchers) and all(m.matches(labels) for m in self.matchers)

    def matches(self, labels: Mapping[str, str], now: float) -> bool:
        """Active at ``now`` and matching ``labels``."""
        return self.active(now) and self.matches_labels(labels)


@dataclass(frozen=True)
class OutboxItem:
    """A rendered-later notification waiting for delivery (retried until delivered)."""

    id: int
    receiver: str  # receiver name
    integration: str  # e.g. "slack[0]", "email[1]" — one item per integration of the receiver
    group_key: str
    payload: str  # Notification.to_json()
    created_at: float
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_error: str | None = None
