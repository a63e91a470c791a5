"""Airflow's REST API as a source: version, component health, import errors and pool slots.

Airflow 2 serves ``/api/v1`` with basic auth; Airflow 3 serves ``/api/v2`` and wants a JWT from
``POST /auth/token``. Everything that differs between the two is a row of ``API_FLAVORS``; the code
below is one path for both. Which row a server speaks is detected from ``/api/vN/version`` (no
credentials needed on either) and detected again after any failed poll, so an upgrade of the
server in place is followed without a restart.

All HTTP goes through apache-airflow-client's ``ApiClient``/``RESTClientObject`` (TLS verification,
CA file, connection pooling, timeouts), but responses are read as raw JSON rather than through its
typed ``MonitorApi``/``PoolApi``/... classes. Reasons:

- the client speaks ``/api/v2`` only, so ``/api/v1`` and ``/auth/token`` need the raw path anyway,
  and one parser per endpoint then serves both generations;
- its pydantic models are strict (``StrictInt``, required fields such as ``deferred_slots`` or
  ``triggerer``) and track one server release: a field added, renamed or made nullable in another
  3.x release, or an enum value the client does not know yet, would fail a whole poll, where the
  tolerant parsers below take what they need and default what older servers lack.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import urllib3
from airflow_client.client import ApiClient, Configuration
from airflow_client.client.exceptions import ApiException

from airflow_ops.airflow.source import SourceError
from airflow_ops.config import ApiConfig
from airflow_ops.snapshot import ApiState, ComponentHeartbeat, ImportErrorInfo, PoolSlots

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ApiFlavor:
    """One generation of Airflow's REST API: where it lives and how it authenticates."""

    name: str  # "v2" | "v1"
    prefix: str
    health_path: str
    auth: Literal["jwt", "basic"]
    # Field of an import error naming its DAG bundle (bundles exist from Airflow 3 on).
    bundle_field: str | None
    # UI pages (relative to the UI URL) a message links to: a DAG, and one task try's log.
    ui_dag_path: str = ""
    ui_task_log_path: str = ""

    def path(self, endpoint: str) -> str:
        return self.prefix + endpoint


# Probed in this order. Airflow 3 answers /api/v1/* with a JSON 404 ("/api/v1 has been removed"),
# Airflow 2 answers /api/v2/* with an HTML 404; an Airflow 3 UI catch-all answers unknown paths
# with 200 HTML, so only a JSON body with a "version" counts as an answer.
API_FLAVORS: tuple[ApiFlavor, ...] = (
    ApiFlavor(
        "v2",
        "/api/v2",
        health_path="/monitor/health",
        auth="jwt",
        bundle_field="bundle_name",
        ui_dag_path="/dags/{dag_id}",
        ui_task_log_path="/dags/{dag_id}/runs/{run_id}/tasks/{task_id}?try_number={try_number}",
    ),
    ApiFlavor(
        "v1",
        "/api/v1",
        health_path="/health",
        auth="basic",
        bundle_field=None,
        ui_dag_path="/dags/{dag_id}/grid",
        ui_task_log_path="/dags/{dag_id}/grid?dag_run_id={run_id}&task_id={task_id}&tab=logs",
    ),
)
VERSION_PATH = "/version"
IMPORT_ERRORS_PATH = "/importErrors"
POOLS_PATH = "/pools"
TOKEN_PATH = "/auth/token"  # at the server root, not under the API prefix

# Both generations report these with the same shape: {"status": "healthy" | "unhealthy" | null}.
# null means the component never ran here (no triggerer, dag processor inside the scheduler).
HEALTH_COMPONENTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")

# Pool counters, named alike in v1 and v2. Older 2.x servers lack some (deferred_slots came in
# 2.7), which then count 0.
POOL_COUNTERS = {
    "running": "running_slots",
    "queued": "queued_slots",
    "scheduled": "scheduled_slots",
    "deferred": "deferred_slots",
}

# Both generations silently cap `limit` at [api] maximum_page_limit (100 by default), so pages
# advance by what came back. limit=0 is not "the default" on v2: it returns an empty page.
PAGE_LIMIT = 100

# A fetched token is replaced a quarter of its lifetime before `exp`, but at most this early.
TOKEN_REFRESH_MARGIN = 60.0

# Reading pools one by one (see _pools_one_by_one) gives up after this many failures in a row
# before any page told how many pools there are.
_BLIND_POOL_PAGES = 20


