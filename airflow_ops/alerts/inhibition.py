"""Inhibition (Alertmanager's ``inhibit/inhibit.go``): a firing *source* alert mutes the *target*
alerts that carry the same values for the rule's ``equal`` labels — e.g. a scheduler outage mutes
the DAG alerts of the same deployment, not those of other deployments.

A missing label equals the empty string, on both sides. An alert never inhibits itself, and when
the target also matches the source matchers, sources that also match the target matchers are
ignored, so two alerts matching both sides do not silence each other (Alertmanager's
"two-sided match" rule).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..config.alerting import InhibitRuleConfig
from .matchers import matches_all, parse_matchers
from .model import Alert, AlertState, Matcher


@dataclass(frozen=True)
class InhibitRule:
    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...]

    @classmethod
    def from_config(cls, cfg: InhibitRuleConfig) -> InhibitRule:
        return cls(parse_matchers(cfg.source_matchers), parse_matchers(cfg.target_matchers), cfg.equal)

    def equal_values(self, labels: Mapping[str, str]) -> tuple[str, ...]:
        return tuple(labels.get(name, "") for name in self.equal)


class Inhibitor:
    """The inhibit rules plus an index of the currently firing source alerts."""

    def __init__(self, rules: Sequence[InhibitRuleConfig]) -> None:
        self.rules = tuple(InhibitRule.from_config(r) for r in rules)
        # Per rule: equal-label values -> the firing sources carrying them, as (fingerprint, labels).
        self._sources: list[dict[tuple[str, ...], list[tuple[str, Mapping[str, str]]]]] = [
            {} for _ in self.rules
        ]

    def is_source(self, labels: Mapping[str, str]) -> bool:
        """Whether an alert with these labels could inhibit anything (lets callers pre-filter)."""
        return any(matches_all(r.source, labels) for r in self.rules)

    def set_alerts(self, alerts: Mapping[str, Alert]) -> None:
        """Index the sources among ``alerts`` (by fingerprint); only firing alerts inhibit."""
        self._sources = [{} for _ in self.rules]
        for fp, alert in alerts.items():
            if alert.state is not AlertState.FIRING:
                continue
            for rule, index in zip(self.rules, self._sources, strict=True):
                if matches_all(rule.source, alert.labels):
                    index.setdefault(rule.equal_values(alert.labels), []).append((fp, alert.labels))

    def inhibited_by(self, labels: Mapping[str, str], fp: str) -> list[str]:
        """Fingerprints of the firing alerts that inhibit the alert ``fp`` with ``labels`` (sorted)."""
        found: set[str] = set()
        for rule, index in zip(self.rules, self._sources, strict=True):
            if not index or not matches_all(rule.target, labels):
                continue
            two_sided = matches_all(rule.source, labels)
            for source_fp, source_labels in index.get(rule.equal_values(labels), ()):
                if source_fp == fp or (two_sided and matches_all(rule.target, source_labels)):
                    continue
                found.add(source_fp)
        return sorted(found)

    def mutes(self, labels: Mapping[str, str], fp: str) -> bool:
        return bool(self.inhibited_by(labels, fp))
