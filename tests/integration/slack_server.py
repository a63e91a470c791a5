"""A loopback server that speaks Slack's protocol as the real ``slack_sdk`` uses it, so tests send
through the real client and check what Slack would have shown.

    with SlackServer() as slack:
        bot = SlackConfig(token=Secret(slack.token), channel="#alerts", api_url=slack.api_url)
        hook = SlackConfig(webhook_url=Secret(slack.webhook_url))
        ...                                       # send through slack_sdk / the receivers
        [msg] = slack.wait_for(1, timeout=10, channel="#alerts")
        assert "FIRING" in msg.all_text()

Endpoints
- ``POST /services/T000/B000/<hook>``: an incoming webhook. ``webhook_url`` posts to the channel
  ``webhook_channel`` ("#webhook"); ``webhook_url_for("#other")`` makes a hook for another one.
  JSON body → ``200 ok`` (text/plain); errors as Slack sends them: ``400 invalid_payload`` (not
  JSON), ``400 no_text`` (no text, blocks or attachments), ``400 invalid_blocks``,
  ``400 msg_too_long``, ``404 no_service`` (unknown hook).
- ``POST /api/chat.postMessage`` and ``/api/chat.update`` (JSON or form body; ``blocks`` and
  ``attachments`` may be JSON strings in a form). ``Authorization: Bearer <token>`` is checked:
  ``{"ok": false, "error": "not_authed" | "invalid_auth"}``. Success answers
  ``{"ok": true, "channel": "C…", "ts": "1700000000.000100", "message": {…}}`` with increasing
  ts; channel names map to stable ids ("C…"), and chat.update needs the id and an existing ts
  (else ``channel_not_found`` / ``message_not_found``), as with Slack.

Validated: text, blocks or attachments present; ≤50 blocks (top level and per attachment);
header plain_text ≤150; section text ≤3000 (fields ≤10, ≤2000 each); context ≤10 elements;
text ≤40000. Only accepted messages are recorded (:class:`SlackMessage`, with receive time).

Rate: every message request (postMessage or webhook, accepted or not) is timed per channel;
``max_per_second(channel)`` is the most of them that arrived within one second (less
``RATE_JITTER``, for scheduling noise). With ``rate_limit=True`` (default), like Slack, a message
to a channel that accepted one less than a second (less ``RATE_JITTER``) ago is answered
``429 Retry-After: 1``. chat.update is not a new message and is not paced.

Scripting: ``script(n, status=429, retry_after=2)`` answers the next n requests (any endpoint)
with 429 + Retry-After; ``script(n, status=500)`` with a server error; ``script(n, close=True)``
closes the connection without an answer. ``rate_limited`` counts every 429 sent (scripted or
not); ``requests`` counts all requests.

Waiting: ``wait_for(n, timeout, channel=None)`` returns the messages once there are n;
``wait_until(predicate, timeout)`` waits for any condition on the server (e.g. an update).
Both wake on each request — no polling — and fail with an AssertionError on timeout.
"""

from __future__ import annotations

import copy
import json
import re
import socket
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

MAX_BLOCKS = 50
HEADER_MAX = 150
SECTION_MAX = 3000
FIELD_MAX = 2000
TEXT_MAX = 40000
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{8,}$")
Answer = tuple[int, dict[str, str], bytes]  # status, headers, body


@dataclass
class SlackMessage:
    channel: str  # the channel id ("C…")
    channel_name: str  # as the sender named it ("#alerts"); the hook's channel for webhooks
    ts: str
    via: str  # "webhook" | "api"
    payload: dict[str, Any]  # the current version (text, blocks, attachments, …)
    received_at: float  # time.time() when posted
    updated_at: float | None = None
    edits: list[dict[str, Any]] = field(default_factory=list)  # earlier versions, oldest first

    @property
    def text(self) -> str:
        return self.payload.get("text") or ""

    @property
    def blocks(self) -> list[dict[str, Any]]:
        return self.payload.get("blocks") or []

    @property
    def attachments(self) -> list[dict[str, Any]]:
        return self.payload.get("attachments") or []

    def all_blocks(self) -> list[dict[str, Any]]:
        """Top-level blocks, then each attachment's."""
        return self.blocks + [b for a in self.attachments for b in a.get("blocks") or []]

    def all_text(self) -> str:
        """The top-level text and every text inside the blocks, one per line."""
        return "\n".join([self.text, *_texts(self.all_blocks())])


