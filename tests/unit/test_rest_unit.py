"""Pure logic of the REST source: the flavor table, JWT expiry, pagination and parsers."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import pytest

from airflow_ops.airflow.rest import (
    API_FLAVORS,
    HEALTH_COMPONENTS,
    TOKEN_REFRESH_MARGIN,
    collect_pages,
    display_url,
    jwt_claims,
    parse_health,
    parse_heartbeats,
    parse_import_error,
    parse_pool,
    parse_timestamp,
    token_refresh_at,
)
from airflow_ops.snapshot import ComponentHeartbeat, PoolSlots

V2, V1 = (next(f for f in API_FLAVORS if f.name == n) for n in ("v2", "v1"))


def make_jwt(claims: Any) -> str:
    def part(obj: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS512', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


# ----------------------------------------------------------------- flavor table


def test_flavor_table_probes_v2_first_and_differs_only_in_data() -> None:
    assert [f.name for f in API_FLAVORS] == ["v2", "v1"]
    assert V2.path("/version") == "/api/v2/version"
    assert V2.path(V2.health_path) == "/api/v2/monitor/health"
    assert V1.path(V1.health_path) == "/api/v1/health"
    assert (V2.auth, V1.auth) == ("jwt", "basic")
    assert (V2.bundle_field, V1.bundle_field) == ("bundle_name", None)


# ----------------------------------------------------------------- JWT expiry


def test_jwt_claims_reads_unpadded_payload() -> None:
    # Payload lengths that need 0, 1 and 2 padding characters.
    for sub in ("a", "ab", "abc"):
        assert jwt_claims(make_jwt({"sub": sub, "exp": 100}))["sub"] == sub  # type: ignore[index]


@pytest.mark.parametrize(
    "token",
    [
        "opaque-token",
        "a.b",
        "a.!!!.c",
        make_jwt([1, 2]),
        "x." + base64.urlsafe_b64encode(b"\xff").decode() + ".y",
    ],
)
def test_jwt_claims_none_for_non_jwt(token: str) -> None:
    assert jwt_claims(token) is None


def test_refresh_a_quarter_of_a_short_lifetime_early() -> None:
    assert token_refresh_at(make_jwt({"exp": 1000 + 8}), received_at=1000) == 1006


def test_refresh_at_most_the_margin_early_for_long_lifetimes() -> None:
    exp = 1000 + 86400
    assert token_refresh_at(make_jwt({"exp": exp}), received_at=1000) == exp - TOKEN_REFRESH_MARGIN


@pytest.mark.parametrize(
    "claims",
    [{"sub": "x"}, {"exp": "soon"}, {"exp": True}, {"exp": None}, {"exp": 999}, {"exp": 1000}],
)
def test_no_proactive_refresh_without_usable_exp(claims: dict[str, Any]) -> None:
    # No exp, a junk exp, or one already past on arrival (clock skew): rely on the 401 instead of
    # logging in before every request.
    assert token_refresh_at(make_jwt(claims), received_at=1000) is None


def test_no_proactive_refresh_for_opaque_tokens() -> None:
    assert token_refresh_at("opaque", received_at=0) is None


# ----------------------------------------------------------------- pagination


def paged_server(items: list[int], max_limit: int = 100, shrink_after: int | None = None) -> Any:
    """Pages like Airflow: limit capped at max_limit, total_entries of the whole list."""
    calls: list[tuple[int, int]] = []

    def fetch(offset: int, limit: int) -> dict[str, Any]:
        calls.append((offset, limit))
        data = items if shrink_after is None or len(calls) <= shrink_after else items[: offset // 2]
        return {"things": data[offset : offset + min(limit, max_limit)], "total_entries": len(items)}

    fetch.calls = calls  # type: ignore[attr-defined]
    return fetch


def test_collects_every_page() -> None:
    fetch = paged_server(list(range(250)))
    assert collect_pages(fetch, "things") == list(range(250))
    assert fetch.calls == [(0, 100), (100, 100), (200, 100)]


def test_server_side_limit_cap_is_followed() -> None:
    # The server returns 30 per page whatever we ask: offsets must advance by what came back.
    fetch = paged_server(list(range(75)), max_limit=30)
    assert collect_pages(fetch, "things") == list(range(75))
    assert [offset for offset, _ in fetch.calls] == [0, 30, 60]


def test_empty_list_is_one_request() -> None:
    fetch = paged_server([])
    assert collect_pages(fetch, "things") == []
    assert len(fetch.calls) == 1


def test_rows_deleted_while_paging_end_on_an_empty_page() -> None:
    fetch = paged_server(list(range(150)), shrink_after=1)
    assert collect_pages(fetch, "things") == list(range(100))
    assert len(fetch.calls) == 2


@pytest.mark.parametrize(
    "page", [{}, {"things": None, "total_entries": 1}, {"things": [], "total_entries": "1"}, {"things": []}]
)
def test_malformed_page_is_a_value_error(page: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        collect_pages(lambda offset, limit: page, "things")


# ----------------------------------------------------------------- parsers


def test_health_omits_components_that_never_ran() -> None:
    doc = {
        "metadatabase": {"status": "healthy"},
        "scheduler": {"status": "unhealthy", "latest_scheduler_heartbeat": "2024-01-01T00:00:00+00:00"},
        "triggerer": {"status": None, "latest_triggerer_heartbeat": None},
        "dag_processor": {"status": None},
        "something_new": {"status": "healthy"},
    }
    assert parse_health(doc) == {"metadatabase": True, "scheduler": False}
    # Only a component with a readable heartbeat time gets a heartbeat (the host is not known).
    assert parse_heartbeats(doc) == [ComponentHeartbeat("scheduler", "", 1704067200.0)]
    assert set(HEALTH_COMPONENTS) == {"metadatabase", "scheduler", "triggerer", "dag_processor"}


def test_health_tolerates_missing_and_odd_entries() -> None:
    assert parse_health({"scheduler": "healthy", "triggerer": {"status": "starting"}}) == {"triggerer": False}


def test_pool_v2_shape() -> None:
    item = {
        "name": "single_slot",
        "slots": 1,
        "open_slots": 0,
        "occupied_slots": 1,
        "running_slots": 1,
        "queued_slots": 2,
        "scheduled_slots": 3,
        "deferred_slots": 0,
        "include_deferred": False,
        "team_name": None,
    }
    assert parse_pool(item) == PoolSlots("single_slot", 1, 0, 1, 2, 3, 0)


def test_unlimited_pool_is_minus_one() -> None:
    assert parse_pool({"name": "u", "slots": -1, "open_slots": -1}) == PoolSlots("u", -1, -1, 0, 0, 0, 0)
    # Airflow 2's computation (float inf), should a server ever serialize it (Python's json does).
    assert parse_pool(json.loads('{"name": "u", "slots": -1, "open_slots": Infinity}')).open == -1
    assert math.isinf(json.loads("Infinity"))


def test_pool_of_an_older_airflow_without_newer_counters() -> None:
    pool = parse_pool({"name": "p", "slots": 5, "open_slots": 4, "running_slots": 1, "queued_slots": 0})
    assert pool == PoolSlots("p", 5, 4, 1, 0, 0, 0)


@pytest.mark.parametrize(
    "item",
    [
        {"slots": 1},
        {"name": "p"},
        {"name": "p", "slots": "many"},
        {"name": "p", "slots": True},
        {"name": "p", "slots": 1, "running_slots": "1"},
        {"name": "p", "slots": math.nan},
        {"name": "p", "slots": 1, "queued_slots": math.inf},
        ["not", "a", "mapping"],
    ],
)
def test_malformed_pool_is_a_value_error(item: Any) -> None:
    with pytest.raises(ValueError):
        parse_pool(item)


def test_import_error_bundle_depends_on_flavor() -> None:
    item = {
        "import_error_id": 1,
        "filename": "/dags/broken_dag.py",
        "bundle_name": "dags-folder",
        "timestamp": "2024-05-01T12:00:00Z",
        "stack_trace": "Traceback ...",
    }
    v2 = parse_import_error(item, V2)
    assert (v2.filename, v2.bundle, v2.timestamp) == ("/dags/broken_dag.py", "dags-folder", 1714564800.0)
    assert parse_import_error(item, V1).bundle is None


def test_import_error_without_filename_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_import_error({"import_error_id": 1}, V2)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T12:00:00+00:00", 1714564800.0),
        ("2024-05-01T12:00:00.500000+00:00", 1714564800.5),
        ("2024-05-01T14:00:00+02:00", 1714564800.0),
        ("2024-05-01T12:00:00Z", 1714564800.0),
        ("2024-05-01T12:00:00", 1714564800.0),  # naive: Airflow stores UTC
        ("yesterday", None),
        (None, None),
        (1714564800, None),
    ],
)
def test_parse_timestamp(text: Any, expected: float | None) -> None:
    assert parse_timestamp(text) == expected


def test_display_url_drops_user_info() -> None:
    assert display_url("https://u:secret@airflow.example.com:8443/airflow") == (
        "https://airflow.example.com:8443/airflow"
    )
    assert display_url("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
