"""POSTing JSON with urllib, one attempt, with HTTP outcomes mapped to :class:`DeliveryError`."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from .delivery import connection_error, http_error, redact

USER_AGENT = "airflow-ops"


def check_http_url(url: str, what: str) -> str:
    """``url`` if it is an absolute http(s) URL; the error names ``what``, never the URL itself."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what}: url must be an absolute http:// or https:// URL")
    return url


def destination(url: str) -> str:
    """``host:port`` of a URL — what errors and rate keys may show (path and userinfo may be secret)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"


def post_json(
    url: str,
    body: Any,
    *,
    what: str,
    timeout: float,
    headers: dict[str, str] | None = None,
    secrets: tuple[str | None, ...] = (),
) -> bytes:
    """POST ``body`` as JSON and return the response body; raise DeliveryError on any failure."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": USER_AGENT, **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as e:
        detail = redact(e.read(1000).decode("utf-8", "replace"), url, *secrets)
        raise http_error(what, e.code, retry_after=e.headers.get("Retry-After"), detail=detail) from None
    except (OSError, http.client.HTTPException) as e:
        # `from None`: the chained urllib error would carry the URL into logged tracebacks.
        raise connection_error(what, e) from None
