"""The shipped Prometheus alert rules (alert_rules/*.yaml), read for their exprs and runbook URLs.

The rule files are the source of truth for where runbooks live: the dashboards link to the same
base URL the rules' ``runbook_url`` annotations use, so the two can never drift apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
ALERT_RULES_DIR = REPO_ROOT / "alert_rules"
RUNBOOKS_DIR = REPO_ROOT / "runbooks"


@dataclass(frozen=True)
class AlertRule:
    file: Path
    alert: str
    expr: str
    runbook_url: str


def alert_rules(directory: Path = ALERT_RULES_DIR) -> list[AlertRule]:
    """Every alerting rule of the rule files in ``directory`` (recording rules are skipped)."""
    rules = []
    for path in sorted(directory.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text()) or {}
        for group in doc.get("groups", []):
            for rule in group.get("rules", []):
                if "alert" in rule:
                    url = (rule.get("annotations") or {}).get("runbook_url", "")
                    rules.append(AlertRule(path, rule["alert"], str(rule["expr"]), url))
    return rules


def runbook_base_url(rules: list[AlertRule] | None = None) -> str:
    """The one base every rule's ``runbook_url`` shares (``<base>/runbooks/<AlertName>.md``).

    Raises ValueError if a rule has no runbook_url of that shape or the rules disagree on the base.
    """
    bases = set()
    for rule in alert_rules() if rules is None else rules:
        m = re.fullmatch(rf"(.+)/runbooks/{re.escape(rule.alert)}\.md", rule.runbook_url)
        if not m:
            raise ValueError(
                f"{rule.file.name}: {rule.alert}: runbook_url {rule.runbook_url!r} is not"
                f" <base>/runbooks/{rule.alert}.md"
            )
        bases.add(m.group(1))
    if len(bases) != 1:
        raise ValueError(f"alert rules must share one runbook base URL, found {sorted(bases)}")
    return bases.pop()
