"""The ops store against a real SQLite file and a real PostgreSQL database: every record type
survives a round trip and a reopen, notifications are logged and queued atomically, the outbox
retries, silences expire, and leadership moves to another process when its holder dies."""

from __future__ import annotations

import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Set
from pathlib import Path

import psycopg2
import pytest

from airflow_ops.alerts.model import Alert, AlertState, Matcher, NflogEntry, OutboxItem, Silence
from airflow_ops.devstack.database import ADMIN_DSN, create_database, drop_database
from airflow_ops.maintenance.audit import RunStatus, Trigger
from airflow_ops.store import OpsStore, StoreError, open_store
from airflow_ops.store.schema import MIGRATIONS

REPO = Path(__file__).resolve().parents[2]
DAY = 86400.0
Opener = Callable[[str], OpsStore]

# A replica in its own process: acquires leadership, says so, then waits to be killed.
HOLDER = """
import sys
from airflow_ops.store import open_store
lead = open_store(sys.argv[1]).leadership()
if not lead.try_acquire():
    sys.exit("leadership not acquired")
print("held", flush=True)
sys.stdin.read()
"""


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    name = f"airflow_ops_store_test_{os.getpid()}"
    dsn = create_database(name)
    yield dsn
    drop_database(name)


def _pg_reset(dsn: str) -> None:
    """An empty database for each test: leftover sessions ended, ops_ tables dropped."""
    with _pg_admin(dsn) as cur:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        cur.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'ops\\_%'")
        for (table,) in cur.fetchall():
            cur.execute(f'DROP TABLE "{table}" CASCADE')


class _pg_admin:
    def __init__(self, dsn: str) -> None:
        self.conn = psycopg2.connect(dsn)
        self.conn.autocommit = True

    def __enter__(self) -> psycopg2.extensions.cursor:
        return self.conn.cursor()

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/ops.db"  # tmp_path is absolute: sqlite:////tmp/…
    dsn = request.getfixturevalue("pg_database")
    _pg_reset(dsn)
    return dsn


@pytest.fixture
def pg_url(pg_database: str) -> str:
    _pg_reset(pg_database)
    return pg_database


@pytest.fixture
def opened() -> Iterator[Callable[[str], OpsStore]]:
    """Opens stores and closes them after the test."""
    stores: list[OpsStore] = []

    def open_(url: str) -> OpsStore:
        stores.append(open_store(url))
        return stores[-1]

    yield open_
    for s in stores:
        s.close()


def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def make_alert(i: int, state: AlertState = AlertState.FIRING) -> Alert:
    return Alert(
        labels={"alertname": "AirflowDagFailing", "deployment": "prod", "dag_id": f"dag_{i}"},
        annotations={"summary": f"DAG dag_{i} failing", "description": "émoji ✓ <b>&"},
        state=state,
        value=3600.5 + i,
        active_at=1000.0 + i,
        fired_at=1060.25 + i,
        resolved_at=2000.0 if state is AlertState.RESOLVED else None,
        last_seen_at=1990.5,
        generator_url=f"http://airflow/dags/dag_{i}",
    )


def make_item(group_key: str = "g1", next_attempt_at: float = 0.0, payload: str | None = "{}") -> OutboxItem:
    return OutboxItem(
        id=0,
        receiver="team-a",
        integration="slack[0]",
        group_key=group_key,
        payload=payload,  # type: ignore[arg-type] - None on purpose in the atomicity test
        created_at=100.0,
        attempts=0,
        next_attempt_at=next_attempt_at,
        last_error=None,
    )


def entry(group_key: str, firing: Set[str], resolved: Set[str] = frozenset(), sent_at: float = 50.0):
    """An nflog entry of receiver team-a."""
    return NflogEntry("team-a", group_key, frozenset(firing), frozenset(resolved), sent_at)


def silence(starts_at: float, ends_at: float, sid: str = "") -> Silence:
    matchers = (Matcher("alertname", "=", "AirflowDagFailing"), Matcher("dag_id", "=~", r"etl_.*|a\.b"))
    return Silence(sid, matchers, starts_at, ends_at, "oncall@example.com", "maintenance window")


