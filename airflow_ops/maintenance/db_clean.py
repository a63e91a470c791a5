"""``db clean``: retention for Airflow's metadata tables, in small, timed-out, resumable batches.

Plan, then execute:

- :func:`plan_clean` fixes the cutoffs (``now`` minus each retention), resolves per-DAG overrides
  and the runs kept per DAG, picks the cascade mode, and finds the candidates of every table, in
  windows over its primary key: their count is exact and their keys (up to ``MAX_PLAN_KEYS``) are
  kept for execution. What cascades under them is counted exactly under up to 5,000 candidates
  and estimated from a sample of them above that; tables over ``estimate_over_rows`` rows are
  estimated from a sample of the table. Estimates are labelled (``≈``, and how). It changes
  nothing; ``plan.report()`` is the dry run.
- :func:`execute_clean` deletes the plan's candidates in batches of ``batch_size`` keys (or, for a
  plan without keys, walks the primary key in windows). A batch is one short transaction with
  ``SET LOCAL lock_timeout``/``statement_timeout``: lock the batch's rows that are still
  candidates (``FOR UPDATE SKIP LOCKED``: it never waits for Airflow's own row locks), optionally
  copy what goes to the archive, delete the rows and what cascades from them, commit, sleep
  ``throttle``. Lock timeouts are retried, statement timeouts halve the batch (so does a batch
  whose slowest statement exceeds ``target_statement_seconds``), and both are reported if they
  persist. ``workers`` connections can share the batches. A killed run loses at most its open
  batches (rolled back by PostgreSQL); planning again with the same ``now`` and executing
  continues with what is left.

Cascades (see ``db_cascade``): in set-based mode the children are deleted bottom-up with one
join statement per child table and batch, with the FK triggers of the transaction off
(``session_replication_role = replica``), after locking every parent row that has children of
its own, so that no concurrent insert can slip a child row in between. This needs a role
allowed to set that parameter (a superuser, or ``GRANT SET ON PARAMETER session_replication_role
TO …`` on PostgreSQL 15+). Otherwise PostgreSQL's own cascade triggers do the work (trigger mode:
one trigger call per child table per deleted row, several times slower) and the children are
counted (or copied) before the delete. Either way the report gives the rows removed per child
table.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

import psycopg2
import psycopg2.errors

from airflow_ops.airflow.schema import detect_profile

from .db_archive import Archive, ArchiveBatch
from .db_cascade import (
    CascadeTree,
    Node,
    RootFilter,
    after_condition,
    build_tree,
    count_sql,
    delete_sql,
    fk_condition,
    key_filter,
    lock_sql,
    rows_sql,
    unlink_sql,
)
from .db_catalog import Catalog, TableInfo, read_catalog
from .db_connection import (
    DbMaintenanceError,
    Session,
    SlowestStatement,
    column_list,
    connect,
    milliseconds,
    quote_ident,
)
from .db_tables import DAY, KNOWN_TABLES, CleanCatalogue, TableRule, catalogue_for
from .report import Progress, Report, no_progress

Cascades = Literal["auto", "set_based", "triggers"]

# Counting reads the table in windows of this many rows, made smaller while a window takes longer
# than the target (or is cancelled by the statement timeout).
_COUNT_WINDOW_ROWS = 1_000_000
_COUNT_TARGET_SECONDS = 1.0
# Up to this many candidate keys are kept in the plan: execution then deletes by key chunks. Beyond
# it, execution finds candidates window by window over the primary key.
MAX_PLAN_KEYS = 250_000
# What cascades is counted exactly under up to this many candidate rows; under more, it is
# estimated from an evenly spaced sample of this many of them (and labelled so): counting the
# cascade exactly costs about as much as a third of deleting it.
_CASCADE_EXACT = 5_000
_CASCADE_SAMPLE = 2_000
# Statements here are short and planned with costs inflated by subplans and constant arrays, which
# would make PostgreSQL JIT-compile most of them (about a second each).
_SESSION_SQL = "SET TIME ZONE 'UTC'; SET jit = off; SET statement_timeout = %s; SET lock_timeout = %s"
# Rows sampled to estimate a huge table.
_SAMPLE_ROWS = 200_000
_LOCK_BACKOFF_SECONDS = 0.2


class PolicyError(ValueError):
    """A policy value is invalid; the message starts with the offending key."""


# ================================================================== policy


@dataclass(frozen=True)
class DagOverride:
    """Retention and keep-last for some DAGs (by exact dag_id or a regex matched in full)."""

    dag_ids: tuple[str, ...] = ()
    pattern: str | None = None
    retention: Mapping[str, float | None] = field(default_factory=dict)  # table -> seconds, None: never
    keep_last_runs: int | None = None

    def matches(self, dag_id: str) -> bool:
        return dag_id in self.dag_ids or (
            self.pattern is not None and re.fullmatch(self.pattern, dag_id) is not None
        )


@dataclass(frozen=True)
class CleanPolicy:
    """What to clean. Retentions are seconds; a table maps to None to leave it alone.

    Tables not in ``retention`` keep the catalogue's default for the Airflow version; with
    ``tables`` set, only those are cleaned. ``only_dag_ids``/``only_dag_pattern`` restrict the
    cleanup to some DAGs: tables that are not per DAG are then skipped (and reported so).
    """

    retention: Mapping[str, float | None] = field(default_factory=dict)
    tables: tuple[str, ...] | None = None
    keep_last_runs: int = 1
    dag_overrides: tuple[DagOverride, ...] = ()
    only_dag_ids: tuple[str, ...] | None = None
    only_dag_pattern: str | None = None
    batch_size: int = 1000
    throttle: float = 0.0  # seconds between batches
    lock_timeout: float = 2.0
    statement_timeout: float = 10.0
    # Batches shrink when a statement takes longer than this, and grow back when well under it.
    target_statement_seconds: float = 0.5
    lock_retries: int = 3
    cascades: Cascades = "auto"
    # Connections deleting disjoint batches at once (each batch is still one short transaction);
    # more than 1 puts that much more load on the database.
    workers: int = 1

    def __post_init__(self) -> None:
        def table_key(key: str, table: str, per_dag: bool = False) -> None:
            if table not in KNOWN_TABLES:
                raise PolicyError(
                    f"{key}: unknown table {table!r} (known: {', '.join(sorted(KNOWN_TABLES))})"
                )
            if per_dag and not KNOWN_TABLES[table]:
                raise PolicyError(
                    f"{key}: table {table!r} has no dag_id, so it cannot have a per-DAG retention"
                )

        def seconds(key: str, value: float | None) -> None:
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or value < 0
            ):
                raise PolicyError(f"{key}: retention must be a non-negative number of seconds or None")

        for table, value in self.retention.items():
            table_key(f"retention.{table}", table)
            seconds(f"retention.{table}", value)
        for table in self.tables or ():
            table_key("tables", table)
        for i, override in enumerate(self.dag_overrides):
            key = f"dag_overrides[{i}]"
            if not override.dag_ids and override.pattern is None:
                raise PolicyError(f"{key}: give dag_ids or a pattern")
            _check_regex(f"{key}.pattern", override.pattern)
            for table, value in override.retention.items():
                table_key(f"{key}.retention.{table}", table, per_dag=True)
                seconds(f"{key}.retention.{table}", value)
            if override.keep_last_runs is not None and override.keep_last_runs < 0:
                raise PolicyError(f"{key}.keep_last_runs: must be 0 or more")
        _check_regex("only_dag_pattern", self.only_dag_pattern)
        checks = (
            ("keep_last_runs", self.keep_last_runs >= 0, "must be 0 or more"),
            ("batch_size", 1 <= self.batch_size <= 100_000, "must be between 1 and 100000"),
            ("throttle", self.throttle >= 0, "must not be negative"),
            ("lock_timeout", self.lock_timeout > 0, "must be positive"),
            ("statement_timeout", self.statement_timeout > 0, "must be positive"),
            ("target_statement_seconds", self.target_statement_seconds > 0, "must be positive"),
            ("lock_retries", self.lock_retries >= 0, "must be 0 or more"),
            ("workers", 1 <= self.workers <= 16, "must be between 1 and 16"),
            (
                "cascades",
                self.cascades in ("auto", "set_based", "triggers"),
                "must be auto, set_based or triggers",
            ),
        )
        for key, ok, why in checks:
            if not ok:
                raise PolicyError(f"{key}: {why}")

    @property
    def filtered(self) -> bool:
        return self.only_dag_ids is not None or self.only_dag_pattern is not None

    def retention_of(self, table: str, rule: TableRule) -> float | None:
        if self.tables is not None and table not in self.tables:
            return None
        if table in self.retention:
            return self.retention[table]
        return None if rule.default_days is None else rule.default_days * DAY


def _check_regex(key: str, pattern: str | None) -> None:
    if pattern is None:
        return
    try:
        re.compile(pattern)
    except re.error as exc:
        raise PolicyError(f"{key}: invalid regular expression: {exc}") from None


# ================================================================== plan


@dataclass
class TablePlan:
    rule: TableRule
    skipped: str | None = None  # why the table is not cleaned
    retention: str = ""  # human text
    # (dag_ids or None for "every other DAG", cutoff or None for "never")
    segments: list[tuple[tuple[str, ...] | None, datetime | None]] = field(default_factory=list)
    info: TableInfo | None = None
    tree: CascadeTree | None = None
    set_based: bool = False
    mode_note: str = ""
    candidate: str = ""  # SQL over p0
    params: dict[str, Any] = field(default_factory=dict)
    rows: int | None = None
    cascade: Counter[str] = field(default_factory=Counter)
    unlinked: Counter[str] = field(default_factory=Counter)
    sample_percent: float | None = None  # counts are estimates from this sample of the table
    cascade_sample: int | None = None  # cascade counts are estimates from this many candidates
    # The candidates' primary keys when counted exactly and not too many; None: execution looks
    # for candidates window by window over the whole table.
    keys: list[tuple[Any, ...]] | None = None
    count_error: str | None = None

    @property
    def table(self) -> str:
        return self.rule.table

    @property
    def active(self) -> bool:
        return self.skipped is None

    def total(self) -> int:
        return (self.rows or 0) + sum(self.cascade.values())


@dataclass
class CleanPlan:
    """What :func:`execute_clean` will do. ``dsn`` is kept out of every report and repr."""

    dsn: str = field(repr=False)
    policy: CleanPolicy
    now: datetime
    major: int
    schema: str
    catalog: Catalog = field(repr=False)
    tables: list[TablePlan] = field(default_factory=list)
    kept_runs: list[int] = field(default_factory=list)
    dags: int = 0  # DAGs known (dag table and dag_run)
    only_dags: list[str] | None = None
    replica: bool = False  # the role may set session_replication_role
    mode_note: str = ""
    slowest: SlowestStatement = field(default_factory=SlowestStatement)
    plan_seconds: float = 0.0

    def table(self, name: str) -> TablePlan | None:
        return next((t for t in self.tables if t.table == name), None)

    @property
    def total_rows(self) -> int:
        return sum(t.total() for t in self.tables if t.active)

    @property
    def nothing_to_delete(self) -> bool:
        """Every table was counted and none has a candidate (a failed count is not "none")."""
        return all(t.rows == 0 for t in self.tables if t.active)

    @property
    def estimated(self) -> bool:
        """Some count is an estimate (the total too, then)."""
        return any(t.sample_percent is not None or t.cascade_sample for t in self.tables if t.active)

    def report(self) -> Report:
        """The dry run: per-table counts, what cascades, what is skipped and why."""
        lines = [
            f"Airflow {self.major}.x schema {self.schema!r}; now = {self.now.isoformat()}; {self.mode_note}",
        ]
        if self.only_dags is not None:
            lines.append(f"only DAGs: {', '.join(self.only_dags) or '(none matched)'}")
        data_tables: dict[str, Any] = {}
        errors = []
        for tp in self.tables:
            if not tp.active:
                lines.append(f"{tp.table}: skipped ({tp.skipped})")
                data_tables[tp.table] = {"skipped": tp.skipped}
                continue
            approx = "≈" if tp.sample_percent is not None else ""
            under = "≈" if tp.sample_percent is not None or tp.cascade_sample else ""
            rows = "count failed" if tp.rows is None else f"{approx}{tp.rows:,} rows"
            line = (
                f"{tp.table}: {rows} ({tp.retention}; {'set-based' if tp.set_based else 'trigger'} cascades)"
            )
            if tp.cascade:
                line += "; with them " + ", ".join(f"{t} {under}{n:,}" for t, n in tp.cascade.items() if n)
            if sum(tp.unlinked.values()):
                line += "; unlinked " + ", ".join(f"{t} {under}{n:,}" for t, n in tp.unlinked.items() if n)
            if tp.sample_percent is not None:
                line += f" [estimated from a {tp.sample_percent:.2g}% sample of the table]"
            elif tp.cascade_sample:
                line += f" [rows under them estimated from {tp.cascade_sample:,} of the {tp.rows:,}]"
            if tp.mode_note:
                line += f" [{tp.mode_note}]"
            lines.append(line)
            if tp.count_error:
                errors.append(f"{tp.table}: {tp.count_error}")
            data_tables[tp.table] = {
                "rows": tp.rows,
                "cascade": dict(tp.cascade),
                "unlinked": dict(tp.unlinked),
                "estimated": tp.sample_percent is not None,
                "sample_percent": tp.sample_percent,
                "cascade_estimated_from": tp.cascade_sample,
                "retention": tp.retention,
                "cutoffs": [
                    {
                        "dag_ids": list(dags) if dags is not None else None,
                        "cutoff": c.isoformat() if c else None,
                    }
                    for dags, c in tp.segments
                ],
                "set_based": tp.set_based,
            }
        approx = "≈" if self.estimated else ""
        return Report(
            action="db.clean",
            planned=True,
            ok=not errors,
            summary=f"db clean would delete {approx}{self.total_rows:,} rows from "
            f"{sum(1 for t in self.tables if t.active and t.total())} tables",
            lines=lines,
            errors=errors,
            data={
                "now": self.now.isoformat(),
                "workers": self.policy.workers,
                "airflow_major": self.major,
                "tables": data_tables,
                "kept_runs": len(self.kept_runs),
                "estimated": self.estimated,
                "total_rows": self.total_rows,
                "plan_seconds": round(self.plan_seconds, 3),
                "longest_statement_seconds": round(self.slowest.seconds, 3),
                "longest_statement": self.slowest.what,
            },
        )


def plan_clean(
    dsn: str,
    policy: CleanPolicy,
    *,
    now: datetime | None = None,
    estimate_over_rows: int = 5_000_000,
) -> CleanPlan:
    """Plan a cleanup of the metadata DB at ``dsn``; changes nothing. Pass the ``now`` of an
    earlier plan to resume it with the same cutoffs."""
    started = time.monotonic()
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    with connect(dsn, autocommit=True) as s:
        _session_settings(s, policy)
        try:
            profile = detect_profile(s.conn)
        except Exception as exc:  # UnsupportedSchema or a DB error: either way, nothing to plan
            raise DbMaintenanceError(
                f"not an Airflow metadata DB this version can clean: {s.describe(exc)}"
            ) from None
        catalogue = catalogue_for(profile.major)
        catalog = read_catalog(s)
        replica, mode_note = _cascade_mode(s, policy)
        dags = _dag_universe(s)
        only = _only_dags(policy, dags)
        planner = _Planner(s, policy, catalogue, catalog, now, only, replica)
        kept = planner.kept_runs(dags)
        tables = [planner.table(rule) for rule in catalogue.rules]
        for tp in tables:
            if tp.active:
                planner.count(tp, estimate_over_rows)
        return CleanPlan(
            dsn=dsn,
            policy=policy,
            now=now,
            major=profile.major,
            schema=catalog.schema,
            catalog=catalog,
            tables=tables,
            kept_runs=kept,
            dags=len(dags),
            only_dags=only,
            replica=replica,
            mode_note=mode_note,
            slowest=s.slowest,
            plan_seconds=time.monotonic() - started,
        )


def _cascade_mode(s: Session, policy: CleanPolicy) -> tuple[bool, str]:
    """Whether set-based cascades are allowed (the role may set session_replication_role)."""
    if policy.cascades == "triggers":
        return False, "cascades by PostgreSQL's FK triggers (as configured)"
    try:
        s.run("check replication role", "BEGIN; SET LOCAL session_replication_role = replica")
        allowed, why = True, "set-based cascades (session_replication_role = replica in each batch)"
    except psycopg2.errors.InsufficientPrivilege:
        allowed = False
        why = (
            "cascades by PostgreSQL's FK triggers: this role may not set session_replication_role "
            "(a superuser can, or GRANT SET ON PARAMETER session_replication_role TO <role>)"
        )
    finally:
        s.run("check replication role", "ROLLBACK")
    if policy.cascades == "set_based" and not allowed:
        raise DbMaintenanceError(f"cascades: set_based is not possible: {why}")
    return allowed, why


_DAG_UNIVERSE_SQL = """
WITH RECURSIVE runs(dag_id) AS (
    SELECT min(dag_id) FROM dag_run
    UNION ALL
    SELECT (SELECT min(d.dag_id) FROM dag_run d WHERE d.dag_id > runs.dag_id)
    FROM runs WHERE runs.dag_id IS NOT NULL
)
SELECT dag_id FROM runs WHERE dag_id IS NOT NULL UNION SELECT dag_id FROM dag
"""


def _dag_universe(s: Session) -> list[str]:
    """Every dag_id with a DAG row or a run (a loose scan of dag_run's dag_id index)."""
    return sorted(r[0] for r in s.rows("list DAGs", _DAG_UNIVERSE_SQL))


def _only_dags(policy: CleanPolicy, dags: Sequence[str]) -> list[str] | None:
    if not policy.filtered:
        return None
    chosen = set(policy.only_dag_ids or ())
    if policy.only_dag_pattern is not None:
        chosen |= {d for d in dags if re.fullmatch(policy.only_dag_pattern, d)}
    return sorted(chosen)


def _days(seconds: float) -> str:
    return f"{seconds / DAY:g}d" if seconds >= DAY else f"{seconds:g}s"


class _Planner:
    """Builds each table's plan: cutoffs, candidate SQL, cascade tree and counts."""

    def __init__(
        self,
        s: Session,
        policy: CleanPolicy,
        catalogue: CleanCatalogue,
        catalog: Catalog,
        now: datetime,
        only: list[str] | None,
        replica: bool,
    ) -> None:
        self.s = s
        self.policy = policy
        self.catalogue = catalogue
        self.catalog = catalog
        self.now = now
        self.only = only
        self.replica = replica
        self.shared: dict[str, Any] = {"only_dags": only or [], "kept_runs": []}
        self.runs: TablePlan | None = None  # the dag_run plan, once built
        self.dags: list[str] = []

    # ---- keep-last

    def kept_runs(self, dags: list[str]) -> list[int]:
        """Per DAG: its newest run of any type and its N newest non-manual runs (N from the
        policy or the DAG's override). Computed window by window over dag_run's primary key:
        each window returns its own per-DAG top N, merged here."""
        self.dags = dags
        keep_n = {d: self._keep_last(d) for d in dags}
        most = max([self.policy.keep_last_runs, *keep_n.values()], default=self.policy.keep_last_runs)
        order = self.catalogue.runs.order.format(t="p0")
        manual = "p0.run_type IN (" + ", ".join(f"'{m}'" for m in self.catalogue.runs.manual_types) + ")"
        only = "AND p0.dag_id = ANY(%(only_dags)s)" if self.only is not None else ""
        by_newest = f"{order} DESC, p0.id DESC"
        best: dict[str, list[tuple[Any, int]]] = {}
        newest: dict[str, tuple[Any, int]] = {}
        info = self.catalog.tables["dag_run"]
        for lo, hi in self._windows(info, 20_000):
            rng, params = after_condition(info, lo, hi)
            rows = self.s.rows(
                "keep-last runs",
                f"""SELECT dag_id, id, ord, manual, rn_auto, rn_any FROM (
                    SELECT p0.dag_id, p0.id, {order} AS ord, {manual} AS manual,
                        row_number() OVER (PARTITION BY p0.dag_id, {manual} ORDER BY {by_newest}) AS rn_auto,
                        row_number() OVER (PARTITION BY p0.dag_id ORDER BY {by_newest}) AS rn_any
                    FROM dag_run p0 WHERE {rng} {only}) w
                WHERE (NOT manual AND rn_auto <= %(most)s) OR rn_any = 1""",
                {**params, **self.shared, "most": most},
            )
            for dag_id, run_pk, ord_, is_manual, rn_auto, rn_any in rows:
                key = (ord_, run_pk)
                if rn_any == 1 and (dag_id not in newest or key > newest[dag_id]):
                    newest[dag_id] = key
                if not is_manual and rn_auto <= most:
                    best.setdefault(dag_id, []).append(key)
        kept = {key[1] for key in newest.values()}
        for dag_id, keys in best.items():
            n = keep_n.get(dag_id, self.policy.keep_last_runs)
            kept.update(pk for _, pk in sorted(keys, reverse=True)[:n])
        self.shared["kept_runs"] = sorted(kept)
        return self.shared["kept_runs"]

    def _keep_last(self, dag_id: str) -> int:
        for override in self.policy.dag_overrides:
            if override.matches(dag_id) and override.keep_last_runs is not None:
                return override.keep_last_runs
        return self.policy.keep_last_runs

    # ---- tables

    def table(self, rule: TableRule) -> TablePlan:
        tp = TablePlan(rule)
        if not self.catalog.has(rule.table):
            tp.skipped = "not in this database"
            return tp
        if self.only is not None and rule.dag_id is None:
            tp.skipped = "not per DAG, and the cleanup is restricted to some DAGs"
            return tp
        default = self.policy.retention_of(rule.table, rule)
        segments: list[tuple[tuple[str, ...] | None, datetime | None]] = []
        texts = []
        if rule.dag_id is not None:
            groups: dict[int, list[str]] = {}
            for dag_id in self.dags:
                for i, override in enumerate(self.policy.dag_overrides):
                    if override.matches(dag_id) and rule.table in override.retention:
                        groups.setdefault(i, []).append(dag_id)
                        break
            for i, dag_ids in groups.items():
                seconds = self.policy.dag_overrides[i].retention[rule.table]
                segments.append(
                    (tuple(dag_ids), None if seconds is None else self.now - timedelta(seconds=seconds))
                )
                texts.append(
                    f"{len(dag_ids)} DAG(s): {'kept' if seconds is None else 'older than ' + _days(seconds)}"
                )
        segments.append((None, None if default is None else self.now - timedelta(seconds=default)))
        if all(cutoff is None for _, cutoff in segments):
            tp.skipped = "no retention configured" if rule.default_days is None else "disabled by the policy"
            return tp
        default_text = "not cleaned on its own" if default is None else f"older than {_days(default)}"
        tp.retention = "; ".join([*texts, "other DAGs: " + default_text]) if texts else default_text
        if rule.keep_last_runs:
            tp.retention += f"; keep last {self.policy.keep_last_runs} non-manual + newest run per DAG"
        tp.segments = segments
        tp.info = self.catalog.tables[rule.table]
        if not tp.info.primary_key:
            tp.skipped = "no primary key to batch by"
            return tp
        tp.tree = build_tree(self.catalog, rule.table, rule.cascade_into)
        if self.replica and not tp.tree.set_based_blockers:
            tp.set_based = True
        elif self.replica:
            tp.mode_note = "trigger cascades: " + "; ".join(tp.tree.set_based_blockers)
            if self.policy.cascades == "set_based":
                raise DbMaintenanceError(
                    f"cascades: set_based is not possible for {rule.table}: {tp.mode_note}"
                )
        tp.candidate, tp.params = self.candidate(tp, "p0")
        if rule.keep_last_runs:
            self.runs = tp
        return tp

    def candidate(self, tp: TablePlan, alias: str) -> tuple[str, dict[str, Any]]:
        """SQL over ``alias``: the row may be deleted under this plan."""
        rule, prefix = tp.rule, tp.table
        params: dict[str, Any] = {}
        dag_id = rule.sql(rule.dag_id, alias) if rule.dag_id else None
        whens = []
        for i, (dags, cutoff) in enumerate(tp.segments):
            params[f"{prefix}_cut{i}"] = cutoff
            if dags is None:
                default = f"%({prefix}_cut{i})s::timestamptz"
            else:
                params[f"{prefix}_dags{i}"] = list(dags)
                whens.append(
                    f"WHEN {dag_id} = ANY(%({prefix}_dags{i})s) THEN %({prefix}_cut{i})s::timestamptz"
                )
        cutoff_sql = f"CASE {' '.join(whens)} ELSE {default} END" if whens else default
        parts = [f"{rule.sql(rule.recency, alias)} < {cutoff_sql}"]
        if rule.eligible != "TRUE":
            parts.append(rule.sql(rule.eligible, alias))
        if self.only is not None and dag_id is not None:
            parts.append(f"{dag_id} = ANY(%(only_dags)s)")
        if rule.keep_last_runs:
            parts.append(f"NOT ({alias}.id = ANY(%(kept_runs)s::int[]))")
        if rule.keep_newest is not None:
            assert tp.info is not None
            pk = tp.info.primary_key[0]
            group, order = (rule.sql(x, "n") for x in rule.keep_newest)
            params[f"{prefix}_newest"] = [
                r[0]
                for r in self.s.rows(
                    f"newest {prefix}",
                    f"SELECT DISTINCT ON ({group}) n.{quote_ident(pk)} FROM {quote_ident(prefix)} n"
                    f" ORDER BY {group}, {order} DESC",
                )
            ]
            parts.append(
                f"NOT ({alias}.{quote_ident(pk)} = ANY(%({prefix}_newest)s::{tp.info.type_of(pk)}[]))"
            )
        if rule.run_of is not None:
            # Rows of a run only go with a finished (no live task instance), unkept run; rows of
            # a run this plan deletes are counted with it.
            run = f"{alias}_r"
            runs_rule = self.catalogue.rule("dag_run")
            assert runs_rule is not None
            parts.append(
                f"EXISTS (SELECT 1 FROM dag_run {run} WHERE {rule.sql(rule.run_of, alias, run)}"
                f" AND {runs_rule.sql(runs_rule.eligible, run)}"
                f" AND NOT ({run}.id = ANY(%(kept_runs)s::int[])) AND NOT ({self.run_deleted(run)}))"
            )
        assert tp.tree is not None
        for i, fk in enumerate(tp.tree.protecting):
            ref = f"{alias}_x{i}"
            parts.append(
                f"NOT EXISTS (SELECT 1 FROM {quote_ident(fk.child)} {ref}"
                f" WHERE {fk_condition(fk, ref, alias)} AND {self.survives(fk.child, ref)})"
            )
        params.update(self.runs.params if self.runs is not None else {})
        params.update(self.shared)
        return " AND ".join(f"({p})" for p in parts), params

    def run_deleted(self, alias: str) -> str:
        """SQL over a dag_run ``alias``: this plan deletes that run (FALSE if it deletes none)."""
        if self.runs is None:
            return "FALSE"
        sql, _ = self.candidate(self.runs, alias)
        return sql

    def survives(self, table: str, alias: str) -> str:
        """SQL over a row of ``table``: it is still there after this plan's run cleanup."""
        if self.runs is not None and table == "dag_run":
            return f"NOT ({self.run_deleted(alias)})"
        rule = self.catalogue.rule(table)
        if self.runs is not None and rule is not None and rule.run_of is not None:
            run = f"{alias}_r"
            return (
                f"NOT EXISTS (SELECT 1 FROM dag_run {run} WHERE {rule.sql(rule.run_of, alias, run)}"
                f" AND {self.run_deleted(run)})"
            )
        return "TRUE"

    # ---- counting

    def _windows(self, info: TableInfo, width: int) -> Any:
        """(after, upto] key windows of about ``width`` rows over the whole table."""
        after = None
        while True:
            upto = window_end(self.s, info, after, width, None)
            yield after, upto
            if upto is None:
                return
            after = upto

    def count(self, tp: TablePlan, estimate_over_rows: int) -> None:
        assert tp.info is not None and tp.tree is not None
        empty = empty_tables(self.s, [tp.table, *tp.tree.tables()])
        if tp.table in empty:
            tp.rows, tp.keys = 0, []
            return
        # An empty child table holds no rows of the candidates (execution looks again per batch).
        children = [t for t in tp.tree.tables() if t not in empty]
        try:
            if tp.info.estimated_rows > estimate_over_rows:
                self._estimate(tp, children)
            else:
                self._count_exactly(tp, children)
        except psycopg2.errors.QueryCanceled as exc:
            tp.rows, tp.keys, tp.count_error = None, None, f"counting timed out ({self.s.describe(exc)})"
            tp.cascade.clear()
            tp.unlinked.clear()

    def _count_children(
        self, tp: TablePlan, children: list[str], flt: RootFilter, scale: float = 1.0
    ) -> None:
        """Add the rows under the candidates of ``flt`` to the plan's cascade/unlink counts (all
        of them or, when a statement fails, none)."""
        assert tp.info is not None and tp.tree is not None
        cascade: Counter[str] = Counter()  # floats while scaled; the caller rounds
        unlinked: Counter[str] = Counter()
        for table in children:
            nodes = tp.tree.nodes_of(table)
            sql = count_sql(nodes, tp.info, flt, self.catalog)
            got = int(self.s.scalar(f"count {table} under {tp.table}", sql, {**tp.params, **flt.params}))
            (unlinked if nodes[0].unlink else cascade)[table] += got * scale
        tp.cascade.update(cascade)
        tp.unlinked.update(unlinked)

    def _count_exactly(self, tp: TablePlan, children: list[str]) -> None:
        """Count window by window over the primary key, keeping the candidates' keys while there
        are at most MAX_PLAN_KEYS of them; then count what hangs under them."""
        assert tp.info is not None
        info = tp.info
        pk = column_list("p0", info.primary_key).strip("()")
        # Each key comes with the columns its biggest child references: batches are cut in that
        # order, so a batch's cascade probes neighbouring entries of the child's index instead of
        # pages all over it (runs of one DAG together, rather than one run of each of 1000 DAGs).
        near = _locality_columns(self.catalog, tp)
        extra = "".join(f", p0.{quote_ident(c)}" for c in near)
        total, width, after = 0, _COUNT_WINDOW_ROWS, None
        found_keys: list[tuple[Any, ...]] = []  # (locality columns..., key columns...)
        overflow = False
        while True:
            upto = window_end(self.s, info, after, width, None)
            rng, rp = after_condition(info, after, upto)
            started = time.monotonic()
            try:
                where = f"{rng} AND {tp.candidate}"
                sql = f"SELECT {pk}{extra} FROM {quote_ident(tp.table)} p0 WHERE {where} ORDER BY {pk}"
                found = self.s.rows(f"candidates of {tp.table}", sql, {**tp.params, **rp})
            except psycopg2.errors.QueryCanceled:
                if width <= 1000:
                    raise
                width //= 4  # the same window again, smaller
                continue
            if time.monotonic() - started > _COUNT_TARGET_SECONDS and width > 1000:
                width //= 2
            total += len(found)
            n = len(info.primary_key)
            found_keys += [(*row[n:], *row[:n]) for row in found]
            if len(found_keys) > MAX_PLAN_KEYS:
                overflow = True
                found_keys = found_keys[:: max(2, len(found_keys) // _CASCADE_SAMPLE)]
            if upto is None:
                break
            after = upto
        if near and not overflow:
            found_keys.sort(key=lambda row: tuple((v is None, v) for v in row))
        keys = [row[len(near) :] for row in found_keys]
        tp.rows, tp.keys = total, None if overflow else keys
        if not children or not keys:
            return
        if overflow or len(keys) > _CASCADE_EXACT:
            sample = keys[:: max(1, len(keys) // _CASCADE_SAMPLE)]
            tp.cascade_sample = len(sample)
            scale = total / len(sample)
        else:
            sample, scale = keys, 1.0
        for start in range(0, len(sample), 1000):
            self._count_children(tp, children, key_filter(info, sample[start : start + 1000]), scale)
        # Rounding each chunk's scaled count would drift: round the totals.
        for counter in (tp.cascade, tp.unlinked):
            for table in counter:
                counter[table] = round(counter[table])

    def _estimate(self, tp: TablePlan, children: list[str]) -> None:
        assert tp.info is not None
        percent = max(0.01, min(100.0, 100.0 * _SAMPLE_ROWS / max(1, tp.info.estimated_rows)))
        flt = RootFilter(tp.candidate, {}, f"TABLESAMPLE SYSTEM ({percent:.4f}) REPEATABLE (7)")
        sql = f"SELECT count(*) FROM {quote_ident(tp.table)} p0 {flt.sample} WHERE {flt.condition}"
        n = int(self.s.scalar(f"estimate {tp.table}", sql, tp.params))
        if n:
            self._count_children(tp, children, flt, 100.0 / percent)
            for counter in (tp.cascade, tp.unlinked):
                for table in counter:
                    counter[table] = round(counter[table])
        tp.rows, tp.keys, tp.sample_percent = round(n * 100.0 / percent), None, percent


def _locality_columns(catalog: Catalog, tp: TablePlan) -> tuple[str, ...]:
    """The columns of the root that its biggest cascading child table references (none if they
    are the primary key, the order keys already have)."""
    assert tp.tree is not None and tp.info is not None
    direct = [n for n in tp.tree.nodes if not n.unlink]
    if not direct:
        return ()
    biggest = max(direct, key=lambda n: catalog.tables[n.table].estimated_rows)
    columns = biggest.path[0].parent_columns
    return () if columns == tp.info.primary_key else columns


def window_end(
    s: Session, info: TableInfo, after: tuple[Any, ...] | None, width: int, upto: tuple[Any, ...] | None
) -> tuple[Any, ...] | None:
    """The key ``width`` rows past ``after`` (not beyond ``upto``); None when fewer remain."""
    rng, params = after_condition(info, after, upto)
    pk = column_list("p0", info.primary_key).strip("()")
    row = s.run(
        f"window over {info.name}",
        f"SELECT {pk} FROM {quote_ident(info.name)} p0 WHERE {rng} ORDER BY {pk} OFFSET %(offset)s LIMIT 1",
        {**params, "offset": max(0, width - 1)},
    ).fetchone()
    return tuple(row) if row is not None else None


# ================================================================== execute


@dataclass
class _Outcome:
    deleted: int = 0
    cascade: Counter[str] = field(default_factory=Counter)
    unlinked: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    lock_retries: int = 0
    shrinks: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def total(self) -> int:
        return self.deleted + sum(self.cascade.values())


def execute_clean(
    plan: CleanPlan, progress: Progress = no_progress, *, archive_dir: Path | None = None
) -> Report:
    """Carry out ``plan``; with ``archive_dir``, every deleted row is first written (and fsynced)
    to a gzip'd CSV file there. Returns the outcome; ``ok`` is False if any part failed."""
    started = time.monotonic()
    outcomes: dict[str, _Outcome] = {}
    archive = Archive(archive_dir) if archive_dir is not None else None
    notes: list[str] = []
    run = _Run(plan, archive, progress, None if plan.estimated else plan.total_rows)
    with connect(plan.dsn) as s:
        _session_settings(s, plan.policy)
        run.sessions.append(s)
        if archive is not None:
            archive.open()
            notes += archive.settle_pending(lambda root, cols, keys: _rows_exist(s, plan, root, keys))
            s.conn.commit()
        for tp in plan.tables:
            if not tp.active:
                continue
            out = outcomes[tp.table] = _Outcome()
            t0 = time.monotonic()
            fatal = _clean_table(s, run, tp, out)
            out.seconds = time.monotonic() - t0
            if fatal:  # a connection is gone: nothing more can be done
                out.errors.append(fatal)
                break
        slowest = max((x.slowest for x in run.sessions), key=lambda w: w.seconds)
        statements = sum(x.statements for x in run.sessions)
    return _execution_report(plan, outcomes, archive, notes, slowest, statements, time.monotonic() - started)


def _session_settings(s: Session, policy: CleanPolicy) -> None:
    # Session-wide too: statements outside a batch (archive checks, table probes) never hang.
    s.run(
        "session settings",
        _SESSION_SQL,
        (milliseconds(policy.statement_timeout), milliseconds(policy.lock_timeout)),
    )
    s.conn.commit()


def _rows_exist(s: Session, plan: CleanPlan, root: str, keys: list[list[Any]]) -> bool:
    info = plan.catalog.tables[root]
    flt = key_filter(info, [tuple(k) for k in keys])
    return bool(
        s.scalar(
            "archive check",
            f"SELECT EXISTS (SELECT 1 FROM {quote_ident(root)} p0 WHERE {flt.condition})",
            flt.params,
        )
    )


class _Run:
    """What the workers of one execution share (under ``lock``)."""

    def __init__(
        self, plan: CleanPlan, archive: Archive | None, progress: Progress, total: int | None
    ) -> None:
        self.plan, self.archive, self.progress, self.total = plan, archive, progress, total
        self.lock = threading.Lock()
        self.done = 0
        self.sessions: list[Session] = []
        self.stop = threading.Event()  # a worker failed: the others of the table stop too

    def record(self, out: _Outcome, deleted: int, removed: Counter[str], unlinked: Counter[str]) -> None:
        with self.lock:
            out.batches += 1
            out.deleted += deleted
            out.cascade.update(removed)
            out.unlinked.update(unlinked)
            self.done += deleted + sum(removed.values())
            self.progress(self.done, self.total, "rows")

    def fail(self, out: _Outcome, error: str) -> None:
        with self.lock:
            out.errors.append(error)
        self.stop.set()


@dataclass
class _Selection:
    """Candidates one batch looks at: a condition over p0, its parameters, a LIMIT."""

    condition: str
    params: dict[str, Any]
    limit: int
    keys: list[tuple[Any, ...]] | None = None  # a chunk of the plan's keys


class _KeyChunks:
    """The plan's candidate keys, a chunk per batch, handed out to any number of workers."""

    def __init__(self, info: TableInfo, keys: list[tuple[Any, ...]]) -> None:
        self.info, self.keys, self.at = info, keys, 0
        self.lock = threading.Lock()

    def take(self, s: Session, batch: int) -> _Selection | None:
        with self.lock:
            chunk = self.keys[self.at : self.at + batch]
            self.at += len(chunk)
        return self._select(chunk) if chunk else None

    def _select(self, chunk: list[tuple[Any, ...]]) -> _Selection:
        flt = key_filter(self.info, chunk)
        return _Selection(flt.condition, flt.params, len(chunk), chunk)

    def smaller(self, sel: _Selection, batch: int) -> list[_Selection]:
        """The same candidates in batches of ``batch`` (after a statement timeout)."""
        assert sel.keys is not None
        return [self._select(sel.keys[i : i + batch]) for i in range(0, len(sel.keys), batch)]

    def looked_at(self, sel: _Selection, full: bool, last_key: tuple[Any, ...] | None) -> None:
        """Chunks are consumed when taken; a candidate locked by someone else waits for the next run."""


class _KeyWindows:
    """Windows over the whole primary key, for plans without keys (estimated, or too many); one
    worker walks them in order."""

    def __init__(self, info: TableInfo, width: int) -> None:
        self.info, self.width = info, width
        self.after: tuple[Any, ...] | None = None
        self.upto: tuple[Any, ...] | None = None
        self.finished = False

    def take(self, s: Session, batch: int) -> _Selection | None:
        if self.finished:
            return None
        self.upto = window_end(s, self.info, self.after, self.width, None)
        condition, params = after_condition(self.info, self.after, self.upto)
        return _Selection(condition, params, batch)

    def smaller(self, sel: _Selection, batch: int) -> list[_Selection]:
        return [_Selection(sel.condition, sel.params, batch)]

    def looked_at(self, sel: _Selection, full: bool, last_key: tuple[Any, ...] | None) -> None:
        if full:  # the batch may have left candidates in the window: go on from its last key
            self.after = last_key
        else:
            self.after, self.finished = self.upto, self.upto is None


def _clean_table(s: Session, run: _Run, tp: TablePlan, out: _Outcome) -> str | None:
    """Batches over one table until no candidate is left, with the policy's number of workers
    when the plan holds the keys. Returns an error that ends the execution (a lost connection)."""
    assert tp.info is not None and tp.tree is not None
    policy = run.plan.policy
    if tp.keys is not None and not tp.keys:
        return None  # the plan counted none
    run.stop.clear()
    if tp.keys is None:
        return _worker(s, run, tp, out, _KeyWindows(tp.info, max(10 * policy.batch_size, 2_000)))
    source = _KeyChunks(tp.info, tp.keys)
    workers = min(policy.workers, -(-len(tp.keys) // policy.batch_size))
    if workers == 1:
        return _worker(s, run, tp, out, source)
    fatal: list[str] = []

    def work(first: Session | None) -> None:
        try:
            if first is not None:
                error = _worker(first, run, tp, out, source)
            else:
                with connect(run.plan.dsn) as own:
                    _session_settings(own, policy)
                    with run.lock:
                        run.sessions.append(own)
                    error = _worker(own, run, tp, out, source)
        except DbMaintenanceError as exc:
            error = f"{tp.table}: {exc}"
        except Exception as exc:  # a bug must not pass for success: it ends the execution
            error = f"{tp.table}: {type(exc).__name__}: {s.describe(exc)}"
        if error:
            fatal.append(error)
            run.stop.set()

    threads = [threading.Thread(target=work, args=(None,), daemon=True) for _ in range(workers - 1)]
    for thread in threads:
        thread.start()
    work(s)
    for thread in threads:
        thread.join()
    return fatal[0] if fatal else None


def _worker(
    s: Session,
    run: _Run,
    tp: TablePlan,
    out: _Outcome,
    source: _KeyChunks | _KeyWindows,
) -> str | None:
    """One connection's batches: take candidates, lock, delete, commit, until none is left."""
    assert tp.info is not None and tp.tree is not None
    policy, info = run.plan.policy, tp.info
    batch = policy.batch_size
    pk = column_list("p0", info.primary_key).strip("()")
    pending: list[_Selection] = []  # candidates to look at again (after a lock or statement timeout)
    attempts = 0
    maybe_empty: frozenset[str] | None = None  # child tables empty when this worker started
    while not run.stop.is_set():
        s.since_mark = 0.0
        batch_archive: ArchiveBatch | None = None
        sel: _Selection | None = None
        try:
            s.set_timeouts(statement=policy.statement_timeout, lock=policy.lock_timeout, replica=tp.set_based)
            if maybe_empty is None:
                maybe_empty = empty_tables(s, tp.tree.tables())
            sel = pending.pop(0) if pending else source.take(s, batch)
            if sel is None:
                s.conn.rollback()
                return None
            victims = s.rows(
                f"select batch of {tp.table}",
                f"SELECT {pk} FROM {quote_ident(tp.table)} p0 WHERE {sel.condition} AND {tp.candidate}"
                f" ORDER BY {pk} LIMIT %(limit)s FOR UPDATE OF p0 SKIP LOCKED",
                {**tp.params, **sel.params, "limit": sel.limit},
            )
            full = len(victims) == sel.limit
            last_key = tuple(victims[-1]) if victims else None
            if victims and tp.tree.protecting:
                # A reference committed between the SELECT's snapshot and its row lock is not
                # seen by it; now that the rows are locked, no new one can come: look again.
                flt = key_filter(info, victims)
                victims = s.rows(
                    f"recheck batch of {tp.table}",
                    f"SELECT {pk} FROM {quote_ident(tp.table)} p0 WHERE {flt.condition} AND {tp.candidate}"
                    f" ORDER BY {pk}",
                    {**tp.params, **flt.params},
                )
            removed: Counter[str] = Counter()
            unlinked: Counter[str] = Counter()
            deleted = 0
            if victims:
                if run.archive is not None:
                    batch_archive = run.archive.batch(tp.table, info.primary_key, victims)
                flt = key_filter(info, victims)
                deleted = _delete_batch(s, run.plan, tp, flt, batch_archive, maybe_empty, removed, unlinked)
                if batch_archive is not None:
                    batch_archive.seal()
            s.conn.commit()
            if run.archive is not None and batch_archive is not None:
                run.archive.committed(batch_archive)
        except psycopg2.errors.LockNotAvailable as exc:
            _abandon(s, batch_archive)
            attempts += 1
            with run.lock:
                out.lock_retries += 1
            if attempts <= policy.lock_retries:
                if sel is not None:
                    pending.insert(0, sel)
                time.sleep(_LOCK_BACKOFF_SECONDS * attempts)
                continue
            run.fail(
                out,
                f"{tp.table}: a lock was not granted within {policy.lock_timeout:g}s, {attempts} times"
                f" ({s.describe(exc)}); what is left goes in the next run",
            )
            return None
        except psycopg2.errors.QueryCanceled as exc:
            _abandon(s, batch_archive)
            if sel is not None and sel.limit > 1:
                batch = max(1, sel.limit // 2)
                pending[:0] = source.smaller(sel, batch)
                with run.lock:
                    out.shrinks += 1
                continue
            run.fail(out, f"{tp.table}: a statement timed out even for one row ({s.describe(exc)})")
            return None
        except (
            psycopg2.DataError,
            psycopg2.IntegrityError,
            psycopg2.ProgrammingError,
            psycopg2.InternalError,
        ) as exc:
            _abandon(s, batch_archive)
            run.fail(out, f"{tp.table}: {s.describe(exc)}; the table was left as it was after the last batch")
            return None
        except psycopg2.Error as exc:
            _abandon(s, batch_archive)
            return f"{tp.table}: {s.describe(exc)}"
        except BaseException:
            _abandon(s, batch_archive)
            raise
        attempts = 0
        source.looked_at(sel, full, last_key)
        if victims:
            run.record(out, deleted, removed, unlinked)
        # Keep every statement well under the target: halve a batch that was slow, regrow when fast.
        if s.since_mark > policy.target_statement_seconds and batch > 1:
            batch = max(1, batch // 2)
            with run.lock:
                out.shrinks += 1
        elif s.since_mark < policy.target_statement_seconds / 4 and batch < policy.batch_size:
            batch = min(policy.batch_size, batch * 2)
        if victims and policy.throttle:
            time.sleep(policy.throttle)
    return None


def _abandon(s: Session, batch_archive: ArchiveBatch | None) -> None:
    with contextlib.suppress(psycopg2.Error):
        s.conn.rollback()
    if batch_archive is not None:
        batch_archive.discard()


def _delete_batch(
    s: Session,
    plan: CleanPlan,
    tp: TablePlan,
    flt: RootFilter,
    batch_archive: ArchiveBatch | None,
    maybe_empty: frozenset[str],
    removed: Counter[str],
    unlinked: Counter[str],
) -> int:
    """Delete one batch of root rows and what hangs under them; returns the root rows deleted."""
    assert tp.info is not None and tp.tree is not None
    tree, info = tp.tree, tp.info

    def run(what: str, sql: str, table: str) -> int:
        """Run a DELETE (… RETURNING, copied into the archive when there is one) or a SELECT to copy."""
        if batch_archive is not None:
            query = s.conn.cursor().mogrify(sql, flt.params).decode()
            sink, new = batch_archive.sink(table)
            n = s.copy_out(what, query, sink, header=new)
            batch_archive.add_rows(table, n)
            return n
        return s.run(what, sql, flt.params).rowcount

    present = _nodes_with_rows(s, tp, flt, maybe_empty)
    if tp.set_based:
        for node in tree.post_order():
            if node not in present:
                continue
            what = f"{'unlink' if node.unlink else 'delete'} {node.table} (under {tp.table})"
            if node.unlink:
                unlinked[node.table] += s.run(what, unlink_sql(node, info, flt), flt.params).rowcount
            else:
                sql = delete_sql(node, info, flt, returning=batch_archive is not None)
                removed[node.table] += run(what, sql, node.table)
    else:
        # PostgreSQL's triggers cascade when the root row goes: count (or copy) the rows first.
        for table in tree.tables():
            nodes = [n for n in tree.nodes_of(table) if n in present]
            if not nodes:
                continue
            target = unlinked if nodes[0].unlink else removed
            what = f"count {table} (under {tp.table})"
            if batch_archive is not None and not nodes[0].unlink:
                sql = rows_sql(nodes, info, flt, plan.catalog)
                target[table] += run(f"copy {table} (under {tp.table})", sql, table)
            else:
                target[table] += int(s.scalar(what, count_sql(nodes, info, flt, plan.catalog), flt.params))
    root = f"DELETE FROM {quote_ident(tp.table)} p0 WHERE {flt.condition}"
    return run(
        f"delete {tp.table}", root + (" RETURNING p0.*" if batch_archive is not None else ""), tp.table
    )


def _nodes_with_rows(s: Session, tp: TablePlan, flt: RootFilter, maybe_empty: frozenset[str]) -> set[Node]:
    """The tree nodes whose table is not empty, found level by level. In set-based mode each
    level's rows are locked before the next level is looked at: a table found empty once its
    parent rows are locked cannot get rows referencing them before the batch commits, so skipping
    it is exact. Only tables that were empty when the table's cleanup started are checked
    (``EXISTS`` on a table full of just-deleted rows would crawl through them)."""
    assert tp.tree is not None and tp.info is not None
    present: set[Node] = set()
    level = list(tp.tree.nodes)
    while level:
        empty = empty_tables(s, sorted({n.table for n in level} & maybe_empty))
        level = [n for n in level if n.table not in empty]
        present.update(level)
        if tp.set_based:
            for node in level:
                if node.children:
                    s.run(f"lock {node.table} (under {tp.table})", lock_sql(node, tp.info, flt), flt.params)
        level = [child for n in level for child in n.children]
    return present


def empty_tables(s: Session, tables: Sequence[str]) -> frozenset[str]:
    """Which of ``tables`` hold no row at all."""
    if not tables:
        return frozenset()
    probes = ", ".join(f"EXISTS (SELECT 1 FROM {quote_ident(t)})" for t in tables)
    found = s.rows("probe empty tables", f"SELECT ARRAY[{probes}]")[0][0]
    return frozenset(t for t, has in zip(tables, found, strict=True) if not has)


def _execution_report(
    plan: CleanPlan,
    outcomes: Mapping[str, _Outcome],
    archive: Archive | None,
    notes: list[str],
    slowest: SlowestStatement,
    statements: int,
    seconds: float,
) -> Report:
    lines, errors, tables = [], [], {}
    for table, out in outcomes.items():
        line = f"{table}: deleted {out.deleted:,} in {out.batches} batches, {out.seconds:.1f}s"
        if out.cascade:
            line += "; with them " + ", ".join(f"{t} {n:,}" for t, n in out.cascade.items() if n)
        if sum(out.unlinked.values()):
            line += "; unlinked " + ", ".join(f"{t} {n:,}" for t, n in out.unlinked.items() if n)
        if out.lock_retries:
            line += f"; {out.lock_retries} lock timeouts retried"
        lines.append(line)
        errors += out.errors
        tables[table] = {
            "deleted": out.deleted,
            "cascade": dict(out.cascade),
            "unlinked": dict(out.unlinked),
            "batches": out.batches,
            "lock_retries": out.lock_retries,
            "batch_shrinks": out.shrinks,
            "seconds": round(out.seconds, 3),
            "errors": out.errors,
        }
    rows = sum(o.total() for o in outcomes.values())
    rate = rows / seconds if seconds > 0 else 0.0
    if archive is not None:
        lines.append(f"archive: {archive.batches} batches, {archive.bytes_written:,} bytes in {archive.dir}")
    lines += notes
    lines.append(f"longest statement {slowest.seconds:.3f}s ({slowest.what}); {statements:,} statements")
    return Report(
        action="db.clean",
        planned=False,
        ok=not errors,
        summary=f"db clean deleted {rows:,} rows in {seconds:.1f}s ({rate:,.0f} rows/s)"
        + (f"; {len(errors)} errors" if errors else ""),
        lines=lines,
        errors=errors,
        data={
            "now": plan.now.isoformat(),
            "tables": tables,
            "rows_per_second": round(rate, 1),
            "seconds": round(seconds, 3),
            "longest_statement_seconds": round(slowest.seconds, 4),
            "longest_statement": slowest.what,
            "statements": statements,
            "archive_dir": str(archive.dir) if archive is not None else None,
            "set_based": {t.table: t.set_based for t in plan.tables if t.active},
        },
        rows_deleted=rows,
        bytes_written=archive.bytes_written if archive is not None else 0,
    )