def _texts(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("text"), str):
            yield node["text"]
        for v in node.values():
            if not isinstance(v, str):
                yield from _texts(v)
    elif isinstance(node, list):
        for v in node:
            yield from _texts(v)


@dataclass
class _Fault:
    status: int
    retry_after: float | None
    close: bool


class SlackServer:
    """See the module docstring. A context manager; ``start()``/``stop()`` work too."""

    RATE_JITTER = 0.05
    webhook_channel = "#webhook"

    def __init__(self, token: str = "xoxb-loopback-token", *, rate_limit: bool = True) -> None:
        self.token = token
        self.rate_limit = rate_limit
        self.requests = 0
        self.rate_limited = 0
        self._messages: list[SlackMessage] = []
        self._attempts: dict[str, list[float]] = defaultdict(list)  # channel id -> request times
        self._last_accepted: dict[str, float] = {}
        self._faults: deque[_Fault] = deque()
        self._hooks = {"XXXX": self.webhook_channel}
        self._channel_ids: dict[str, str] = {}
        self._ts = 0
        self._changed = threading.Condition()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # --- lifecycle ---

    def __enter__(self) -> SlackServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        # A short poll interval makes stop() quick: tests start one server each.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name="slack-server"
        )
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # --- addresses ---

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def api_url(self) -> str:
        """What ``WebClient(base_url=…)`` / ``SlackConfig.api_url`` takes."""
        return self.url + "/api/"

    @property
    def webhook_url(self) -> str:
        """An incoming webhook posting to ``webhook_channel``."""
        return self.url + "/services/T000/B000/XXXX"

    def webhook_url_for(self, channel: str) -> str:
        """An incoming webhook posting to ``channel``."""
        with self._changed:
            hook = f"H{len(self._hooks):04d}"
            self._hooks[hook] = channel
        return f"{self.url}/services/T000/B000/{hook}"

    # --- what was received ---

    def channel_id(self, channel: str) -> str:
        """The id a channel name maps to (ids map to themselves)."""
        with self._changed:
            return self._id_for(channel)

    def messages(self, channel: str | None = None) -> list[SlackMessage]:
        """Accepted messages (current versions, copies), oldest first; ``channel`` by name or id."""
        with self._changed:
            wanted = None if channel is None else self._id_for(channel)
            return [copy.deepcopy(m) for m in self._messages if wanted in (None, m.channel)]

    def max_per_second(self, channel: str) -> int:
        """The most message requests to ``channel`` that arrived within one second."""
        with self._changed:
            times = sorted(self._attempts.get(self._id_for(channel), []))
        window = 1.0 - self.RATE_JITTER
        best, start = 0, 0
        for end, t in enumerate(times):
            while t - times[start] >= window:
                start += 1
            best = max(best, end - start + 1)
        return best

    def wait_for(self, n: int, timeout: float, channel: str | None = None) -> list[SlackMessage]:
        """The messages (of ``channel``) once there are at least ``n``."""
        self.wait_until(lambda: len(self.messages(channel)) >= n, timeout, f"{n} message(s)")
        return self.messages(channel)

    def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"Slack server: no {what} within {timeout}s; got {len(self._messages)} message(s), "
                        f"{self.requests} request(s), {self.rate_limited} answered 429"
                    )
                self._changed.wait(left)

    # --- scripting ---

    def script(
        self, count: int = 1, *, status: int = 429, retry_after: float | None = 1.0, close: bool = False
    ) -> None:
        """Answer the next ``count`` requests with ``status`` (429 carries ``Retry-After``), or close
        the connection without answering (``close=True``)."""
        with self._changed:
            self._faults.extend(_Fault(status, retry_after, close) for _ in range(count))

    def clear_script(self) -> None:
        """Forget faults scripted but not yet used: from now on, answer normally."""
        with self._changed:
            self._faults.clear()

    # --- the protocol (called by the handler threads) ---

    def _id_for(self, channel: str) -> str:
        if _CHANNEL_ID.match(channel):
            return channel
        name = channel.lstrip("#")
        if name not in self._channel_ids:
            self._channel_ids[name] = f"C{len(self._channel_ids) + 1:08d}"
        return self._channel_ids[name]

    def _next_ts(self) -> str:
        self._ts += 1
        return f"{1_700_000_000 + self._ts // 10_000}.{(self._ts % 10_000) * 100:06d}"

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> Answer | None:
        """One request → (status, headers, body), or None to close the connection unanswered."""
        with self._changed:
            try:
                self.requests += 1
                if path.startswith("/services/"):
                    return self._webhook(path, body)
                if path.startswith("/api/"):
                    return self._api(path[len("/api/") :], headers, body)
                return 404, {}, b"not found"
            finally:
                self._changed.notify_all()

    def _fault(self, api: bool) -> Answer | bool | None:
        """The scripted answer for this request, ``False`` when none is scripted."""
        if not self._faults:
            return False
        fault = self._faults.popleft()
        if fault.close:
            return None
        if fault.status == 429:
            return self._too_many(api, fault.retry_after)
        error = "internal_error" if fault.status >= 500 else "invalid_request"
        return _answer(api, fault.status, error)

    def _too_many(self, api: bool, retry_after: float | None) -> Answer:
        self.rate_limited += 1
        status, headers, body = _answer(api, 429, "ratelimited" if api else "rate_limited")
        if retry_after is not None:
            headers["Retry-After"] = f"{retry_after:g}"
        return status, headers, body

    def _pace(self, channel_id: str, api: bool) -> Answer | bool | None:
        """Time the message request, play a scripted fault, or refuse it for the channel's rate."""
        now = time.time()
        self._attempts[channel_id].append(now)
        fault = self._fault(api)
        if fault is not False:
            return fault
        last = self._last_accepted.get(channel_id)
        if self.rate_limit and last is not None and now - last < 1.0 - self.RATE_JITTER:
            return self._too_many(api, 1.0)
        return False

    def _record(self, channel: str, channel_id: str, via: str, payload: dict[str, Any]) -> SlackMessage:
        now = time.time()
        self._last_accepted[channel_id] = now
        msg = SlackMessage(channel_id, channel, self._next_ts(), via, payload, now)
        self._messages.append(msg)
        return msg

    def _webhook(self, path: str, body: bytes) -> Answer | None:
        channel = self._hooks.get(path.rstrip("/").rsplit("/", 1)[-1])
        if channel is None or not path.startswith("/services/T000/B000/"):
            return 404, _TEXT, b"no_service"
        channel_id = self._id_for(channel)
        verdict = self._pace(channel_id, api=False)
        if verdict is not False:
            return verdict
        try:
            payload = json.loads(body)
        except ValueError:
            return 400, _TEXT, b"invalid_payload"
        if not isinstance(payload, dict):
            return 400, _TEXT, b"invalid_payload"
        problem = message_problem(payload)
        if problem:
            return 400, _TEXT, problem.encode()
        self._record(channel, channel_id, "webhook", payload)
        return 200, _TEXT, b"ok"

    def _api(self, method: str, headers: dict[str, str], body: bytes) -> Answer | None:
        args = _api_args(headers, body)
        if args is None:
            return _answer(True, 200, "invalid_json")
        if method not in ("chat.postMessage", "chat.update"):
            fault = self._fault(api=True)
            return _answer(True, 200, "unknown_method") if fault is False else fault
        auth = headers.get("authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else args.pop("token", None)
        channel = str(args.get("channel") or "")
        if method == "chat.update":
            fault = self._fault(api=True)
            if fault is not False:
                return fault
        if not token:
            return _answer(True, 200, "not_authed")
        if token != self.token:
            return _answer(True, 200, "invalid_auth")
        if not channel:
            return _answer(True, 200, "channel_not_found")
        if method == "chat.update":
            return self._update(channel, args)
        channel_id = self._id_for(channel)
        verdict = self._pace(channel_id, api=True)
        if verdict is not False:
            return verdict
        problem = message_problem(args)
        if problem:
            return _answer(True, 200, problem)
        payload = {k: v for k, v in args.items() if k != "channel"}
        msg = self._record(channel, channel_id, "api", payload)
        return _ok({"channel": channel_id, "ts": msg.ts, "message": _message_json(msg)})

    def _update(self, channel: str, args: dict[str, Any]) -> Answer:
        if not _CHANNEL_ID.match(channel) or channel not in self._channel_ids.values():
            return _answer(True, 200, "channel_not_found")
        msg = next((m for m in self._messages if m.channel == channel and m.ts == args.get("ts")), None)
        if msg is None:
            return _answer(True, 200, "message_not_found")
        problem = message_problem(args)
        if problem:
            return _answer(True, 200, problem)
        msg.edits.append(msg.payload)
        msg.payload = {k: v for k, v in args.items() if k not in ("channel", "ts")}
        msg.updated_at = time.time()
        return _ok({"channel": channel, "ts": msg.ts, "text": msg.text, "message": _message_json(msg)})


_TEXT = {"Content-Type": "text/plain; charset=utf-8"}
_JSON = {"Content-Type": "application/json; charset=utf-8"}


def _answer(api: bool, status: int, error: str) -> Answer:
    if api:
        return (
            status,
            {"Content-Type": "application/json"},
            json.dumps({"ok": False, "error": error}).encode(),
        )
    return status, dict(_TEXT), error.encode()


def _ok(data: dict[str, Any]) -> Answer:
    return 200, dict(_JSON), json.dumps({"ok": True, **data}).encode()


def _message_json(msg: SlackMessage) -> dict[str, Any]:
    return {"type": "message", "subtype": "bot_message", "bot_id": "B000", "ts": msg.ts, **msg.payload}


def _api_args(headers: dict[str, str], body: bytes) -> dict[str, Any] | None:
    """The arguments of a Web API call, JSON or form encoded; None when they cannot be read."""
    try:
        if headers.get("content-type", "").startswith("application/json"):
            args = json.loads(body or b"{}")
            return args if isinstance(args, dict) else None
        args = {k: v[-1] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        for key in ("blocks", "attachments"):
            if isinstance(args.get(key), str):
                args[key] = json.loads(args[key])
        return args
    except (ValueError, UnicodeDecodeError):
        return None


def message_problem(payload: dict[str, Any]) -> str | None:
    """Slack's error code for a message it would refuse, or None."""
    text, blocks, attachments = payload.get("text"), payload.get("blocks"), payload.get("attachments")
    if not text and not blocks and not attachments:
        return "no_text"
    if text is not None and not isinstance(text, str):
        return "invalid_arguments"
    if text and len(text) > TEXT_MAX:
        return "msg_too_long"
    if attachments is not None and not (
        isinstance(attachments, list) and all(isinstance(a, dict) for a in attachments)
    ):
        return "invalid_attachments"
    for block_list in [blocks, *(a.get("blocks") for a in attachments or [])]:
        if block_list is not None and not _valid_blocks(block_list):
            return "invalid_blocks"
    return None


def _valid_blocks(blocks: Any) -> bool:
    return isinstance(blocks, list) and len(blocks) <= MAX_BLOCKS and all(_valid_block(b) for b in blocks)


def _text_ok(obj: Any, limit: int, types: tuple[str, ...] = ("mrkdwn", "plain_text")) -> bool:
    return (
        isinstance(obj, dict)
        and obj.get("type") in types
        and isinstance(obj.get("text"), str)
        and 0 < len(obj["text"]) <= limit
    )


def _valid_block(block: Any) -> bool:
    if not isinstance(block, dict):
        return False
    kind = block.get("type")
    if kind == "header":
        return _text_ok(block.get("text"), HEADER_MAX, ("plain_text",))
    if kind == "section":
        fields = block.get("fields")
        if block.get("text") is None and not fields:
            return False
        if block.get("text") is not None and not _text_ok(block["text"], SECTION_MAX):
            return False
        return fields is None or (
            isinstance(fields, list) and len(fields) <= 10 and all(_text_ok(f, FIELD_MAX) for f in fields)
        )
    if kind == "context":
        elements = block.get("elements")
        return (
            isinstance(elements, list)
            and 0 < len(elements) <= 10
            and all(
                isinstance(e, dict) and (e.get("type") == "image" or _text_ok(e, SECTION_MAX))
                for e in elements
            )
        )
    return kind in ("divider", "actions", "image", "rich_text", "input", "file", "video")


def _handler(server: SlackServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            answer = server.handle(self.path, headers, body)
            if answer is None:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            status, out_headers, out = answer
            self.send_response(status)
            for k, v in out_headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # tests read the server's state, not its access log

    return Handler