# --- opening -----------------------------------------------------------------------------------


def test_memory_store_round_trips_and_is_always_leader() -> None:
    with open_store("sqlite:///:memory:") as store:
        store.save_alerts([make_alert(1)], [])
        assert store.load_alerts() == [make_alert(1)]
        assert store.leadership().try_acquire()


def test_sqlite_urls_resolve_like_sqlalchemy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    open_store("sqlite:///state/rel.db").close()  # relative to the working directory
    assert (tmp_path / "state" / "rel.db").is_file()
    open_store(f"sqlite:///{tmp_path}/abs.db").close()  # four slashes: absolute
    assert (tmp_path / "abs.db").is_file()
    with pytest.raises(StoreError, match="unsupported ops store URL scheme 'mysql'"):
        open_store("mysql://u@h/db")


APPLIED = [(v,) for v in sorted(MIGRATIONS)]


def test_reopen_keeps_schema_and_refuses_a_newer_one(store_url: str, opened: Opener) -> None:
    opened(store_url).close()
    opened(store_url).close()  # migrating twice is a no-op
    if store_url.startswith("sqlite"):
        with sqlite3.connect(store_url.removeprefix("sqlite:///")) as conn:
            assert conn.execute("SELECT version FROM ops_schema_version").fetchall() == APPLIED
            conn.execute("INSERT INTO ops_schema_version VALUES (99, 0)")
    else:
        with _pg_admin(store_url) as cur:
            cur.execute("SELECT version FROM ops_schema_version ORDER BY version")
            assert cur.fetchall() == APPLIED
            cur.execute("INSERT INTO ops_schema_version VALUES (99, 0)")
    with pytest.raises(StoreError, match="schema version 99, newer than this airflow-ops knows"):
        open_store(store_url)


# --- round trips -------------------------------------------------------------------------------


def test_alert_state_round_trips_upserts_and_removes(store_url: str, opened: Opener) -> None:
    store = opened(store_url)
    firing, resolved = make_alert(1), make_alert(2, AlertState.RESOLVED)
    pending = make_alert(3, AlertState.PENDING)
    store.save_alerts([firing, resolved, pending], [])
    assert sorted(store.load_alerts(), key=lambda a: a.value) == [firing, resolved, pending]

    changed = dataclasses.replace(firing, value=float("nan"), last_seen_at=None)
    store.save_alerts([changed], [resolved.fingerprint, "unknown-fingerprint"])
    loaded = {a.fingerprint: a for a in store.load_alerts()}
    assert set(loaded) == {firing.fingerprint, pending.fingerprint}
    assert loaded[firing.fingerprint].value != loaded[firing.fingerprint].value  # NaN survives
    zeroed = dataclasses.replace(loaded[firing.fingerprint], value=0.0)
    assert zeroed == dataclasses.replace(changed, value=0.0)

    # A fingerprint both upserted and removed in one call is removed.
    store.save_alerts([pending], [pending.fingerprint])
    assert [a.fingerprint for a in store.load_alerts()] == [firing.fingerprint]


def test_nflog_round_trips_and_replaces(store_url: str, opened: Opener) -> None:
    store = opened(store_url)
    assert store.nflog_get("team-a", "g1") is None
    entries = [entry(f"g{i}", {f"fp{i}", "shared"}, {f"old{i}"}, sent_at=10.5 + i) for i in range(1000)]
    assert store.record_notifications(entries, []) == []
    assert store.nflog_get("team-a", "g7") == entries[7]

    keys = [("team-a", f"g{i}") for i in range(0, 1000, 3)] + [("team-a", "missing"), ("team-b", "g1")]
    got = store.nflog_get_many(keys)
    assert got == {("team-a", f"g{i}"): entries[i] for i in range(0, 1000, 3)}
    assert store.nflog_get_many([]) == {}

    newer = entry("g7", set(), {"fp7", "shared"}, sent_at=99.0)
    store.record_notifications([newer], [])
    assert store.nflog_get("team-a", "g7") == newer


