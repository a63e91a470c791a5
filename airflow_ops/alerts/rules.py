"""Prometheus rule files, loaded for the built-in evaluator.

The files are Prometheus' own format (``groups: [{name, interval?, rules: [...]}]``) so the same
file loads into Prometheus. Only alerting rules whose expression and templates the built-in
evaluator supports are accepted; every problem in every file is collected and raised together
as one :class:`RuleError`, one line each: ``FILE:LINE: group NAME: rule ALERT: reason``.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..config.base import ConfigError
from .expr import Comparison, ExprError, parse_expr
from .model import ALERTNAME
from .templating import Template, TemplateError, parse_template

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_NULL = "tag:yaml.org,2002:null"
_GROUP_KEYS = ("name", "interval", "limit", "rules")
_RULE_KEYS = ("alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations")


class RuleError(ConfigError):
    """Rule files that cannot be loaded; ``problems`` holds one located line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class Rule:
    """One alerting rule, ready to evaluate."""

    name: str  # the alert name
    expr: Comparison
    for_seconds: float
    keep_firing_for_seconds: float
    labels: Mapping[str, Template]
    annotations: Mapping[str, Template]
    group: str
    file: str
    line: int
    group_interval: float | None = None
    static_labels: Mapping[str, str] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        static = {k: t.constant for k, t in self.labels.items() if t.constant is not None}
        object.__setattr__(self, "static_labels", static)

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}"


_DURATION = re.compile(r"(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?\Z")
_DURATION_MS = (365 * 86_400_000, 7 * 86_400_000, 86_400_000, 3_600_000, 60_000, 1000, 1)


def parse_prometheus_duration(text: str) -> float:
    """Prometheus' duration syntax (``1h30m``, ``5m``, ``90s``, ``1d``, ``2w``, ``0``) -> seconds."""
    if text == "0":
        return 0.0
    m = _DURATION.match(text)
    if not text or m is None:
        raise ValueError(f"{text!r} is not a Prometheus duration (e.g. 90s, 5m, 1h30m, 1d, 2w)")
    ms = sum(int(n) * unit for n, unit in zip(m.groups(), _DURATION_MS, strict=True) if n)
    if ms >= 2**63 // 1_000_000:
        raise ValueError(f"{text!r} is out of range")
    return ms / 1000


class _Problems:
    """Collects located problems for one file."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.lines: list[str] = []

    def add(self, node: Node | None, reason: str, group: str | None = None, rule: str | None = None) -> None:
        where = self.file if node is None else f"{self.file}:{node.start_mark.line + 1}"
        scope = "".join(
            (f" group {group}:" if group is not None else "", f" rule {rule}:" if rule is not None else "")
        )
        self.lines.append(f"{where}:{scope} {reason}")


_Report = Callable[[Node, str], None]


def _mapping(node: Node, what: str, allowed: Sequence[str], report: _Report) -> dict[str, Node]:
    """A mapping node's entries by key; unknown and duplicate keys are reported."""
    if not isinstance(node, MappingNode):
        report(node, f"{what} must be a mapping")
        return {}
    out: dict[str, Node] = {}
    for key_node, value_node in node.value:
        key = key_node.value if isinstance(key_node, ScalarNode) else None
        if key is None:
            report(key_node, f"keys in {what} must be strings")
        elif allowed and key not in allowed:
            report(key_node, f"unknown key {key!r} in {what} (allowed: {', '.join(allowed)})")
        elif key in out:
            report(key_node, f"key {key!r} given twice in {what}")
        else:
            out[key] = value_node
    return out


def _scalar(node: Node | None) -> str | None:
    """The text of a scalar node as Go's YAML decoder gives it to a string field."""
    if node is None or not isinstance(node, ScalarNode) or node.tag == _NULL:
        return None
    return node.value


def parse_rules(text: str, file: str) -> list[Rule]:
    """Parse one rule file's text (``file`` names it in errors); raises :class:`RuleError`."""
    problems = _Problems(file)
    rules = _parse_file(text, problems)
    if problems.lines:
        raise RuleError(problems.lines)
    return rules


def _parse_file(text: str, problems: _Problems) -> list[Rule]:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{problems.file}:{mark.line + 1}" if mark else problems.file
        problems.lines.append(f"{where}: invalid YAML: {e.problem or e.context}")
        return []
    if root is None:  # an empty file has no groups (Prometheus accepts it too)
        return []
    top = _mapping(root, "the rule file", ("groups",), problems.add)
    groups = top.get("groups")
    if groups is None or (isinstance(groups, ScalarNode) and groups.tag == _NULL):
        return []
    if not isinstance(groups, SequenceNode):
        problems.add(groups, "groups must be a list")
        return []
    rules: list[Rule] = []
    seen: set[str] = set()
    for group_node in groups.value:
        rules.extend(_parse_group(group_node, problems, seen))
    return rules


