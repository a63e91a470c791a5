"""The alerting part of the service's HTTP API (JSON in, JSON out):

- ``GET /api/alerts``: current alerts with why each is or is not notified;
- ``GET /api/silences`` (``?all=1`` with expired ones), ``POST /api/silences``
  ``{"matchers": ["dag_id=\\"etl\\""], "duration": "2h", "comment": "…", "created_by": "…"}``,
  ``DELETE /api/silences/<id>`` (expire now).
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..store import OpsStore, StoreError
from .engine import AlertEngine
from .silences import SilenceError, new_silence, silence_json, stored_alerts

Answer = tuple[int, Any]
SILENCES = "/api/silences"


def handles(path: str) -> bool:
    return path == "/api/alerts" or path == SILENCES or path.startswith(SILENCES + "/")


def handle(engine: AlertEngine, store: OpsStore, method: str, target: str, body: bytes) -> Answer:
    url = urlsplit(target)
    path, query = url.path, parse_qs(url.query)
    now = time.time()
    try:
        if path == "/api/alerts" and method == "GET":
            return 200, engine.alerts() if engine.leader else stored_alerts(store, now)
        if path == SILENCES and method == "GET":
            include = query.get("all", ["0"])[0] not in ("0", "false", "")
            return 200, [silence_json(s) for s in store.silence_list(now, include_expired=include)]
        if path == SILENCES and method == "POST":
            return 201, silence_json(store.silence_add(_silence_from(body, now)))
        if path.startswith(SILENCES + "/") and method == "DELETE":
            silence_id = path[len(SILENCES) + 1 :]
            if store.silence_get(silence_id) is None:
                return 404, {"error": f"no silence with id {silence_id}"}
            return 200, silence_json(store.silence_expire(silence_id, now))
    except SilenceError as e:
        return 400, {"error": str(e)}
    except StoreError as e:
        return 503, {"error": f"ops store: {e}"}
    return 405, {"error": f"{method} is not supported on {path}"}


def _silence_from(body: bytes, now: float) -> Any:
    try:
        doc = json.loads(body or b"{}")
    except ValueError:
        raise SilenceError("body: not JSON") from None
    if not isinstance(doc, dict):
        raise SilenceError("body: expected a JSON object")
    unknown = set(doc) - {"matchers", "duration", "comment", "created_by"}
    if unknown:
        raise SilenceError(f"{sorted(unknown)[0]}: unknown key")
    matchers = doc.get("matchers")
    if not isinstance(matchers, list) or not all(isinstance(m, str) for m in matchers):
        raise SilenceError('matchers: expected a list of strings like "dag_id=\\"etl\\""')
    return new_silence(
        matchers,
        doc.get("duration", "2h"),
        str(doc.get("comment") or ""),
        str(doc.get("created_by") or "api"),
        now,
    )