def test_memo_round_trips_and_replaces(store_url: str, opened: Opener) -> None:
    store = opened(store_url)
    assert store.memo_get("slack[0]", "g1") is None
    store.memo_put("slack[0]", "g1", {"channel": "C1", "ts": "1700000000.000100", "note": "naïve"})
    store.memo_put("email[0]", "g1", {"message_id": "<a@b>"})
    store.memo_put("slack[0]", "g1", {"channel": "C1", "ts": "1700000001.000200"})
    assert store.memo_get("slack[0]", "g1") == {"channel": "C1", "ts": "1700000001.000200"}
    assert store.memo_get("email[0]", "g1") == {"message_id": "<a@b>"}


# --- notifications and the outbox --------------------------------------------------------------


def test_record_notifications_queues_items_in_order(store_url: str, opened: Opener) -> None:
    store = opened(store_url)
    items = [
        dataclasses.replace(make_item("g1"), integration="slack[0]", id=555),  # id is ignored
        dataclasses.replace(make_item("g1"), integration="email[0]", last_error="carried", attempts=2),
    ]
    ids = store.record_notifications([entry("g1", {"fp1"})], items)
    assert len(ids) == 2 and ids[0] < ids[1] and 555 not in ids
    assert store.outbox_due(now=0.0) == [dataclasses.replace(i, id=n) for i, n in zip(items, ids)]  # noqa: B905
    assert store.nflog_get("team-a", "g1") == entry("g1", {"fp1"})


def test_record_notifications_is_all_or_nothing(store_url: str, opened: Opener) -> None:
    store = opened(store_url)
    before = entry("g1", {"fp1"}, sent_at=1.0)
    store.record_notifications([before], [])

    # The bad item is the last statement of the transaction: the nflog writes and the first item
    # ran before it and must be rolled back with it.
    with pytest.raises(StoreError):
        store.record_notifications(
            [entry("g1", {"fp1", "fp2"}, sent_at=2.0), entry("g2", {"fp3"})],
            [make_item("g1"), make_item("g2", payload=None)],
        )
    assert store.nflog_get("team-a", "g1") == before
    assert store.nflog_get("team-a", "g2") is None
    assert store.outbox_pending_count() == 0
    assert store.outbox_due(now=1e12) == []

    # The store is still usable after the rollback.
    assert len(store.record_notifications([entry("g2", {"fp3"})], [make_item("g2")])) == 1
    assert store.outbox_pending_count() == 1


def test_outbox_due_retry_delivery_and_prune(store_url: str, opened: Opener) -> None:
    store = opened(store_url)
    assert store.outbox_next_due() is None
    a, b, c = store.record_notifications(
        [], [make_item("ga", 0.0), make_item("gb", 100.0), make_item("gc", 50.0)]
    )
    assert [i.id for i in store.outbox_due(now=60.0)] == [a, c]  # due only, in queue order
    assert [i.id for i in store.outbox_due(now=60.0, limit=1)] == [a]
    assert store.outbox_next_due() == 0.0

    store.outbox_failed(a, "HTTP 503: upstream unavailable", next_attempt_at=200.0)
    assert [i.id for i in store.outbox_due(now=60.0)] == [c]
    store.outbox_failed(a, "timeout " + "x" * 10_000, next_attempt_at=300.0)
    (retried,) = [i for i in store.outbox_due(now=300.0) if i.id == a]
    assert retried.attempts == 2 and retried.next_attempt_at == 300.0
    assert retried.last_error.startswith("timeout ") and len(retried.last_error) <= 4000
    assert store.outbox_next_due() == 50.0

    store.outbox_delivered(c, at=70.0)
    assert [i.id for i in store.outbox_due(now=1000.0)] == [a, b]
    assert store.outbox_pending_count() == 2
    with pytest.raises(StoreError, match="no outbox item with id 999999"):
        store.outbox_delivered(999999, at=1.0)
    with pytest.raises(StoreError, match="no outbox item with id 999999"):
        store.outbox_failed(999999, "x", 1.0)

    # Delivered items are history for 7 days; undelivered ones are never pruned.
    assert store.prune(now=70.0 + 7 * DAY - 1) == 0
    assert store.prune(now=70.0 + 7 * DAY + 1) == 1
    store.outbox_delivered(a, at=400.0)
    store.outbox_delivered(b, at=400.0)
    assert store.outbox_pending_count() == 0 and store.outbox_next_due() is None