def _parse_group(node: Node, problems: _Problems, seen: set[str]) -> list[Rule]:
    entries = _mapping(node, "a group", _GROUP_KEYS, problems.add)
    name = _scalar(entries.get("name")) or ""
    if not name:
        problems.add(entries.get("name", node), "a group needs a non-empty name")
    elif name in seen:
        problems.add(entries["name"], f"group name {name!r} is repeated in the same file")
    seen.add(name)

    def report(n: Node, reason: str) -> None:
        problems.add(n, reason, group=name or "?")

    interval: float | None = None
    if "interval" in entries:
        interval = _duration(entries["interval"], "interval", report)
    limit = _scalar(entries.get("limit"))
    if limit not in (None, "0"):
        report(entries["limit"], "limit is not supported by the built-in evaluator")
    rule_nodes = entries.get("rules")
    if rule_nodes is None or (isinstance(rule_nodes, ScalarNode) and rule_nodes.tag == _NULL):
        return []
    if not isinstance(rule_nodes, SequenceNode):
        report(rule_nodes, "rules must be a list")
        return []
    rules: list[Rule] = []
    for index, rule_node in enumerate(rule_nodes.value, start=1):
        rule = _parse_rule(rule_node, index, name or "?", interval, problems)
        if rule is not None:
            rules.append(rule)
    return rules


def _duration(node: Node, key: str, report: _Report) -> float:
    text = _scalar(node)
    if text is None:
        report(node, f"{key} must be a duration such as 5m")
        return 0.0
    try:
        return parse_prometheus_duration(text)
    except ValueError as e:
        report(node, f"{key}: {e}")
        return 0.0


def _parse_rule(
    node: Node, index: int, group: str, interval: float | None, problems: _Problems
) -> Rule | None:
    before = len(problems.lines)
    if not isinstance(node, MappingNode):
        problems.add(node, "a rule must be a mapping", group=group, rule=f"#{index}")
        return None
    keys = {k.value: v for k, v in node.value if isinstance(k, ScalarNode)}
    name = _scalar(keys.get("alert")) or _scalar(keys.get("record")) or f"#{index}"

    def report(n: Node, reason: str) -> None:
        problems.add(n, reason, group=group, rule=name)

    entries = _mapping(node, "a rule", _RULE_KEYS, report)
    if "record" in entries:
        report(entries["record"], "recording rules are not supported by the built-in evaluator")
        return None
    alert = _scalar(entries.get("alert"))
    if not alert:
        report(entries.get("alert", node), "a rule needs 'alert' (its name)")
    expr: Comparison | None = None
    expr_text = _scalar(entries.get("expr"))
    if not expr_text:
        report(entries.get("expr", node), "field 'expr' must be set")
    else:
        try:
            expr = parse_expr(expr_text)
        except ExprError as e:
            report(entries["expr"], f"expr {expr_text.strip()!r}: {e}")
    hold, keep = (
        _duration(entries[k], k, report) if k in entries else 0.0 for k in ("for", "keep_firing_for")
    )
    labels = _templates(entries.get("labels"), "label", alert or name, report)
    annotations = _templates(entries.get("annotations"), "annotation", alert or name, report)
    if len(problems.lines) > before or expr is None or not alert:
        return None
    return Rule(
        name=alert,
        expr=expr,
        for_seconds=hold,
        keep_firing_for_seconds=keep,
        labels=labels,
        annotations=annotations,
        group=group,
        file=problems.file,
        line=node.start_mark.line + 1,
        group_interval=interval,
    )


def _templates(node: Node | None, what: str, alert: str, report: _Report) -> dict[str, Template]:
    if node is None or (isinstance(node, ScalarNode) and node.tag == _NULL):
        return {}
    out: dict[str, Template] = {}
    for key, value_node in _mapping(node, f"{what}s", (), report).items():
        if not _LABEL_NAME.match(key) or key == "__name__":
            report(value_node, f"invalid {what} name {key!r}")
            continue
        if not isinstance(value_node, ScalarNode):
            report(value_node, f"{what} {key!r} must be a string")
            continue
        text = "" if value_node.tag == _NULL else value_node.value
        try:
            template = parse_template(text, alert)
        except TemplateError as e:
            report(value_node, f"{what} {key!r}: {e}")
            continue
        if what == "label" and key == ALERTNAME:
            report(value_node, "label 'alertname' is set from the rule's name and cannot be overridden")
        elif what == "label" and template.uses_value:
            report(
                value_node,
                f"label {key!r} uses $value: the alert's identity would change with every value "
                "(put the value in an annotation)",
            )
        else:
            out[key] = template
    return out


def load_rule_files(patterns: Sequence[str], base_dir: Path | None = None) -> list[Rule]:
    """Load every rule file matching the glob patterns (relative ones under ``base_dir``), in
    sorted order per pattern; a pattern matching nothing is an error. Raises :class:`RuleError`
    with every problem of every file."""
    lines: list[str] = []
    rules: list[Rule] = []
    seen: set[Path] = set()
    for pattern in patterns:
        full = pattern if base_dir is None or Path(pattern).is_absolute() else str(base_dir / pattern)
        matches = sorted(Path(p) for p in glob.glob(full) if Path(p).is_file())
        if not matches:
            lines.append(f"{full}: no rule file matches this pattern")
        for path in matches:
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                lines.append(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}")
                continue
            problems = _Problems(str(path))
            rules.extend(_parse_file(text, problems))
            lines.extend(problems.lines)
    if lines:
        raise RuleError(lines)
    return rules
