"""db clean without a database: policy and config validation, the cascade tree built from
foreign keys, the SQL it produces, and the arithmetic of the stats module."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from airflow_ops.config.db_clean import DbCleanConfig
from airflow_ops.maintenance.db_cascade import RootFilter, build_tree, count_sql, delete_sql, key_filter
from airflow_ops.maintenance.db_catalog import Catalog, ForeignKey, TableInfo
from airflow_ops.maintenance.db_clean import CleanPolicy, DagOverride, PolicyError
from airflow_ops.maintenance.db_stats import create_index_sql, estimate_bloat_bytes, index_name
from airflow_ops.maintenance.db_tables import AIRFLOW2_CATALOGUE, AIRFLOW3_CATALOGUE, KNOWN_TABLES

DAY = 86400.0

# ------------------------------------------------------------------ CleanPolicy


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"retention": {"dag_runs": DAY}}, "retention.dag_runs: unknown table 'dag_runs'"),
        ({"retention": {"log": -1}}, "retention.log: retention must be a non-negative number"),
        ({"retention": {"log": "30d"}}, "retention.log: retention must be a non-negative number"),
        ({"tables": ("dag_run", "nope")}, "tables: unknown table 'nope'"),
        ({"keep_last_runs": -1}, "keep_last_runs: must be 0 or more"),
        ({"batch_size": 0}, "batch_size: must be between 1 and 100000"),
        ({"throttle": -0.1}, "throttle: must not be negative"),
        ({"lock_timeout": 0}, "lock_timeout: must be positive"),
        ({"cascades": "fast"}, "cascades: must be auto, set_based or triggers"),
        ({"workers": 0}, "workers: must be between 1 and 16"),
        ({"only_dag_pattern": "(["}, "only_dag_pattern: invalid regular expression"),
        ({"dag_overrides": (DagOverride(),)}, "dag_overrides[0]: give dag_ids or a pattern"),
        (
            {"dag_overrides": (DagOverride(pattern="a"), DagOverride(pattern="*"))},
            "dag_overrides[1].pattern: invalid regular expression",
        ),
        (
            {"dag_overrides": (DagOverride(dag_ids=("a",), retention={"import_error": DAY}),)},
            "dag_overrides[0].retention.import_error: table 'import_error' has no dag_id",
        ),
        (
            {"dag_overrides": (DagOverride(dag_ids=("a",), retention={"dagrun": DAY}),)},
            "dag_overrides[0].retention.dagrun: unknown table",
        ),
        (
            {"dag_overrides": (DagOverride(dag_ids=("a",), keep_last_runs=-2),)},
            "dag_overrides[0].keep_last_runs: must be 0 or more",
        ),
    ],
)
def test_bad_policy_values_name_their_key(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError) as err:
        CleanPolicy(**kwargs)
    assert str(err.value).startswith(message)


def test_retention_of_defaults_overrides_and_table_selection() -> None:
    rule = AIRFLOW3_CATALOGUE.rule("dag_run")
    log = AIRFLOW3_CATALOGUE.rule("log")
    ti = AIRFLOW3_CATALOGUE.rule("task_instance")
    assert rule is not None and log is not None and ti is not None
    policy = CleanPolicy(retention={"log": 7 * DAY, "dag_run": None})
    assert policy.retention_of("dag_run", rule) is None  # disabled
    assert policy.retention_of("log", log) == 7 * DAY
    assert policy.retention_of("task_instance", ti) is None  # goes with its runs only
    assert CleanPolicy().retention_of("dag_run", rule) == 90 * DAY
    only = CleanPolicy(tables=("log",))
    assert only.retention_of("dag_run", rule) is None and only.retention_of("log", log) == 90 * DAY


def test_dag_override_matching() -> None:
    override = DagOverride(dag_ids=("exact",), pattern="etl_.*")
    assert override.matches("exact") and override.matches("etl_daily")
    assert not override.matches("my_etl_daily")  # the pattern matches the whole dag_id
    assert not override.matches("exact2")


def test_catalogues_know_the_tables_of_both_versions() -> None:
    af2 = {r.table for r in AIRFLOW2_CATALOGUE.rules}
    af3 = {r.table for r in AIRFLOW3_CATALOGUE.rules}
    assert {"callback_request", "dataset_event", "sla_miss", "task_fail"} <= af2 - af3
    assert {"callback", "dag_version", "asset_event", "deadline", "revoked_token"} <= af3 - af2
    assert set(KNOWN_TABLES) == af2 | af3
    assert KNOWN_TABLES["dag_run"] and KNOWN_TABLES["task_reschedule"] and not KNOWN_TABLES["trigger"]
    # Run-scoped tables follow their runs unless a retention is configured for them.
    for catalogue in (AIRFLOW2_CATALOGUE, AIRFLOW3_CATALOGUE):
        assert catalogue.rules[0].table == "dag_run" and catalogue.rules[0].keep_last_runs
        for rule in catalogue.rules:
            if rule.run_of is not None:
                assert rule.default_days is None, rule.table


# ------------------------------------------------------------------ config


def test_config_parses_durations_and_builds_the_policy() -> None:
    config = DbCleanConfig.model_validate(
        {
            "retention": {"dag_run": "90d", "xcom": "14d", "import_error": None},
            "keep_last_runs": 2,
            "dag_overrides": [
                {"pattern": "report_.*", "retention": {"dag_run": "400d"}, "keep_last_runs": 5}
            ],
            "throttle": "100ms",
            "lock_timeout": "2s",
            "archive_dir": "/var/backups/clean",
        }
    )
    policy = config.to_policy(only_dag_ids=("a", "b"))
    assert policy.retention == {"dag_run": 90 * DAY, "xcom": 14 * DAY, "import_error": None}
    assert policy.keep_last_runs == 2 and policy.throttle == pytest.approx(0.1) and policy.lock_timeout == 2
    assert policy.dag_overrides == (DagOverride((), "report_.*", {"dag_run": 400 * DAY}, 5),)
    assert policy.only_dag_ids == ("a", "b")
    assert str(config.archive_dir) == "/var/backups/clean"


@pytest.mark.parametrize(
    ("data", "location", "message"),
    [
        ({"retention": {"dag_runs": "90d"}}, ("retention",), "unknown table 'dag_runs'"),
        ({"retention": {"log": "ninety days"}}, ("retention", "log"), "is not a duration"),
        ({"tables": ["dag_run", "xcoms"]}, ("tables",), "unknown table 'xcoms'"),
        ({"batch_size": 0}, ("batch_size",), "greater than or equal to 1"),
        ({"lock_timeout": "0s"}, ("lock_timeout",), "must be more than 0"),
        ({"cascades": "fast"}, ("cascades",), "'auto', 'set_based' or 'triggers'"),
        ({"dag_overrides": [{"keep_last_runs": 3}]}, ("dag_overrides", 0), "needs dag_ids or a pattern"),
        (
            {"dag_overrides": [{"pattern": "(["}]},
            ("dag_overrides", 0, "pattern"),
            "invalid regular expression",
        ),
        (
            {"dag_overrides": [{"dag_ids": ["a"], "retention": {"trigger": "1d"}}]},
            ("dag_overrides", 0, "retention"),
            "table 'trigger' has no dag_id",
        ),
        ({"retention": {"log": "30d"}, "retension": {}}, ("retension",), "Extra inputs are not permitted"),
    ],
)
def test_config_errors_are_located(data: dict[str, Any], location: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ValidationError) as err:
        DbCleanConfig.model_validate(data)
    (error,) = err.value.errors()
    assert error["loc"][: len(location)] == location
    assert message in error["msg"]


# ------------------------------------------------------------------ cascade tree


def _table(name: str, pk: tuple[str, ...] = ("id",), **types: str) -> TableInfo:
    return TableInfo(name, pk, {c: "integer" for c in pk} | types, 0, False)


def _catalog(*fks: ForeignKey, tables: tuple[TableInfo, ...] = ()) -> Catalog:
    names = {fk.child for fk in fks} | {fk.parent for fk in fks}
    infos = {t.name: t for t in tables}
    for name in names - set(infos):
        infos[name] = _table(name)
    return Catalog("public", infos, fks, {})


def test_tree_follows_cascades_unlinks_set_null_and_protects_the_rest() -> None:
    catalog = _catalog(
        ForeignKey("ti_run", "ti", ("run_id",), "run", ("id",), "cascade"),
        ForeignKey("x_ti", "xcom", ("ti_id",), "ti", ("id",), "cascade"),
        ForeignKey("b_run", "backfill_link", ("run_id",), "run", ("id",), "set null"),
        ForeignKey("v_run", "version_ref", ("run_id",), "run", ("id",), "restrict"),
    )
    tree = build_tree(catalog, "run", None)
    assert tree.tables() == ["xcom", "ti", "backfill_link"]  # children before parents
    assert [n.table for n in tree.inner_nodes()] == ["ti"]
    assert [n.unlink for n in tree.post_order()] == [False, False, True]
    assert [fk.name for fk in tree.protecting] == ["v_run"]  # referenced rows are not candidates
    assert tree.set_based_blockers == ()


def test_tree_cascade_into_limits_the_roots_children() -> None:
    catalog = _catalog(
        ForeignKey("sd_v", "serialized", ("version_id",), "version", ("id",), "cascade"),
        ForeignKey("ti_v", "ti", ("version_id",), "version", ("id",), "cascade"),
    )
    tree = build_tree(catalog, "version", ("serialized",))
    assert tree.tables() == ["serialized"]
    assert [fk.name for fk in tree.protecting] == ["ti_v"]


def test_tree_refuses_set_based_when_a_key_below_the_root_would_not_be_emulated() -> None:
    catalog = _catalog(
        ForeignKey("c_run", "child", ("run_id",), "run", ("id",), "cascade"),
        ForeignKey("g_c", "grandchild", ("child_id",), "child", ("id",), "restrict"),
        ForeignKey("d_run", "defaulted", ("run_id",), "run", ("id",), "set default"),
        ForeignKey("a_run", "audit_child", ("run_id",), "run", ("id",), "cascade"),
        tables=(TableInfo("audit_child", ("id",), {"id": "integer"}, 0, True),),
    )
    blockers = build_tree(catalog, "run", None).set_based_blockers
    assert any("g_c" in b and "RESTRICT" in b for b in blockers)
    assert any("d_run" in b and "SET DEFAULT" in b for b in blockers)
    assert any("user triggers on audit_child" in b for b in blockers)


def test_sql_joins_each_node_to_the_root_and_counts_multi_path_tables_once() -> None:
    run = _table("dag_run")
    ti = TableInfo("task_instance", ("dag_id", "task_id", "run_id"), {}, 0, False)
    catalog = _catalog(
        ForeignKey(
            "ti_run", "task_instance", ("dag_id", "run_id"), "dag_run", ("dag_id", "run_id"), "cascade"
        ),
        ForeignKey(
            "tr_ti",
            "task_reschedule",
            ("dag_id", "task_id", "run_id"),
            "task_instance",
            ("dag_id", "task_id", "run_id"),
            "cascade",
        ),
        ForeignKey(
            "tr_run", "task_reschedule", ("dag_id", "run_id"), "dag_run", ("dag_id", "run_id"), "cascade"
        ),
        tables=(run, ti),
    )
    tree = build_tree(catalog, "dag_run", None)
    flt = key_filter(run, [(1,), (2,)])
    assert flt.condition == 'p0."id" = ANY(%(k0)s::integer[])' and flt.params == {"k0": [1, 2]}
    (reschedule_via_ti,) = [n for n in tree.post_order() if n.depth == 2]
    assert delete_sql(reschedule_via_ti, run, flt) == (
        'DELETE FROM "task_reschedule" p2 USING "task_instance" p1, "dag_run" p0'
        ' WHERE p2."dag_id" = p1."dag_id" AND p2."task_id" = p1."task_id" AND p2."run_id" = p1."run_id"'
        ' AND p1."dag_id" = p0."dag_id" AND p1."run_id" = p0."run_id" AND (p0."id" = ANY(%(k0)s::integer[]))'
    )
    counted = count_sql(tree.nodes_of("task_reschedule"), run, RootFilter("TRUE", {}), catalog)
    assert (
        counted.startswith('SELECT count(*) FROM "task_reschedule" u WHERE u."id" IN (')
        and " UNION " in counted
    )


def test_composite_keys_filter_by_unnested_arrays() -> None:
    ti = TableInfo(
        "task_instance",
        ("dag_id", "map_index"),
        {"dag_id": "character varying(250)", "map_index": "integer"},
        0,
        False,
    )
    flt = key_filter(ti, [("a", -1), ("b", 3)])
    assert flt.condition == (
        '(p0."dag_id", p0."map_index") IN'
        " (SELECT * FROM unnest(%(k0)s::character varying(250)[], %(k1)s::integer[]))"
    )
    assert flt.params == {"k0": ["a", "b"], "k1": [-1, 3]}


# ------------------------------------------------------------------ stats arithmetic


def test_bloat_estimate() -> None:
    # 1000 rows of 100 bytes: (23 + 1 null-bitmap byte + 100 -> 128 aligned) + 4 = 132 bytes a row,
    # 61 rows a page at fillfactor 100 -> 17 pages needed.
    assert (
        estimate_bloat_bytes(
            relpages=17, reltuples=1000, row_width=100, columns=5, fillfactor=100, block=8192
        )
        == 0
    )
    assert (
        estimate_bloat_bytes(
            relpages=117, reltuples=1000, row_width=100, columns=5, fillfactor=100, block=8192
        )
        == 100 * 8192
    )
    # At fillfactor 50 the same rows need twice the pages.
    assert (
        estimate_bloat_bytes(relpages=34, reltuples=1000, row_width=100, columns=5, fillfactor=50, block=8192)
        == 0
    )
    assert (
        estimate_bloat_bytes(
            relpages=10, reltuples=1000, row_width=None, columns=5, fillfactor=100, block=8192
        )
        is None
    )


def test_index_names_fit_postgres_and_statements_are_quoted() -> None:
    fk = ForeignKey("deadline_dagrun_id_fkey", "deadline", ("dagrun_id",), "dag_run", ("id",), "cascade")
    assert index_name(fk) == "idx_deadline_dagrun_id"
    long = ForeignKey("x", "a" * 40, ("b" * 30, "c" * 10), "p", ("i", "j"), "cascade")
    assert len(index_name(long)) == 63 and index_name(long) != index_name(
        ForeignKey("x", "a" * 40, ("b" * 30, "d" * 10), "p", ("i", "j"), "cascade")
    )
    catalog = Catalog("public", {}, (fk,), {})
    assert create_index_sql(catalog, fk) == (
        'CREATE INDEX CONCURRENTLY IF NOT EXISTS "idx_deadline_dagrun_id"'
        ' ON "public"."deadline" ("dagrun_id")'
    )


def test_a_grandchild_joins_the_root_directly_when_the_keys_imply_it_and_an_index_serves_it() -> None:
    """task_instance_history.(dag_id, run_id) equals dag_run's through task_instance's keys; with
    an index led by them the statement skips task_instance, without one it goes through it."""
    run = TableInfo("dag_run", ("id",), {"id": "integer"}, 0, False)
    fks = (
        ForeignKey("ti_run", "ti", ("dag_id", "run_id"), "dag_run", ("dag_id", "run_id"), "cascade"),
        ForeignKey(
            "tih_ti", "tih", ("dag_id", "task_id", "run_id"), "ti", ("dag_id", "task_id", "run_id"), "cascade"
        ),
        ForeignKey(
            "x_ti", "xcom", ("dag_id", "task_id", "run_id"), "ti", ("dag_id", "task_id", "run_id"), "cascade"
        ),
    )
    indexes = {
        "tih": (("idx_tih_dag_run", ("run_id", "dag_id")),),
        "xcom": (("idx_xcom_ti", ("dag_id", "task_id", "run_id")),),  # led by task_id too: no help
    }
    infos = {t: _table(t) for t in ("ti", "tih", "xcom")} | {"dag_run": run}
    catalog = Catalog("public", infos, fks, indexes)
    tree = build_tree(catalog, "dag_run", None)
    by_table = {n.table: n for n in tree.post_order()}
    assert by_table["tih"].shortcut == (("dag_id", "dag_id"), ("run_id", "run_id"))
    assert by_table["xcom"].shortcut is None and by_table["ti"].shortcut is None
    flt = key_filter(run, [(7,)])
    assert delete_sql(by_table["tih"], run, flt) == (
        'DELETE FROM "tih" p2 USING "dag_run" p0 WHERE p2."dag_id" = p0."dag_id"'
        ' AND p2."run_id" = p0."run_id" AND (p0."id" = ANY(%(k0)s::integer[]))'
    )
    assert '"ti" p1' in delete_sql(by_table["xcom"], run, flt)