def test_prune_drops_old_resolved_history_and_keeps_what_is_firing(store_url: str, opened: Opener) -> None:
    store = opened(store_url)
    logged = [entry("resolved", set(), {"fp1"}, 10.0), entry("firing", {"fp2"}, set(), 10.0)]
    store.record_notifications(logged, [])
    store.memo_put("slack[0]", "resolved", {"ts": "1"})
    store.memo_put("slack[0]", "firing", {"ts": "2"})
    ended = store.silence_add(silence(0.0, 20.0))
    later = time.time() + 8 * DAY
    assert store.prune(now=later) == 3
    assert store.nflog_get("team-a", "resolved") is None
    assert store.nflog_get("team-a", "firing") is not None
    assert store.memo_get("slack[0]", "resolved") is None
    assert store.memo_get("slack[0]", "firing") == {"ts": "2"}
    assert store.silence_get(ended.id) is None


# --- silences ----------------------------------------------------------------------------------


def test_silences_add_list_expire(store_url: str, opened: Opener) -> None:
    store = opened(store_url)
    active = store.silence_add(silence(0.0, 100.0))
    uuid.UUID(active.id, version=4)
    assert store.silence_get(active.id) == active  # matchers, regex and all
    pending = store.silence_add(silence(50.0, 150.0, sid="fixed-id"))
    ended = store.silence_add(silence(0.0, 10.0))
    assert pending.id == "fixed-id"

    assert store.silence_list(now=20.0) == [active, pending]
    everything = store.silence_list(now=20.0, include_expired=True)
    assert {s.id for s in everything} == {active.id, pending.id, ended.id}

    expired = store.silence_expire(active.id, now=30.0)
    assert expired == dataclasses.replace(active, expired_at=30.0)
    assert not expired.active(30.0)
    assert store.silence_get(active.id) == expired
    assert store.silence_list(now=30.0) == [pending]
    assert store.silence_expire(active.id, now=40.0) == expired  # already ended: unchanged
    assert store.silence_expire(ended.id, now=40.0).expired_at is None

    # Re-adding an id replaces the silence (an edit).
    edited = store.silence_add(dataclasses.replace(pending, comment="extended", ends_at=500.0))
    assert store.silence_get("fixed-id") == edited

    with pytest.raises(StoreError, match="no silence with id nope"):
        store.silence_expire("nope", now=1.0)
    assert store.silence_get("nope") is None


# --- durability and concurrency ----------------------------------------------------------------


def test_state_survives_closing_and_reopening(store_url: str, opened: Opener) -> None:
    store = opened(store_url)
    alerts = [make_alert(1), make_alert(2, AlertState.PENDING)]
    store.save_alerts(alerts, [])
    (item_id,) = store.record_notifications([entry("g1", {"fp1"})], [make_item("g1")])
    store.outbox_failed(item_id, "refused", next_attempt_at=5.0)
    store.memo_put("slack[0]", "g1", {"ts": "1.2"})
    s = store.silence_add(silence(0.0, 100.0))
    lead = store.leadership()
    assert lead.try_acquire()
    store.close()

    again = opened(store_url)
    assert sorted(again.load_alerts(), key=lambda a: a.value) == alerts
    assert again.nflog_get("team-a", "g1") == entry("g1", {"fp1"})
    retry = dataclasses.replace(make_item("g1"), attempts=1, last_error="refused", next_attempt_at=5.0)
    assert again.outbox_due(now=5.0) == [dataclasses.replace(retry, id=item_id)]
    assert again.memo_get("slack[0]", "g1") == {"ts": "1.2"}
    assert again.silence_list(now=1.0) == [s]
    assert again.leadership().try_acquire()  # closing released it


