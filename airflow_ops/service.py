"""`airflow-ops serve`: the poll loop and the HTTP server.

The poll loop does the work: every interval it polls each deployment, renders the metric
families once and keeps the encoded bytes. A scrape only picks up those bytes, so its cost does
not depend on the size of the metadata DB or on how many scrapers there are.
"""

from __future__ import annotations

import base64
import gc
import hmac
import json
import logging
import signal
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .alerts import http_api as alerting_api
from .alerts.engine import AlertEngine
from .config import Config, mask
from .exposition import (
    OPENMETRICS_CONTENT_TYPE,
    TEXT_CONTENT_TYPE,
    Encoded,
    Encoder,
    Family,
    wants_openmetrics,
)
from .maintenance.monitor import log_folder, maintenance_state
from .maintenance.schedule import MaintenanceScheduler
from .metrics import SnapshotRenderer
from .poller import DeploymentPoller
from .snapshot import Snapshot, to_jsonable
from .store import OpsStore, StoreError, open_store

log = logging.getLogger(__name__)


@dataclass
class Rendered:
    """One render of the latest snapshots, its sample lines encoded once for both formats: the
    poll loop joins the Prometheus text up front, the first request that asks for OpenMetrics
    joins that (``encoded`` is immutable, so that is safe while the next poll encodes)."""

    families: list[Family]
    snapshots: Sequence[Snapshot]
    encoded: Encoded
    _joined: dict[bool, bytes] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def encode(self, openmetrics: bool) -> bytes:
        with self._lock:
            if openmetrics not in self._joined:
                self._joined[openmetrics] = self.encoded.openmetrics() if openmetrics else self.encoded.text()
            return self._joined[openmetrics]


def freeze_heap() -> None:
    """Leave every object alive now (modules, config, connections, trackers) out of the garbage
    collector's full collections.

    A render at the series budget's maximum allocates ~100k objects and keeps most of them until
    the next poll, so a full collection comes every poll or two, and it walks the whole heap:
    the ~110k objects of the imported modules too, which took longer than the render itself
    (docs/performance.md). Frozen objects are still freed when no longer referenced; only cycles
    among them would never be, hence the collection first."""
    gc.collect()
    gc.freeze()


