"""The route tree (Alertmanager's ``dispatch/route.go``): which routes, hence which receivers and
aggregation groups, an alert goes to.

Options are resolved once at build time: a child inherits every unset field from its parent, and
the root's unset fields come from :data:`DEFAULT_ROUTE` (``mute_paused_dags`` from the alerting
section). Matching is depth-first, left to right: an alert goes to the first matching child, to
later siblings too only while the matched child says ``continue``, and to the node itself when
no child matches.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from ..config.alerting import DEFAULT_ROUTE, AlertingConfig, RouteConfig
from .matchers import format_labels, format_matchers, parse_matchers
from .model import Matcher

GROUP_BY_ALL = "..."
_T = TypeVar("_T")


@dataclass(frozen=True, eq=False)
class Route:
    """One node of the tree with its options fully resolved (identity equality: nodes are unique)."""

    key: str  # the path of matcher sets from the root, e.g. '{}/{severity="critical"}'
    index: int  # position in depth-first order, unique in the tree
    receiver: str
    matchers: tuple[Matcher, ...]
    group_by: frozenset[str] | None  # None: group by all labels
    group_wait: float
    group_interval: float
    repeat_interval: float
    mute_paused_dags: bool
    continue_: bool
    routes: tuple[Route, ...]

    def match(self, labels: Mapping[str, str]) -> list[Route]:
        """The routes (leaves of the walk) that ``labels`` go to; empty when this node does not match."""
        if not all(m.matches(labels) for m in self.matchers):
            return []
        found: list[Route] = []
        for child in self.routes:
            matched = child.match(labels)
            found.extend(matched)
            if matched and not child.continue_:
                break
        return found or [self]

    def group_labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        """The labels an alert is grouped by on this route (only those it carries)."""
        if self.group_by is None:
            return dict(labels)
        return {k: v for k, v in labels.items() if k in self.group_by}

    def group_key(self, group_labels: Mapping[str, str]) -> str:
        """``<route key>:<group labels>`` — the aggregation group's name and its notification-log key."""
        return f"{self.key}:{format_labels(group_labels)}"

    def walk(self) -> list[Route]:
        out = [self]
        for child in self.routes:
            out.extend(child.walk())
        return out


def build_route_tree(config: AlertingConfig) -> Route:
    """The resolved tree of ``config.route``."""
    defaults = _Opts(
        receiver=config.route.receiver or "",
        group_by=_group_by(DEFAULT_ROUTE.group_by or ()),
        group_wait=_required(DEFAULT_ROUTE.group_wait),
        group_interval=_required(DEFAULT_ROUTE.group_interval),
        repeat_interval=_required(DEFAULT_ROUTE.repeat_interval),
        mute_paused_dags=config.mute_paused_dags,
    )
    return _build(config.route, defaults, parent_key=None, counter=[0])


@dataclass(frozen=True)
class _Opts:
    receiver: str
    group_by: frozenset[str] | None
    group_wait: float
    group_interval: float
    repeat_interval: float
    mute_paused_dags: bool


def _build(cfg: RouteConfig, parent: _Opts, parent_key: str | None, counter: list[int]) -> Route:
    opts = _Opts(
        receiver=cfg.receiver if cfg.receiver is not None else parent.receiver,
        group_by=_group_by(cfg.group_by) if cfg.group_by is not None else parent.group_by,
        group_wait=_pick(cfg.group_wait, parent.group_wait),
        group_interval=_pick(cfg.group_interval, parent.group_interval),
        repeat_interval=_pick(cfg.repeat_interval, parent.repeat_interval),
        mute_paused_dags=_pick(cfg.mute_paused_dags, parent.mute_paused_dags),
    )
    matchers = parse_matchers(cfg.matchers)
    own = format_matchers(matchers)
    key = own if parent_key is None else f"{parent_key}/{own}"
    index = counter[0]
    counter[0] += 1
    children = tuple(_build(child, opts, key, counter) for child in cfg.routes)
    return Route(
        key=key,
        index=index,
        receiver=opts.receiver,
        matchers=matchers,
        group_by=opts.group_by,
        group_wait=opts.group_wait,
        group_interval=opts.group_interval,
        repeat_interval=opts.repeat_interval,
        mute_paused_dags=opts.mute_paused_dags,
        continue_=cfg.continue_,
        routes=children,
    )


def _group_by(names: tuple[str, ...]) -> frozenset[str] | None:
    return None if GROUP_BY_ALL in names else frozenset(names)


def _pick(value: _T | None, inherited: _T) -> _T:
    return inherited if value is None else value


def _required(value: float | None) -> float:
    assert value is not None, "DEFAULT_ROUTE sets every timing"
    return value