def test_store_is_safe_to_use_from_many_threads(store_url: str, opened: Opener) -> None:
    store = opened(store_url)
    ids: list[int] = []
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(25):
                logged = [entry(f"t{n}-{i}", {"fp"})]
                ids.extend(store.record_notifications(logged, [make_item(), make_item()]))
                store.silence_add(silence(0.0, 100.0))
                store.outbox_due(now=1.0, limit=5)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(ids)) == 200
    assert store.outbox_pending_count() == 200
    assert len(store.silence_list(now=1.0)) == 100


def test_ten_thousand_alerts_save_in_one_call(store_url: str, opened: Opener) -> None:
    store = opened(store_url)
    alerts = [make_alert(i) for i in range(10_000)]
    started = time.perf_counter()
    store.save_alerts(alerts, [])
    insert_s = time.perf_counter() - started

    updated = [dataclasses.replace(a, value=a.value + 1) for a in alerts]
    started = time.perf_counter()
    store.save_alerts(updated, [])
    update_s = time.perf_counter() - started

    started = time.perf_counter()
    loaded = store.load_alerts()
    load_s = time.perf_counter() - started

    started = time.perf_counter()
    store.save_alerts([], [a.fingerprint for a in alerts[:5000]])
    remove_s = time.perf_counter() - started

    backend = store_url.split(":", 1)[0]
    print(
        f"\n[{backend}] 10k alerts: insert {insert_s * 1000:.0f} ms, update {update_s * 1000:.0f} ms, "
        f"load {load_s * 1000:.0f} ms, remove 5k {remove_s * 1000:.0f} ms"
    )
    assert sorted(loaded, key=lambda a: a.value) == updated
    assert len(store.load_alerts()) == 5000
    # Generous for a shared 2-core machine; measured figures are ~10x lower.
    assert max(insert_s, update_s) < 5.0


# --- leadership --------------------------------------------------------------------------------


def test_only_one_store_leads_until_it_releases(store_url: str, opened: Opener) -> None:
    first, second = opened(store_url).leadership(), opened(store_url).leadership()
    assert first.try_acquire() and first.held
    assert not second.try_acquire() and not second.held
    assert first.try_acquire()  # still held: asking again is harmless
    first.release()
    assert not first.held
    assert second.try_acquire()
    assert not first.try_acquire()


def test_leadership_moves_when_the_holder_process_is_killed(store_url: str, opened: Opener) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, store_url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=REPO,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        standby = opened(store_url).leadership()
        assert not standby.try_acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        started = time.monotonic()
        assert eventually(standby.try_acquire, timeout=3.0)
        assert time.monotonic() - started < 3.0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


# --- PostgreSQL connection loss ----------------------------------------------------------------


def _terminate(dsn: str, application_name: str, only_lock_holder: bool = False) -> None:
    """End the store's server sessions the way a failover or an admin would, and wait until gone."""
    query = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s"
    if only_lock_holder:
        query += " AND pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)"
    with _pg_admin(dsn) as cur:
        cur.execute(query, (application_name,))
        pids = [pid for (pid,) in cur.fetchall()]
        assert pids, f"no {application_name!r} session to terminate"
        cur.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (pids,))

        def gone() -> bool:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,))
            return cur.fetchone()[0] == 0

        assert eventually(gone)


def test_store_reconnects_after_its_session_is_terminated(pg_url: str, opened: Opener) -> None:
    store = opened(pg_url)
    s = store.silence_add(silence(0.0, 100.0))
    _terminate(pg_url, "airflow-ops store")
    assert store.silence_list(now=1.0) == [s]  # a read retried on a fresh connection

    _terminate(pg_url, "airflow-ops store")
    ids = store.record_notifications([entry("g1", {"fp1"})], [make_item("g1")])
    assert len(ids) == 1 and store.outbox_pending_count() == 1  # a write retried, not doubled


