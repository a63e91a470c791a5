"""RestApiSource against real Airflow 3 (/api/v2, JWT) and Airflow 2 (/api/v1, basic auth)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import os
import re
import secrets
import signal
import ssl
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from loopback_proxy import LoopbackProxy, free_port, silent_port

from airflow_ops.airflow.rest import RestApiSource
from airflow_ops.airflow.source import SourceError
from airflow_ops.config import ApiConfig, Secret
from airflow_ops.devstack.stack import AirflowStack, ApiError

pytestmark = pytest.mark.airflow


def source_for(stack: AirflowStack, url: str | None = None, **overrides: Any) -> RestApiSource:
    settings: dict[str, Any] = {
        "url": url or stack.api_url,
        "username": stack.username,
        "password": stack.password,
        "timeout": 30,
    }
    settings.update(overrides)
    return RestApiSource("test", ApiConfig(**settings))


@pytest.fixture
def source(airflow_stack: AirflowStack) -> Iterator[RestApiSource]:
    src = source_for(airflow_stack)
    yield src
    src.close()


# ----------------------------------------------------------------- what is collected


def test_detects_the_api_and_reports_version_and_health(
    airflow_stack: AirflowStack, source: RestApiSource
) -> None:
    assert source.detect() == airflow_stack.api_version
    # An earlier test may have restarted a component; wait for the stack's own view to settle.
    airflow_stack.wait_until_healthy(timeout=120)
    state = source.poll(time.time())
    assert state.version == airflow_stack.version
    expected = {"metadatabase", "scheduler", "triggerer"}
    if airflow_stack.major >= 3:
        expected.add("dag_processor")  # Airflow 2 parses inside the scheduler: no status at all
    assert dict(state.health) == dict.fromkeys(expected, True)


def test_import_errors_name_the_broken_file(airflow_stack: AirflowStack, source: RestApiSource) -> None:
    errors = source.poll(time.time()).import_errors
    broken = [e for e in errors if Path(e.filename).name == "broken_dag.py"]
    assert len(broken) == 1, errors
    assert broken[0].timestamp is not None and broken[0].timestamp <= time.time()
    if airflow_stack.major >= 3:
        assert broken[0].bundle == "dags-folder"
    else:
        assert broken[0].bundle is None


def test_pools_include_default_and_single_slot(source: RestApiSource) -> None:
    pools = {p.pool: p for p in source.poll(time.time()).pools}
    assert pools["default_pool"].total == 128
    single = pools["single_slot"]
    assert single.total == 1
    # open = slots - occupied, and occupied = running + queued (deferred does not count here).
    assert single.open == 1 - single.running - single.queued


def test_pools_span_several_pages(airflow_stack: AirflowStack, source: RestApiSource) -> None:
    # Written straight into slot_pool (105 API calls take half a minute on Airflow 2); the API
    # serves them like any other pool.
    prefix = f"afops_page_{uuid.uuid4().hex[:8]}_"
    names = [f"{prefix}{i:03d}" for i in range(105)]
    insert = "INSERT INTO slot_pool (pool, slots, description, include_deferred) VALUES (%s, 2, '', false)"
    with closing(psycopg2.connect(airflow_stack.db_dsn)) as conn, conn, conn.cursor() as cur:
        cur.executemany(insert, [(n,) for n in names])
    try:
        pools = {p.pool: p for p in source.poll(time.time()).pools}
        assert set(names) <= set(pools)
        assert {"default_pool", "single_slot"} <= set(pools)
        assert all(pools[n].total == 2 and pools[n].open == 2 for n in names)
    finally:
        with closing(psycopg2.connect(airflow_stack.db_dsn)) as conn, conn, conn.cursor() as cur:
            cur.execute("DELETE FROM slot_pool WHERE pool LIKE %s", (prefix + "%",))


def test_unlimited_pool(airflow_stack: AirflowStack, source: RestApiSource) -> None:
    name = f"afops_unlimited_{uuid.uuid4().hex[:8]}"
    try:
        try:
            airflow_stack.api("POST", "pools", {"name": name, "slots": -1, "description": "unlimited"})
        except ApiError as e:
            # Airflow 2 creates the pool, then fails to serialize it (open_slots is float inf).
            assert airflow_stack.major == 2 and e.status == 500, e
        pools = {p.pool: p for p in source.poll(time.time()).pools}
        if airflow_stack.major >= 3:
            assert (pools[name].total, pools[name].open) == (-1, -1)
        else:
            # /api/v1/pools answers 500 while the pool exists; the source reads the other pools
            # one by one instead of losing them all.
            assert name not in pools
        assert {"default_pool", "single_slot"} <= set(pools)
    finally:
        airflow_stack.api("DELETE", f"pools/{name}")


# ----------------------------------------------------------------- authentication


def test_wrong_password_is_an_auth_error_without_the_password(airflow_stack: AirflowStack) -> None:
    wrong = f"wrong-{secrets.token_hex(8)}"
    src = source_for(airflow_stack, password=wrong)
    with pytest.raises(SourceError) as err:
        src.poll(time.time())
    assert err.value.reason == "auth"
    assert wrong not in str(err.value) and wrong not in repr(err.value)
    assert airflow_stack.password not in str(err.value)
    src.close()


def test_no_credentials_is_an_auth_error_that_says_so(airflow_stack: AirflowStack) -> None:
    src = RestApiSource("test", ApiConfig(url=airflow_stack.api_url))
    with pytest.raises(SourceError) as err:
        src.poll(time.time())
    assert err.value.reason == "auth"
    assert "no credentials configured" in str(err.value)
    src.close()


def issued_token(stack: AirflowStack, base_url: str | None = None) -> str:
    req = urllib.request.Request(
        f"{base_url or stack.api_url}/auth/token",
        data=json.dumps({"username": stack.username, "password": stack.password}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return str(json.load(resp)["access_token"])


def signed_jwt(secret: str, claims: dict[str, Any]) -> str:
    """An HS512 JWT as Airflow 3's api-server issues them (same secret, same claims)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = (
        b64(json.dumps({"alg": "HS512", "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims).encode())
    )
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha512).digest()
    return f"{signing_input}.{b64(signature)}"


def test_configured_token_is_used_as_is(airflow3: AirflowStack) -> None:
    token = issued_token(airflow3)
    src = RestApiSource("test", ApiConfig(url=airflow3.api_url, token=Secret(token)))
    try:
        assert {"default_pool", "single_slot"} <= {p.pool for p in src.poll(time.time()).pools}
    finally:
        src.close()


def test_expired_configured_token_is_an_auth_error(airflow3: AirflowStack) -> None:
    now = int(time.time())
    claims = {"sub": "admin", "role": "admin", "aud": "apache-airflow", "jti": uuid.uuid4().hex}
    claims |= {"iat": now - 120, "nbf": now - 120, "exp": now - 60}
    token = signed_jwt(airflow3.env["AIRFLOW__API_AUTH__JWT_SECRET"], claims)
    src = RestApiSource("test", ApiConfig(url=airflow3.api_url, token=Secret(token)))
    with pytest.raises(SourceError) as err:
        src.poll(time.time())
    assert err.value.reason == "auth"
    assert "api.token" in str(err.value)
    assert token not in str(err.value) and token[-20:] not in str(err.value)
    src.close()


class ExtraApiServer:
    """A second Airflow 3 api-server on a stack's database, with its own auth settings: short-lived
    tokens, its own JWT secret. Its access log shows which requests were refused."""

    def __init__(self, stack: AirflowStack, **settings: str) -> None:
        self.stack = stack
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = stack.home / "components" / f"extra-api-server-{self.port}.log"
        self.settings = settings
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 180) -> None:
        env = self.stack.env | {
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.url,
            **self.settings,
        }
        assert self.stack.venv is not None
        cmd = [str(self.stack.venv / "bin" / "airflow"), "api-server"]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                cmd,
                env=env,
                cwd=self.stack.home,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise AssertionError(f"extra api-server exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/v2/version", timeout=5) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError(
            f"extra api-server not up after {timeout}s:\n{self.log_path.read_text()[-3000:]}"
        )

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every request served so far, from the access log."""
        pattern = re.compile(r"method=(\w+) path=(\S+) .*?status_code=(\d+)")
        text = self.log_path.read_text(errors="replace")
        return [(m[1], m[2], int(m[3])) for m in pattern.finditer(text)]

    def __enter__(self) -> ExtraApiServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def test_expiring_jwt_is_renewed_before_the_server_refuses_it(airflow3: AirflowStack) -> None:
    lifetime = 6  # renewed 1.5 s before exp: room for a slow request on a loaded machine
    short = {"AIRFLOW__API_AUTH__JWT_EXPIRATION_TIME": str(lifetime), "AIRFLOW__API_AUTH__JWT_LEEWAY": "0"}
    with ExtraApiServer(airflow3, **short) as server:
        src = source_for(airflow3, url=server.url)
        try:
            # Poll like the service does, across 2.5 token lifetimes: every poll succeeds, and the
            # server never had to refuse a token (renewal happens before exp, not after a 401).
            deadline = time.monotonic() + 2.5 * lifetime
            while time.monotonic() < deadline:
                assert {"default_pool", "single_slot"} <= {p.pool for p in src.poll(time.time()).pools}
                time.sleep(0.25)  # the poll interval
            served = server.requests()
            logins = [r for r in served if r[:2] == ("POST", "/auth/token")]
            assert len(logins) >= 3 and all(status == 201 for *_, status in logins), logins
            refused = [r for r in served if r[2] in (401, 403)]
            assert refused == [], refused
        finally:
            src.close()


def test_token_refused_after_server_restart_with_new_secret_is_replaced(airflow3: AirflowStack) -> None:
    server = ExtraApiServer(airflow3, AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_urlsafe(32))
    server.start()
    src = source_for(airflow3, url=server.url)
    try:
        src.poll(time.time())
        server.stop()
        server.settings["AIRFLOW__API_AUTH__JWT_SECRET"] = secrets.token_urlsafe(32)
        server.start()
        # The old token's signature no longer verifies: Airflow 3 answers 403 "Invalid JWT token".
        state = src.poll(time.time())
        assert state.version == airflow3.version
        served = server.requests()
        first_refusal = next(i for i, r in enumerate(served) if r[2] == 403)
        assert ("POST", "/auth/token", 201) in served[first_refusal:]
        assert served[-1][2] == 200
    finally:
        src.close()
        server.stop()


def test_follows_an_upgrade_from_airflow_2_to_3(airflow2: AirflowStack, airflow3: AirflowStack) -> None:
    """The same address starts answering as Airflow 3: the next poll detects /api/v2 and goes on.
    The config carries both an Airflow 2 login and an Airflow 3 token (the users of the two test
    stacks differ; in a real upgrade the same login serves both)."""
    port2, port3 = (int(s.api_url.rsplit(":", 1)[1]) for s in (airflow2, airflow3))
    with LoopbackProxy("127.0.0.1", port2) as proxy:
        src = RestApiSource(
            "test",
            ApiConfig(
                url=proxy.url("http"),
                username=airflow2.username,
                password=airflow2.password,
                token=issued_token(airflow3),
            ),
        )
        try:
            assert src.poll(time.time()).version == airflow2.version
            assert src.api_version == "v1"
            proxy.stop()
            proxy.target = ("127.0.0.1", port3)
            proxy.start()
            state = src.poll(time.time())
            assert (state.version, src.api_version) == (airflow3.version, "v2")
            assert any(Path(e.filename).name == "broken_dag.py" for e in state.import_errors)
        finally:
            src.close()


# ----------------------------------------------------------------- transport failures


def test_stopped_api_is_a_connect_error_then_recovers(airflow_stack: AirflowStack) -> None:
    port = int(airflow_stack.api_url.rsplit(":", 1)[1])
    with LoopbackProxy("127.0.0.1", port) as proxy:
        src = source_for(airflow_stack, url=proxy.url("http"))
        try:
            assert src.poll(time.time()).version == airflow_stack.version
            proxy.stop()
            with pytest.raises(SourceError) as err:
                src.poll(time.time())
            assert err.value.reason == "connect"
            assert airflow_stack.password not in str(err.value)
            proxy.start()
            assert src.poll(time.time()).version == airflow_stack.version
            assert src.api_version == airflow_stack.api_version
        finally:
            src.close()


def test_silent_server_times_out() -> None:
    with silent_port() as port:
        src = RestApiSource("test", ApiConfig(url=f"http://127.0.0.1:{port}", timeout=0.5))
        started = time.monotonic()
        with pytest.raises(SourceError) as err:
            src.poll(time.time())
        assert err.value.reason == "timeout"
        assert time.monotonic() - started < 3
        src.close()


def test_a_server_that_is_not_airflow_is_a_protocol_error(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<html>not airflow</html>")
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        src = RestApiSource("test", ApiConfig(url=f"http://127.0.0.1:{server.server_port}"))
        with pytest.raises(SourceError) as err:
            src.detect()
        assert err.value.reason == "protocol"
        assert "neither /api/v2/version nor /api/v1/version" in str(err.value)
        src.close()
    finally:
        server.shutdown()
        server.server_close()


# ----------------------------------------------------------------- TLS


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")  # verify_tls=False
def test_tls_verification_and_ca_file(airflow_stack: AirflowStack, self_signed: tuple[Path, Path]) -> None:
    cert, key = self_signed
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    port = int(airflow_stack.api_url.rsplit(":", 1)[1])
    with LoopbackProxy("127.0.0.1", port, tls=ctx) as proxy:
        url = proxy.url("https")
        untrusted = source_for(airflow_stack, url=url)
        with pytest.raises(SourceError) as err:
            untrusted.poll(time.time())
        assert err.value.reason == "connect"
        assert "certificate" in str(err.value).lower()
        untrusted.close()
        for settings in ({"ca_file": str(cert)}, {"verify_tls": False}):
            src = source_for(airflow_stack, url=url, **settings)
            try:
                assert src.poll(time.time()).version == airflow_stack.version
            finally:
                src.close()