# --------------------------------------------------------------------------- pure helpers


def jwt_claims(token: str) -> dict[str, Any] | None:
    """The claims of a JWT, decoded without verification (we only read ``exp``). None when the
    token is not a JWT (an opaque token from some other auth manager)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, binascii.Error):  # bad base64, bad UTF-8 and bad JSON are all ValueErrors
        return None
    return claims if isinstance(claims, dict) else None


def token_refresh_at(token: str, received_at: float) -> float | None:
    """When to replace a token received at ``received_at`` (epoch seconds): a quarter of its
    remaining lifetime before ``exp``, at most TOKEN_REFRESH_MARGIN before. None when the token
    has no usable ``exp``, or looks expired on arrival (our clock is ahead of the server's): then
    only the server rejecting it makes us log in again."""
    claims = jwt_claims(token)
    exp = claims.get("exp") if claims else None
    if not isinstance(exp, int | float) or isinstance(exp, bool) or not math.isfinite(exp):
        return None
    lifetime = exp - received_at
    if lifetime <= 0:
        return None
    return exp - min(TOKEN_REFRESH_MARGIN, lifetime / 4)


def collect_pages(
    fetch_page: Callable[[int, int], Mapping[str, Any]], items_key: str, limit: int = PAGE_LIMIT
) -> list[Any]:
    """Every item of a paginated list endpoint: ``fetch_page(offset, limit)`` until
    ``total_entries`` items came back or a page is empty. Raises ValueError on a malformed page."""
    items: list[Any] = []
    while True:
        page = fetch_page(len(items), limit)
        batch = page.get(items_key)
        total = page.get("total_entries")
        if not isinstance(batch, list):
            raise ValueError(f"the page has no {items_key!r} list")
        if not isinstance(total, int) or isinstance(total, bool):
            raise ValueError("the page has no integer total_entries")
        items.extend(batch)
        # An empty page ends it too: rows deleted while paging can leave total_entries unreachable.
        if not batch or len(items) >= total:
            return items


def parse_health(doc: Mapping[str, Any]) -> dict[str, bool]:
    """component -> healthy, for the components the server reports a status for."""
    health = {}
    for component in HEALTH_COMPONENTS:
        entry = doc.get(component)
        status = entry.get("status") if isinstance(entry, Mapping) else None
        if status is not None:
            health[component] = status == "healthy"
    return health


def parse_heartbeats(doc: Mapping[str, Any]) -> list[ComponentHeartbeat]:
    """Each component's latest heartbeat as the health document reports it (both generations name
    it ``latest_<component>_heartbeat``). The host is unknown here, so hostname is empty."""
    beats = []
    for component in HEALTH_COMPONENTS:
        entry = doc.get(component)
        if isinstance(entry, Mapping):
            ts = parse_timestamp(entry.get(f"latest_{component}_heartbeat"))
            if ts is not None:
                beats.append(ComponentHeartbeat(component, "", ts))
    return beats


def parse_timestamp(value: Any) -> float | None:
    """ISO 8601 (as both API generations write it) -> epoch seconds; None if absent or unreadable
    (a timestamp is informative here, not worth failing a poll over)."""
    if not isinstance(value, str):
        return None
    try:
        dt = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def parse_import_error(item: Any, flavor: ApiFlavor) -> ImportErrorInfo:
    if not isinstance(item, Mapping) or not isinstance(item.get("filename"), str):
        raise ValueError("an import error without a filename")
    bundle = item.get(flavor.bundle_field) if flavor.bundle_field else None
    return ImportErrorInfo(
        filename=item["filename"],
        bundle=bundle if isinstance(bundle, str) else None,
        timestamp=parse_timestamp(item.get("timestamp")),
    )


def _count(item: Mapping[str, Any], key: str, default: float | None = None, finite: bool = True) -> float:
    value = item.get(key)
    if value is None and default is not None:
        return default
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or math.isnan(value)
        or (finite and math.isinf(value))
    ):
        raise ValueError(f"pool {item.get('name')!r}: {key} is {value!r}, not a count")
    return value


def parse_pool(item: Any) -> PoolSlots:
    """A pool; an unlimited one (slots -1) has total and open -1. Airflow 3 writes open_slots -1
    for it; Airflow 2 computes float('inf'), which is mapped the same way should it ever arrive."""
    if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
        raise ValueError("a pool without a name")
    slots = _count(item, "slots", finite=False)
    unlimited = slots < 0 or math.isinf(slots)
    open_slots = _count(item, "open_slots", 0, finite=False)
    counters = {field: int(_count(item, key, 0)) for field, key in POOL_COUNTERS.items()}
    return PoolSlots(
        pool=item["name"],
        total=-1 if unlimited else int(slots),
        open=-1 if unlimited or math.isinf(open_slots) else int(open_slots),
        **counters,
    )


def display_url(url: str) -> str:
    """The URL without user info, for messages."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