class OpsService:
    def __init__(
        self,
        config: Config,
        pollers: Sequence[DeploymentPoller] | None = None,
        *,
        with_alerting: bool = True,
    ) -> None:
        """``with_alerting=False`` (a one-off poll) neither notifies nor runs scheduled maintenance."""
        self.config = config
        self.pollers = (
            list(pollers)
            if pollers is not None
            else [DeploymentPoller.from_config(name, config) for name in config.deployments]
        )
        self.renderer = SnapshotRenderer(config.metrics)
        # Keeps each poll's encoded lines, so the next poll re-encodes only the rows that changed.
        self.encoder = Encoder()
        self.rendered: Rendered | None = None
        self.stop_event = threading.Event()
        self.last_loop_at = time.monotonic()
        self.started_at = time.time()
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(self.pollers)), thread_name_prefix="poll")
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self.store: OpsStore | None = None
        self.alerting: AlertEngine | None = None
        self.scheduler: MaintenanceScheduler | None = None
        # Deployments whose maintenance is exported (audit records, backups, log volume).
        self._maintained = {n: d.maintenance for n, d in config.deployments.items() if d.maintenance}
        if with_alerting and (config.alerting is not None or self._maintained):
            self.store = open_store(config.store.value)
            try:
                if config.alerting is not None:
                    self.alerting = AlertEngine(config, self.store)
                self.scheduler = MaintenanceScheduler(config, self.store, mask=lambda t: mask(t, config))
            except Exception:
                self.store.close()
                raise

    # ------------------------------------------------------------ polling

    def poll_once(self) -> Rendered:
        snapshots = list(self._pool.map(lambda p: p.poll(), self.pollers))
        if self.alerting is not None:
            # The engine's own figures as of its last evaluation (one poll behind, like any scrape).
            snapshots = [replace(s, alerting=self.alerting.state_for(s.deployment)) for s in snapshots]
        if self._maintained and self.store is not None:
            snapshots = self._with_maintenance(snapshots)
        if self.rendered is None:
            freeze_heap()  # the first poll is done: what is alive now lives about as long as the service
        started = time.perf_counter()
        families = self.renderer.families(snapshots)
        rendered = Rendered(families, snapshots, self.encoder.encode(families))
        rendered.encode(openmetrics=False)
        log.debug(
            "rendered %d deployments in %.1f ms", len(snapshots), 1000 * (time.perf_counter() - started)
        )
        self.rendered = rendered
        if self.alerting is not None:
            try:
                self.alerting.evaluate(families, snapshots)
            except Exception:  # the exporter keeps serving; the log says what broke
                log.exception("alert evaluation failed")
        self.last_loop_at = time.monotonic()
        return rendered

    def _with_maintenance(self, snapshots: list[Snapshot]) -> list[Snapshot]:
        assert self.store is not None
        try:
            summaries = self.store.audit_summary()
        except StoreError as e:  # exported without the audit figures this poll
            log.warning("maintenance: cannot read the audit records: %s", e)
            summaries = []
        now = time.time()
        return [
            replace(
                s,
                maintenance=maintenance_state(
                    summaries, s.deployment, cfg, now, self.started_at, log_folder(cfg)
                ),
            )
            if (cfg := self._maintained.get(s.deployment)) is not None
            else s
            for s in snapshots
        ]

    def _poll_loop(self) -> None:
        interval = self.config.service.poll_interval
        next_at = time.monotonic()
        while not self.stop_event.is_set():
            try:
                self.poll_once()
            except Exception:  # keep serving the last snapshot; the error is visible in the log
                log.exception("poll failed")
            next_at += interval
            # After a poll longer than the interval, start the next one now rather than bunching up.
            next_at = max(next_at, time.monotonic())
            self.stop_event.wait(max(0.0, next_at - time.monotonic()))

    @property
    def ready(self) -> bool:
        return self.rendered is not None

    @property
    def healthy(self) -> bool:
        """The poll loop is alive: it finished an iteration recently enough."""
        max_source_time = 60.0
        return time.monotonic() - self.last_loop_at < 3 * self.config.service.poll_interval + max_source_time

    # ------------------------------------------------------------ serving

    def start(self) -> None:
        """Start the HTTP server and the poll loop in background threads."""
        svc = self.config.service
        self._server = ThreadingHTTPServer((svc.listen, svc.port), _handler_for(self))
        self._server.daemon_threads = True
        if svc.tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(svc.tls.cert_file, svc.tls.key_file)
            self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
        if self.alerting is not None:
            self.alerting.external_url = self.alerting.external_url or self.url
        for target, name in ((self._server.serve_forever, "http"), (self._poll_loop, "poll-loop")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        if self.alerting is not None:
            self.alerting.start()
        if self.scheduler is not None:
            self.scheduler.start()
        log.info("serving on %s", self.url)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        scheme = "https" if self.config.service.tls else "http"
        return f"{scheme}://{self.config.service.listen}:{self.port}"

    def stop(self) -> None:
        self.stop_event.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for t in self._threads:
            t.join(timeout=30)
        self._pool.shutdown(wait=False, cancel_futures=True)
        for p in self.pollers:
            p.close()
        if self.alerting is not None:
            self.alerting.stop()
        if self.scheduler is not None:
            self.scheduler.stop()
        if self.store is not None:
            self.store.close()

    def run_until_signalled(self) -> None:
        """Serve until SIGTERM or SIGINT, then shut down cleanly."""
        done = threading.Event()

        def _stop(signum: int, _frame: Any) -> None:
            log.info("received %s, shutting down", signal.Signals(signum).name)
            done.set()

        previous = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            done.wait()
        finally:
            self.stop()
            for s, handler in previous.items():
                signal.signal(s, handler)

    def authorized(self, header: str | None) -> bool:
        svc = self.config.service
        if svc.basic_auth is None and svc.bearer_token is None:
            return True
        if not header:
            return False
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and svc.bearer_token is not None:
            return hmac.compare_digest(value.strip().encode(), svc.bearer_token.value.encode())
        if scheme.lower() == "basic" and svc.basic_auth is not None:
            try:
                user, _, pw = base64.b64decode(value.strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            ok_user = hmac.compare_digest(user.encode(), svc.basic_auth.username.encode())
            ok_pw = hmac.compare_digest(pw.encode(), svc.basic_auth.password.value.encode())
            return ok_user and ok_pw
        return False


def _handler_for(service: OpsService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "airflow-ops"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if alerting_api.handles(path):
                self._alerting_api("GET")
                return
            route: dict[str, Callable[[], None]] = {
                "/metrics": self._metrics,
                "/healthz": self._healthz,
                "/readyz": self._readyz,
                "/api/snapshot": self._snapshot,
            }
            handler = route.get(path)
            if handler is None:
                self._send(404, b"not found\n")
            elif path in ("/metrics", "/api/snapshot") and not service.authorized(
                self.headers.get("Authorization")
            ):
                scheme = "Basic" if service.config.service.basic_auth else "Bearer"
                self._send(
                    401, b"unauthorized\n", headers={"WWW-Authenticate": f'{scheme} realm="airflow-ops"'}
                )
            else:
                handler()

        def do_POST(self) -> None:
            self._alerting_api("POST")

        def do_DELETE(self) -> None:
            self._alerting_api("DELETE")

        def _alerting_api(self, method: str) -> None:
            path = self.path.split("?", 1)[0]
            if not alerting_api.handles(path):
                self._send(404, b"not found\n")
                return
            if not service.authorized(self.headers.get("Authorization")):
                scheme = "Basic" if service.config.service.basic_auth else "Bearer"
                self._send(
                    401, b"unauthorized\n", headers={"WWW-Authenticate": f'{scheme} realm="airflow-ops"'}
                )
                return
            if service.alerting is None or service.store is None:
                self._send(404, b"alerting is not configured\n")
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(min(length, 1 << 20)) if length else b""
            status, doc = alerting_api.handle(service.alerting, service.store, method, self.path, body)
            self._send(status, json.dumps(doc, indent=1).encode(), "application/json")

        def _metrics(self) -> None:
            rendered = service.rendered
            if rendered is None:
                self._send(503, b"no poll has completed yet\n")
                return
            openmetrics = wants_openmetrics(self.headers.get("Accept", ""))
            ctype = OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE
            self._send(200, rendered.encode(openmetrics), ctype)

        def _healthz(self) -> None:
            ok = service.healthy
            self._send(200 if ok else 503, b"ok\n" if ok else b"poll loop stalled\n")

        def _readyz(self) -> None:
            ok = service.ready
            self._send(200 if ok else 503, b"ready\n" if ok else b"waiting for the first poll\n")

        def _snapshot(self) -> None:
            rendered = service.rendered
            if rendered is None:
                self._send(503, b"no poll has completed yet\n")
                return
            body = json.dumps([to_jsonable(s) for s in rendered.snapshots], indent=1).encode()
            self._send(200, body, "application/json")

        def _send(
            self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8", headers=None
        ) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http: " + format, *args)

    return Handler
