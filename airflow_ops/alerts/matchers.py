"""Label matchers as Alertmanager writes them: ``name="value"`` with ops ``=``, ``!=``, ``=~``, ``!~``.

The one parser for matcher strings (routes, inhibit rules, silences from the CLI and HTTP API).
Values are double-quoted; inside them ``\\"``, ``\\\\`` and ``\\n`` are escapes and any other
backslash is literal, as in Alertmanager. Regexes are fully anchored and a missing label matches
as the empty string (:meth:`airflow_ops.alerts.model.Matcher.matches`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from .model import Matcher

_MATCHER = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*$', re.DOTALL)
_UNESCAPE = re.compile(r"\\(.)", re.DOTALL)
_UNESCAPED = {"n": "\n", '"': '"', "\\": "\\"}
_OP_ORDER = {"=": 0, "!=": 1, "=~": 2, "!~": 3}  # Alertmanager's MatchType order


def parse_matcher(text: str) -> Matcher:
    """``'severity=~"critical|warning"'`` -> ``Matcher("severity", "=~", "critical|warning")``.

    Raises ValueError with the offending text when it is malformed or its regex does not compile.
    """
    parsed = _MATCHER.match(text)
    if not parsed:
        raise ValueError(f'matcher {text!r} must look like name="value" (ops = != =~ !~)')
    name, op, raw = parsed.groups()
    # An unknown escape keeps its backslash (Alertmanager's "spurious escape").
    value = _UNESCAPE.sub(lambda m: _UNESCAPED.get(m.group(1), m.group(0)), raw)
    matcher = Matcher(name, op, value)
    if op in ("=~", "!~"):
        try:
            matcher.regex  # noqa: B018 - compiles (and caches) the pattern, reporting errors here
        except re.error as e:
            raise ValueError(f"matcher {text!r}: invalid regular expression: {e}") from None
    return matcher


def parse_matchers(texts: Iterable[str]) -> tuple[Matcher, ...]:
    return tuple(parse_matcher(t) for t in texts)


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)


def escape_value(value: str) -> str:
    """Quote a label value the way Alertmanager prints matchers and label sets."""
    return '"' + value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"') + '"'


def format_matcher(m: Matcher) -> str:
    """The inverse of :func:`parse_matcher`."""
    return f"{m.name}{m.op}{escape_value(m.value)}"


def format_matchers(matchers: Iterable[Matcher]) -> str:
    """``{a="1",b=~"x"}`` in Alertmanager's order (name, value, op) — used in route keys."""
    ordered = sorted(matchers, key=lambda m: (m.name, m.value, _OP_ORDER[m.op]))
    return "{" + ",".join(format_matcher(m) for m in ordered) + "}"


def format_labels(labels: Mapping[str, str]) -> str:
    """``{a="1", b="2"}`` sorted by name — the label-set part of a group key."""
    return "{" + ", ".join(f"{k}={escape_value(labels[k])}" for k in sorted(labels)) + "}"