# --------------------------------------------------------------------------- HTTP


class HttpStatusError(SourceError):
    """An unexpected HTTP status; ``status`` lets callers react to specific ones."""

    def __init__(self, reason: str, message: str, status: int) -> None:
        super().__init__(reason, message)
        self.status = status


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes
    content_type: str


class _Http:
    """apache-airflow-client's ApiClient as a plain JSON transport: it builds the URL on the
    configured host (which may carry a path prefix), adds its headers, and sends through its
    urllib3 pool with the configured TLS settings and timeout."""

    def __init__(self, api: ApiConfig, where: str) -> None:
        configuration = Configuration(
            host=api.url,
            verify_ssl=api.verify_tls,
            ssl_ca_cert=api.ca_file,
            # No urllib3 retries: a refused connection must fail this poll within one timeout,
            # and a redirect (e.g. to a login page) is reported rather than followed.
            retries=False,
        )
        self._client = ApiClient(configuration)
        self._client.user_agent = "airflow-ops"
        self._timeout = api.timeout
        self._where = where

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> _Response:
        method, url, header_params, body, _ = self._client.param_serialize(
            method=method,
            resource_path=path,
            query_params=list(query or []),
            header_params=dict(headers or {}),
            body=body,
        )
        # A pooled keep-alive connection the server closed in between fails with a ProtocolError
        # before anything was processed; GETs are retried once on a fresh connection.
        attempts = 2 if method == "GET" else 1
        for attempt in range(attempts):
            try:
                response = self._client.call_api(
                    method, url, header_params=header_params, body=body, _request_timeout=self._timeout
                )
                data = response.read()
                return _Response(response.status, data, response.headers.get("content-type") or "")
            except urllib3.exceptions.ProtocolError as e:
                if attempt + 1 < attempts:
                    continue
                raise SourceError("connect", f"connection to {self._where} lost: {_short(e)}") from None
            except urllib3.exceptions.NewConnectionError as e:  # also refused, unresolvable
                raise SourceError("connect", f"cannot connect to {self._where}: {_short(e)}") from None
            except (urllib3.exceptions.TimeoutError, TimeoutError):
                raise SourceError(
                    "timeout", f"no answer from {self._where} within {self._timeout:g}s"
                ) from None
            except urllib3.exceptions.SSLError as e:
                raise SourceError("connect", f"TLS with {self._where} failed: {_short(e)}") from None
            except ApiException as e:  # the client wraps TLS failures as status 0
                raise SourceError("connect", f"TLS with {self._where} failed: {_short(e)}") from None
            except (urllib3.exceptions.HTTPError, OSError) as e:
                raise SourceError("connect", f"cannot talk to {self._where}: {_short(e)}") from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._client.rest_client.pool_manager.clear()


def _short(e: BaseException) -> str:
    """An exception's text without urllib3's connection-object prefix."""
    text = str(getattr(e, "reason", None) or e) if isinstance(e, ApiException) else str(e)
    text = " ".join(text.split())
    if text.startswith(("HTTPConnection(", "HTTPSConnection(")) and ": " in text:
        text = text.split(": ", 1)[1]
    return text[:300] or type(e).__name__


# --------------------------------------------------------------------------- the source


