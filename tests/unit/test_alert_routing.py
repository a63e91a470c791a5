"""The route tree: inheritance, depth-first matching with ``continue``, group labels and keys."""

from __future__ import annotations

from typing import Any

from airflow_ops.alerts.routing import Route, build_route_tree
from airflow_ops.config.alerting import AlertingConfig


def tree(route: dict[str, Any], **extra: Any) -> Route:
    names = {"default", "pager", "team-a", "team-b", "audit", "quiet"}
    return build_route_tree(
        AlertingConfig.model_validate(
            {"rule_files": [], "route": route, "receivers": [{"name": n} for n in names], **extra}
        )
    )


TREE = {
    "receiver": "default",
    "group_wait": "10s",
    "routes": [
        {"matchers": ['severity="critical"'], "receiver": "pager", "continue": True, "repeat_interval": "1h"},
        {
            "matchers": ['team="a"'],
            "receiver": "team-a",
            "group_by": ["dag_id"],
            "routes": [{"matchers": ['dag_id=~"audit_.*"'], "receiver": "audit", "group_interval": "1m"}],
        },
        {"matchers": ['team=~"a|b"'], "receiver": "team-b"},
    ],
}


def receivers(root: Route, labels: dict[str, str]) -> list[str]:
    return [r.receiver for r in root.match(labels)]


def test_root_takes_defaults() -> None:
    root = tree({"receiver": "default"}, mute_paused_dags=False)
    assert (root.group_wait, root.group_interval, root.repeat_interval) == (30.0, 300.0, 4 * 3600.0)
    assert root.group_by == frozenset({"alertname", "deployment", "dag_id"})
    assert root.mute_paused_dags is False
    assert root.key == "{}"


def test_children_inherit_unset_fields() -> None:
    root = tree(TREE)
    pager, team_a, team_b = root.routes
    audit = team_a.routes[0]
    assert (pager.group_wait, pager.repeat_interval, pager.group_by) == (10.0, 3600.0, root.group_by)
    assert audit.receiver == "audit"
    assert audit.group_by == frozenset({"dag_id"})  # from team-a, not the root
    assert (audit.group_wait, audit.group_interval, audit.repeat_interval) == (10.0, 60.0, 4 * 3600.0)
    assert team_b.mute_paused_dags is True  # AlertingConfig.mute_paused_dags defaults to true
    assert len({r.index for r in root.walk()}) == 5


def test_matching_is_depth_first_with_continue() -> None:
    root = tree(TREE)
    assert receivers(root, {"team": "c"}) == ["default"]  # no child matches: the root itself
    assert receivers(root, {"team": "a", "dag_id": "etl"}) == ["team-a"]  # first match stops
    assert receivers(root, {"team": "a", "dag_id": "audit_x"}) == ["audit"]  # deepest match
    assert receivers(root, {"team": "b"}) == ["team-b"]
    # continue: true on the pager route goes on to the later siblings...
    assert receivers(root, {"severity": "critical", "team": "a", "dag_id": "x"}) == ["pager", "team-a"]
    # ...and when none of them matches, only the pager gets it (not the root as well)
    assert receivers(root, {"severity": "critical"}) == ["pager"]


def test_continue_on_a_nested_match() -> None:
    root = tree(
        {
            "receiver": "default",
            "routes": [
                {
                    "matchers": ['team="a"'],
                    "receiver": "team-a",
                    "routes": [{"matchers": ['severity="critical"'], "receiver": "pager", "continue": True}],
                },
                {"matchers": ['team="a"'], "receiver": "audit"},
            ],
        }
    )
    # The nested pager route continues, but its parent team-a route does not: audit is not reached.
    assert receivers(root, {"team": "a", "severity": "critical"}) == ["pager"]
    assert receivers(root, {"team": "a"}) == ["team-a"]


def test_group_labels_and_key() -> None:
    root = tree(
        {
            "receiver": "default",
            "routes": [
                {"matchers": ['severity="critical"'], "receiver": "pager"},
                {"matchers": ['team="a"'], "receiver": "team-a", "group_by": ["..."]},
            ],
        }
    )
    labels = {"alertname": "DagFailing", "dag_id": "etl", "deployment": "prod", "severity": "critical"}
    (route,) = root.match(labels)
    group = route.group_labels(labels)
    assert group == {"alertname": "DagFailing", "dag_id": "etl", "deployment": "prod"}
    assert route.group_key(group) == (
        '{}/{severity="critical"}:{alertname="DagFailing", dag_id="etl", deployment="prod"}'
    )
    # Missing group_by labels are left out, not set to "".
    assert route.group_labels({"alertname": "SchedulerDown", "severity": "critical"}) == {
        "alertname": "SchedulerDown"
    }
    (by_all,) = root.match({"team": "a", "x": "1"})
    assert by_all.group_by is None
    assert by_all.group_labels({"team": "a", "x": "1"}) == {"team": "a", "x": "1"}