def test_leader_whose_session_is_terminated_steps_down_then_competes_again(
    pg_url: str, opened: Opener
) -> None:
    leader, standby = opened(pg_url).leadership(), opened(pg_url).leadership()
    assert leader.try_acquire() and not standby.try_acquire()

    # Alone: it reports the loss once (so the caller reloads its state), then leads again.
    _terminate(pg_url, "airflow-ops leadership", only_lock_holder=True)
    assert not leader.try_acquire() and not leader.held
    assert leader.try_acquire()

    # Racing a standby: whoever asks first after the loss wins, and never both.
    _terminate(pg_url, "airflow-ops leadership", only_lock_holder=True)
    assert eventually(standby.try_acquire)
    assert not leader.try_acquire()
    assert not leader.try_acquire()
    standby.release()
    assert leader.try_acquire()


def test_postgres_scheme_is_an_alias(pg_url: str, opened: Opener) -> None:
    s = opened(pg_url).silence_add(silence(0.0, 100.0))
    assert opened(pg_url.replace("postgresql://", "postgres://", 1)).silence_get(s.id) == s


def test_errors_never_show_the_password() -> None:
    host = ADMIN_DSN.split("@", 1)[1].split("/", 1)[0]
    for password, in_url in [("Sup3rSecretPw", "Sup3rSecretPw"), ("p@ss w0rd!", "p%40ss%20w0rd%21")]:
        with pytest.raises(StoreError) as caught:
            open_store(f"postgresql://no_such_role_xyz:{in_url}@{host}/postgres")
        rendered = _messages(caught.value)
        assert "no_such_role_xyz" in str(caught.value)  # says whom it tried to connect as
        assert password not in rendered and in_url not in rendered
    with pytest.raises(StoreError) as caught:
        open_store("postgresql://u:Sup3rSecretPw@h/db?not_an_option=1")
    assert "Sup3rSecretPw" not in _messages(caught.value)


def _messages(exc: BaseException) -> str:
    """What a log line or traceback prints about ``exc`` and its chain, minus the source lines."""
    lines = "".join(traceback.format_exception(exc)).splitlines()
    return "\n".join(line for line in lines if not line.startswith(" "))


def test_maintenance_audit_records_runs_and_sums_their_figures(store_url: str, opened: Opener) -> None:
    store = opened(store_url)
    common = {"deployment": "prod", "actor": "ops@host", "trigger": Trigger.CLI}
    dry = store.audit_start(task="db_clean", action="db.clean", planned=True, now=10.0, **common)
    store.audit_finish(dry, RunStatus.PLANNED, {"action": "db.clean", "rows_deleted": 999}, 11.0)
    first = store.audit_start(task="db_clean", action="db.clean", planned=False, now=20.0, **common)
    store.audit_finish(first, RunStatus.SUCCESS, {"action": "db.clean", "rows_deleted": 100}, 25.0)
    second = store.audit_start(task="db_clean", action="db.clean", planned=False, now=30.0, **common)
    failed = {"action": "db.clean", "rows_deleted": 5, "errors": ["x"]}
    store.audit_finish(second, RunStatus.FAILED, failed, 31.0)
    running = store.audit_start(
        task="backup", action="backup", planned=False, now=40.0, **{**common, "trigger": Trigger.SCHEDULE}
    )

    runs = store.audit_runs(deployment="prod")
    assert [(r.id, r.status) for r in runs] == [
        (running, RunStatus.RUNNING),
        (second, RunStatus.FAILED),
        (first, RunStatus.SUCCESS),
        (dry, RunStatus.PLANNED),
    ]
    assert runs[0].finished_at is None and runs[0].report is None and runs[0].trigger is Trigger.SCHEDULE
    assert runs[1].report == failed
    assert [r.id for r in store.audit_runs(task="backup")] == [running]
    assert store.audit_runs(deployment="staging") == []

    by_task = {s.task: s for s in store.audit_summary()}
    clean = by_task["db_clean"]
    # The last real run failed; the last success is still known; a dry run's "would delete" is not
    # counted as deleted.
    assert (clean.last_status, clean.last_success_at, clean.rows_deleted) == (RunStatus.FAILED, 25.0, 105)
    assert (by_task["backup"].last_status, by_task["backup"].last_success_at) == (RunStatus.RUNNING, None)
    with pytest.raises(StoreError, match="no maintenance run"):
        store.audit_finish(12345, RunStatus.SUCCESS, {}, 50.0)