class RestApiSource:
    """Polls one deployment's REST API. Not thread-safe: one poll at a time (the poller's way)."""

    name = "api"

    def __init__(self, deployment: str, api: ApiConfig) -> None:
        self.deployment = deployment
        self._api = api
        self._where = display_url(api.url)
        self._http = _Http(api, self._where)
        # The flavor to use on the next poll; None = detect first. Cleared by every failure.
        self._flavor: ApiFlavor | None = None
        # The last flavor detected, kept across failures to notice (and log) a change.
        self._last_detected: ApiFlavor | None = None
        self._detected_version: str | None = None
        # A token we fetched from /auth/token (never the configured api.token).
        self._token: str | None = None
        self._token_refresh_at: float | None = None
        self._pool_skip_warned = False

    @property
    def api_version(self) -> str | None:
        """The API generation last detected ("v2" or "v1"); None before the first detection."""
        return self._last_detected.name if self._last_detected else None

    def detect(self) -> str:
        """Which API the server speaks ("v2" or "v1"); raises SourceError if it speaks neither."""
        try:
            return self._detect().name
        except SourceError:
            self._flavor = None
            raise

    def poll(self, now: float) -> ApiState:
        try:
            if self._flavor is None:
                flavor = self._detect()
                version = self._detected_version or ""
            else:
                flavor = self._flavor
                try:
                    version = self._version(self._get(flavor, VERSION_PATH), flavor)
                except HttpStatusError as e:
                    if e.status != 404:
                        raise
                    # The API moved under us (an upgrade in place): detect now, not next poll.
                    flavor = self._detect()
                    version = self._detected_version or ""
            health_doc = self._get(flavor, flavor.health_path)
            errors = self._import_errors(flavor)
            pools = self._pools(flavor)
        except SourceError:
            # Detect again next time: the server may have been upgraded or replaced meanwhile.
            self._flavor = None
            raise
        return ApiState(
            version=version,
            health=parse_health(health_doc),
            heartbeats=parse_heartbeats(health_doc),
            import_errors=errors,
            pools=pools,
        )

    def close(self) -> None:
        self._http.close()
        self._flavor = None
        self._drop_token()

    # ------------------------------------------------------------------ reads for other callers

    def flavor(self) -> ApiFlavor:
        """The API generation in use, detected on first need."""
        if self._flavor is None:
            self.detect()
        assert self._flavor is not None
        return self._flavor

    def get_json(self, endpoint: str, query: Sequence[tuple[str, Any]] | None = None) -> dict[str, Any]:
        """GET an endpoint (path under the API prefix, e.g. ``/dags/x/dagRuns``) as a JSON object."""
        return self._get(self.flavor(), endpoint, query)

    def get_pages(self, endpoint: str, key: str) -> list[Any]:
        """Every item of a paginated list endpoint."""
        return self._paged(self.flavor(), endpoint, key)

    # ------------------------------------------------------------------ detection

    def _detect(self) -> ApiFlavor:
        for flavor in API_FLAVORS:
            what = f"GET {flavor.path(VERSION_PATH)}"
            resp = self._http.request("GET", flavor.path(VERSION_PATH))
            if resp.status in (401, 403):
                # Both generations serve /version without credentials by default; a server
                # (or a proxy in front) that protects it gets them.
                resp = self._authed(flavor, "GET", VERSION_PATH)
                if resp.status in (401, 403):
                    raise self._status_error(resp, what, flavor)
            doc = _json_object(resp.body) if resp.status == 200 else None
            if doc is None or not isinstance(doc.get("version"), str):
                if resp.status in (200, 404, 405):
                    continue  # not this generation
                raise self._status_error(resp, what, flavor)
            self._found(flavor, doc["version"])
            return flavor
        raise SourceError(
            "protocol",
            f"{self._where} answers neither /api/v2/version nor /api/v1/version with Airflow's version; "
            "is api.url the Airflow API server (Airflow 3) or webserver (Airflow 2)?",
        )

    def _found(self, flavor: ApiFlavor, version: str) -> None:
        if flavor != self._last_detected:
            if self._last_detected is not None:
                log.warning(
                    "deployment %s: %s now speaks %s (was %s), Airflow %s",
                    self.deployment,
                    self._where,
                    flavor.prefix,
                    self._last_detected.prefix,
                    version,
                )
            else:
                log.info(
                    "deployment %s: %s speaks %s, Airflow %s",
                    self.deployment,
                    self._where,
                    flavor.prefix,
                    version,
                )
            self._drop_token()
        self._flavor = self._last_detected = flavor
        self._detected_version = version

    # ------------------------------------------------------------------ collection

    def _version(self, doc: Mapping[str, Any], flavor: ApiFlavor) -> str:
        version = doc.get("version")
        if not isinstance(version, str):
            raise SourceError("protocol", f"GET {flavor.path(VERSION_PATH)} on {self._where} has no version")
        return version

    def _import_errors(self, flavor: ApiFlavor) -> list[ImportErrorInfo]:
        items = self._paged(flavor, IMPORT_ERRORS_PATH, "import_errors")
        try:
            parsed = [parse_import_error(item, flavor) for item in items]
        except ValueError as e:
            raise self._malformed(flavor, IMPORT_ERRORS_PATH, e) from None
        # Keyed by file: an error re-recorded while we paged would otherwise show twice.
        return list({(e.bundle, e.filename): e for e in parsed}.values())

    def _pools(self, flavor: ApiFlavor) -> list[PoolSlots]:
        try:
            items = self._paged(flavor, POOLS_PATH, "pools")
        except HttpStatusError as e:
            if e.status != 500:
                raise
            items = self._pools_one_by_one(flavor, e)
        try:
            parsed = [parse_pool(item) for item in items]
        except ValueError as e:
            raise self._malformed(flavor, POOLS_PATH, e) from None
        return list({p.pool: p for p in parsed}.values())

    def _pools_one_by_one(self, flavor: ApiFlavor, first_error: HttpStatusError) -> list[Any]:
        """Airflow 2 cannot list an unlimited pool: its open_slots is float('inf') and the v1
        response schema wants an integer, so the whole list answers 500. Read one pool per page and
        leave out the pages that fail, rather than losing every pool."""
        items: list[Any] = []
        skipped = 0
        offset = 0
        total: int | None = None
        while total is None or offset < total:
            try:
                page = self._get(flavor, POOLS_PATH, [("limit", 1), ("offset", offset)])
            except HttpStatusError as e:
                if e.status != 500:
                    raise
                if total is None and offset + 1 >= _BLIND_POOL_PAGES:
                    raise first_error from None
                skipped += 1
                offset += 1
                continue
            batch, page_total = page.get("pools"), page.get("total_entries")
            if not isinstance(batch, list) or not isinstance(page_total, int):
                raise self._malformed(flavor, POOLS_PATH, ValueError("malformed page"))
            total = page_total
            if not batch:
                break
            items.extend(batch)
            offset += len(batch)
        if skipped and not self._pool_skip_warned:
            log.warning(
                "deployment %s: %s cannot serialize %d pool(s) (Airflow 2 fails on unlimited pools, "
                "slots=-1); they are left out of the pool metrics",
                self.deployment,
                self._where,
                skipped,
            )
            self._pool_skip_warned = True
        return items

    def _paged(self, flavor: ApiFlavor, endpoint: str, key: str) -> list[Any]:
        def fetch(offset: int, limit: int) -> Mapping[str, Any]:
            return self._get(flavor, endpoint, [("limit", limit), ("offset", offset)])

        try:
            return collect_pages(fetch, key)
        except ValueError as e:
            raise self._malformed(flavor, endpoint, e) from None

    # ------------------------------------------------------------------ requests and auth

    def _get(
        self, flavor: ApiFlavor, endpoint: str, query: Sequence[tuple[str, Any]] | None = None
    ) -> dict[str, Any]:
        resp = self._authed(flavor, "GET", endpoint, query)
        what = f"GET {flavor.path(endpoint)}"
        if resp.status != 200:
            raise self._status_error(resp, what, flavor)
        doc = _json_object(resp.body)
        if doc is None:
            raise SourceError(
                "protocol",
                f"{what} on {self._where} did not return a JSON object "
                f"(content-type {resp.content_type or 'none'}); is api.url the Airflow API?",
            )
        return doc

    def _authed(
        self, flavor: ApiFlavor, method: str, endpoint: str, query: Sequence[tuple[str, Any]] | None = None
    ) -> _Response:
        headers, fresh = self._auth_headers(flavor)
        resp = self._http.request(method, flavor.path(endpoint), query=query, headers=headers)
        # Our own token rejected: Airflow 3 answers 401 once it expired and 403 "Invalid JWT token"
        # when the api-server restarted with another secret. Log in again, once.
        if resp.status in (401, 403) and self._token is not None and not fresh:
            log.debug(
                "deployment %s: token rejected (HTTP %d); logging in again", self.deployment, resp.status
            )
            self._drop_token()
            headers, _ = self._auth_headers(flavor)
            resp = self._http.request(method, flavor.path(endpoint), query=query, headers=headers)
        return resp

    def _auth_headers(self, flavor: ApiFlavor) -> tuple[dict[str, str], bool]:
        """The Authorization header for a request, and whether a token was fetched for it."""
        api = self._api
        if flavor.auth == "basic" and api.username is not None and api.password is not None:
            basic = base64.b64encode(f"{api.username}:{api.password.value}".encode()).decode()
            return {"Authorization": f"Basic {basic}"}, False
        if api.token is not None:
            return {"Authorization": f"Bearer {api.token.value}"}, False
        if flavor.auth == "jwt" and api.username is not None and api.password is not None:
            fresh = False
            expiring = self._token_refresh_at is not None and time.time() >= self._token_refresh_at
            if self._token is None or expiring:
                self._login()
                fresh = True
            return {"Authorization": f"Bearer {self._token}"}, fresh
        return {}, False

    def _login(self) -> None:
        api = self._api
        assert api.username is not None and api.password is not None
        self._drop_token()
        resp = self._http.request(
            "POST",
            TOKEN_PATH,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            body={"username": api.username, "password": api.password.value},
        )
        what = f"POST {TOKEN_PATH}"
        if resp.status in (400, 401, 403, 422):
            raise SourceError(
                "auth",
                f"{self._where} refused the login of user {api.username!r} ({what}: HTTP {resp.status}"
                f"{self._detail(resp)}); check api.username and api.password",
            )
        if resp.status in (404, 405):
            raise SourceError(
                "auth",
                f"{self._where} has no {TOKEN_PATH} login (HTTP {resp.status}); its auth manager may "
                "need a pre-issued token in api.token",
            )
        if resp.status not in (200, 201):
            raise self._status_error(resp, what, None)
        doc = _json_object(resp.body)
        token = doc.get("access_token") if doc else None
        if not isinstance(token, str) or not token:
            raise SourceError("protocol", f"{what} on {self._where} returned no access_token")
        now = time.time()
        self._token = token
        self._token_refresh_at = token_refresh_at(token, now)
        log.debug(
            "deployment %s: logged in as %r; token renewed in %s",
            self.deployment,
            api.username,
            "(on rejection only)"
            if self._token_refresh_at is None
            else f"{self._token_refresh_at - now:.0f}s",
        )

    def _drop_token(self) -> None:
        self._token = None
        self._token_refresh_at = None

    # ------------------------------------------------------------------ errors

    def _status_error(self, resp: _Response, what: str, flavor: ApiFlavor | None) -> SourceError:
        detail = self._detail(resp)
        if resp.status in (401, 403):
            # Airflow 2 answers 403 to bad basic credentials as well as to missing permissions.
            return SourceError(
                "auth", f"{what} on {self._where}: HTTP {resp.status}{detail}; {self._auth_hint(flavor)}"
            )
        return HttpStatusError("http", f"{what} on {self._where}: HTTP {resp.status}{detail}", resp.status)

    def _auth_hint(self, flavor: ApiFlavor | None) -> str:
        api = self._api
        if (
            flavor is not None
            and flavor.auth == "basic"
            and api.username is not None
            and api.password is not None
        ):
            return f"check api.username ({api.username!r}) and api.password, and the user's permissions"
        if api.token is not None:
            return "the configured api.token was refused (expired, or signed for another server?)"
        if api.username is not None and api.password is not None:
            return f"user {api.username!r} lacks the permission, or the login failed"
        if api.username is not None or api.password is not None:
            return "set both api.username and api.password (or api.token)"
        return "no credentials configured: set api.username and api.password (or api.token)"

    def _detail(self, resp: _Response) -> str:
        """The server's own error text, short and without our secrets."""
        doc = _json_object(resp.body)
        text = None
        if doc is not None:
            for key in ("detail", "title", "error", "message"):
                if isinstance(doc.get(key), str) and doc[key]:
                    text = doc[key]
                    break
        if not text:
            return ""
        text = " ".join(text.split())[:200]
        for secret in (self._api.password, self._api.token):
            if secret is not None and secret.value:
                text = text.replace(secret.value, "***")
        if self._token:
            text = text.replace(self._token, "***")
        return f" ({text})"

    def _malformed(self, flavor: ApiFlavor, endpoint: str, e: ValueError) -> SourceError:
        return SourceError(
            "protocol", f"unexpected answer to GET {flavor.path(endpoint)} on {self._where}: {e}"
        )


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(body)
    except ValueError:  # not JSON, or not UTF-8
        return None
    return doc if isinstance(doc, dict) else None
